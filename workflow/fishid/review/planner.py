"""The review app's plan (fishid.review.plan), made once per state of the files it depends on
rather than once per page view: at 20,000 photos a dry run takes 4-5 s
(bench/results/review_scale.md), longer than a page may.

A plan is made in one background thread, kept in memory with the signature of its inputs
(paths, modification times, sizes) taken just before it was made, and shown only while that
signature still holds: a decision, an edited configuration or a job of a running Snakemake
changes it, and the next view waits for (or announces) a new plan instead of showing the old
one. Nothing is written in the project."""

import threading
import time
from pathlib import Path

from fishid import layout
from fishid.config import project_path, user_tables
from fishid.report import audit

# Snakemake's own state that its jobs change (a marker per running job's output, a record per
# finished one); not its log/ or iocache/, which a dry run writes too.
SNAKEMAKE_STATE = (".snakemake/incomplete", ".snakemake/metadata")


def inputs(root, configfiles, config: dict | None) -> dict[str, list[Path]]:
    """The files and folders whose state the plan is made from, by what they hold (listed now):
    the configuration (the given files, config/ and the tables it names: the decisions among
    them), the code Snakemake reads, the clean stage's per-image cache (its folders: an entry
    is written by renaming), the run's tables, and Snakemake's record of its jobs. `config`:
    the configuration read, or None when it cannot be (its files are still listed)."""
    root = Path(root)
    tables = []
    try:
        named = user_tables(config or {})
    except (AttributeError, TypeError, ValueError):
        named = {}  # a configuration the dry run refuses, saying why; its files are listed
    for key, path in named.items():
        try:
            tables.append(project_path(root, path, key))
        except ValueError:
            continue
    cache = root / layout.CLEAN_CACHE
    code = [root / "Snakefile", root / "workflow/Snakefile"]
    code += sorted(p for p in (root / "workflow").rglob("*") if p.suffix in (".smk", ".py", ".yaml"))
    return {
        "config": [Path(root, p) for p in configfiles] + sorted((root / "config").glob("*")) + tables,
        "code": code,
        "clean cache": [cache, *sorted(p for p in cache.glob("*") if p.is_dir())],
        **audit.input_files(root),
        "snakemake": [root / name for name in SNAKEMAKE_STATE],
    }


class Planner:
    """`make()` (a plan) for the current `signature()`, made in a background thread, one at a
    time: views and decisions while one is made ask for the next, made once it is done."""

    def __init__(self, signature, make):
        self._signature, self._make = signature, make
        self._changed = threading.Condition()
        self._made = None  # (signature, plan, when it was taken)
        self._wanted = False
        self._busy = False

    def _current(self, key) -> bool:
        return self._made is not None and self._made[0] == key

    def request(self):
        """Have the plan of the files' present state made (after the one under way, if any;
        skipped if the plan kept is of that state): cheap, for the answer to a decision."""
        with self._changed:
            self._ask()

    def _ask(self):
        """request(), the lock held."""
        self._wanted = True
        if not self._busy:
            self._busy = True
            threading.Thread(target=self._work, name="fishid-plan", daemon=True).start()

    def get(self, wait: float) -> tuple[dict, float] | None:
        """(the plan, the time.time() of the state it describes) for the files' present state,
        waiting up to `wait` seconds for it to be made; None if it is not made by then."""
        key = self._signature()
        with self._changed:
            if not self._current(key):
                self._ask()
            self._changed.wait_for(lambda: self._current(key), timeout=wait)
            return self._made[1:] if self._current(key) else None

    def _work(self):
        try:
            while self._next():
                pass
        except BaseException:
            with self._changed:
                self._busy = False  # the next request starts another thread
            raise

    def _next(self) -> bool:
        """Make the plan asked for last, if any; whether one was asked for."""
        with self._changed:
            if not self._wanted:
                self._busy = False
                return False
            self._wanted = False
        # Taken before the dry run reads anything: a file written meanwhile makes the plan one
        # of a newer state than its signature says, never of an older one.
        key, taken = self._signature(), time.time()
        with self._changed:
            if self._current(key):
                return True
        try:
            made = self._make()
        except Exception as problem:  # shown on the page, as a failed dry run is
            made = {"ok": False, "counts": {}, "jobs": [], "datasets": None, "message": repr(problem)}
        with self._changed:
            self._made = (key, made, taken)
            self._changed.notify_all()
        return True
