"""The `list` step (rule list_source): one source's records and per-taxon summary, written."""

import logging

from fishid import web
from fishid.sources import base as sources
from fishid.sources import taxonomy as _taxonomy
from fishid.tables import RECORD_COLUMNS, write_table

log = logging.getLogger(__name__)


def list_step(source, spec, out, seed=0, download=None, taxonomy=None, offline=False, summary=None):
    client = web.Client(web.Settings.from_spec(download))
    ranks = _taxonomy.Settings.from_spec(taxonomy)
    context = sources.Context(source, seed, offline, client, taxonomy=ranks)
    records, per_taxon = sources.list_source(source, spec, context)
    write_table(records, out, RECORD_COLUMNS)
    if summary:
        write_table(per_taxon, summary, sources.SUMMARY_COLUMNS)
    log.info("%s: %d records of %d taxa", source, len(records), records["taxon"].nunique())
