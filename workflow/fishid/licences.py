"""Licences: one spelling per licence, and the policy that decides which images may be used.

Sources write licences in many forms: GBIF media carry URLs
(`http://creativecommons.org/licenses/by-nc/4.0/`), GBIF occurrences carry codes
(`CC_BY_NC_4_0`), publishers type free text (`CC BY-SA 4.0`, `(c) Museum - CC BY-NC`).
`normalise` turns each into an SPDX-like id (`CC-BY-NC-4.0`, `CC0-1.0`); a Creative
Commons licence named without a version becomes its family (`CC-BY-NC`).
"""

import re

DEFAULT_POLICY = {"allow": ["CC0", "CC-BY", "CC-BY-NC"], "unknown": "drop"}

# Creative Commons elements in their canonical order: BY, then NC, then ND or SA.
_CC_ORDER = ("by", "nc", "nd", "sa")
_CC_URL = re.compile(r"creativecommons\.org/licen[cs]es/([a-z-]+)/(\d(?:\.\d)?)", re.IGNORECASE)
_CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/(\d\.\d)", re.IGNORECASE)
_PDM_URL = re.compile(r"creativecommons\.org/publicdomain/mark/(\d\.\d)", re.IGNORECASE)
_GBIF_CODE = re.compile(r"^CC(0|(?:_(?:BY|NC|ND|SA))+)_(\d)_(\d)$", re.IGNORECASE)
_CC0_TEXT = re.compile(r"\bCC[ -]?0\b|\bCC[ -]?zero\b|public domain dedication", re.IGNORECASE)
_CC_TEXT = re.compile(r"\bCC[ _-]((?:BY|NC|ND|SA)(?:[ _-](?:BY|NC|ND|SA))*)(?:[ _-]v?(\d(?:\.\d)?))?\b", re.IGNORECASE)
_WORDS = {"attribution": "by", "noncommercial": "nc", "non-commercial": "nc", "noderivatives": "nd", "sharealike": "sa"}
_WORDS.update({"noderivs": "nd", "no derivatives": "nd", "share alike": "sa"})


def _cc_id(elements, version: str | None) -> str | None:
    elements = {e.lower() for e in elements if e}
    if "by" not in elements or not elements <= set(_CC_ORDER) or {"nd", "sa"} <= elements:
        return None
    name = "CC-" + "-".join(e.upper() for e in _CC_ORDER if e in elements)
    if version:
        version = version if "." in version else f"{version}.0"
        return f"{name}-{version}"
    return name


def normalise(raw) -> str | None:
    """The SPDX-like id of a licence written in any of the usual forms, or None if unrecognised."""
    text = str(raw or "").strip()
    if not text:
        return None
    if re.fullmatch(r"LicenseRef-[A-Za-z0-9.-]+", text):
        # SPDX's form for terms that are no public licence (a site's own terms of use).
        return text
    if match := _CC0_URL.search(text):
        return f"CC0-{match[1]}"
    if match := _PDM_URL.search(text):
        return f"PDM-{match[1]}"
    if match := _CC_URL.search(text):
        return _cc_id(match[1].split("-"), match[2])
    if match := _GBIF_CODE.match(text):
        if match[1] == "0":
            return f"CC0-{match[2]}.{match[3]}"
        return _cc_id(match[1].strip("_").split("_"), f"{match[2]}.{match[3]}")
    if re.fullmatch(r"(CC0|CC-[A-Z-]+)(-\d\.\d)?|PDM-\d\.\d", text):
        # Already an id (ours, or SPDX's).
        if text == "CC0":
            return "CC0-1.0"
        return text if text.startswith(("CC0-", "PDM-")) else _spdx_cc(text)
    if _CC0_TEXT.search(text):
        return "CC0-1.0"
    if match := _CC_TEXT.search(text):
        return _cc_id(re.split(r"[ _-]", match[1]), match[2])
    lowered = text.lower()
    if "creative commons" in lowered:
        elements = {"by"} | {code for word, code in _WORDS.items() if word in lowered}
        version = re.search(r"\b(\d\.\d)\b", text)
        return _cc_id(elements, version[1] if version else None)
    return None


def _spdx_cc(text: str) -> str | None:
    match = re.fullmatch(r"CC-([A-Z-]+?)(?:-(\d\.\d))?", text)
    return _cc_id(match[1].split("-"), match[2]) if match else None


def family(licence_id: str) -> str:
    """`CC-BY-NC-4.0` -> `CC-BY-NC`; `CC0-1.0` -> `CC0`."""
    return re.sub(r"-\d\.\d$", "", licence_id)


# The versions each kind of licence exists in: an id naming another matches no real licence.
KNOWN_VERSIONS = {"CC": ("1.0", "2.0", "2.5", "3.0", "4.0"), "CC0": ("1.0",), "PDM": ("1.0",)}


def unknown_id(text) -> str:
    """Why `text` names no licence that exists ("" when it does): unrecognised, or a version
    that licence never had (`CC-BY-5.0`)."""
    licence_id = normalise(text)
    if licence_id is None:
        return f"{text!r} is not a licence id (for example CC0, CC-BY, CC-BY-NC-4.0)"
    if licence_id.startswith("LicenseRef-"):
        return ""
    match = re.search(r"-(\d\.\d)$", licence_id)
    if match is None:
        return ""
    kind = licence_id.split("-")[0]
    versions = KNOWN_VERSIONS.get(kind, ())
    if match[1] not in versions:
        return f"{text!r}: {family(licence_id)} has no version {match[1]} (versions: {', '.join(versions)})"
    return ""


def check_policy(policy: dict | None) -> dict:
    """The policy with defaults filled in; a bad entry raises ValueError naming it."""
    policy = {**DEFAULT_POLICY, **(policy or {})}
    for entry in policy["allow"]:
        if problem := unknown_id(entry):
            raise ValueError(f"licences.allow: {problem}")
    if policy["unknown"] not in ("drop", "keep"):
        raise ValueError(f"licences.unknown: {policy['unknown']!r} must be 'drop' or 'keep'")
    return policy


def refusal(raw, policy: dict) -> str:
    """Why the policy refuses an image under licence `raw`; empty if it may be used.

    An allow entry with a version (`CC-BY-4.0`) admits that version only; one without
    (`CC-BY`) admits every version and the version-less family.
    """
    policy = check_policy(policy)
    licence_id = normalise(raw)
    if licence_id is None:
        if policy["unknown"] == "keep":
            return ""
        return f"licence unknown: {raw!r}" if str(raw or "").strip() else "licence unknown: none given"
    allowed = {normalise(entry) or entry for entry in policy["allow"]}
    if licence_id in allowed or family(licence_id) in allowed:
        return ""
    return f"licence not allowed: {licence_id}"
