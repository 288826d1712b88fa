"""Likely label errors, outliers, near duplicates and clusters among the kept photos: the
review app's queue (`fishid label-issues`, rule `label_issues`).

Out-of-sample class probabilities come from k-fold cross-validation (stratified, seeded):

- (a) a logistic regression on the standardised frozen features of a ResNet-18 backbone that
  the configuration declares (`review.label_issues.backbone`: the demo's pre-trained `pool`,
  the real study's ImageNet weights), the features computed once for every fold; or
- (b) where it names none, the study's CNN (arch `ri`, small) trained per fold for a few epochs
  by fishid.train.loop; one more fit on every photo gives the features;
- or both (`with_network`): the probabilities of (a) and (b) combined (their normalised
  geometric mean), the features (a)'s. On the demo the two make different mistakes (the
  pool's features cannot tell some species apart; the network is sure of some look-alikes),
  and together they put the planted label errors higher than either does alone.

Where the configuration has a detect section (and `crops` is on, the default), the model reads
each photo's crop, as a model with `crop:` does (the whole photo where no fish was found): on
whole photos a fish a dozen pixels long in a wide reef scene is invisible at 64 px, and such
photos filled the top of the demo's queue (51 % of its wide scenes under 0.1 self-confidence,
23 % on crops; cross-validated accuracy 0.59 -> 0.69). Near duplicates are still found on
whole photos: cleaning's perceptual hashes, which they are compared with, are of whole photos.
On crops, the probabilities are then calibrated by the crop's size (size_calibrated): a fish a
few dozen pixels long is far less often predicted right than one that fills the photo, at the
same confidence, and uncalibrated those photos came before the demo's planted label errors.

cleanlab's Datalab then reads the probabilities and the features: label issues (confident
learning), outliers and near duplicates; HDBSCAN (scikit-learn) clusters the features.

A colour model (a logistic regression on colour histograms and thumbnails) was used before: on
real photos it cannot see bar counts or fin colours, and its queue was noise
(bench/label_issues_real.py).
"""

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fishid import config as configuration
from fishid import steps

log = logging.getLogger(__name__)

# Strong L2 on the standardised features: a few hundred to a few thousand photos in 512
# dimensions. (Choosing it by inner cross-validation cost minutes on the demo's 1,400 photos.)
LINEAR_C = 0.01
# The backbone sources whose weights load into fishid.models.registry's ResNet-18 trunk.
RESNET_SOURCES = ("pretrain", "imagenet")
ISSUE_COLUMNS = [
    "sha256",
    "label",
    "predicted",
    "self_confidence",
    "rank",
    "flagged",
    "derived_path",
    "label_score",
    "is_label_issue",
    "outlier_score",
    "is_outlier",
    "cluster",
    "near_duplicate_of",
    "phash_disagrees",
]


# --- settings -----------------------------------------------------------------------------


def chosen_backbone(name: str, backbones: dict) -> str:
    """The backbone whose features the queue reads: `name`, or for `auto` the first ResNet-18
    backbone of the configuration; "none" (a network per fold) where there is none."""
    resnets = [b for b, spec in backbones.items() if spec["source"] in RESNET_SOURCES]
    if name == "auto":
        return resnets[0] if resnets else "none"
    if name == "none" or name in resnets:
        return name
    raise ValueError(
        f"review.label_issues.backbone: {name!r} is not a ResNet-18 backbone of this configuration "
        f"(those under backbones: with source {' or '.join(RESNET_SOURCES)}: {resnets or 'none'}); "
        "name one of them, or auto, or none (a small network trained per fold)"
    )


def issue_settings(config: dict) -> dict:
    """What the rule hands `fishid label-issues`: review.label_issues of `config`, a configuration
    whose defaults are filled in (fishid.config.with_schema_defaults, the one place they come
    from), with the backbone resolved and the settings of only what runs (the network's when
    there is no backbone), so that editing anything else reruns nothing."""
    settings = dict(config["review"]["label_issues"])
    settings["backbone"] = chosen_backbone(settings["backbone"], config.get("backbones", {}))
    network = settings.pop("network")
    if settings["backbone"] == "none" or settings["with_network"]:
        settings["network"] = {**config["training_defaults"], **network, "arch": "ri"}
    if settings["backbone"] == "none":
        settings.pop("with_network")
        size = settings["network"]["image_size"]
    else:
        size = configuration.backbone_settings(config, settings["backbone"])["image_size"]
    settings["image_size"] = settings["image_size"] or size
    settings["crops"] = bool(settings["crops"] and config.get("detect"))
    return settings


# --- photos -------------------------------------------------------------------------------


def labelled_photos(clean: pd.DataFrame) -> pd.DataFrame:
    """The kept, labelled photos of species with two kept photos at least (fewer cannot be
    cross-validated), by SHA-256."""
    kept = clean[(clean["kept"].astype(str) == "True") & (clean["taxon"] != "")]
    sizes = kept["taxon"].value_counts()
    return kept[kept["taxon"].isin(sizes[sizes >= 2].index)].sort_values("sha256", ignore_index=True)


def phash_copies(clean: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """The photos cleaning dropped as near duplicates of a kept photo (perceptual hash), with
    their derived copies: Datalab's near duplicates are compared with them."""
    copies = clean[(clean["duplicate_of"].fillna("") != "") & (clean["derived_path"].fillna("") != "")]
    copies = copies[copies["duplicate_of"].isin(set(kept["sha256"])) & ~copies["sha256"].isin(set(kept["sha256"]))]
    return copies.sort_values("sha256", ignore_index=True)


def load_images(paths, size: int, into=None):
    """uint8 images (N, 3, size, size) of the files at `paths`, read as the image cache reads them
    (into the file `into`, mapped, when given)."""
    from fishid.train import imagecache

    return imagecache.load_squares(paths, size, into)


def crop_paths(photos: pd.DataFrame, derived_root, crops) -> tuple[list[Path], int]:
    """Each photo's crop (crops: (the detect stage's crops table, its folder)), its whole photo
    where no fish was found, as a model on crops reads them: (paths, crops used)."""
    from fishid.train import imagecache

    return imagecache.cropped_paths(photos, derived_root, *crops)


def crop_sides(photos: pd.DataFrame, crops_path) -> np.ndarray:
    """The longer side in pixels of each photo's crop (the crops table's crop box), NaN where
    the detector found no fish: how large the fish is that the model reads."""
    from fishid.tables import read_table

    columns = ["crop_x0", "crop_y0", "crop_x1", "crop_y1"]
    box = (
        read_table(crops_path, ["image", *columns]).set_index("image")[columns].astype(float).reindex(photos["sha256"])
    )
    return np.maximum(box["crop_x1"] - box["crop_x0"], box["crop_y1"] - box["crop_y0"]).to_numpy()


def channel_stats(images):
    """The photos' own channel statistics, as the image cache computes a dataset's."""
    from fishid.train import imagecache

    return imagecache.channel_stats(images)


# The backbone reads at most this many bytes of images at a time: past them, the photos are read
# a chunk at a time, twice (their channel statistics, then their features), rather than all
# held (12 KB a photo at 64 px: 120 GB at 10 million). Within one chunk, the statistics are
# those of every image at once, as the image cache computes them (summed by chunk, they move
# in their seventh digit, and so would the demo's queue).
CHUNK_BYTES = 256 * 2**20


def chunks(paths: list, size: int) -> list[list]:
    step = max(1, CHUNK_BYTES // (3 * size * size))
    return [paths[i : i + step] for i in range(0, len(paths), step)]


def chunked_channel_stats(parts: list[list], size: int):
    """channel_stats over every image of every chunk of paths, one chunk read at a time."""
    from fishid.train import imagecache

    return imagecache.summed_channel_stats(load_images(part, size) for part in parts)


def as_data(train_x, train_y, val_x, val_y, classes, stats):
    from fishid.train.data import Data

    return Data(train_x, train_y, val_x, val_y, list(classes), *stats)


# --- (a) frozen backbone features + logistic regression -----------------------------------


def backbone_features(paths: list, size: int, backbone_path) -> np.ndarray:
    """512 pooled features per photo (the files at `paths`, read at `size`) from the ResNet-18
    backbone's weights, in evaluation mode (re-estimating its batch norms on these photos, as TL
    training does, changed nothing on the demo's photos and doubled the time), a chunk of
    photos at a time (CHUNK_BYTES)."""
    from fishid.models import registry
    from fishid.runtime import select_device
    from fishid.train.features import extract_features

    encoder = registry.backbone_resnet18()
    registry.load_backbone_state(encoder, backbone_path)
    device = select_device()
    encoder = encoder.requires_grad_(False).to(device)

    def features_of(images, stats) -> np.ndarray:
        data = as_data(images, None, images[:0], None, [], stats)
        return extract_features(encoder, images, data, {}, device, 0, None)[0].numpy()

    parts = chunks(list(paths), size)
    if len(parts) == 1:
        images = load_images(parts[0], size)
        return features_of(images, channel_stats(images))
    stats = chunked_channel_stats(parts, size)
    return np.concatenate([features_of(load_images(part, size), stats) for part in parts])


def linear_probabilities(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each photo's class probabilities from a logistic regression on the standardised
    features, fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=LINEAR_C, max_iter=500))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")


# --- calibration by the fish's size ----------------------------------------------------------


def size_temperatures(weights, sides: np.ndarray) -> np.ndarray:
    """Each photo's temperature: exp(a + b log(side / 100 px)) for a crop of `side` pixels,
    exp(a + c) for a photo where no fish was found (NaN side)."""
    a, b, c = weights
    missing = np.isnan(sides)
    log_side = np.log(np.where(missing, 100.0, sides) / 100.0)
    return np.exp(a + b * log_side + c * missing)


def size_calibrated(probabilities: np.ndarray, labels: np.ndarray, sides: np.ndarray) -> tuple[np.ndarray, dict]:
    """The out-of-sample probabilities rescaled by a temperature that depends on how large the
    fish is in pixels (size_temperatures; its three parameters fitted by the labels' log loss
    on these held-out probabilities, as temperature scaling is fitted on a validation set), and
    the temperatures found. Why: one regression's probabilities are as sharp for a fish forty
    pixels long or hidden as for one that fills the photo, but far less often right (demo: 55 %
    of crops up to 73 px, 76-78 % from 113 px, 44 % where no fish was found). The queue ranks by
    the label's probability, so ordinary photos whose fish the model cannot see came before clear
    photos filed under another species; fitted, the temperature sharpens the large fish's
    probabilities and softens the small ones'."""
    from scipy.optimize import minimize

    logits = np.log(np.clip(probabilities, 1e-12, None))
    rows = np.arange(len(labels))

    def rescaled(weights):
        z = logits / size_temperatures(weights, sides)[:, None]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def loss(weights):
        return -np.log(rescaled(weights)[rows, labels] + 1e-12).mean()

    weights = minimize(loss, np.zeros(3), method="Nelder-Mead").x
    temperature = size_temperatures(weights, np.array([50.0, 100.0, 150.0, np.nan]))
    found = {f"temperature_{k}": round(float(t), 3) for k, t in zip(["50px", "100px", "150px", "no_fish"], temperature)}
    return rescaled(weights), found


# --- (b) a small network per fold ----------------------------------------------------------


def fit_network(settings: dict, images, labels, train, held_out, classes):
    """The study's CNN (arch ri) trained by the project's loop on the rows `train` of `images`;
    the rows `held_out` are only its validation log (no epoch is chosen by them)."""
    import torch

    from fishid.models import registry
    from fishid.runtime import prepare, select_device
    from fishid.train import imagecache, recipes

    settings = {**configuration.with_training_defaults(settings), "select_best_val": False}
    torch.manual_seed(settings["seed"])
    device = select_device()
    train_x, val_x = imagecache.Rows(images, train), imagecache.Rows(images, held_out)
    stats = imagecache.channel_stats(images, train)
    data = as_data(train_x, labels[train], val_x, labels[held_out], classes, stats)
    model = prepare(registry.build(settings, len(classes)), device)
    recipes.fit_network(model, data, settings, device)
    return model, data, device


def network_probabilities(images, labels: np.ndarray, classes, folds: int, settings: dict, seed: int, also=None):
    """(out-of-sample probabilities of the labelled photos, features of `images`, features of
    `also`): each fold's photos scored by a network trained on the others; the features are what
    the last layer sees in one more network trained on every labelled photo (outliers, near
    duplicates and clusters need one space for all). `images` may hold more photos after the
    labelled ones (cleaning's dropped copies): they get features only; so do `also` (whole
    photos where `images` are crops; None: none)."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    from fishid.runtime import predict_logits
    from fishid.train.data import plain_inputs
    from fishid.train.recipes import EmbeddingOfImages

    n = len(labels)
    y = torch.from_numpy(labels)
    probabilities = np.zeros((n, len(classes)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for number, (train, held_out) in enumerate(splitter.split(np.zeros(n), labels), start=1):
        train, held_out = torch.from_numpy(train), torch.from_numpy(held_out)
        model, data, device = fit_network(settings, images, y, train, held_out, classes)
        logits = predict_logits(model, plain_inputs(data.val_x, data), device)
        probabilities[held_out.numpy()] = torch.softmax(logits, 1).numpy()
        log.info("fold %d of %d: %d photos scored", number, folds, len(held_out))
    model, data, device = fit_network(settings, images, y, torch.arange(n), torch.arange(0), classes)
    embedding = EmbeddingOfImages(model)
    features = predict_logits(embedding, plain_inputs(images, data), device).numpy()
    others = None if also is None else predict_logits(embedding, plain_inputs(also, data), device).numpy()
    return probabilities, features, others


# --- issues ---------------------------------------------------------------------------------


# Datalab's neighbours per photo for outliers and near duplicates (its own default).
NEIGHBOURS = 10
# Up to this many photos Datalab finds the neighbours itself, exactly, over every pair of photos:
# its time and memory grow with their square (1.7 GB and 35 s of the 20,000-photo queue; at
# 50,000 photos it made the queue grow as photos^1.21, bench/results/scale.md). Past it,
# NN-descent's approximate graph (pynndescent, which umap-learn brings): 3.9 s at 20,000 photos
# (0.72 GB peak for the whole process, features included), growing about linearly, after 25 s
# of compiling.
EXACT_NEIGHBOURS = 10_000


def neighbours(features: np.ndarray) -> dict:
    """What Datalab reads to find each photo's nearest neighbours: the features (it searches every
    pair, by cosine distance past 3 dimensions), or past EXACT_NEIGHBOURS photos the graph of the
    NEIGHBOURS nearest by cosine distance that NN-descent finds (Datalab's knn_graph: one row per
    photo, its neighbours' distances, nearest first, itself left out)."""
    if len(features) <= EXACT_NEIGHBOURS:
        return {"features": features}
    from pynndescent import NNDescent
    from scipy.sparse import csr_matrix

    n, k = len(features), NEIGHBOURS
    # One thread and a fixed seed: the same graph on every run.
    index = NNDescent(features, metric="cosine", n_neighbors=k + 1, random_state=0, n_jobs=1, low_memory=True)
    indices, distances = index.neighbor_graph
    # Each photo is listed as its own nearest; an exact copy of it may come first instead.
    itself = indices == np.arange(n)[:, None]
    keep = np.ones(indices.shape, bool)
    keep[np.arange(n), np.where(itself.any(axis=1), itself.argmax(axis=1), k)] = False
    indices, distances = indices[keep].reshape(n, k), np.maximum(distances[keep].reshape(n, k), 0)
    if (indices < 0).any():
        raise RuntimeError(
            f"NN-descent found fewer than {k} neighbours for {int((indices < 0).any(axis=1).sum())} photo(s)"
        )
    return {"knn_graph": csr_matrix((distances.ravel(), indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))}


def datalab_issues(probabilities: np.ndarray, features: np.ndarray, given: list[str]) -> pd.DataFrame:
    """Datalab's label issues (confident learning; label_score is the self-confidence) and
    outliers (distances to the nearest neighbours in feature space), one row per photo."""
    from cleanlab import Datalab

    lab = Datalab(data={"label": given}, label_name="label", verbosity=0)
    # One process: by default confident learning forks a pool per core, and a fork of this
    # process (PyTorch's and OpenMP's threads running) hung in a futex wait in CI (a
    # test_review_app run stuck for 10 minutes); cleanlab documents n_jobs as changing only
    # the time, never the result.
    label = {"clean_learning_kwargs": {"find_label_issues_kwargs": {"n_jobs": 1}}}
    lab.find_issues(pred_probs=probabilities, **neighbours(features), issue_types={"label": label, "outlier": {}})
    return lab.get_issues()


def datalab_near_duplicates(features: np.ndarray) -> list[set[int]]:
    """Datalab's near-duplicate set of each photo (indices of the others)."""
    from cleanlab import Datalab

    lab = Datalab(data={"index": list(range(len(features)))}, verbosity=0)
    lab.find_issues(**neighbours(features), issue_types={"near_duplicate": {}})
    return [set(map(int, s)) for s in lab.get_info("near_duplicate")["near_duplicate_sets"]]


def pairs_of(sets: list[set[int]]) -> set[frozenset]:
    return {frozenset((i, j)) for i, others in enumerate(sets) for j in others}


def phash_pairs(shas: list[str], clean: pd.DataFrame) -> set[frozenset]:
    """Cleaning's near-duplicate pairs among `shas`: each dropped copy with the photo it kept,
    and kept photos of one perceptual-hash cluster (where cleaning keeps more than one)."""
    index = {sha: i for i, sha in enumerate(shas)}
    rows = clean[clean["sha256"].isin(index)]
    pairs = {frozenset((index[a], index[b])) for a, b in zip(rows["sha256"], rows["duplicate_of"]) if b in index}
    for _, members in rows[rows["near_duplicate_cluster"].fillna("") != ""].groupby("near_duplicate_cluster"):
        found = [index[s] for s in members["sha256"]]
        pairs |= {frozenset((a, b)) for a in found for b in found if a < b}
    return pairs


# scikit-learn's HDBSCAN builds its spanning tree by Prim over every pair of photos (time grows
# with the square of their number). Past this many, it clusters a random sample of them.
CLUSTER_SAMPLE = 10_000


def clusters(features: np.ndarray, min_cluster_size: int, sample: int = CLUSTER_SAMPLE, seed: int = 0) -> np.ndarray:
    """HDBSCAN's cluster of each photo (-1: in none) over the standardised features, reduced to
    32 principal components first (densities mean little in hundreds of dimensions). Over
    `sample` photos, HDBSCAN clusters a random `sample` of them and every other photo joins the
    cluster of its nearest sampled photo if it lies within the largest core distance of that
    cluster's sampled photos (the sparsest density HDBSCAN took into it), else none: linear in
    the photos past the sample."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features)
    x = PCA(int(min(32, len(x) - 1, x.shape[1])), random_state=0).fit_transform(x)
    if len(x) <= sample:
        return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(x)
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False))
    found = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(x[chosen])
    index = NearestNeighbors().fit(x[chosen])
    # HDBSCAN's core distance: to the min_samples-th nearest point, the point itself counted.
    core = index.kneighbors(x[chosen], n_neighbors=min_cluster_size)[0][:, -1]
    reach = pd.Series(core[found >= 0]).groupby(found[found >= 0]).max()
    labels = np.full(len(x), -1)
    labels[chosen] = found
    rest = np.setdiff1d(np.arange(len(x)), chosen)
    distance, nearest = (a[:, 0] for a in index.kneighbors(x[rest], n_neighbors=1))
    cluster = found[nearest]
    within = (cluster >= 0) & (distance <= reach.reindex(cluster).to_numpy())
    labels[rest] = np.where(within, cluster, -1)
    return labels


def flags(table: pd.DataFrame, flag_below: float, max_share: float) -> pd.Series:
    """Datalab's label issues that the model also gives under `flag_below` for their own label,
    the least self-confident first, at most `max_share` of the photos: past that a flag says
    nothing a ranking does not."""
    candidates = table["is_label_issue"] & (table["self_confidence"] < flag_below)
    allowed = int(np.floor(max_share * len(table)))
    order = table["self_confidence"].rank(method="first")
    return candidates & (order <= allowed) if candidates.sum() > allowed else candidates


# --- the stage ------------------------------------------------------------------------------


def empty(settings: dict, reason: str) -> tuple[pd.DataFrame, dict]:
    return pd.DataFrame(columns=ISSUE_COLUMNS), {"photos": 0, "backbone": settings["backbone"], "note": reason}


def model_outputs(settings: dict, photos: list, seen, labels, classes, folds: int, seed: int, backbone_path):
    """(out-of-sample probabilities, features of what the model read, features of the whole
    photos): `photos` are the whole photos' files (the labelled ones, then cleaning's dropped
    copies), `seen` the labelled photos' crops' (None: the model reads the whole photos)."""
    if settings["backbone"] == "none":
        return network_outputs(settings["network"], settings["image_size"], photos, seen, labels, classes, folds, seed)
    if backbone_path is None:
        raise ValueError(f"review.label_issues.backbone {settings['backbone']!r}: its weights file is missing")
    n, size = len(labels), settings["image_size"]
    whole = backbone_features(photos, size, backbone_path)
    features = whole[:n] if seen is None else backbone_features(seen, size, backbone_path)
    probabilities = linear_probabilities(features[:n], labels, folds, seed)
    if settings["with_network"]:
        network = settings["network"]
        theirs = network_outputs(network, network["image_size"], photos, seen, labels, classes, folds, seed)[0]
        probabilities = geometric_mean(probabilities, theirs)
    return probabilities, features, whole


def network_outputs(network: dict, size: int, photos: list, seen, labels, classes, folds: int, seed: int):
    """model_outputs of the per-fold networks (`network`'s settings, photos read at `size`)."""
    # The networks read the photos from files mapped as training reads its cache: the kernel,
    # not this job, holds them (7 KB a photo at 48 px, twice with crops: 140 GB at 10 million).
    with tempfile.TemporaryDirectory(prefix="fishid-label-issues-") as scratch:
        images = load_images(photos, size, Path(scratch, "photos.npy"))
        probabilities, features, whole = network_probabilities(
            images if seen is None else load_images(seen, size, Path(scratch, "crops.npy")),
            labels,
            classes,
            folds,
            network,
            seed,
            also=None if seen is None else images,
        )
    return probabilities, features, features if seen is None else whole


def geometric_mean(*probabilities: np.ndarray) -> np.ndarray:
    """Each photo's class probabilities under several models together: their geometric mean,
    normalised (a class any model rules out stays unlikely)."""
    logs = np.mean([np.log(np.clip(p, 1e-12, None)) for p in probabilities], axis=0)
    combined = np.exp(logs - logs.max(axis=1, keepdims=True))
    return combined / combined.sum(axis=1, keepdims=True)


def label_issues(clean: pd.DataFrame, derived_root, settings: dict, backbone_path=None, seed: int = 0, crops=None):
    """(per-photo table, summary) for the kept, labelled photos of the cleaning table, least
    self-confident first. `settings`: issue_settings of the configuration; `crops`: (the detect
    stage's crops table, the folder its paths are in), which settings["crops"] needs."""
    start = time.perf_counter()
    kept = labelled_photos(clean)
    classes = sorted(set(kept["taxon"]))
    if len(classes) < 2:
        return empty(settings, "fewer than two species with two kept photos: nothing to cross-validate")
    # Cleaning's dropped copies get features too: Datalab's near duplicates are compared with them.
    everything = pd.concat([kept, phash_copies(clean, kept)], ignore_index=True)
    photos = [Path(derived_root, p) for p in everything["derived_path"]]
    seen, cropped = None, 0
    if settings["crops"]:
        if crops is None:
            raise ValueError("review.label_issues.crops: the detect stage's crops table was not given")
        seen, cropped = crop_paths(kept, derived_root, crops)
    labels = np.array([classes.index(t) for t in kept["taxon"]])
    folds = int(min(settings["folds"], np.bincount(labels).min()))
    probabilities, features, whole = model_outputs(settings, photos, seen, labels, classes, folds, seed, backbone_path)
    calibration = None
    if settings["crops"]:
        probabilities, calibration = size_calibrated(probabilities, labels, crop_sides(kept, crops[0]))
    scored = time.perf_counter()
    duplicates = datalab_near_duplicates(whole)
    pairs = {"datalab": pairs_of(duplicates), "phash": phash_pairs(list(everything["sha256"]), clean)}
    table = issue_table(kept, classes, labels, probabilities, features, settings, everything, duplicates, pairs)
    summary = summarise(table, settings, folds, classes, probabilities, labels, pairs)
    summary["cropped"] = cropped
    summary["calibration"] = calibration
    summary["seconds"] = {
        "probabilities": round(scored - start, 2),
        "issues": round(time.perf_counter() - scored, 2),
    }
    return table[ISSUE_COLUMNS], summary


def issue_table(kept, classes, labels, probabilities, features, settings, everything, sets, pairs) -> pd.DataFrame:
    """One row per labelled photo. `features` and Datalab's near-duplicate `sets` cover the
    labelled photos and, after them, cleaning's dropped copies (`everything`)."""
    n = len(kept)
    issues = datalab_issues(probabilities, features[:n], list(kept["taxon"]))
    shas = list(everything["sha256"])
    disagreeing = pairs["datalab"] ^ pairs["phash"]
    table = pd.DataFrame(
        {
            "sha256": kept["sha256"],
            "label": kept["taxon"],
            "predicted": [classes[i] for i in probabilities.argmax(axis=1)],
            "self_confidence": probabilities[np.arange(n), labels],
            "derived_path": kept["derived_path"],
            "label_score": issues["label_score"].to_numpy(),
            "is_label_issue": issues["is_label_issue"].to_numpy(),
            "outlier_score": issues["outlier_score"].to_numpy(),
            "is_outlier": issues["is_outlier_issue"].to_numpy(),
            "cluster": clusters(features[:n], settings["min_cluster_size"]),
            "near_duplicate_of": [",".join(sorted(shas[j] for j in sets[i])) for i in range(n)],
            "phash_disagrees": [any(i in pair for pair in disagreeing) for i in range(n)],
        }
    )
    table["flagged"] = flags(table, settings["flag_below"], settings["max_flagged_share"])
    table = table.sort_values(["self_confidence", "sha256"], ignore_index=True)
    table["rank"] = np.arange(1, n + 1)
    return table


def summarise(table, settings, folds, classes, probabilities, labels, pairs) -> dict:
    sizes = table.loc[table["cluster"] >= 0, "cluster"].value_counts()
    flagged = int(table["flagged"].sum())
    below = int((table["is_label_issue"] & (table["self_confidence"] < settings["flag_below"])).sum())
    return {
        "photos": len(table),
        "classes": len(classes),
        "backbone": settings["backbone"],
        "with_network": settings.get("with_network", False),
        "image_size": settings["image_size"],
        "folds": folds,
        "cross_validated_accuracy": round(float((probabilities.argmax(axis=1) == labels).mean()), 4),
        "flag_below": settings["flag_below"],
        "max_flagged_share": settings["max_flagged_share"],
        "label_issues": int(table["is_label_issue"].sum()),
        "flagged": flagged,
        "flagged_share": round(flagged / len(table), 4),
        # More photos met the flag's condition than the share allows: the cap chose among them.
        "flags_capped": below > flagged,
        "outliers": int(table["is_outlier"].sum()),
        "near_duplicates": {
            "photos": int((table["near_duplicate_of"] != "").sum()),
            # Pairs among the labelled photos and cleaning's dropped copies: Datalab's (features)
            # against cleaning's (perceptual hash), and where the two disagree.
            "datalab_pairs": len(pairs["datalab"]),
            "phash_pairs": len(pairs["phash"]),
            "both": len(pairs["datalab"] & pairs["phash"]),
            "datalab_only": len(pairs["datalab"] - pairs["phash"]),
            "phash_only": len(pairs["phash"] - pairs["datalab"]),
        },
        "clusters": {
            "count": len(sizes),
            "unclustered": int((table["cluster"] < 0).sum()),
            "sizes": sorted(map(int, sizes), reverse=True),
        },
    }


@steps.declare(
    "label-issues",
    "the review app's queue of likely label errors",
    steps.inp("clean"),
    steps.inp("derived"),
    steps.par("spec", type="json", help="review.label_issues settings (resolved) as JSON"),
    steps.inp(
        "backbone",
        default=None,
        help="the backbone's weights (backbone: not none)",
    ),
    steps.inp("crops", default=None, help="the detect stage's crops table (spec crops: true)"),
    steps.inp("crop_store", default=None, help="the folder the crops table's paths are in"),
    steps.par("seed", type="int", default=0),
    steps.THREADS,
    steps.out("out", key="table"),
    steps.out("summary", help="counts per issue type, clusters, the backbone used (JSON)"),
)
def label_issues_step(
    clean, derived, spec, out, summary, backbone=None, crops=None, crop_store=None, seed=0, threads=1
):
    """The `label-issues` step (rule label_issues): the queue and its summary, written."""
    import torch
    from threadpoolctl import threadpool_limits

    from fishid.tables import read_table, write_table, write_text_atomic

    torch.set_num_threads(threads)
    # BLAS too (scikit-learn's regression): more threads than the job's cores only wait on each other.
    with threadpool_limits(threads):
        table, counts = label_issues(
            read_table(clean), derived, spec, backbone, seed, (crops, crop_store) if crops else None
        )
    write_table(table, out, ISSUE_COLUMNS)
    write_text_atomic(summary, json.dumps(counts, indent=2) + "\n")
    log.info(
        "%d of %d images flagged as likely label errors (%s); %d outliers; %d clusters",
        table["flagged"].sum(),
        len(table),
        spec["backbone"],
        counts.get("outliers", 0),
        counts.get("clusters", {}).get("count", 0),
    )
