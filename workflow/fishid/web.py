"""A polite HTTP client: what every request of the pipeline to a website goes through.

Politeness: a User-Agent that names the project, at most `per_host` connections to one
host at a time and at most `rate` requests a second to it, and retries that back off
exponentially (with jitter) or wait as long as the server's Retry-After asks, up to a
cap. Requests that a third-party client (pygbif) makes are retried by the same rules,
through `Client.retry`, and go through the same guard (`Client.guard`).

Safety: a URL is read once (parse_url), and what HTTP libraries would read otherwise is
refused (backslashes, user names, odd ports, invalid hosts): the host checked is the host
connected to. The address is checked where the connection is made (GuardedAdapter): the
name is resolved once, every address it resolves to must be global (`ipaddress`'s
is_global, and that of an IPv4 address an IPv6 one carries) unless `allow_private_hosts`
allows it, and the connection goes to those checked addresses, so a name that resolves
elsewhere the second time (DNS rebinding) gains nothing. Every redirect hop is checked
alike, and there is a redirect limit, connect and read timeouts, a byte limit checked while
streaming; bodies that end before their Content-Length are retried.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import idna
import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

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
    # Hosts that resolve to addresses that are not global (loopback, link-local, private,
    # shared, reserved) are refused: a source's URL or a redirect must not reach the machine's
    # or the lab's own services. True allows them all; a list of networks ("10.1.0.0/16",
    # "192.168.2.7") allows only those (a lab's mirror, not also the cloud's metadata service).
    allow_private_hosts: bool | tuple[str, ...] = False

    @classmethod
    def from_spec(cls, spec: dict | None) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec or {}) - known)
        if unknown:
            raise ValueError(f"download: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        spec = dict(spec or {})
        if isinstance(spec.get("allow_private_hosts"), list):
            spec["allow_private_hosts"] = tuple(spec["allow_private_hosts"])
        allowed_networks(spec.get("allow_private_hosts", False))  # a bad network is named before any request
        return cls(**spec)


def allowed_networks(allow) -> bool | tuple:
    """What `allow_private_hosts` allows: True (every address), or the networks it lists."""
    if isinstance(allow, bool):
        return allow
    try:
        return tuple(ipaddress.ip_network(str(network), strict=False) for network in allow)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"download.allow_private_hosts: {error}; give true, false or a list of networks "
            "such as [10.1.0.0/16, 192.168.2.7]"
        ) from None


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
        self.allowed = allowed_networks(self.settings.allow_private_hosts)
        # One connection pool for all threads: a blocking pool of `per_host` connections per
        # host caps open connections, not only requests in flight (idle keep-alive ones count).
        self.session = requests.Session()
        adapter = GuardedAdapter(
            self.allowed,
            pool_connections=64,
            pool_maxsize=max(1, self.settings.per_host),
            pool_block=True,
            max_retries=0,
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = self.settings.user_agent

    def guard(self, session: requests.Session) -> None:
        """Make `session` (one a third-party client such as pygbif opened) check the addresses it
        connects to as this client does, redirects included. A session already guarded (a
        client's own) is left as it is."""
        for prefix in ("http://", "https://"):
            if not isinstance(session.adapters.get(prefix), GuardedAdapter):
                session.mount(prefix, GuardedAdapter(self.allowed, max_retries=0))

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
            target = parse_url(url)
            slots, pacer = self._host(target.origin)
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
                except (LocationParseError, UnicodeError) as error:
                    # What parse_url let through and the HTTP library still cannot read: one row, not the stage.
                    raise FetchFailure(f"refused URL ({_short(error)}): {_shown(url)}") from None
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


# --------------------------------------------------------------------------- one reading of a URL

# A host name's label: letters, digits, hyphens (not first or last) and underscores, which
# real hosts use and HTTP libraries accept.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    """What a URL connects to, as parse_url reads it (and the HTTP library too)."""

    scheme: str
    host: str  # lower case, IDNA-encoded; an IPv6 address without brackets
    port: int

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_url(url: str) -> Target:
    """The one reading of `url` the checks and the connection share; FetchFailure naming what
    is refused otherwise: any URL that urllib.parse and requests (urllib3) could read as
    different hosts, or that either cannot read at all."""
    try:
        return _parse(url)
    except ValueError as error:
        raise FetchFailure(f"refused URL ({error}): {_shown(url)}") from None


def _parse(url: str) -> Target:
    if not isinstance(url, str) or not url:
        raise ValueError("no URL")
    if _CONTROL.search(url) or url != url.strip():
        # urllib.parse drops tabs and line breaks, urllib3 keeps them: two readings.
        raise ValueError("a control character or surrounding space")
    if "\\" in url:
        # urllib.parse reads a backslash as part of the host, urllib3 as the end of it.
        raise ValueError("a backslash, which HTTP libraries read differently")
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise ValueError(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("http and https only")
    if not parts.netloc:
        raise ValueError("no host")
    if "@" in parts.netloc:
        raise ValueError("a user name or password before the host (user@host), which HTTP libraries read differently")
    host, port = _host_and_port(parts.netloc)
    return Target(parts.scheme, _checked_host(host), port if port is not None else _DEFAULT_PORTS[parts.scheme])


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        host = "[" + host + "]"
        if rest and not rest.startswith(":"):
            raise ValueError("text after an IPv6 address")
        port = rest[1:] if rest else None
    else:
        host, colon, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", None)
        port = port if colon else None
    if port is None:
        return host, None
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise ValueError(f"port {port[:12]!r}: a number from 1 to 65535")
    return host, int(port)


def _checked_host(host: str) -> str:
    """The host as connected to; ValueError for one HTTP libraries would read otherwise or not at all."""
    if host.startswith("["):
        inner = host[1:-1]
        if "%" in inner:
            raise ValueError("an IPv6 zone in the host")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ValueError(f"invalid IPv6 address {inner[:60]!r}") from None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")  # as requests encodes it
        except idna.IDNAError as error:
            raise ValueError(f"invalid host name: {error}") from None
    host = host.lower()
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        pass
    else:
        # 127.1, 2130706433, 0x7f.0.0.1: the resolver reads these as addresses, few people can.
        raise ValueError("an IPv4 address in a non-standard form")
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        raise ValueError("a host name over 253 characters")
    for label in name.split("."):
        if not label:
            raise ValueError("an empty label in the host name")
        if len(label) > 63:
            raise ValueError(f"a label of {len(label)} characters in the host name (at most 63)")
        if not _LABEL.fullmatch(label):
            raise ValueError(f"host label {label[:63]!r}: letters, digits, hyphens and underscores only")
    return host


def scheme_of(url: str) -> str:
    """The scheme of a URL, even of one urllib.parse cannot read further (`http://[::1/x`)."""
    try:
        return urlsplit(url).scheme
    except ValueError:
        scheme, colon, _ = url.partition(":")
        return scheme.lower() if colon else ""


# --------------------------------------------------------------------------- the address connected to


def _global(ip) -> bool:
    """Whether `ip` is global, and so is any IPv4 address it carries (mapped, 6to4, Teredo,
    NAT64): such an IPv6 address reaches that IPv4 one."""
    if not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        carried = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(address is None or address.is_global for address in carried)
    return True


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _kind(ip) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        carried = ip.ipv4_mapped or ip.sixtofour
        ip = carried if carried is not None and not carried.is_global else ip
    for kind in ("loopback", "link_local", "private", "unspecified", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-global"


def address_refusal(host: str, address: str, allowed) -> str:
    """Why connecting to `address` (what `host` resolved to) is refused, or "" when it is not.
    `allowed`: allowed_networks' answer."""
    if allowed is True:
        return ""
    ip = ipaddress.ip_address(address.split("%")[0])
    if _global(ip) or any(ip in network for network in allowed or ()):
        return ""
    shown = host if host == address else f"{host} ({address})"
    return (
        f"refused host {shown}: a {_kind(ip)} address; to download from such hosts, set "
        "download.allow_private_hosts to their networks (such as [10.1.0.0/16]) or to true"
    )


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order; socket.gaierror if none."""
    infos = socket.getaddrinfo(host.strip("[]"), port, allowed_gai_family(), socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(host: str, port: int, allowed) -> list[str]:
    """The addresses to connect to for `host`: resolved once, each checked; FetchFailure when
    any is refused (a name that also resolves to an inside address is not trusted)."""
    try:
        addresses = resolve(host, port)
    except UnicodeError:
        raise FetchFailure(f"refused host {host[:80]!r}: not a valid host name") from None
    for address in addresses:
        refusal = address_refusal(host, address, allowed)
        if refusal:
            raise FetchFailure(refusal)
    return addresses


class _GuardedConnection:
    """Resolves its host once, checks every address, and connects to those addresses only.

    The TLS layer still sees the host name (SNI and certificate checks use `host`, which is
    put back before _new_conn returns). A refusal is a FetchFailure, which urllib3 and
    requests pass through unwrapped (it is no OSError), and the pool takes the slot back."""

    allowed = False

    def _new_conn(self):
        name = self._dns_host
        try:
            addresses = checked_addresses(name, self.port, self.allowed)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        failure = NewConnectionError(self, f"Failed to establish a new connection: {name} resolved to no address")
        for address in addresses:
            self._dns_host = address
            try:
                return super()._new_conn()
            except (NewConnectionError, ConnectTimeoutError) as error:
                failure = error  # the next address, as socket.create_connection would
            finally:
                self._dns_host = name
        raise failure


def _guarded_pools(allowed) -> dict:
    """urllib3's pool classes for http and https, whose connections check addresses against `allowed`."""

    class Connection(_GuardedConnection, HTTPConnection):
        pass

    class TLSConnection(_GuardedConnection, HTTPSConnection):
        pass

    Connection.allowed = TLSConnection.allowed = allowed

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    return {"http": Pool, "https": TLSPool}


class GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connections check the address they connect to (_GuardedConnection).

    Through a proxy (HTTP_PROXY, HTTPS_PROXY) the proxy makes the connection: the host's
    addresses are then checked here, resolved by this machine, which is the most that can be
    seen of where the proxy goes."""

    def __init__(self, allowed, **kwargs):
        self.allowed = allowed  # before HTTPAdapter.__init__, which makes the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools(self.allowed)

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if select_proxy(request.url, proxies):
            target = parse_url(request.url)
            try:
                checked_addresses(target.host, target.port, self.allowed)
            except socket.gaierror:
                pass  # the proxy resolves it, or says it cannot
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


def _shown(url) -> str:
    """A URL for a message: cut to 120 characters, control characters escaped."""
    return repr(str(url)[:120])[1:-1]


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 160 else text[:157] + "..."


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
