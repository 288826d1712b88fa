"""The `list` step (rule list_source): one source's records and per-taxon summary, written."""

import logging

from fishid import steps, web
from fishid.sources import base as sources
from fishid.sources import taxonomy as _taxonomy
from fishid.tables import RECORD_COLUMNS, write_table

log = logging.getLogger(__name__)


@steps.declare(
    "list",
    "list one source's records",
    steps.Option("source", "wildcards", positional=True),
    steps.SPEC,
    steps.par("seed", type="int", default=0),
    steps.par("download", type="json", default={}, help="HTTP client settings as JSON"),
    steps.par("taxonomy", type="json", default={}, help="name matching settings (taxonomy:) as JSON"),
    steps.OFFLINE,
    steps.out("out", key="records"),
    steps.out("summary", default=None, help="per-taxon counts and notes (TSV)"),
)
def list_step(source, spec, out, seed=0, download=None, taxonomy=None, offline=False, summary=None):
    client = web.Client(web.Settings.from_spec(download))
    ranks = _taxonomy.Settings.from_spec(taxonomy)
    context = sources.Context(source, seed, offline, client, taxonomy=ranks)
    records, per_taxon = sources.list_source(source, spec, context)
    write_table(records, out, RECORD_COLUMNS)
    if summary:
        write_table(per_taxon, summary, sources.SUMMARY_COLUMNS)
    log.info("%s: %d records of %d taxa", source, len(records), records["taxon"].nunique())
