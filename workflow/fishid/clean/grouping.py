"""Connected components over links between images, vectorised (no per-pair Python loop).

Used to merge images into groups that must fall on the same side of a split: photos of
one occurrence, and members of one near-duplicate cluster.
"""

import numpy as np
import pandas as pd


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of n nodes, the smallest node index of its component, given edges a[k]-b[k]."""
    labels = np.arange(n)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if not len(a):
        return labels
    while True:
        # Hook: each edge pulls the root of both ends down to the smaller of the two roots...
        root_a, root_b = labels[a], labels[b]
        low = np.minimum(root_a, root_b)
        hooked = labels.copy()
        np.minimum.at(hooked, root_a, low)
        np.minimum.at(hooked, root_b, low)
        # ...then pointer jumping flattens every chain to its root.
        while True:
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, labels):
            return labels
        labels = hooked


def links_from_shared_keys(owner: np.ndarray, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining the owners (node indices) of equal, non-empty keys: a chain per key."""
    table = pd.DataFrame({"owner": owner, "key": keys.to_numpy()})
    table = table[table["key"] != ""].drop_duplicates().sort_values(["key", "owner"])
    same_as_previous = table["key"].to_numpy()[1:] == table["key"].to_numpy()[:-1]
    owners = table["owner"].to_numpy()
    return owners[:-1][same_as_previous], owners[1:][same_as_previous]
