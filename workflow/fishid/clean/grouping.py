"""Connected components over links between images (scipy's graph search, no per-pair Python loop).

Used to merge images into groups that must fall on the same side of a split: photos of
one occurrence, and members of one near-duplicate cluster.
"""

import numpy as np
import pandas as pd
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components as component_labels


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of n nodes, the smallest node index of its component, given edges a[k]-b[k]."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    graph = coo_array((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = component_labels(graph, directed=False)
    # scipy numbers components arbitrarily; callers name a component by its smallest node
    # (a sha256 once sorted), which does not change when unrelated images come or go.
    _, smallest = np.unique(labels, return_index=True)
    return smallest[labels]


def links_from_shared_keys(owner: np.ndarray, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining the owners (node indices) of equal, non-empty keys: a chain per key."""
    table = pd.DataFrame({"owner": owner, "key": keys.to_numpy()})
    table = table[table["key"] != ""].drop_duplicates().sort_values(["key", "owner"])
    same_as_previous = table["key"].to_numpy()[1:] == table["key"].to_numpy()[:-1]
    owners = table["owner"].to_numpy()
    return owners[:-1][same_as_previous], owners[1:][same_as_previous]
