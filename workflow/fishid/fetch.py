"""The download stage: bring every listed record's image into the content-addressed store.

Progress goes to a journal beside the table, one line per finished record, so that a
run killed halfway resumes where it stopped instead of fetching everything again.
"""

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from fishid import store, synthetic
from fishid.tables import DOWNLOAD_COLUMNS, RECORD_COLUMNS, read_table, write_table


class FetchError(Exception):
    """A record whose image cannot be had; recorded in the table, never fatal for the run."""


def fetch_bytes(media_url: str) -> tuple[bytes, str]:
    """The image bytes behind a media URL and how they were obtained."""
    scheme = urlparse(media_url).scheme
    if scheme == "synthetic":
        buffer = io.BytesIO()
        synthetic.render_url(media_url).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "rendered"
    if scheme == "file":
        path = Path(urlparse(media_url).path)
        if not path.is_file():
            raise FetchError(f"file not found: {path}")
        return path.read_bytes(), "copied"
    raise FetchError(f"unsupported URL scheme {scheme!r} in {media_url[:80]!r}")


def fetch_record(record: dict, store_root) -> dict:
    row = {"record_id": record["record_id"], "http_status": "", "error": ""}
    try:
        data, _ = fetch_bytes(record["media_url"])
        kind = store.sniff_image(data)
        if kind is None:
            raise FetchError(f"not an image (starts with {data[:16]!r})")
        ext, content_type = kind
        sha256, rel = store.put(store_root, data, ext)
        row.update(sha256=sha256, path=rel, bytes=len(data), content_type=content_type)
    except FetchError as error:
        row.update(sha256="", path="", bytes=0, content_type="", error=str(error))
    row["retrieved_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return row


def _read_journal(journal: Path, store_root) -> dict[str, dict]:
    """Finished rows by record id; a row whose image vanished from the store is redone."""
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
    return done


def fetch_all(records: pd.DataFrame, store_root, journal) -> pd.DataFrame:
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    done = _read_journal(journal, store_root)
    with journal.open("a") as log:
        for record in records.to_dict("records"):
            if record["record_id"] in done:
                continue
            row = fetch_record(record, store_root)
            done[row["record_id"]] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
    rows = [done[record_id] for record_id in records["record_id"]]
    return pd.DataFrame(rows, columns=DOWNLOAD_COLUMNS)


def run(records_path, table_path, store_root) -> pd.DataFrame:
    records = read_table(records_path, RECORD_COLUMNS)
    journal = Path(str(table_path) + ".journal")
    table = fetch_all(records, store_root, journal)
    write_table(table, table_path, DOWNLOAD_COLUMNS)
    # The table now holds everything the journal did.
    journal.unlink()
    return table
