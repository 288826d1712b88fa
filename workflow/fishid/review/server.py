"""`fishid review`: the app on a local port. On 127.0.0.1 only this machine can reach it;
on any other address (--host) every request needs the access token the URL carries."""

import secrets

from werkzeug.serving import make_server

from fishid.review.app import create_app

LOCAL = {"127.0.0.1", "localhost", "::1"}


def serve(root, host: str = "127.0.0.1", port: int = 8765, configfiles=(), token: str | None = None):
    if host not in LOCAL and not token:
        token = secrets.token_urlsafe(24)
    app = create_app(root, configfiles=configfiles, access_token=token)
    server = make_server(host, port, app, threaded=True)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/" + (f"?token={token}" if app.config["ACCESS_TOKEN"] else "")
    print(f"fishid review: {url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
