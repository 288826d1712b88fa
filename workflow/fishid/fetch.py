"""The download stage: bring every listed record's image into the content-addressed store.

Each finished record is appended to a journal beside the table (one JSON line), so that
a run killed at any point resumes where it stopped: images already stored are not
fetched again, a line torn by the kill is dropped, and the table is built from the
journal, one row per record. The journal is kept after the run (compacted), so that a
rerun, for example after a change of licence policy, fetches only what is new.

The licence policy is applied here: a refused record is not fetched, and its row says
why in `error`.
"""

import io
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from tqdm import tqdm

from fishid import licences, store, synthetic, web
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, read_table, write_table, write_text_atomic

log = logging.getLogger(__name__)
NETWORK_SCHEMES = ("http", "https")


class FetchError(Exception):
    """A record whose image cannot be had; recorded in the table, never fatal for the run."""


def fetch_bytes(media_url: str, client: web.Client | None = None) -> tuple[bytes, int | None]:
    """The image bytes behind a media URL, and the HTTP status when it came over the network."""
    scheme = urlparse(media_url).scheme
    if scheme == "synthetic":
        buffer = io.BytesIO()
        synthetic.render_url(media_url).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), None
    if scheme == "file":
        path = Path(unquote(urlparse(media_url).path))
        if not path.is_file():
            raise FetchError(f"file not found: {path}")
        return path.read_bytes(), None
    if scheme in NETWORK_SCHEMES:
        response = (client or web.Client()).get(media_url, expect="image")
        return response.content, response.status
    if not media_url:
        raise FetchError("no media URL in the record")
    raise FetchError(f"unsupported URL scheme {scheme!r} in {media_url[:80]!r}")


def fetch_record(record: dict, store_root, client: web.Client | None = None) -> dict:
    """The download row of one record; `transient` says whether a later run may succeed."""
    row = {"record_id": record["record_id"], "http_status": "", "error": "", "transient": False}
    try:
        data, status = fetch_bytes(record["media_url"], client)
        row["http_status"] = "" if status is None else str(status)
        kind = store.sniff_image(data)
        if kind is None:
            raise FetchError(f"not an image (starts with {data[:16]!r})")
        ext, content_type = kind
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


def _read_journal(journal: Path, store_root) -> dict[str, dict]:
    """Finished rows by record id (the last line wins); a row whose image vanished is redone."""
    done = {}
    if not journal.exists():
        return done
    text = journal.read_text()
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        # Drop the line being written when the run was killed, so new lines start clean.
        journal.write_text(complete)
    for row in map(json.loads, complete.splitlines()):
        if row["error"] or Path(store_root, row["path"]).exists():
            done[row["record_id"]] = row
        else:
            done.pop(row["record_id"], None)
    return done


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
) -> pd.DataFrame:
    """One download row per record, in the records' order.

    With `policy`, records whose licence it refuses are not fetched; without, every
    record is.
    """
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    settings = settings or web.Settings()
    client = client or web.Client(settings)
    done = _read_journal(journal, store_root)
    refused, pending = {}, []
    for record in records.to_dict("records"):
        reason = licences.refusal(record.get("license", ""), policy) if policy is not None else ""
        if reason:
            refused[record["record_id"]] = refused_row(record, reason)
        elif not _reusable(done.get(record["record_id"]), record):
            pending.append(record)
    if refused:
        log.info("%d record(s) refused by the licence policy, not fetched", len(refused))
    with (
        journal.open("a") as lines,
        ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool,
        tqdm(total=len(pending), desc="download", unit="img", file=sys.stderr, disable=not progress) as bar,
    ):
        futures = [pool.submit(fetch_record, record, store_root, client) for record in pending]
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
    return records["media_url"].map(lambda url: urlparse(url).scheme in NETWORK_SCHEMES)


def run(records_path, table_path, store_root, spec: dict | None = None, offline: bool = False) -> pd.DataFrame:
    """The download stage of one source: `spec` holds `download` settings and the `licences` policy."""
    spec = spec or {}
    records = read_table(records_path, RECORD_COLUMNS)
    journal = Path(str(table_path) + ".journal")
    settings = web.Settings.from_spec(spec.get("download"))
    policy = licences.check_policy(spec.get("licences"))
    for path in store.remove_partials(store_root):
        log.info("removed %s, left by a killed run", path)
    if offline:
        online = records[needs_network(records)]
        if len(online):
            done = _read_journal(journal, store_root)
            missing = [r for r in online.to_dict("records") if not _reusable(done.get(r["record_id"]), r)]
            if missing:
                raise ValueError(
                    f"{records_path}: {len(missing)} image(s) must be downloaded (for example "
                    f"{missing[0]['media_url'][:100]}) but the configuration says offline: true; "
                    "set offline: false to download them"
                )
    table = fetch_all(records, store_root, journal, settings, policy, progress=True)
    write_table(table, table_path, DOWNLOAD_COLUMNS)
    compact_journal(journal, store_root, records["record_id"])
    return table
