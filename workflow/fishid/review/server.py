"""`fishid review`: the app on a local port. On 127.0.0.1 only this machine can reach it,
and only under the names of its own address (the Host header is checked, so that a web page
whose name is rebound to 127.0.0.1 is refused); on any other address (--host) every request
needs the access token the URL carries."""

import secrets

from werkzeug.serving import make_server

from fishid.review.app import LOOPBACK, create_app

LOCAL = {"127.0.0.1", "localhost", "::1"}
EVERY_ADDRESS = {"0.0.0.0", "::", ""}


def allowed_hosts(host: str, port: int) -> tuple[str, ...] | None:
    """The Host headers a browser sends to this server: on loopback, each loopback name with
    the port; on one other address, that address with the port; None (any) on every address,
    where the access token guards instead."""
    if host in EVERY_ADDRESS:
        return None
    names = LOOPBACK if host in LOCAL else (f"[{host}]" if ":" in host else host,)
    return tuple(f"{name.lower()}:{port}" for name in names)


def make(root, host: str = "127.0.0.1", port: int = 8765, configfiles=(), token: str | None = None):
    """(the server, its URL): bound and ready, not yet serving."""
    if host not in LOCAL and not token:
        token = secrets.token_urlsafe(24)
    app = create_app(root, configfiles=configfiles, access_token=token)
    server = make_server(host, port, app, threaded=True)
    app.config["HOSTS"] = allowed_hosts(host, server.server_port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/" + (f"?token={token}" if app.config["ACCESS_TOKEN"] else "")
    return server, url


def serve(root, host: str = "127.0.0.1", port: int = 8765, configfiles=(), token: str | None = None):
    server, url = make(root, host, port, configfiles, token)
    print(f"fishid review: {url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
