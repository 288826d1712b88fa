"""Where every benchmark writes its figures: bench/results/{name}.json and .md."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, results: dict, markdown: str) -> None:
    """The figures as JSON, the table as Markdown, and the table on the terminal."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
