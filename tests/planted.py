"""What the synthetic source's planted defects must come to, checked on a run's own tables: each
planted record left out for its own reason, and no ordinary photo with them. Used by the unit
test of the planting (tests/unit/test_synthetic_defects.py) and by the demo's test."""

from fishid.sources import synthetic, synthetic_defects

# The reason each kind is dropped for in cleaning (the clean table's row of its image).
DROPPED_FOR = {
    "label_conflict": lambda row, excluded: row["reason"].startswith("label conflict: same photo listed as "),
    "near_duplicate": lambda row, excluded: row["reason"].startswith("near duplicate: of "),
    "drawing": lambda row, excluded: row["reason"].startswith("not a photo: ") and "few colours" in row["reason"],
    "stamp": lambda row, excluded: row["reason"].startswith("not a photo: ") and "few colours" in row["reason"],
    "greyscale": lambda row, excluded: row["reason"].startswith("not a photo: greyscale (mid-tone chroma "),
    "preserved_specimen": lambda row, excluded: (
        row["reason"] == "basis of record: PRESERVED_SPECIMEN (a preserved specimen, not a live fish)"
    ),
    "ethanol": lambda row, excluded: row["reason"] == "preparations: ethanol (a specimen in preservative)",
    "truncated": lambda row, excluded: row["reason"].startswith("undecodable: OSError: image file is truncated"),
    "excluded": lambda row, excluded: row["reason"] == f"excluded by user: {excluded}",
    "too_small": lambda row, excluded: row["reason"].startswith("too small: "),
}
# The kinds the download refuses, with the start of their download row's error.
REFUSED_FOR = {"html": ("not an image: ",), "licence": ("licence unknown: ", "licence not allowed: ")}


def kind_of(record_id: str) -> str:
    """The planted defect a record id names ('' for an ordinary photo)."""
    return record_id.split(":defect-", 1)[1].rsplit("-", 1)[0] if ":defect-" in record_id else ""


def clean_rows(clean) -> dict[str, dict]:
    """The clean table's row of each record's image, by record id (booleans as booleans)."""
    rows = {}
    for row in clean.to_dict("records"):
        row["kept"] = str(row["kept"]) == "True"
        rows.update(dict.fromkeys(str(row["record_ids"]).split(","), row))
    return rows


def check(records, downloads, rows: dict[str, dict], exclusions: dict[str, str]) -> set[str]:
    """Assert what each planted defect came to, and that every ordinary photo was kept with no
    reason; return the kinds seen."""
    errors = dict(zip(downloads["record_id"], downloads["error"]))
    seen = set()
    for record in records.to_dict("records"):
        rid, kind = record["record_id"], kind_of(record["record_id"])
        if kind:
            assert synthetic.decode_url(record["media_url"])[1]["defect"] == kind, rid
            seen.add(kind)
        if kind in REFUSED_FOR:
            assert errors[rid].startswith(REFUSED_FOR[kind]) and rid not in rows, (rid, errors[rid])
            continue
        assert errors[rid] == "", (rid, errors[rid])
        row = rows[rid]
        if kind in DROPPED_FOR:
            assert not row["kept"] and DROPPED_FOR[kind](row, exclusions.get(rid)), (rid, row["reason"])
        else:  # an ordinary photo, or one of several of an occurrence
            assert row["kept"] and row["reason"] == "", (rid, row["reason"])
        if kind == "near_duplicate":
            original = rows[synthetic.decode_url(record["media_url"])[1]["copy_of"]]
            assert original["kept"] and row["duplicate_of"] == original["sha256"], rid
        if kind == "same_occurrence":
            assert record["occurrence_id"] == synthetic_defects.SAME_OCCURRENCE, rid
    occurrence = {rows[r]["group"] for r in records["record_id"] if kind_of(r) == "same_occurrence"}
    assert len(occurrence) <= 1, occurrence
    return seen
