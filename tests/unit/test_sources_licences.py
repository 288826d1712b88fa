"""Licences in every form the sources write them, and the policy that decides."""

import pytest

from fishid import licences

FORMS = {
    "http://creativecommons.org/licenses/by-nc/4.0/": "CC-BY-NC-4.0",
    "https://creativecommons.org/licenses/by/4.0/legalcode": "CC-BY-4.0",
    "http://creativecommons.org/licences/by-nc-sa/3.0/legalcode": "CC-BY-NC-SA-3.0",
    "https://creativecommons.org/publicdomain/zero/1.0/": "CC0-1.0",
    "CC_BY_NC_4_0": "CC-BY-NC-4.0",
    "CC0_1_0": "CC0-1.0",
    "CC_BY_4_0": "CC-BY-4.0",
    "CC BY-SA 4.0": "CC-BY-SA-4.0",
    "cc-by-nc-nd": "CC-BY-NC-ND",
    "CC0": "CC0-1.0",
    "(c) Field Museum of Natural History - CC BY-NC": "CC-BY-NC",
    "Creative Commons Attribution": "CC-BY",
    "Creative Commons Attribution-NonCommercial 4.0 International": "CC-BY-NC-4.0",
    "CC-BY-NC-4.0": "CC-BY-NC-4.0",
    "CC-BY": "CC-BY",
    "LicenseRef-FishPix-terms": "LicenseRef-FishPix-terms",
}


@pytest.mark.parametrize("raw, expected", FORMS.items())
def test_every_form_normalises_to_one_id(raw, expected):
    assert licences.normalise(raw) == expected


@pytest.mark.parametrize("raw", ["", "UNSPECIFIED", "http://en.wikipedia.org/wiki/Copyright", "All rights reserved"])
def test_what_is_not_a_licence_is_unknown(raw):
    assert licences.normalise(raw) is None


def test_default_policy_allows_cc0_by_and_by_nc_and_drops_unknown():
    refusal = lambda raw: licences.refusal(raw, {})  # noqa: E731
    assert refusal("CC0_1_0") == refusal("CC-BY-3.0") == refusal("http://creativecommons.org/licenses/by-nc/4.0/") == ""
    assert refusal("CC-BY-NC") == ""
    assert refusal("CC BY-SA 4.0") == "licence not allowed: CC-BY-SA-4.0"
    assert refusal("cc-by-nc-nd") == "licence not allowed: CC-BY-NC-ND"
    assert refusal("") == "licence unknown: none given"
    assert refusal("All rights reserved") == "licence unknown: 'All rights reserved'"


def test_a_versioned_entry_allows_that_version_only():
    policy = {"allow": ["CC-BY-4.0"], "unknown": "keep"}
    assert licences.refusal("CC_BY_4_0", policy) == ""
    assert licences.refusal("CC-BY-3.0", policy) == "licence not allowed: CC-BY-3.0"
    assert licences.refusal("who knows", policy) == ""


def test_a_sites_own_terms_pass_only_when_allowed_by_name():
    assert licences.refusal("LicenseRef-FishPix-terms", {}) == "licence not allowed: LicenseRef-FishPix-terms"
    assert licences.refusal("LicenseRef-FishPix-terms", {"allow": ["LicenseRef-FishPix-terms"]}) == ""


def test_a_bad_policy_is_named():
    with pytest.raises(ValueError, match="licences.allow: 'MIT-ish'"):
        licences.check_policy({"allow": ["MIT-ish"]})
