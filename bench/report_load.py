"""The report's weight: its size, and how long headless Chromium takes to show it.

Median over fresh pages in one browser (Debian's chromium, as the tests use it): seconds
from navigation start to the load event, and to every image decoded (what a reader waits
for). Results go to bench/results/report_load.json and .md.

    make demo && python bench/report_load.py            # results/report/index.html
    python bench/report_load.py path/to/index.html --repeats 9
"""

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "workflow"))

from output import write_results  # noqa: E402
from reportcheck import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

MEASURE = """async () => {
    await Promise.all(Array.from(document.images, image => image.decode()));
    return [performance.getEntriesByType("navigation")[0].loadEventEnd, performance.now()];
}"""


def load_seconds(report: Path, repeats: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    times = {"load": [], "decoded": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(report.as_uri(), wait_until="load")
            load, decoded = page.evaluate(MEASURE)
            times["load"].append(load / 1000)
            times["decoded"].append(decoded / 1000)
            page.close()
        browser.close()
    return {key: round(statistics.median(values), 3) for key, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, default=Path("results/report/index.html"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("chromium is not installed (Debian: apt-get install chromium)")
    if not args.report.is_file():
        sys.exit(f"no report at {args.report}: run `make demo` first, or name one")
    seconds = load_seconds(args.report.resolve(), args.repeats)
    results = {
        "report": str(args.report),
        "bytes": args.report.stat().st_size,
        "repeats": args.repeats,
        "median_seconds": seconds,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
    }
    size = f"{results['bytes'] / 1e6:.1f} MB"
    markdown = (
        "| report | size | load event | every image decoded |\n|---|---|---|---|\n"
        f"| {args.report} | {size} | {seconds['load']:.2f} s | {seconds['decoded']:.2f} s |\n"
    )
    write_results("report_load", results, markdown)


if __name__ == "__main__":
    main()
