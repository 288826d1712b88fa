"""The download stage: bring every listed record's image into the content-addressed store.

Each finished record is appended to a journal beside the table (one JSON line), so that
a run killed at any point resumes where it stopped: images already stored are not
fetched again, a line torn by the kill is dropped, and the table is built from the
journal, one row per record. The journal is kept after the run (compacted), so that a
rerun, for example after a change of licence policy, fetches only what is new.

The licence policy is applied here: a refused record is not fetched, and its row says
why in `error`.
"""

import fcntl
import hashlib
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes, urlparse

import pandas as pd
from tqdm import tqdm

from fishid import licences, steps, web
from fishid.download import store
from fishid.sources import synthetic
from fishid.sources.base import FOLDER_KEY
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, read_table, readable, write_table, write_text_atomic

log = logging.getLogger(__name__)
NETWORK_SCHEMES = ("http", "https")
# The source kinds that make the bytes of their own URL scheme, by scheme (each kind's `scheme` and
# `served_bytes`; a test holds this equal to fishid.sources.kinds.BY_SCHEME). Named here, not taken
# from the registry, so that the fetch step's code inputs (fishid.codedeps) are these kinds' modules
# only: an edit to a web source's adapter does not fetch every source again.
SERVED = {declared.scheme: declared for declared in (synthetic.KIND,)}


class FetchError(Exception):
    """A record whose image cannot be had; recorded in the table, never fatal for the run."""


def local_path(media_url: str) -> Path:
    """The path of a file:// URL, byte for byte (file names need not be UTF-8)."""
    try:
        parts = urlparse(media_url)
    except ValueError as error:
        raise FetchError(f"refused file URL ({error}): {readable(media_url[:80])!r}") from None
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"refused file URL with a host ({readable(parts.netloc)[:60]}): local files only")
    return Path(os.fsdecode(unquote_to_bytes(parts.path)))


def folder_root(record: dict) -> Path | None:
    """The folder a `folder` source listed `record` from, or None when it is no such record.

    A folder source's record is `<source>:<path relative to its folder>` with dataset key
    `folder:<folder name>` and the file's URL under that folder (fishid.sources.folder); other
    sources' records cannot have that shape (the listing refuses a `folder:` dataset key
    from them), so their file:// URLs are refused.
    """
    source, key, record_id = (str(record.get(c) or "") for c in ("source", "dataset_key", "record_id"))
    if not source or not key.startswith(FOLDER_KEY) or not record_id.startswith(f"{source}:"):
        return None
    relative = PurePosixPath(record_id[len(source) + 1 :]).parts
    try:
        path = local_path(record["media_url"])
    except FetchError:
        return None
    if not relative or any(part in ("..", ".", "/") for part in relative) or not path.is_absolute():
        return None
    if len(path.parts) <= len(relative) or tuple(map(readable, path.parts[-len(relative) :])) != relative:
        return None
    root = Path(*path.parts[: -len(relative)])
    return root if readable(root.name) == key[len(FOLDER_KEY) :] else None


def read_local(record: dict, local_roots, max_bytes: int) -> bytes:
    """The bytes of a record's file:// URL, when a folder source may read that file.

    `local_roots`: the folders files may be read from; None: the record's own folder
    source's folder (folder_root). The file's real path (symlinks resolved) must lie
    inside it, and it is read up to `max_bytes` like a download.
    """
    path = local_path(record["media_url"])
    shown = readable(str(path))
    if local_roots is None:
        root = folder_root(record)
        roots = [] if root is None else [root]
    else:
        roots = [Path(r) for r in local_roots]
    if not roots:
        raise FetchError("refused file URL: local files are read only by a folder source, under its own folder")
    try:
        real = path.resolve()
        if not any(real.is_relative_to(root.resolve()) for root in roots):
            raise FetchError(f"refused file {shown}: it leads outside the folder source's folder")
        if not real.is_file():
            raise FetchError(f"file not found: {shown}")
        with open(real, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise FetchError(f"cannot read {shown}: {error.strerror or type(error).__name__}") from None
    if len(data) > max_bytes:
        raise FetchError(f"too large: over max_bytes {max_bytes}")
    return data


def fetch_bytes(media_url: str, client: web.Client | None = None) -> tuple[bytes, int | None]:
    """The image bytes behind an http(s) media URL or one of a scheme a source kind serves itself
    (SERVED: synthetic), and the HTTP status when it came over the network. (file:// URLs go
    through read_local, which checks the record.)"""
    scheme = web.scheme_of(media_url)
    if scheme in SERVED:
        try:
            return SERVED[scheme].served_bytes(media_url), None
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise FetchError(f"malformed {scheme} media URL: {error}") from None
    if scheme in NETWORK_SCHEMES:
        response = (client or web.Client()).get(media_url, expect="image")
        return response.content, response.status
    if not media_url:
        raise FetchError("no media URL in the record")
    raise FetchError(f"unsupported URL scheme {scheme!r} in {readable(media_url[:80])!r}")


def describe(data: bytes) -> str:
    """What a body that is no image looks like, without quoting it (it may hold anything)."""
    head = data[:512].lstrip().lower()
    if not data:
        kind = "empty"
    elif head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        kind = "HTML or XML"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        kind = "text"
    else:
        kind = "binary data of no known image format"
    return f"not an image: {len(data)} bytes, {kind}"


def fetch_record(
    record: dict, store_root, client: web.Client | None = None, local_roots=None, max_pixels: int = store.MAX_PIXELS
) -> dict:
    """The download row of one record; `transient` says whether a later run may succeed.

    A file:// URL is read only for a folder source's record, from its folder (read_local;
    `local_roots` names the allowed folders instead). An image whose header declares more
    than `max_pixels` pixels (clean.max_pixels) is refused as a decompression bomb, not stored.
    """
    row = {"record_id": record["record_id"], "http_status": "", "error": "", "transient": False}
    try:
        if web.scheme_of(record["media_url"]) == "file":
            max_bytes = (client.settings if client else web.Settings()).max_bytes
            data, status = read_local(record, local_roots, max_bytes), None
        else:
            data, status = fetch_bytes(record["media_url"], client)
        row["http_status"] = "" if status is None else str(status)
        kind = store.sniff_image(data)
        if kind is None:
            raise FetchError(describe(data))
        ext, content_type = kind
        bomb = store.bomb_refusal(data, max_pixels)
        if bomb:
            raise FetchError(bomb)
        sha256, rel = store.put(store_root, data, ext)
        row.update(sha256=sha256, path=rel, bytes=len(data), content_type=content_type)
    except (FetchError, web.FetchFailure) as error:
        status = getattr(error, "status", None)
        row["http_status"] = row["http_status"] or ("" if status is None else str(status))
        row.update(sha256="", path="", bytes=0, content_type="", error=str(error))
        row["transient"] = bool(getattr(error, "transient", False))
    row["retrieved_at"] = web.utc_now()
    row["media_url"] = record["media_url"]
    return row


def refused_row(record: dict, reason: str) -> dict:
    empty = {"sha256": "", "path": "", "bytes": 0, "content_type": "", "http_status": "", "retrieved_at": ""}
    return {"record_id": record["record_id"], **empty, "error": reason}


def _read_lines(journal) -> dict[str, dict]:
    """A journal's rows by record id (the last line wins), less a line torn by a kill."""
    journal = Path(journal)
    if not journal.exists():
        return {}
    text = journal.read_text()
    return {row["record_id"]: row for row in map(json.loads, text[: text.rfind("\n") + 1].splitlines())}


def _read_journal(journal, store_root, reuse=()) -> dict[str, dict]:
    """Finished rows by record id, from `reuse` (read only) and then this job's `journal`; a
    row whose image vanished is redone."""
    journal = Path(journal)
    if journal.exists():
        text = journal.read_text()
        complete = text[: text.rfind("\n") + 1]
        if complete != text:
            # Drop the line being written when the run was killed, so new lines start clean.
            journal.write_text(complete)
    rows = {}
    for path in [*reuse, journal]:  # this job's own journal last: its rows are the newest
        rows.update(_read_lines(path))
    return {r: row for r, row in rows.items() if row["error"] or Path(store_root, row["path"]).exists()}


def _reusable(row: dict | None, record: dict) -> bool:
    """A journal row stands unless the record now points elsewhere or it failed transiently."""
    if row is None or row.get("transient"):
        return False
    return row.get("media_url", record["media_url"]) == record["media_url"]


def fetch_all(
    records: pd.DataFrame,
    store_root,
    journal,
    settings: web.Settings | None = None,
    policy: dict | None = None,
    progress: bool = False,
    client: web.Client | None = None,
    local_roots=None,
    max_pixels: int = store.MAX_PIXELS,
) -> pd.DataFrame:
    """One download row per record, in the records' order.

    With `policy`, records whose licence it refuses are not fetched; without, every
    record is. `local_roots`: folders file:// URLs may be read from (default: a folder
    source's record, from its own folder only). Holds the journal's lock: a second fetch
    with the same journal waits for this one.
    """
    with journal_locked(journal):
        return _fetch_all(records, store_root, journal, settings, policy, progress, client, local_roots, max_pixels)


@contextmanager
def locked(lock, what: str):
    """Hold `lock` (a flock on that file) for the block; `what` names it in the log.

    Where the file system cannot lock, a warning says so and the block runs."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another fetch holds %s; waiting for it", what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            log.warning("cannot lock %s (%s): two fetches of it are not kept apart", lock, error.strerror)
        yield
    finally:
        os.close(fd)  # releases the lock


def journal_locked(journal):
    """Hold the journal's lock (a file beside it) while it is read and written."""
    return locked(str(journal) + ".lock", f"the journal {journal}")


def source_lock(store_root, records_path, shard: tuple[int, int] | None) -> Path:
    """The lock file of fetching `records_path` (a source's records, or a shard of them) into
    `store_root`: beside the store, named by the records' real path.

    Two fetches of the same records into one store (a second `snakemake` or `fishid fetch` in
    another shell, whatever table each writes) would together exceed the per-host connection
    cap and fetch every image twice: the second waits. Other sources, other stores and the
    shards of one source (each with its share of the caps) fetch side by side."""
    records = Path(records_path).resolve()
    key = hashlib.sha256(os.fsencode(records)).hexdigest()[:16]
    part = f".{shard[0]}-of-{shard[1]}" if shard else ""
    store_path = Path(store_root).resolve()
    return store_path.with_name(f"{store_path.name}.locks") / f"{records.stem}-{key}{part}.lock"


def journals_before(lock: Path, journal) -> list[Path]:
    """The journals of the other tables these records were fetched into this store for: their
    rows stand here too, so that the second of two fetches that took turns fetches nothing
    again. Adds `journal` to the list (kept beside `lock`; call it holding the lock)."""
    listing = lock.with_suffix(".journals")
    journal = Path(journal).resolve()
    try:
        known = [Path(path) for path in json.loads(listing.read_text())]
    except (OSError, ValueError, TypeError):
        known = []  # none yet, or torn: each fetch then stands on its own journal
    if journal not in known:
        write_text_atomic(listing, json.dumps([os.fsdecode(path) for path in [*known, journal]], indent=0) + "\n")
    return [path for path in known if path != journal]


def _fetch_all(
    records, store_root, journal, settings, policy, progress, client, local_roots, max_pixels, reuse=()
) -> pd.DataFrame:
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    settings = settings or web.Settings()
    client = client or web.Client(settings)
    done = _read_journal(journal, store_root, reuse)
    refused, pending = {}, []
    for record in records.to_dict("records"):
        reason = licences.refusal(record.get("license", ""), policy) if policy is not None else ""
        if reason:
            refused[record["record_id"]] = refused_row(record, reason)
        elif not _reusable(done.get(record["record_id"]), record):
            pending.append(record)
    if refused:
        log.info("%d record(s) refused by the licence policy, not fetched", len(refused))
    log.info("%d image(s) to fetch, %d done before", len(pending), len(records) - len(pending) - len(refused))
    with (
        journal.open("a") as lines,
        ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool,
        tqdm(total=len(pending), desc="download", unit="img", file=sys.stderr, disable=not progress) as bar,
    ):
        futures = [pool.submit(fetch_record, record, store_root, client, local_roots, max_pixels) for record in pending]
        try:
            for future in as_completed(futures):
                row = future.result()
                done[row["record_id"]] = row
                # One writer (this thread), one line per record, flushed: a kill loses at most this line.
                lines.write(json.dumps(row) + "\n")
                lines.flush()
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    rows = [refused.get(record_id) or done[record_id] for record_id in records["record_id"]]
    return pd.DataFrame(rows, columns=DOWNLOAD_COLUMNS)


def compact_journal(journal, store_root, record_ids) -> None:
    """Rewrite the journal with one line per record still listed (atomically)."""
    journal = Path(journal)
    done = _read_journal(journal, store_root)
    lines = [json.dumps(done[r]) + "\n" for r in record_ids if r in done]
    write_text_atomic(journal, "".join(lines))


def needs_network(records: pd.DataFrame) -> pd.Series:
    return records["media_url"].map(lambda url: web.scheme_of(url) in NETWORK_SCHEMES)


def shard_of(record_id: str, shards: int) -> int:
    """The shard a record is fetched in: the first 8 hex digits of its id's SHA-256, modulo."""
    return int(hashlib.sha256(record_id.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) % shards


def gather(records_path, shard_paths, table_path, journal=None) -> pd.DataFrame:
    """The source's download table from its shards' tables, in the records' order (the same
    bytes as one unsharded run's table). With `journal`, the shards' journals (beside their
    tables) are merged into it, so that a run with another shard count fetches nothing again."""
    records = read_table(records_path, RECORD_COLUMNS)
    rows = pd.concat([read_table(p, DOWNLOAD_COLUMNS) for p in shard_paths], ignore_index=True)
    missing = sorted(set(records["record_id"]) - set(rows["record_id"]))
    if missing or rows["record_id"].duplicated().any():
        raise ValueError(
            f"the shard tables of {records_path} do not hold each record once ({len(missing)} missing, "
            f"first {missing[:1]}): rerun its fetch shards"
        )
    table = rows.set_index("record_id").loc[records["record_id"]].reset_index()
    write_table(table, table_path, DOWNLOAD_COLUMNS)
    if journal is not None:
        with journal_locked(journal):
            done = {}
            for path in [journal, *(default_journal(p) for p in shard_paths)]:
                done.update(_read_lines(path))
            lines = [json.dumps(done[r]) + "\n" for r in records["record_id"] if r in done]
            write_text_atomic(Path(journal), "".join(lines))
    return table


def default_journal(table_path) -> Path:
    return Path(str(table_path) + ".journal")


def run(
    records_path,
    table_path,
    store_root,
    spec: dict | None = None,
    offline: bool = False,
    shard: tuple[int, int] | None = None,
    reuse=(),
) -> pd.DataFrame:
    """The download stage of one source: `spec` holds `download` settings, the `licences` policy
    and `max_pixels` (clean.max_pixels: an image whose header declares more is refused here).

    The journal lies beside `table_path`; `reuse`: other journals whose rows stand (read only).
    With `shard` (index, count), only the records of that shard (shard_of) are fetched, with
    1/count of the source's threads, per-host connections and request rate, so that its
    shards side by side keep the caps that `download` sets for the source. A second fetch of
    the same records (or shard) into the same store waits for this one (source_lock)."""
    spec = spec or {}
    records = read_table(records_path, RECORD_COLUMNS)
    settings = web.Settings.from_spec(spec.get("download"))
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index} of {count}: want 0 <= index < count")
        listed = len(records)
        records = records[[shard_of(r, count) == index for r in records["record_id"]]]
        log.info("shard %d of %d: %d of %d record(s)", index, count, len(records), listed)
        settings = replace(
            settings,
            workers=max(1, settings.workers // count),
            per_host=max(1, settings.per_host // count),
            rate=settings.rate / count,
        )
    journal = default_journal(table_path)
    policy = licences.check_policy(spec.get("licences"))
    max_pixels = int(spec.get("max_pixels") or store.MAX_PIXELS)
    lock = source_lock(store_root, records_path, shard)
    with locked(lock, f"the records {records_path} in the store {store_root}"), journal_locked(journal):
        reuse = [*reuse, *journals_before(lock, journal)]
        for path in store.remove_partials(store_root):
            log.info("removed %s, left by a killed run", path)
        if offline:
            done = _read_journal(journal, store_root, reuse)
            online = records[needs_network(records)].to_dict("records")
            missing = [r for r in online if not _reusable(done.get(r["record_id"]), r)]
            if missing:
                raise ValueError(
                    f"{records_path}: {len(missing)} image(s) must be downloaded (for example "
                    f"{missing[0]['media_url'][:100]}) but the configuration says offline: true; "
                    "set offline: false to download them"
                )
        table = _fetch_all(records, store_root, journal, settings, policy, True, None, None, max_pixels, reuse)
        write_table(table, table_path, DOWNLOAD_COLUMNS)
        compact_journal(journal, store_root, records["record_id"])
    return table


@steps.declare(
    "fetch",
    "bring a source's images into the store",
    steps.inp("records"),
    steps.par("store"),
    steps.par("spec", type="json", default={}, help="download settings and licence policy as JSON"),
    steps.OFFLINE,
    steps.par("shard", type="int", nargs=2, default=None, help="do shard INDEX of COUNT"),
    steps.par("reuse", nargs="+", default=[], help="journals whose finished downloads stand (read only)"),
    steps.out("out", key=""),
)
def fetch_step(records, store, out, spec=None, offline=False, shard=None, reuse=()):
    """The `fetch` step (rules fetch_images, fetch_shard): run, then a summary of what failed."""
    table = run(records, out, store, spec, offline, shard, reuse)
    failed = table[table["error"] != ""]
    log.info(
        "%d stored, %d not: %s", len(table) - len(failed), len(failed), failed["error"].value_counts().head(8).to_dict()
    )


@steps.declare(
    "gather-downloads",
    "a source's download table from its shards' tables",
    steps.inp("records"),
    steps.inp("shard_tables", key="shards", nargs="+"),
    steps.par("journal", default=None, help="the source's journal, into which the shards' journals are merged"),
    steps.out("out", key=""),
)
def gather_step(records, shard_tables, out, journal=None):
    """The `gather-downloads` step (rule fetch_images with download.shards above one)."""
    table = gather(records, shard_tables, out, journal)
    log.info("%d rows from %d shard table(s)", len(table), len(shard_tables))
