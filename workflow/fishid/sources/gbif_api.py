"""pygbif's requests through the project's web client, and GBIF's name shapes: what every
module that asks GBIF shares (the gbif source, GBIF downloads, name matching, `fishid init`),
apart from the adapters, so that name matching (fishid.sources.taxonomy), which every listing
runs, needs no adapter.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import requests

from fishid import web

GBIF_ROOT = "https://api.gbif.org/"
_PYGBIF_ROOTS = ("https://api.gbif.org/", "http://api.gbif.org/")


@contextmanager
def api_root(root: str, client: web.Client, timeout=None):
    """Send pygbif's requests to `root` instead of api.gbif.org, through `client`'s guard, and
    give those it sends without a timeout (the download request, a POST) `timeout`, so that a
    server that never answers cannot hold the stage.

    pygbif writes api.gbif.org into its URLs (some through `gbif_baseurl`, some as
    literals) and opens a requests Session for each request, so the origin is swapped, and the
    guard (web.Client.guard: every address connected to is checked, redirects included) put
    on, where every one of them passes: Session.request. Paths, parameters and parsing stay
    pygbif's own. `root` names a mirror or a caching proxy, or, in the tests, a loopback server
    with GBIF-shaped answers.
    """
    root = root.rstrip("/") + "/"
    original = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        if root != GBIF_ROOT and isinstance(url, str):
            for prefix in _PYGBIF_ROOTS:
                if url.startswith(prefix):
                    url = root + url[len(prefix) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout
        client.guard(self)
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request
    try:
        yield
    finally:
        requests.Session.request = original


def asking(client: web.Client, call, what: str):
    """`call()` (a pygbif request) under the client's retry policy; a listing error when it
    cannot be had."""
    try:
        return client.retry(call, what)
    except web.FetchFailure as failure:
        raise ValueError(f"{what} failed: {failure}") from None


def canonical(name: str) -> str:
    """The name without authorship: `Amphiprion clarkii (Bennett, 1830)` -> `Amphiprion clarkii`.

    A genus stays a genus: `Amphiprion Bloch & Schneider, 1801` -> `Amphiprion`.
    """
    words = (name or "").split()
    if len(words) >= 2 and re.fullmatch(r"[a-z-]+", words[1]) and words[1] not in ("sp.", "spp."):
        return " ".join(words[:2])
    return words[0] if words else ""
