import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fishid.clean.grouping import connected_components, links_from_shared_keys
from fishid.clean.near_duplicates import hash_words, pairs_within, pairs_within_brute_force, perceptual_hash


def hashes_with_neighbours(rng, n: int, planted: int, max_flips: int) -> np.ndarray:
    words = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)
    for target in range(planted):
        source = rng.integers(0, n)
        words[target] = words[source]
        for bit in rng.choice(128, rng.integers(0, max_flips + 1), replace=False):
            words[target, bit // 64] ^= np.uint64(1 << (bit % 64))
    return words


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), max_distance=st.integers(0, 24))
def test_indexed_search_finds_exactly_what_comparing_all_pairs_finds(seed, n, max_distance):
    rng = np.random.default_rng(seed)
    words = hashes_with_neighbours(rng, n, planted=n // 3, max_flips=max_distance + 3)
    found = pairs_within(words, max_distance)
    expected = pairs_within_brute_force(words, max_distance)
    order = np.lexsort((expected[1], expected[0]))
    for got, want in zip(found, expected):
        assert np.array_equal(got, want[order])
    assert (found[0] < found[1]).all() and (found[2] <= max_distance).all()


def test_skewed_hashes_with_large_buckets():
    # Mostly-zero hashes (dark, flat pictures) put thousands into one bucket of every block.
    rng = np.random.default_rng(1)
    words = np.where(rng.random((3000, 2)) < 0.9, 0, rng.integers(0, 2**64, size=(3000, 2), dtype=np.uint64))
    words = words.astype(np.uint64)
    found = pairs_within(words, 4)
    expected = pairs_within_brute_force(words, 4)
    assert len(found[0]) == len(expected[0]) > 2_000_000


def test_hash_is_stable_under_re_encoding_and_far_for_different_pictures():
    rng = np.random.default_rng(3)
    base = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).resize((320, 240))
    other = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).resize((320, 240))
    words = hash_words([perceptual_hash(base), perceptual_hash(base.resize((160, 120))), perceptual_hash(other)])
    i, j, d = pairs_within(words, 12)
    assert list(zip(i, j)) == [(0, 1)] and d[0] <= 4


def test_hash_words_refuses_malformed_hashes():
    try:
        hash_words(["abc"])
    except ValueError as error:
        assert "'abc' is not 32 hex digits" in str(error)
    else:
        raise AssertionError("a short hash was accepted")


def python_components(n, edges):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    edges=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=80),
)
def test_connected_components_match_a_plain_union_find(n, edges):
    edges = [(a % n, b % n) for a, b in edges]
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    assert connected_components(n, a, b).tolist() == python_components(n, edges)


def test_a_component_is_named_by_its_smallest_node_whatever_the_edge_order():
    # scipy numbers these components 0, 1, 2 ([0, 0, 1, 2, 1]); callers need their smallest nodes.
    assert connected_components(5, np.array([1, 4]), np.array([0, 2])).tolist() == [0, 0, 2, 3, 2]
    assert connected_components(3, np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == [0, 1, 2]
    assert connected_components(0, [], []).tolist() == []


def test_links_from_shared_keys_chain_owners_of_one_key():
    owners = np.array([0, 1, 2, 3, 4])
    keys = pd.Series(["occ-1", "", "occ-1", "occ-2", "occ-1"])
    a, b = links_from_shared_keys(owners, keys)
    assert connected_components(5, a, b).tolist() == [0, 1, 0, 3, 0]


def test_no_one_and_identical_hashes():
    empty = np.zeros((0, 2), dtype=np.uint64)
    assert all(len(a) == 0 for a in pairs_within(empty, 12))
    assert all(len(a) == 0 for a in pairs_within(np.ones((1, 2), dtype=np.uint64), 12))
    i, j, d = pairs_within(np.full((3, 2), 7, dtype=np.uint64), 12)
    assert list(zip(i, j, d)) == [(0, 1, 0), (0, 2, 0), (1, 2, 0)]
