"""Predictions by rank: a model's class scores summed up the taxonomic tree, a rule that falls
back from the species to the genus or the family when the species is unsure, and the number of
taxonomic steps between an answer and the truth.

The tree is the classes' ranks from the split table (`genus`, `family` and the ranks above,
tables.RANKS): each class is a leaf at the species rank, its ancestors its ranks. A pooled
"other" class is a leaf whose ancestors are the ranks its species share (its genus when all
are one genus, else empty). An empty rank is no node: a class without a genus hangs from its
family, and its score counts towards no genus.

- Roll-up: a genus's score is the sum of its classes' scores, a family's likewise (SpeciesNet's
  roll-up); scores of classes without that rank count towards none.
- Accuracy at a rank: the predicted class (a threshold model's own "other" included) is right at
  the genus when its genus is the true class's; the true class itself is right at every rank.
- Fallback rule: answer the top class when its score clears the species threshold, else the top
  genus when the genus's summed score clears the genus threshold, else the top family likewise,
  else no answer. Each threshold is the lowest of a grid at which the answers at that rank, on
  the validation photos not answered at a lower rank, are at least TARGET_ACCURACY right; a rank
  where none reaches it is never answered (threshold None).
- Distance (FathomNet's hierarchical score): steps from the truth's leaf up to the lowest common
  ancestor, plus steps from the answer's node up to it, one step per rank (species, genus,
  family, order, class, phylum, kingdom), skipped ranks included. A right species is 0, a right
  genus 1, a right family 2, a sibling species 2, a species of another genus of the family 4.
  Ranks are compared by name and an empty rank matches nothing; lineages with no rank in
  common meet at a root above the kingdom.
"""

import numpy as np
import pandas as pd

from fishid.tables import RANKS

# Up the tree from the leaf: species, genus, family, order, class, phylum, kingdom.
UP = RANKS[::-1]
ROOT = len(UP)
# The ranks the fallback rule may answer at, from the class (a species, or a pooled "other") up.
FALLBACK = ["species", "genus", "family"]
# What the fallback rule asks of its answers on validation at each rank.
TARGET_ACCURACY = 0.9
NONE = "none"


def class_ranks(split: pd.DataFrame) -> pd.DataFrame:
    """Each label's ranks above the species (index: label; columns: UP[1:]), from a split table.
    A rank its rows do not all share, or a column the table lacks (a table from before ranks),
    is empty."""
    if "label" not in split:
        return pd.DataFrame(columns=UP[1:], dtype=str)
    rows = split.reindex(columns=["label", *UP[1:]]).astype(object).fillna("").astype(str)
    return rows.groupby("label", sort=True).agg(lambda values: values.iloc[0] if values.nunique() == 1 else "")


def lineages(classes, ranks: pd.DataFrame | None) -> pd.DataFrame:
    """One row per class: its own name at the species rank and its ranks above (UP columns);
    a class `ranks` does not list (or every class, where it is None) has only its name."""
    above = pd.DataFrame() if ranks is None else ranks
    above = above.reindex(index=list(classes), columns=UP[1:]).astype(object).fillna("").astype(str)
    return above.assign(species=list(classes))[UP]


def roll_up(scores: pd.DataFrame, tree: pd.DataFrame, rank: str) -> pd.DataFrame:
    """The summed scores (photos x names at `rank`, sorted) of `scores` (photos x classes)."""
    names = tree.loc[scores.columns, rank].to_numpy()
    known = sorted(set(names) - {""})
    membership = (names[:, None] == np.array(known, dtype=object)[None, :]).astype(float)
    return pd.DataFrame(scores.to_numpy(dtype=float) @ membership, index=scores.index, columns=known)


def top_at(scores: pd.DataFrame, tree: pd.DataFrame, rank: str) -> tuple[np.ndarray, np.ndarray]:
    """Per photo, the name at `rank` with the highest summed score and that score ("" and 0
    where no class has that rank); ties go to the first name in sorted order."""
    rolled = roll_up(scores, tree, rank)
    if rolled.empty:
        return np.full(len(rolled), "", dtype=object), np.zeros(len(rolled))
    best = rolled.to_numpy().argmax(axis=1)
    return rolled.columns.to_numpy(dtype=object)[best], rolled.to_numpy()[np.arange(len(rolled)), best]


def paths(labels, tree: pd.DataFrame) -> np.ndarray:
    """(photos x UP) names from each label's leaf up; a label the tree lacks has only its name."""
    return node_paths(labels, ["species"] * len(labels), tree)


def node_paths(answers, answer_ranks, tree: pd.DataFrame) -> np.ndarray:
    """(photos x UP) names from each answer's node up, empty below its rank and where there is
    no answer (rank NONE). A node's ancestors are those of the first class under it; a node
    the tree lacks has only its name."""
    ancestors = {}
    for row in tree[UP].itertuples(index=False):
        for level, name in enumerate(row):
            if name:
                ancestors.setdefault((level, name), list(row[level:]))
    result = np.full((len(answers), ROOT), "", dtype=object)
    for i, (name, level) in enumerate(zip(answers, levels(answer_ranks))):
        if level < ROOT:
            result[i, level:] = ancestors.get((level, name), [name] + [""] * (ROOT - level - 1))
    return result


def steps(labels, answers, answer_ranks, tree: pd.DataFrame) -> np.ndarray:
    """Steps between each true label's leaf and its answer, a node at `answer_ranks` (module
    docstring); an answer of rank NONE is ROOT steps above its own level, so never right."""
    truth, answer = paths(labels, tree), node_paths(answers, answer_ranks, tree)
    result = []
    for t, a, level in zip(truth, answer, levels(answer_ranks)):
        common = next((k for k in range(level, ROOT) if t[k] and t[k] == a[k]), ROOT)
        result.append(2 * common - level)
    return np.array(result, dtype=int)


def levels(answer_ranks) -> np.ndarray:
    """Each answer's level up the tree: 0 for a species, ROOT where there is no answer."""
    return np.array([UP.index(rank) if rank in UP else ROOT for rank in answer_ranks], dtype=int)


def rank_accuracy(labels, predicted, tree: pd.DataFrame) -> dict:
    """Per rank of FALLBACK: the share of photos whose predicted class has the true class's name
    at that rank (a predicted class that is the true one counts at every rank, even unknown)."""
    labels, predicted = np.asarray(labels, dtype=object), np.asarray(predicted, dtype=object)
    truth, answer = paths(labels, tree), paths(predicted, tree)
    same_class = labels == predicted
    result = {}
    for rank in FALLBACK:
        level = UP.index(rank)
        result[rank] = float((same_class | ((truth[:, level] != "") & (truth[:, level] == answer[:, level]))).mean())
    return result


def fallback(scores: pd.DataFrame, tree: pd.DataFrame, thresholds: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's answer and the rank it was given at (NONE, with an empty answer, where no
    rank's top score clears its threshold; a threshold of None is never cleared)."""
    answers = np.full(len(scores), "", dtype=object)
    answered_at = np.full(len(scores), NONE, dtype=object)
    for rank in FALLBACK:
        if thresholds.get(rank) is None:
            continue
        names, top = top_at(scores, tree, rank)
        now = (answered_at == NONE) & (names != "") & (top >= thresholds[rank])
        answers[now], answered_at[now] = names[now], rank
    return answers, answered_at


def choose_thresholds(scores: pd.DataFrame, labels, tree: pd.DataFrame, grid, target: float = TARGET_ACCURACY) -> dict:
    """Per rank of FALLBACK, in order: the lowest threshold of `grid` at which the answers at that
    rank, among the photos no lower rank answered, are at least `target` right; None where none
    is (that rank is never answered)."""
    unanswered = np.ones(len(scores), dtype=bool)
    truth = paths(labels, tree)
    chosen = {}
    for rank in FALLBACK:
        names, top = top_at(scores, tree, rank)
        right = (names != "") & (names == truth[:, UP.index(rank)])
        chosen[rank] = lowest_clearing(top, right, unanswered, grid, target)
        if chosen[rank] is not None:
            unanswered &= top < chosen[rank]
    return chosen


def lowest_clearing(top, right, candidates, grid, target: float) -> float | None:
    """The lowest threshold of `grid` at which the `candidates` whose `top` score clears it are
    at least `target` `right` (None where it is none)."""
    for threshold in grid:
        answered = candidates & (top >= threshold)
        if answered.any() and right[answered].mean() >= target:
            return float(threshold)
    return None


def coverage_curve(scores: pd.DataFrame, labels, tree: pd.DataFrame, grid) -> list[dict]:
    """For each threshold on the top class's score: the share of photos answered at the species
    rank and the accuracy of those answers (None where none is answered)."""
    names, top = top_at(scores, tree, "species")
    right = names == np.asarray(labels, dtype=object)
    rows = []
    for threshold in grid:
        answered = top >= threshold
        rows.append(
            {
                "threshold": float(threshold),
                "coverage": float(answered.mean()),
                "accuracy": float(right[answered].mean()) if answered.any() else None,
            }
        )
    return rows


def score_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """The `score:<class>` columns of predictions, named by their class."""
    columns = [c for c in predictions if c.startswith("score:")]
    return predictions[columns].rename(columns=lambda c: c.removeprefix("score:")).astype(float)


def mean_or_none(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def by_rank(
    predictions: pd.DataFrame, ranks: pd.DataFrame | None, grid, validation: pd.DataFrame | None = None
) -> dict:
    """Every by-rank number of a model on `predictions` (label, predicted, score:<class>):
    accuracy of its predicted class at each rank, the mean distance of that class to the truth,
    the fallback rule with thresholds chosen on `validation` (on `predictions` themselves where
    None: optimistic) and the species coverage-accuracy curve over `grid`."""
    chosen_on = predictions if validation is None else validation
    scores = score_table(predictions)
    labels = predictions["label"].to_numpy(dtype=object)
    predicted = predictions["predicted"].to_numpy(dtype=object)
    # Every name a photo may carry: a threshold model's "other" has no score of its own.
    named = {*scores.columns, *labels, *predicted, *chosen_on["label"]}
    tree = lineages(sorted(named), ranks)
    thresholds = choose_thresholds(score_table(chosen_on), chosen_on["label"].to_numpy(dtype=object), tree, grid)
    answers, answered_at = fallback(scores, tree, thresholds)
    distance = steps(labels, answers, answered_at, tree)
    # An answer is right when the truth's lineage passes through it: no step down from it.
    right = distance == levels(answered_at)
    answered = answered_at != NONE
    classes = tree.loc[scores.columns]
    return {
        "genera": sorted(set(classes["genus"]) - {""}),
        "families": sorted(set(classes["family"]) - {""}),
        "accuracy": rank_accuracy(labels, predicted, tree),
        "mean_distance": mean_or_none(steps(labels, predicted, ["species"] * len(predicted), tree)),
        "fallback": {
            "target_accuracy": TARGET_ACCURACY,
            "chosen_on": "the evaluated photos" if validation is None else "val",
            "thresholds": thresholds,
            "answered": {rank: float((answered_at == rank).mean()) for rank in [*FALLBACK, NONE]},
            "coverage": float((answered_at == "species").mean()),
            "accuracy": mean_or_none(right[answered]),
            "accuracy_at": {rank: mean_or_none(right[answered_at == rank]) for rank in FALLBACK},
            "mean_distance": mean_or_none(distance[answered]),
        },
        "coverage_curve": coverage_curve(scores, labels, tree, grid),
    }
