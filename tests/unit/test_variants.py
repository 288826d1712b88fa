"""Every model variant beyond the study's RI and TL: ResNet-18 fully trained, open-set by
threshold, siamese and triplet embeddings with k-NN, CLIP zero-shot and linear probe. The
networks are real (torchvision, open_clip) and small, with random or in-test-trained
weights, so the real training and loading code runs offline."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from toydata import SETTINGS, TINY_CLIP, toy_cache

from fishid import variants
from fishid.config import SCHEMA_PATH, ConfigError, load, validate
from fishid.evaluate import inference, metrics
from fishid.evaluate import stage as evaluate
from fishid.models import clip as clip_models
from fishid.models import embeddings, openset
from fishid.models import registry as models
from fishid.models.weights import WeightsUnavailable
from fishid.tables import write_table
from fishid.train import imagecache, recipes, record, stage


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_cache(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory, toy):
    """A ResNet-18 backbone pre-trained (briefly) by the pipeline's own code."""
    path = tmp_path_factory.mktemp("backbone") / "weights.pt"
    weights, _, _ = stage.pretrain_backbone({**SETTINGS, "epochs": 1}, toy)
    torch.save(weights, path)
    return path


def trained(tmp_path, settings, cache, *args, **kwargs):
    """Train, save as the pipeline does, and return (weights path, history, meta)."""
    weights, history, meta = stage.train_model(settings, cache, *args, **kwargs)
    record.save(weights, history, meta, tmp_path / "weights.pt", tmp_path / "history.csv", tmp_path / "meta.json")
    return tmp_path / "weights.pt", history, json.loads((tmp_path / "meta.json").read_text())


# ResNet-18, every layer trained


def test_resnet18_fine_tuning_starts_from_the_backbone_and_trains_every_layer(tmp_path, toy, backbone_file):
    backbone = torch.load(backbone_file, weights_only=True)["model"]
    settings = {**SETTINGS, "arch": "resnet18", "backbone": "pool", "epochs": 2}
    path, history, _ = trained(tmp_path, settings, toy, backbone_file)
    tuned = torch.load(path, weights_only=True)["model"]
    conv = "layer1.0.conv1.weight"
    assert not torch.equal(tuned[conv], backbone[conv]), "fine-tuning left the backbone unchanged"
    # Two epochs at a small learning rate move the weights only a little from where they started.
    assert (tuned[conv] - backbone[conv]).abs().max() < 0.1 * backbone[conv].abs().max()
    assert history["val_acc"].iloc[-1] >= 0.9
    predictions = inference.predict(settings, path, toy, "val")
    assert (predictions["label"] == predictions["predicted"]).mean() == history["val_acc"].iloc[-1]


def test_resnet18_from_scratch_ignores_any_backbone(tmp_path, toy):
    settings = {**SETTINGS, "arch": "resnet18", "backbone": "random", "epochs": 1}
    path, _, _ = trained(tmp_path, settings, toy, backbone_path=tmp_path / "does-not-exist.pt")
    assert torch.load(path, weights_only=True)["model"]["fc.weight"].shape == (2, 512)


# Open set by a threshold


def test_threshold_is_the_best_balanced_accuracy_on_validation():
    classes = ["a", "b"]
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45], [0.3, 0.7]])
    labels = ["a", "b", "other", "other", "b"]
    choice = openset.choose_threshold(scores, labels, classes, "other", 0.95)
    # Above 0.6 every "other" is caught and every known image (0.9, 0.8, 0.7) kept.
    assert 0.6 < choice["threshold"] <= 0.7 and choice["validation_balanced_accuracy"] == 1.0
    predicted = openset.apply_threshold(scores, classes, choice["threshold"], "other")
    assert list(predicted) == ["a", "b", "other", "other", "b"]


def test_threshold_ties_go_to_the_lowest_and_balanced_accuracy_ignores_classes_only_predicted():
    classes = ["a", "b"]
    # The b image is wrong at any threshold: called a, or other once the threshold passes 0.6.
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.2]])
    choice = openset.choose_threshold(scores, ["a", "b", "other"], classes, "other", 0.95)
    # Thresholds 0.6 and 0.9 both catch the other image and keep the a one: 2 of 3 recalls.
    assert choice["threshold"] == 0.6 and choice["validation_balanced_accuracy"] == pytest.approx(2 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # b is predicted but is no image's label: a recall 1/2 and other 1, b not counted.
        accuracy = openset.balanced_accuracy(np.array(["a", "a", "other"]), np.array(["a", "b", "other"]))
    assert accuracy == pytest.approx(0.75)


def test_threshold_without_other_images_keeps_the_asked_share_of_known_ones():
    scores = np.stack([np.linspace(0.5, 1.0, 20), 1 - np.linspace(0.5, 1.0, 20)], axis=1)
    choice = openset.choose_threshold(scores, ["a"] * 20, ["a", "b"], "other", 0.9)
    assert choice["validation_known_accepted"] == pytest.approx(0.9, abs=0.05)


def test_threshold_model_never_sees_other_and_chooses_its_threshold_on_validation_only(tmp_path, toy, backbone_file):
    def open_set_cache(folder, seed):
        return toy_cache(folder, labels=("red fish", "blue fish", "other"), n_val=6, n_test=6, seed=seed)

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    cache = open_set_cache(tmp_path / "a", seed=0)
    settings = {**SETTINGS, "arch": "tl", "backbone": "pool", "epochs": 3, "open_set": "threshold"}
    path, _, meta = trained(tmp_path / "a", settings, cache, backbone_file, "other")
    assert meta["classes"] == ["blue fish", "red fish"] and meta["n_train"] == 36
    chosen = meta["open_set_threshold"]
    weights = torch.load(path, weights_only=True)
    assert weights["threshold"] == chosen["threshold"] and weights["threshold_label"] == "other"

    # The same training and validation images with other test images: the same threshold.
    other = open_set_cache(tmp_path / "b", seed=1)
    test = np.array([s == "test" for s in cache["split"]])
    other["images"][~test] = cache["images"][~test]
    other["mean"], other["std"] = cache["mean"], cache["std"]
    _, _, meta_b = trained(tmp_path / "b", settings, other, backbone_file, "other")
    assert meta_b["open_set_threshold"]["threshold"] == chosen["threshold"]

    predictions = inference.predict(settings, path, cache, "test")
    assert [c for c in predictions if c.startswith("score:")] == ["score:blue fish", "score:red fish"]
    top = predictions[["score:blue fish", "score:red fish"]].max(axis=1)
    # Scores are written rounded to 6 decimals: leave out those that round onto the threshold.
    clear = (top - chosen["threshold"]).abs() > 1e-6
    assert ((predictions["predicted"] == "other") == (top < chosen["threshold"]))[clear].all()


# Siamese and triplet networks


def test_contrastive_loss_by_hand():
    e = torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # Pairs: (0,1) same d=0.5 -> 0.25; (0,2) different d=1 -> max(0, 1.5-1)^2 = 0.25; (1,2) d=sqrt(0.45).
    expected = (0.25 + 0.25 + (1.5 - 0.45**0.5) ** 2) / 3
    assert embeddings.contrastive_loss(e, labels, margin=1.5).item() == pytest.approx(expected, rel=1e-5)


def test_batch_hard_triplet_loss_uses_the_hardest_pairs():
    e = torch.tensor([[0.0], [1.0], [3.0], [1.5]])
    labels = torch.tensor([0, 0, 0, 1])
    # Anchor 0: hardest positive 3, hardest negative 1.5 -> 3 - 1.5 + 0.5 = 2.0
    # Anchor 1: positive 2, negative 0.5 -> 2.0; anchor 2: positive 3, negative 1.5 -> 2.0
    # Anchor 3 has no positive: left out.
    assert embeddings.batch_hard_triplet_loss(e, labels, margin=0.5).item() == pytest.approx(2.0)
    assert embeddings.batch_hard_triplet_loss(e, torch.tensor([0, 1, 2, 3]), 0.5).item() == 0.0


def test_distance_threshold_separates_same_and_different_pairs():
    e = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    e = torch.nn.functional.normalize(e, dim=1)
    choice = embeddings.choose_distance_threshold(e, torch.tensor([0, 0, 1, 1]))
    assert choice["accuracy"] == choice["same_accuracy"] == choice["different_accuracy"] == 1.0
    assert 0.14 < choice["threshold"] < 1.2


def test_distance_threshold_never_splits_tied_distances():
    e = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # Distance 1: pairs (0,1) and (2,3), same class, and (1,2), different; then 2 (two
    # different pairs) and 3 (one). Calling the three at distance 1 "same" is best.
    choice = embeddings.choose_distance_threshold(e, torch.tensor([0, 0, 1, 1]))
    assert choice == {"threshold": 1.5, "accuracy": 5 / 6, "same_accuracy": 1.0, "different_accuracy": 0.75}
    # Pairs of one kind only: every pair is called that kind.
    one_class = embeddings.choose_distance_threshold(e, torch.tensor([0, 0, 0, 0]))
    assert one_class["threshold"] == pytest.approx(3.0) and one_class["same_accuracy"] == 1.0
    assert embeddings.choose_distance_threshold(e, torch.tensor([0, 1, 2, 3]))["different_accuracy"] == 1.0


def test_knn_head_votes_by_inverse_distance_and_loads_any_gallery_size():
    head = models.KNNHead(num_classes=2, k=3)
    head.set_gallery(torch.tensor([[0.0], [0.1], [5.0], [5.2]]), torch.tensor([0, 0, 1, 1]))
    shares = head(torch.tensor([[0.05], [5.1]])).softmax(1)
    assert shares[0].argmax() == 0 and shares[1].argmax() == 1
    # Query 0: neighbours at 0.05 (class 0), 0.05 (class 0), 4.95 (class 1).
    w = torch.tensor([1 / 0.05, 1 / 0.05, 1 / 4.95])
    assert shares[0, 1].item() == pytest.approx((w[2] / w.sum()).item(), rel=1e-3)
    fresh = models.KNNHead(num_classes=2, k=3)
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh.gallery, head.gallery)


@pytest.mark.parametrize("arch", ["siamese", "triplet"])
def test_embedding_networks_learn_and_classify_by_nearest_neighbours(tmp_path, toy, backbone_file, arch):
    settings = {**SETTINGS, "arch": arch, "backbone": "pool", "epochs": 4, "batch_size": 16, "lr": 0.05}
    path, history, meta = trained(tmp_path, settings, toy, backbone_file)
    assert history["val_acc"].iloc[-1] >= 0.9
    assert meta["distance_threshold"]["accuracy"] >= 0.9 and meta["feature_views"] == 2
    vectors = inference.embed(settings, path, toy, "val")
    assert vectors.shape == (12, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    predictions = inference.predict(settings, path, toy, "val")
    assert (predictions["label"] == predictions["predicted"]).mean() == pytest.approx(history["val_acc"].iloc[-1])
    # The frozen encoder is the backbone, unchanged.
    backbone = torch.load(backbone_file, weights_only=True)["model"]
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["model"]["encoder.layer4.1.conv2.weight"], backbone["layer4.1.conv2.weight"])
    assert saved["distance_threshold"] == meta["distance_threshold"]["threshold"]


def test_the_evaluation_counts_the_neighbours_the_model_counts(tmp_path, toy, backbone_file):
    """metrics.json's k-NN accuracy over the embeddings uses the model's knn_k, not a k of its own."""
    settings = {**SETTINGS, "arch": "siamese", "backbone": "pool", "epochs": 1, "knn_k": 3}
    path, _, _ = trained(tmp_path, settings, toy, backbone_file)
    imagecache.save(toy, tmp_path / "cache.pt")
    split = pd.DataFrame({"sha256": toy["sha256"], "split": toy["split"], "sources": "toy"})
    write_table(split, tmp_path / "split.tsv")
    outputs = [tmp_path / name for name in ("predictions.tsv", "metrics.json", "figures.npz")]
    result = evaluate.run(settings, "Siamese", path, tmp_path / "cache.pt", tmp_path / "split.tsv", "", *outputs)
    assert result["trained_on"] == ["toy"] and result["by_source"]["toy"]["n"] == 12
    assert result["embedding"]["knn_k"] == 3
    train_labels, val_labels = imagecache.role_labels(toy, "train"), imagecache.role_labels(toy, "val")
    knn = metrics.knn_predict(
        inference.embed(settings, path, toy, "train"), train_labels, inference.embed(settings, path, toy, "val"), k=3
    )
    assert result["embedding"]["knn_accuracy"] == pytest.approx(float((knn == val_labels).mean()))


def test_triplet_network_can_train_its_encoder_too(tmp_path, toy, backbone_file):
    settings = {**SETTINGS, "arch": "triplet", "backbone": "pool", "epochs": 1, "freeze_backbone": False}
    path, history, meta = trained(tmp_path, settings, toy, backbone_file)
    backbone = torch.load(backbone_file, weights_only=True)["model"]
    saved = torch.load(path, weights_only=True)["model"]
    assert not torch.equal(saved["encoder.layer4.1.conv2.weight"], backbone["layer4.1.conv2.weight"])
    assert "feature_views" not in meta and len(history) == 1


# CLIP


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, toy):
    """The tiny CLIP, pre-trained on the toy images captioned 'a photo of {species}'."""
    settings = {**SETTINGS, "source": "clip_pretrain", "clip": TINY_CLIP, "optimizer": "adamw", "epochs": 2}
    weights, history, meta = stage.pretrain_backbone(settings, toy)
    assert meta["captions"] == ["a photo of blue fish", "a photo of red fish"] and len(history) == 2
    path = tmp_path_factory.mktemp("clip") / "weights.pt"
    torch.save(weights, path)
    return path


def test_a_model_and_either_pretrained_backbone_keep_the_same_record(toy):
    """One writer (fishid.train.record.records) for every entry point: the CLIP pre-training
    once kept fewer facts of its run (no validation size, precision or split checksum)."""
    clip = {**SETTINGS, "source": "clip_pretrain", "clip": TINY_CLIP, "optimizer": "adamw", "epochs": 1}
    runs = {
        "model": stage.train_model({**SETTINGS, "epochs": 1}, toy),
        "resnet18 backbone": stage.pretrain_backbone({**SETTINGS, "epochs": 1}, toy),
        "clip backbone": stage.pretrain_backbone(clip, toy),
    }
    for name, (weights, _, meta) in runs.items():
        assert {"model", "classes", "mean", "std", "preprocess"} <= set(weights), name
        assert meta["n_train"] + meta["n_val"] == 60 and meta["split_crc32"] == toy["split_crc32"], name
        assert meta["mixed_precision"] in ("no", "float16") and meta["majority_share"] == 0.5, name
        assert meta["mean"] == toy["mean"].tolist() and meta["std"] == toy["std"].tolist(), name
        assert {"dataset_table_sha256", "seconds", "device", "threads", "code_version", "versions"} <= set(meta), name
    assert runs["clip backbone"][0]["architecture"]["clip"]["embed_dim"] == TINY_CLIP["embed_dim"]
    assert runs["clip backbone"][2]["captions"] == ["a photo of blue fish", "a photo of red fish"]


def test_clip_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    image_to_text = torch.nn.functional.cross_entropy(logits, labels)
    # Caption 0's only image is 0; caption 1's images are 1 and 2.
    column = logits.T.log_softmax(1)
    text_to_image = (-column[0, 0] + -(column[1, 1] + column[1, 2]) / 2) / 2
    assert clip_models.clip_loss(logits, labels).item() == pytest.approx(((image_to_text + text_to_image) / 2).item())


def test_clip_zero_shot_scores_are_prompt_similarities(tmp_path, toy, clip_file):
    settings = {**SETTINGS, "arch": "clip_zeroshot", "backbone": "clip"}
    path, history, meta = trained(tmp_path, settings, toy, clip_file, backbone_spec={"source": "clip_pretrain"})
    assert list(history["epoch"]) == [0] and "open_clip" in meta["versions"]
    backbone = clip_models.from_pretraining(clip_file)
    images = torch.stack([toy["images"][i] for i, s in enumerate(toy["split"]) if s == "val"])
    inputs = (images.float() / 255 - backbone.mean.view(1, 3, 1, 1)) / backbone.std.view(1, 3, 1, 1)
    # By hand, not with the model's helpers: the towers' raw embeddings, cosine similarity of
    # each image to each class's written-out prompt, times CLIP's logit scale, softmax.
    prompts = ["a photo of blue fish", "a photo of red fish"]
    with torch.no_grad():
        image = backbone.model.encode_image(inputs).double().numpy()
        text = backbone.model.eval().encode_text(backbone.tokenizer(prompts)).double().numpy()
        scale = float(backbone.model.logit_scale.exp())
    cosine = (image @ text.T) / np.outer(np.linalg.norm(image, axis=1), np.linalg.norm(text, axis=1))
    logits = scale * cosine
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    predictions = inference.predict(settings, path, toy, "val")
    # The tiny CLIP's scores are all near 0.5: float32 agrees with this to about 1e-7, a head
    # without the logit scale is off by about 1e-4, so the tolerance is absolute and small.
    scores = predictions[["score:blue fish", "score:red fish"]].to_numpy()
    assert np.allclose(scores, expected, rtol=0, atol=1e-5), np.abs(scores - expected).max()
    # The weights file holds the image tower's config: evaluation needs no backbone.
    assert torch.load(path, weights_only=True)["architecture"]["clip"]["embed_dim"] == TINY_CLIP["embed_dim"]


def test_clip_linear_probe_learns_on_frozen_embeddings(tmp_path, toy, clip_file):
    settings = {**SETTINGS, "arch": "clip_linear", "backbone": "clip", "epochs": 4}
    path, history, meta = trained(tmp_path, settings, toy, clip_file, backbone_spec={"source": "clip_pretrain"})
    assert history["val_acc"].iloc[-1] >= 0.9 and meta["feature_views"] == 2
    tower = clip_models.from_pretraining(clip_file).model.visual.state_dict()
    saved = torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(saved[f"encoder.visual.{k}"], v) for k, v in tower.items())
    vectors = inference.embed(settings, path, toy, "val")
    assert vectors.shape == (12, TINY_CLIP["embed_dim"]) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


def test_open_clip_backbone_from_a_local_folder(tmp_path, toy):
    """open_clip's own loader (create_model with 'local-dir:'), as a user with downloaded
    weights would use it."""
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    model = clip_models.build_clip(TINY_CLIP)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    spec = {"source": "open_clip", "model": f"local-dir:{folder}"}
    backbone = clip_models.load_backbone(spec, None, allow_download=False)
    assert all(torch.equal(backbone.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert backbone.config["embed_dim"] == TINY_CLIP["embed_dim"]
    settings = {**SETTINGS, "arch": "clip_zeroshot", "backbone": "hub"}
    path, _, meta = trained(tmp_path, settings, toy, None, backbone_spec=spec)
    # open_clip's default normalisation (OpenAI's), not the dataset's.
    assert meta["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert len(inference.predict(settings, path, toy, "val")) == 12


def test_open_clip_offline_without_cached_weights_names_what_to_download(tmp_path):
    with pytest.raises(WeightsUnavailable) as error:
        clip_models.resolve_pretrained("ViT-B-32", "laion2b_s34b_b79k", tmp_path, allow_download=False)
    message = str(error.value)
    assert "huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message and "`pretrained:`" in message
    with pytest.raises(WeightsUnavailable, match="neither an existing file nor a tag"):
        clip_models.resolve_pretrained("ViT-B-32", "no-such-tag", tmp_path, allow_download=False)


def test_open_clip_offline_finds_weights_in_the_hugging_face_cache(tmp_path):
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    weights = repo / "snapshots" / "0123abcd" / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"stand-in")
    found = clip_models.resolve_pretrained("ViT-B-32", "laion2b_s34b_b79k", tmp_path, allow_download=False)
    assert found == str(weights)


# Configuration


def test_the_registry_has_every_arch_the_schema_allows_and_a_recipe_for_each():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    allowed = schema["properties"]["models"]["additionalProperties"]["properties"]["arch"]["enum"]
    assert list(allowed) == list(variants.NEEDS) == list(models.VARIANTS)
    assert all(arch == v.arch for arch, v in models.VARIANTS.items())
    assert all(vars(variants.needs(arch)).items() <= vars(v).items() for arch, v in models.VARIANTS.items())
    assert {v.recipe for v in models.VARIANTS.values()} <= set(recipes.RECIPES)
    sources = schema["properties"]["backbones"]["additionalProperties"]["properties"]["source"]["enum"]
    assert list(sources) == list(variants.BACKBONE_KINDS)
    assert set(variants.BACKBONE_KINDS.values()) == {n.backbone for n in variants.NEEDS.values()} - {None}


def test_an_unknown_arch_is_refused_naming_the_known_ones(toy):
    for attempt in (
        lambda: stage.train_model({**SETTINGS, "arch": "vit"}, toy),
        lambda: models.build({**SETTINGS, "arch": "vit"}, 2),
    ):
        with pytest.raises(ValueError, match="unknown arch 'vit'") as error:
            attempt()
        assert all(arch in str(error.value) for arch in models.VARIANTS)


def test_demo_config_declares_every_variant():
    from conftest import REPO

    config = load(REPO / "config" / "config.yaml")
    archs = {m["arch"] for m in config["models"].values()}
    assert archs == set(models.VARIANTS)
    assert any(m.get("open_set") == "threshold" for m in config["models"].values())


def test_config_rejects_a_clip_model_on_a_resnet_backbone():
    from conftest import REPO

    config = load(REPO / "config" / "config.yaml")
    config["models"]["CLIP4-linear"]["backbone"] = "pool"
    config["models"]["Siamese4"]["backbone"] = "clip_pool"
    with pytest.raises(ConfigError) as error:
        validate(config)
    assert "models.CLIP4-linear.backbone: 'pool' is not one of the CLIP backbones ['clip_pool']" in str(error.value)
    assert "models.Siamese4.backbone: 'clip_pool' is neither 'random' nor one of ['pool']" in str(error.value)


# Real photos


def test_ri_and_tl_run_end_to_end_on_real_photos(seed_mini, tmp_path):
    """The study's own photos (mixed JPEG kinds and a GIF): cache, train, predict."""
    import pandas as pd

    from fishid.tables import write_table
    from fishid.train import imagecache

    rows = [
        {"sha256": f"{i:064x}", "label": p.parent.name.replace("_", " "), "split": p.parts[-3], "derived_path": str(p)}
        for i, p in enumerate(sorted(seed_mini.glob("*/*/*")))
    ]
    write_table(pd.DataFrame(rows).assign(dataset="seed-mini", group="", taxon=""), tmp_path / "split.tsv")
    cache = imagecache.build(tmp_path / "split.tsv", "/", 64)
    assert cache["classes"] == ["Amphiprion clarkii", "Amphiprion perideraion"] and len(cache["split"]) == len(rows)
    backbone = tmp_path / "backbone.pt"
    torch.save({"model": models.backbone_resnet18().state_dict()}, backbone)
    for settings in (
        {**SETTINGS, "image_size": 64, "epochs": 2},
        {**SETTINGS, "image_size": 64, "epochs": 2, "arch": "tl", "backbone": "pool"},
    ):
        folder = tmp_path / settings["arch"]
        folder.mkdir()
        path, history, _ = trained(folder, settings, cache, backbone)
        assert len(history) == 2 and np.isfinite(history["val_loss"]).all()
        predictions = inference.predict(settings, path, cache, "val")
        assert len(predictions) == cache["split"].count("val")
        assert set(predictions["predicted"]) <= set(cache["classes"])
