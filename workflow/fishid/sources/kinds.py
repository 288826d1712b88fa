"""The registry of source kinds: each kind's `KIND` declaration (fishid.sources.base.SourceKind),
from its own module, by name. A new kind is its module (with its `KIND`) added here, and its
entry in config/schema.yaml's `sources` (the enum of kinds and its `allOf` branch), which a test
holds equal to this registry.

The listing step imports this module by name (fishid.sources.base.source_kind), so that its code
inputs stay its own kind's module; the download stage and the citation import it.
"""

from fishid.sources import dwca, fishbase, fishpix, folder, gbif, synthetic
from fishid.sources.base import SourceKind

KINDS: dict[str, SourceKind] = {
    declared.name: declared
    for declared in (synthetic.KIND, gbif.KIND, dwca.KIND, fishbase.KIND, fishpix.KIND, folder.KIND)
}
# The kinds that make the bytes of their own media URL scheme (synthetic:), by scheme.
BY_SCHEME: dict[str, SourceKind] = {declared.scheme: declared for declared in KINDS.values() if declared.scheme}


def kind(name: str) -> SourceKind:
    """The kind called `name`; ValueError naming the known kinds where there is none."""
    if name not in KINDS:
        raise ValueError(f"unknown source kind {name!r} (known: {', '.join(KINDS)})")
    return KINDS[name]
