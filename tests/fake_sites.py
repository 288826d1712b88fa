"""A loopback web server for the network tests and benchmarks: nothing leaves 127.0.0.1.

It serves whatever a test registers under a path: fixed responses, a sequence of
responses (one per request, the last repeating) to inject faults in a known order, or a
function of the query (the GBIF API). Faults it can play: delays longer than the
client's read timeout, any status with any headers (429 + Retry-After, 500, 503),
bodies cut short of their Content-Length, redirect chains and loops, HTML where an
image should be, oversize bodies. `fault_rate` adds random transient faults to every
image path, for the benchmark.
"""

from __future__ import annotations

import io
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from PIL import Image


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line: longer than the read timeout = a timeout
    cut_to: int | None = None  # send only this many body bytes (Content-Length stays the full size)


def jpeg(seed: int = 0, size=(64, 48)) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(6):
        x, y = rng.randrange(size[0] - 8), rng.randrange(size[1] - 8)
        image.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (x, y, x + 8, y + 8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def image_reply(seed: int = 0) -> Reply:
    return Reply(body=jpeg(seed), content_type="image/jpeg")


def html_reply(text: str, status: int = 200) -> Reply:
    return Reply(status=status, body=text.encode("utf-8"), content_type="text/html; charset=utf-8")


def json_reply(value) -> Reply:
    return Reply(body=json.dumps(value).encode("utf-8"), content_type="application/json")


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status=status, headers={"Location": location}, content_type="text/plain")


def random_fault(rng: random.Random) -> Reply:
    """One transient fault of the kinds real image hosts produce."""
    kind = rng.choice(["503", "500", "429", "cut"])
    if kind == "429":
        return Reply(status=429, headers={"Retry-After": "0"}, content_type="text/plain")
    if kind == "cut":
        return Reply(body=jpeg(rng.randrange(10**6)), content_type="image/jpeg", cut_to=100)
    return Reply(status=int(kind), body=b"busy", content_type="text/plain")


class FakeSites:
    """`with FakeSites() as sites:` serves on 127.0.0.1 at a free port until the block ends."""

    def __init__(self, latency: float = 0.0, fault_rate: float = 0.0, seed: int = 0):
        self.latency = latency
        self.fault_rate = fault_rate
        self._rng = random.Random(seed)
        self._routes: dict[str, object] = {}
        self._lock = threading.Lock()
        self.hits: Counter = Counter()
        self.queries: list[tuple[str, dict]] = []
        self.user_agents: set[str] = set()
        self.faults_served = 0
        self.active_connections = 0
        self.peak_connections = 0
        self.server = None

    # ---------------------------------------------------------------- registering
    def add(self, path: str, *replies) -> str:
        """Serve `replies` in turn at `path` (a Reply, or a function of the query dict); return its URL."""
        self._routes[path] = list(replies)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    # ---------------------------------------------------------------- serving
    def _reply_for(self, path: str, query: dict) -> Reply:
        with self._lock:
            self.hits[path] += 1
            self.queries.append((path, query))
            replies = self._routes.get(path)
            if replies is None:
                return html_reply("<html><body>Not found</body></html>", 404)
            reply = replies[min(self.hits[path], len(replies)) - 1]
            if self.fault_rate and path.startswith("/img/") and self._rng.random() < self.fault_rate:
                self.faults_served += 1
                return random_fault(self._rng)
        return reply(query) if callable(reply) else reply

    def __enter__(self):
        sites = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, a keep-alive connection
            # waits for the client's delayed ACK (40 ms) between them, which real servers avoid.
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                with sites._lock:
                    sites.active_connections += 1
                    sites.peak_connections = max(sites.peak_connections, sites.active_connections)

            def finish(self):
                try:
                    super().finish()
                finally:
                    with sites._lock:
                        sites.active_connections -= 1

            def do_GET(self):
                parts = urlparse(self.path)
                sites.user_agents.add(self.headers.get("User-Agent", ""))
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                reply = sites._reply_for(parts.path, query)
                time.sleep(sites.latency + reply.delay)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.cut_to is not None:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.cut_to is not None:
                        self.wfile.write(reply.body[: reply.cut_to])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                    else:
                        self.wfile.write(reply.body)
                except OSError:
                    # The client gave up (a timeout it was meant to hit); nothing to answer.
                    self.close_connection = True

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
