"""Perceptual hashes, and every pair of photos whose hashes are within a distance, fast.

The hash is 128 bits: a 64-bit difference hash (gradients of a 9x8 greyscale thumbnail)
followed by a 64-bit DCT hash (signs of the 8x8 lowest frequencies of a 32x32 thumbnail
against their median). On the seed-mini photos a single 64-bit hash could not tell a
slightly cropped copy (up to 9 bits away) from a different fish photographed on the same
black background (9 bits away); the two together put copies at most 15 bits apart and
different photos at least 18 (bench/near_duplicates.py measures this).

The search never compares all pairs: by the pigeonhole principle, two hashes within d
bits agree exactly on at least one of d + 1 disjoint blocks of bits, so only hashes that
share a block value are compared (multi-index hashing). Candidates are checked with a
vectorised popcount of the XOR of the two 64-bit words.
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image

HASH_BITS = 128
_WORD_BITS = 64
# Candidate pairs checked per numpy call: bounds memory (about 100 bytes a pair).
_CHUNK = 4_000_000


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT32 = _dct_matrix(32)


def _as_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def difference_hash(grey: Image.Image) -> str:
    small = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _as_hex(small[:, 1:] > small[:, :-1])


def dct_hash(grey: Image.Image) -> str:
    small = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ small @ _DCT32.T)[:8, :8].flatten()
    # The DC term (overall brightness) would dominate the median; leave it out of it.
    return _as_hex(low > np.median(low[1:]))


def perceptual_hash(image: Image.Image) -> str:
    """32 hex digits: the difference hash, then the DCT hash."""
    grey = image.convert("L")
    return difference_hash(grey) + dct_hash(grey)


def hash_words(hashes: Sequence[str]) -> np.ndarray:
    """(n, 2) uint64 array from 32-digit hex hashes."""
    words = np.zeros((len(hashes), 2), dtype=np.uint64)
    for row, text in enumerate(hashes):
        if len(text) != HASH_BITS // 4:
            raise ValueError(f"perceptual hash {text!r} is not {HASH_BITS // 4} hex digits")
        words[row] = int(text[:16], 16), int(text[16:], 16)
    return words


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between rows of two (n, 2) uint64 arrays."""
    return np.bitwise_count(a ^ b).sum(axis=-1, dtype=np.int64)


def bit_columns(words: np.ndarray) -> np.ndarray:
    """(n, 128) array of 0/1: the bits of each hash."""
    shifts = np.arange(_WORD_BITS, dtype=np.uint64)
    return np.concatenate([((words[:, [w]] >> shifts) & np.uint64(1)).astype(np.uint8) for w in (0, 1)], axis=1)


def blocks(bits: np.ndarray, max_distance: int) -> list[np.ndarray]:
    """max_distance + 1 disjoint sets of bit positions covering all 128, equal in information.

    Real hashes have lopsided and correlated bits; a block of such bits has few distinct
    values, so its buckets are large and the search slows down. Spreading the bits over
    the blocks so that each holds the same total entropy (estimated from these hashes)
    keeps the buckets even.
    """
    count = max(2, max_distance + 1)
    if count > HASH_BITS // 2:
        raise ValueError(f"max_distance {max_distance} must be below {HASH_BITS // 2}")
    share = bits.mean(axis=0) if len(bits) else np.full(HASH_BITS, 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.nan_to_num(-(share * np.log2(share) + (1 - share) * np.log2(1 - share)))
    totals, members = np.zeros(count), [[] for _ in range(count)]
    for bit in np.lexsort((np.arange(HASH_BITS), -entropy)):
        sizes = np.array([len(m) for m in members])
        # Least information first, then fewest bits (bits without information spread
        # evenly); a key holds at most 64 bits.
        open_blocks = np.flatnonzero(sizes < _WORD_BITS)
        block = int(open_blocks[np.lexsort((sizes[open_blocks], totals[open_blocks]))[0]])
        members[block].append(int(bit))
        totals[block] += entropy[bit]
    return [np.array(sorted(m), dtype=np.int64) for m in members]


def block_keys(bits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    weights = np.uint64(1) << np.arange(len(positions), dtype=np.uint64)
    return (bits[:, positions].astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _close_pairs_sharing_key(keys, high, low, max_distance: int):
    """(i, j, distance) of every two rows with equal keys and hashes within max_distance.

    Rows are sorted by key, so that each run of equal keys is contiguous: the left member
    of a candidate pair is a repeat, the right one a nearby read, and the first word is
    checked before the second is read. Candidates are made a chunk at a time.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    high, low = high[order], low[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_end = np.repeat(np.r_[starts[1:], len(keys)], np.diff(np.r_[starts, len(keys)]))
    partners = run_end - np.arange(len(keys)) - 1  # later members of its run, per position
    positions = np.flatnonzero(partners)
    cumulative = np.cumsum(partners[positions])
    begin = 0
    while begin < len(positions):
        already = cumulative[begin] - partners[positions[begin]]
        end = max(begin + 1, int(np.searchsorted(cumulative, already + _CHUNK, side="right")))
        chunk = positions[begin:end]
        counts = partners[chunk]
        left = np.repeat(chunk, counts)
        right = left + 1 + np.arange(len(left)) - np.repeat(np.cumsum(counts) - counts, counts)
        d = np.bitwise_count(np.repeat(high[chunk], counts) ^ high[right])
        near = np.flatnonzero(d <= max_distance)
        left, right = left[near], right[near]
        d = d[near] + np.bitwise_count(low[left] ^ low[right])
        close = d <= max_distance
        yield order[left[close]], order[right[close]], d[close]
        begin = end


def pairs_within(words: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) of rows of `words` at most max_distance bits apart, with the distance.

    Sorted by (i, j); each pair once.
    """
    found = []
    n = len(words)
    high, low = np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])
    bits = bit_columns(words)
    for positions in blocks(bits, max_distance):
        for i, j, d in _close_pairs_sharing_key(block_keys(bits, positions), high, low, max_distance):
            found.append((np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j), d.astype(np.int64)))
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    codes = np.concatenate([c for c, _ in found])
    distances = np.concatenate([d for _, d in found])
    codes, first = np.unique(codes, return_index=True)
    return codes // n, codes % n, distances[first]


def pairs_within_brute_force(words: np.ndarray, max_distance: int, rows_per_block: int = 256):
    """The same answer by comparing all pairs (vectorised per block of rows): the reference."""
    found_i, found_j, found_d = [], [], []
    for start in range(0, len(words), rows_per_block):
        block = words[start : start + rows_per_block]
        d = distance(block[:, None, :], words[None, :, :])
        i, j = np.nonzero(d <= max_distance)
        i = i + start
        later = j > i
        found_i.append(i[later])
        found_j.append(j[later])
        found_d.append(d[i[later] - start, j[later]])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
