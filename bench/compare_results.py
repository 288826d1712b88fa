"""Are two runs' results the same? Compares what a run computed, file by file, byte for byte.

    python bench/compare_results.py PROJECT_A PROJECT_B    # two project folders

Compared: the stage tables (records, downloads, clean, splits), each model's and backbone's
history, predictions and metrics, and the label-error queue, less when each step ran and how
long it took: what a refactoring or a faster schedule must leave as it was. Not compared: weights (PyTorch's
pickles record storage offsets), figures and the report (they embed dates, timings and fonts),
logs, benchmarks. Exit status 0 when every compared file is identical and present in both.
"""

import argparse
import csv
import hashlib
import io
import json
import sys
from pathlib import Path

COMPARED = (
    "resources/records/*.tsv",
    "resources/downloads/*.tsv",
    "results/clean/*.tsv",
    "results/splits/*.tsv",
    "results/models/*/history.csv",
    "results/models/*/predictions.tsv",
    "results/models/*/metrics.json",
    "results/backbones/*/history.csv",
    "results/review/label_issues.tsv",
    "results/review/label_issues.json",
)
# When a run happened and how long its steps took differ from run to run; what it computed does not.
WHEN = {"seconds", "data_seconds", "listed_at", "retrieved_at"}


def content(path: Path) -> bytes:
    """The file's bytes, less the columns or keys in WHEN."""
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        if isinstance(document, dict):
            document = {key: value for key, value in document.items() if key not in WHEN}
        return json.dumps(document, sort_keys=True).encode()
    text = path.read_text()
    delimiter = "\t" if path.suffix == ".tsv" else ","
    header = text.partition("\n")[0].split(delimiter)
    if not WHEN & set(header):
        return text.encode()
    rows = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    return "\n".join(repr({k: v for k, v in row.items() if k not in WHEN}) for row in rows).encode()


def digests(project: Path) -> dict[str, str]:
    return {
        str(path.relative_to(project)): hashlib.sha256(content(path)).hexdigest()
        for pattern in COMPARED
        for path in sorted(project.glob(pattern))
    }


def differences(first: dict[str, str], second: dict[str, str]) -> list[str]:
    lines = [f"only in the first: {name}" for name in sorted(first.keys() - second.keys())]
    lines += [f"only in the second: {name}" for name in sorted(second.keys() - first.keys())]
    lines += [f"differs: {name}" for name in sorted(first.keys() & second.keys()) if first[name] != second[name]]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    first, second = (digests(path) for path in (args.first, args.second))
    if not first:
        print(f"{args.first}: no results to compare", file=sys.stderr)
        return 1
    found = differences(first, second)
    print("\n".join(found) or f"{len(first)} files identical")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
