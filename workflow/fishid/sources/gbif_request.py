"""GBIF occurrence downloads: requesting one, waiting for it politely, fetching it, recording it.

A `gbif_download` source with a `request` block asks GBIF (pygbif's `occurrences.download`)
for a Darwin Core archive of the occurrences with still images of its taxa, optionally of
some countries, years and bases of record. The GBIF account comes from the environment
(GBIF_USER, GBIF_PWD, GBIF_EMAIL), never from the config file, which is committed. GBIF
answers with a key at once and builds the archive in minutes to hours; the key is recorded
at once in `<cache>/<source>.request.json` with the hash of the request, so that a rerun
waits for that download rather than requesting another, and a changed request makes a new one.

Every download fetched, requested or given by key, leaves what GBIF says of it (key, status,
DOI, date) in `<cache>/<key>.json` beside its zip: the citation cites that DOI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import requests

from fishid import web
from fishid.config import default
from fishid.sources.base import Context
from fishid.sources.gbif import api_root, asking, resolve
from fishid.tables import write_text_atomic

log = logging.getLogger(__name__)

# COL Extended Release: pygbif's default checklist for matching names and for downloads.
DEFAULT_CHECKLIST = "7ddf754f-d193-4cc9-b351-99906754a03b"
CREDENTIALS = ("GBIF_USER", "GBIF_PWD", "GBIF_EMAIL")


def _setting(spec: dict, key: str):
    """A key of the source's entry, or its default (config/schema.yaml's source_gbif_download)."""
    return spec[key] if key in spec else default(key, definition="source_gbif_download")


# The request's fields that decide what GBIF builds: only a change to these makes a new download.
QUERY_FIELDS = ("taxa", "taxon_keys", "checklist_key", "country", "year", "basis_of_record")
WAITING = {"PREPARING", "RUNNING", "SUSPENDED"}
ENDED = {"FAILED", "KILLED", "CANCELLED", "FILE_ERASED"}
POLL_CAP = 900.0  # seconds: the longest pause between two status checks
KEY = re.compile(r"[0-9]+-[0-9]+")
# How far GBIF's clock may run behind ours when a lost download request is looked for.
CLOCK_SKEW = timedelta(minutes=10)
DOI = re.compile(r"10\.[0-9]{4,9}/[A-Za-z0-9._/-]+")
_REFUSED_STATUS = re.compile(r"error status code (\d{3})")


class DownloadEnded(ValueError):
    """A download that GBIF will never deliver (FAILED, KILLED, CANCELLED, FILE_ERASED)."""

    def __init__(self, key: str, status: str):
        super().__init__(
            f"gbif: download {key} ended {status} at GBIF (https://www.gbif.org/occurrence/download/{key})"
        )
        self.key = key
        self.status = status


def record_path(cache, name: str) -> Path:
    return Path(cache, f"{name}.request.json")


def meta_path(cache, key: str) -> Path:
    return Path(cache, f"{key}.json")


def read_json(path: Path) -> dict:
    """The JSON object in `path`, or {} when there is none (or it is not one)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: dict) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def credentials(environ) -> dict:
    """pygbif's account arguments from the environment; every missing variable named at once."""
    missing = [name for name in CREDENTIALS if not environ.get(name)]
    if missing:
        raise ValueError(
            f"gbif: requesting a download needs a GBIF account: set the environment variable(s) {', '.join(missing)}"
            " (never in the config file)"
        )
    return {"user": environ["GBIF_USER"], "pwd": environ["GBIF_PWD"], "email": environ["GBIF_EMAIL"]}


def request_hash(request: dict) -> str:
    query = {field: request[field] for field in QUERY_FIELDS if field in request}
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode("utf-8")).hexdigest()


def predicate(request: dict, taxon_keys: list[str]) -> dict:
    """The download's predicate: the taxa, with still images, and the optional filters."""
    checklist = request.get("checklist_key", DEFAULT_CHECKLIST)
    # The checklist is named on the taxon predicate itself: pygbif would otherwise guess it
    # from the keys' Python type (int: the old GBIF backbone, str: COL).
    parts = [
        {"type": "in", "key": "TAXON_KEY", "values": list(taxon_keys), "checklistKey": checklist},
        {"type": "equals", "key": "MEDIA_TYPE", "value": "StillImage"},
    ]
    if request.get("country"):
        parts.append({"type": "in", "key": "COUNTRY", "values": list(request["country"])})
    if request.get("year"):
        first, last = request["year"]
        parts.append({"type": "greaterThanOrEquals", "key": "YEAR", "value": str(first)})
        parts.append({"type": "lessThanOrEquals", "key": "YEAR", "value": str(last)})
    if request.get("basis_of_record"):
        parts.append({"type": "in", "key": "BASIS_OF_RECORD", "values": list(request["basis_of_record"])})
    return {"type": "and", "predicates": parts}


def facts(key: str, meta: dict) -> dict:
    """What is kept of GBIF's metadata of a download, each field checked (the server is not
    trusted), under GBIF's names: facts(key, facts(key, meta)) is facts(key, meta)."""
    doi = str(meta.get("doi") or "")
    created = str(meta.get("created") or "")[:10]
    try:
        created = date.fromisoformat(created).isoformat()
    except ValueError:
        created = ""
    total = meta.get("totalRecords")
    return {
        "key": key,
        "status": str(meta.get("status") or "")[:40],
        "doi": doi if DOI.fullmatch(doi) else "",
        "created": created,
        "totalRecords": total if isinstance(total, int) else None,
    }


def _timeout(context: Context):
    settings = context.client.settings
    return (settings.connect_timeout, settings.read_timeout)


def taxon_keys(request: dict, context: Context) -> list[str]:
    """The request's keys: those given, then each name's accepted key in the checklist."""
    from pygbif import species

    checklist = request.get("checklist_key", DEFAULT_CHECKLIST)
    keys = [str(key) for key in request.get("taxon_keys", [])]
    for name in request.get("taxa", []):

        def match(name=name):
            return species.name_backbone(
                scientificName=name, strict=True, checklistKey=checklist, timeout=_timeout(context)
            )

        keys.append(str(resolve(name, asking(context.client, match, f"gbif: matching {name!r}"))["key"]))
    return list(dict.fromkeys(keys))


def _refusal(error: Exception) -> web.FetchFailure:
    """The failure a refused download request is. pygbif 0.7.0 raises it as GbifDownloadError
    with the status only in its message, not as an HTTPError: read it back, so that 420 ("too
    many downloads running") waits and retries under the client's policy like any transient status."""
    found = _REFUSED_STATUS.search(str(error))
    status = int(found.group(1)) if found else None
    hint = ": check GBIF_USER and GBIF_PWD" if status in (401, 403) else ""
    return web.FetchFailure(
        f"download request refused (HTTP {status}){hint}", status=status, transient=status in web.TRANSIENT_STATUSES
    )


def post_request(query: dict, checklist: str, account: dict, context: Context) -> str:
    """The key GBIF gives the download it will build for `query` (a predicate).

    A request whose answer was lost (a timeout, a cut connection, a 5xx) may have reached
    GBIF all the same: before asking again, the account's downloads are searched for one of
    this predicate ordered since the first attempt, so that GBIF does not build it twice.
    A refusal (4xx) made nothing: it is simply asked again, as the client's policy says."""
    from pygbif import occurrences
    from pygbif.occurrences.download import GbifDownloadError

    since, unanswered = datetime.now(UTC) - CLOCK_SKEW, False

    def call():
        nonlocal unanswered
        if unanswered and (twin := ordered_since(query, since, account)):
            log.info("gbif: the unanswered request reached GBIF: download %s", twin)
            return twin
        try:
            key, _ = occurrences.download(query, format="DWCA", checklistKey=checklist, **account)
        except GbifDownloadError as error:
            refusal = _refusal(error)
            # A refusal (420: too many downloads running) made nothing; a server error may have.
            unanswered = refusal.status is None or refusal.status >= 500
            raise refusal from None
        except requests.RequestException:
            unanswered = True
            raise
        return key

    key = str(asking(context.client, call, "gbif: requesting a download") or "").strip()
    # The key names files in the cache: anything else than GBIF's shape is refused.
    if not KEY.fullmatch(key):
        raise ValueError(f"gbif: the download request answered {key[:80]!r}, not a download key")
    return key


def ordered_since(query: dict, since: datetime, account: dict) -> str | None:
    """The key of a download of the account's, not ended, asked for `query` at or after `since`."""
    from pygbif import occurrences
    from pygbif.gbifutils import NoResultException

    try:
        listed = occurrences.download_list(user=account["user"], pwd=account["pwd"], limit=20)
    except (NoResultException, requests.JSONDecodeError, KeyError, TypeError) as error:
        # Not a list of downloads (an HTML page, a torn body): nothing to reuse is known.
        log.warning("gbif: the account's downloads could not be read (%s): requesting again", error)
        return None
    for download in listed["results"] if isinstance(listed["results"], list) else []:
        if not isinstance(download, dict) or str(download.get("status")) in ENDED:
            continue
        try:
            created = datetime.fromisoformat(str(download.get("created")))
        except ValueError:
            continue
        key, asked = str(download.get("key") or ""), download.get("request")
        predicate = asked.get("predicate") if isinstance(asked, dict) else None
        if created.tzinfo and created >= since and KEY.fullmatch(key) and asks_for(predicate, query):
            return key
    return None


def asks_for(stored, query) -> bool:
    """Whether GBIF's stored copy of a predicate is `query`: every field of ours is there with
    our value (GBIF adds defaults of its own, such as `matchCase`; numbers may come back as text)."""
    if isinstance(query, dict):
        return isinstance(stored, dict) and all(asks_for(stored.get(k), v) for k, v in query.items())
    if isinstance(query, list):
        return isinstance(stored, list) and len(stored) == len(query) and all(map(asks_for, stored, query))
    return str(stored) == str(query)


def new_request(request: dict, context: Context) -> dict:
    """Request the download; the record to keep of it."""
    account = credentials(os.environ)  # before any request, so that nothing is asked in vain
    if context.offline:
        raise ValueError("gbif: requesting a download needs the network, and the configuration says offline: true")
    query = predicate(request, taxon_keys(request, context))
    key = post_request(query, request.get("checklist_key", DEFAULT_CHECKLIST), account, context)
    log.info("gbif: requested download %s (https://www.gbif.org/occurrence/download/%s)", key, key)
    return {
        "hash": request_hash(request),
        "request": request,
        "predicate": query,
        "key": key,
        "status": "PREPARING",
        "doi": "",
        "requested_at": web.utc_now(),
    }


def wait_until_ready(key: str, context: Context, spec: dict) -> dict:
    """GBIF's metadata of download `key` once it SUCCEEDED, checking its status ever less often
    (from `poll` seconds, doubling, at most POLL_CAP apart) for at most `wait_hours`."""
    from pygbif import occurrences

    poll, limit = float(_setting(spec, "poll")), float(_setting(spec, "wait_hours")) * 3600
    started = time.monotonic()
    while True:
        meta = asking(
            context.client,
            lambda: occurrences.download_meta(key, timeout=_timeout(context)),
            f"gbif: status of download {key}",
        )
        status = str(meta.get("status") or "")[:40]
        if status == "SUCCEEDED":
            return meta
        if status in ENDED:
            raise DownloadEnded(key, status)
        if status not in WAITING:
            raise ValueError(f"gbif: download {key} has status {status!r}, which fishid does not know")
        if time.monotonic() - started + poll > limit:
            raise ValueError(
                f"gbif: download {key} is still {status} after {limit / 3600:g} h (wait_hours); "
                "rerun later to go on waiting: its key is recorded, no new download is requested"
            )
        log.info("gbif: download %s is %s; checking again in %.0f s", key, status, poll)
        time.sleep(poll)
        poll = min(poll * 2, POLL_CAP)


def fetch_download(key: str, context: Context, spec: dict) -> Path:
    """The zip of GBIF download `key`, fetched once with pygbif into the cache when it is ready."""
    from pygbif import occurrences

    cache, api = _setting(spec, "cache"), _setting(spec, "api")
    target = Path(cache, f"{key}.zip")
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    if context.offline:
        raise ValueError(f"GBIF download {key} is not at {target} and the configuration says offline: true")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp, api_root(api, context.client):
        try:
            meta = wait_until_ready(key, context, spec)
        except DownloadEnded as ended:
            write_json(meta_path(cache, key), facts(key, {"status": ended.status}))
            raise
        write_json(meta_path(cache, key), facts(key, meta))
        result = asking(
            context.client,
            lambda: occurrences.download_get(key, path=tmp, timeout=_timeout(context)),
            f"gbif: fetching download {key}",
        )
        path = Path(result["path"])
        if not zipfile.is_zipfile(path):
            raise ValueError(f"gbif: download {key} did not arrive as a zip file")
        # Renamed into place whole, so a killed run never leaves half a zip that looks done.
        os.replace(path, target)
    return target


def requested_archive(name: str, spec: dict, context: Context) -> Path:
    """The zip of the download source `name` requests: the recorded one while the request is
    unchanged and GBIF has not ended it, else a new one."""
    cache, request = _setting(spec, "cache"), spec["request"]
    path = record_path(cache, name)
    record = read_json(path)
    if record.get("hash") != request_hash(request) or record.get("status") in ENDED or not record.get("key"):
        if record.get("key"):
            log.info("gbif: %s: not reusing download %s (%s)", name, record["key"], record.get("status"))
        with api_root(_setting(spec, "api"), context.client, timeout=_timeout(context)):
            record = new_request(request, context)
        # Kept before waiting: a run killed while GBIF builds the archive must not request it again.
        write_json(path, record)
    try:
        archive = fetch_download(record["key"], context, spec)
    except DownloadEnded as ended:
        write_json(path, record | {"status": ended.status})
        raise
    known = read_json(meta_path(cache, record["key"]))
    record = record | {field: known[field] for field in ("status", "doi", "created") if known.get(field)}
    write_json(path, record)
    return archive


def download_of(name: str, spec: dict) -> dict:
    """What is recorded of a gbif_download source's download: its key and GBIF's facts (DOI,
    date), as far as known; {} for an archive by path whose name is not a download key."""
    cache = _setting(spec, "cache")
    if spec.get("request"):
        key = str(read_json(record_path(cache, name)).get("key") or "")
    elif spec.get("key"):
        key = spec["key"]
    else:
        key = Path(spec["path"]).name.removesuffix(".zip")
    if not KEY.fullmatch(key):
        return {}
    return facts(key, read_json(meta_path(cache, key)))
