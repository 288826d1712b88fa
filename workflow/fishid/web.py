"""A polite HTTP client: what every request of the pipeline to a website goes through.

Politeness: a User-Agent that names the project, at most `per_host` connections to one
host at a time and at most `rate` requests a second to it, and retries that back off
exponentially (with jitter) or wait as long as the server's Retry-After asks, up to a
cap. Requests that a third-party client (pygbif) makes are retried by the same rules,
through `Client.retry`. Safety: http and https only (redirects included), no host that
resolves to a loopback, link-local or private address (unless `allow_private_hosts`),
every redirect hop checked, a redirect limit, connect and read timeouts, a byte limit
checked while streaming, bodies that end before their Content-Length are retried.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlparse

import requests
from requests.adapters import HTTPAdapter

from fishid import __version__

log = logging.getLogger(__name__)
USER_AGENT = f"fishid/{__version__} (species photo dataset pipeline; python-requests/{requests.__version__})"
# 420 "Enhance Your Calm" is GBIF's rate limit, as 429 is everyone else's.
TRANSIENT_STATUSES = {408, 420, 425, 429, 500, 502, 503, 504}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class Settings:
    """How the client behaves; `download:` in the config overrides any of these."""

    user_agent: str = USER_AGENT
    workers: int = 16  # concurrent downloads in all
    per_host: int = 4  # concurrent connections to one host
    rate: float = 5.0  # requests a second to one host; 0 = no limit
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 4  # further attempts after a transient failure
    backoff: float = 1.0  # seconds before the first retry; doubled for each next one
    max_wait: float = 120.0  # the longest a Retry-After or backoff is honoured
    max_bytes: int = 50_000_000
    max_redirects: int = 5
    # Hosts that resolve to loopback, link-local or private addresses are refused (a
    # source's URL or a redirect must not reach the machine's or the lab's own services).
    allow_private_hosts: bool = False

    @classmethod
    def from_spec(cls, spec: dict | None) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec or {}) - known)
        if unknown:
            raise ValueError(f"download: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**(spec or {}))


class FetchFailure(Exception):
    """A URL that could not be had. `transient` failures may succeed on a later run."""

    def __init__(self, message: str, status: int | None = None, transient: bool = False, retry_after=None):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


@dataclass
class Response:
    url: str  # after redirects
    status: int
    content: bytes
    content_type: str
    attempts: int


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class _Pacer:
    """Spaces requests to one host at least 1/rate seconds apart, across threads."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self):
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now:
            time.sleep(at - now)


class Client:
    """Thread-safe: one instance serves every worker thread of a run."""

    def __init__(self, settings: Settings | None = None, sleep=time.sleep):
        self.settings = settings or Settings()
        self._sleep = sleep
        self._hosts: dict[str, tuple[threading.BoundedSemaphore, _Pacer]] = {}
        self._hosts_lock = threading.Lock()
        # One connection pool for all threads: a blocking pool of `per_host` connections per
        # host caps open connections, not only requests in flight (idle keep-alive ones count).
        self.session = requests.Session()
        adapter = HTTPAdapter(
            pool_connections=64, pool_maxsize=max(1, self.settings.per_host), pool_block=True, max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = self.settings.user_agent

    def _host(self, netloc: str):
        with self._hosts_lock:
            if netloc not in self._hosts:
                self._hosts[netloc] = (threading.BoundedSemaphore(self.settings.per_host), _Pacer(self.settings.rate))
            return self._hosts[netloc]

    def get(self, url: str, expect: str = "any") -> Response:
        """GET `url`, retrying transient failures; raise FetchFailure when it cannot be had.

        `expect="image"` refuses a body whose Content-Type says it is not an image (an HTML
        error page served in place of a photo), before reading it.
        """
        response, attempts = self._retrying(lambda: self._attempt(url, expect), url)
        response.attempts = attempts
        return response

    def retry(self, call, what: str = "request"):
        """`call()`, a request a third-party client (pygbif) makes with requests, retried as
        get() retries: its requests exceptions and HTTP errors are classified by the same
        rules. Raise FetchFailure when it cannot be had."""
        result, _ = self._retrying(lambda: _third_party(call), what)
        return result

    def _retrying(self, attempt_once, what: str):
        """(result, attempts) of the first attempt that succeeds: the one retry policy."""
        settings = self.settings
        for attempt in range(settings.retries + 1):
            try:
                return attempt_once(), attempt + 1
            except FetchFailure as failure:
                if not failure.transient or attempt == settings.retries:
                    if failure.transient:
                        failure.args = (f"{failure.args[0]} (gave up after {attempt + 1} attempts)",)
                    raise
                wait = backoff_seconds(settings, attempt, failure.retry_after)
                log.info("%s: %s, retrying in %.1f s", what, failure, wait)
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, expect: str) -> Response:
        settings = self.settings
        timeout = (settings.connect_timeout, settings.read_timeout)
        for _ in range(settings.max_redirects + 1):
            parts = urlparse(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise FetchFailure(f"refused URL (http and https only): {url[:120]}")
            if not settings.allow_private_hosts:
                refusal = private_host_refusal(parts.hostname or "")
                if refusal:
                    raise FetchFailure(refusal)
            slots, pacer = self._host(parts.netloc.lower())
            with slots:
                pacer.wait()
                try:
                    with self.session.get(url, stream=True, allow_redirects=False, timeout=timeout) as reply:
                        if reply.status_code in REDIRECT_STATUSES and reply.headers.get("Location"):
                            url = urljoin(url, reply.headers["Location"])
                            continue
                        return self._read(url, reply, expect)
                except requests.RequestException as error:
                    raise request_failure(error) from None
        raise FetchFailure(f"more than {settings.max_redirects} redirects, last to {url[:120]}")

    def _read(self, url: str, reply: requests.Response, expect: str) -> Response:
        settings = self.settings
        status = reply.status_code
        if status >= 400:
            raise status_failure(reply)
        content_type = reply.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if expect == "image" and content_type and not content_type.startswith("image/"):
            if content_type not in ("application/octet-stream", "binary/octet-stream"):
                raise FetchFailure(f"not an image: Content-Type {content_type}", status=status)
        declared = reply.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > settings.max_bytes:
            raise FetchFailure(f"too large: {declared} bytes (max_bytes {settings.max_bytes})", status=status)
        chunks, size = [], 0
        try:
            for chunk in reply.iter_content(chunk_size=64 * 1024):
                size += len(chunk)
                if size > settings.max_bytes:
                    raise FetchFailure(f"too large: over max_bytes {settings.max_bytes}", status=status)
                chunks.append(chunk)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            raise FetchFailure(f"body cut short: {_short(error)}", status=status, transient=True) from None
        content = b"".join(chunks)
        if declared.isdigit() and not reply.headers.get("Content-Encoding") and len(content) != int(declared):
            raise FetchFailure(f"body cut short: {len(content)} of {declared} bytes", status=status, transient=True)
        return Response(url, status, content, content_type, 1)


def backoff_seconds(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """How long to wait before retry `attempt + 1`: what the server's Retry-After asked, else
    exponential backoff with jitter (so that workers turned away together come back apart),
    never more than `max_wait`."""
    wait = retry_after if retry_after is not None else settings.backoff * 2**attempt * random.uniform(1.0, 1.25)
    return min(wait, settings.max_wait)


def status_failure(reply: requests.Response, where: str = "") -> FetchFailure:
    """The failure an HTTP error status (400 and up) is; `where` names the URL in the message."""
    status = reply.status_code
    text = f"HTTP {status}" + (f" from {where}" if where else "")
    if status in TRANSIENT_STATUSES:
        wait = retry_after_seconds(reply.headers.get("Retry-After"))
        return FetchFailure(text, status=status, transient=True, retry_after=wait)
    return FetchFailure(text, status=status)


def request_failure(error: requests.RequestException) -> FetchFailure:
    """The failure a requests exception is: timeouts and failed connections are transient."""
    if isinstance(error, requests.Timeout):
        return FetchFailure(f"timed out: {type(error).__name__}", transient=True)
    if isinstance(error, requests.ConnectionError):
        return FetchFailure(f"connection failed: {_short(error)}", transient=True)
    return FetchFailure(f"request failed: {_short(error)}")


def _third_party(call):
    try:
        return call()
    except requests.HTTPError as error:
        if error.response is None:
            raise request_failure(error) from None
        # The caller never saw the URL (the third-party client built it): name it.
        raise status_failure(error.response, where=error.response.url) from None
    except requests.RequestException as error:
        raise request_failure(error) from None


def _non_public(address: str) -> str:
    """What kind of non-public address `address` is ("" for a public one)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return kind
    return ""


def private_host_refusal(host: str) -> str:
    """Why `host` is refused (it is or resolves to a non-public address), or "" if it is not.

    A name that does not resolve is let through: the request then fails as a connection
    failure, with the resolver's reason.
    """
    host = host.strip("[]")
    try:
        addresses = [host] if _is_ip(host) else sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (socket.gaierror, UnicodeError, OSError):
        return ""
    for address in addresses:
        kind = _non_public(address)
        if kind:
            shown = host if host == address else f"{host} ({address})"
            return (
                f"refused host {shown}: a {kind} address; set download.allow_private_hosts: true "
                "to download from such hosts"
            )
    return ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 160 else text[:157] + "..."


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
