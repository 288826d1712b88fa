import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import ResNet18_Weights
from toydata import SETTINGS
from toydata import toy_cache as make_toy_cache

from fishid import config, runtime
from fishid.evaluate import stage as evaluate
from fishid.models import registry as models
from fishid.models import weights
from fishid.train import augment, features, imagecache, record, stage
from fishid.train.data import Data, on_device, training_data

ROOT = Path(__file__).resolve().parents[2]
# Training runs on what the machine has: CUDA where it is usable, else the CPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PRECISION = "float16" if DEVICE == "cuda" else "no"


@pytest.fixture
def toy_cache(tmp_path):
    return make_toy_cache(tmp_path)


@pytest.fixture
def on_cpu(monkeypatch):
    """Train on the CPU even where CUDA is usable: for what only the CPU promises."""
    monkeypatch.setattr(stage, "select_device", lambda: torch.device("cpu"))


def test_study_cnn_shapes():
    for size in (32, 96):
        model = models.StudyCNN(5, size)
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 5)


def test_ri_is_the_studys_net96_in_both_configs():
    model = models.StudyCNN(2)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.out_channels, m.kernel_size) for m in convs] == [(70, (5, 5)), (110, (3, 3)), (180, (3, 3))]
    assert [(m.in_features, m.out_features) for m in linears] == [(180 * 9 * 9, 2000), (2000, 200), (200, 2)]
    for name in ("config.yaml", "amphiprion.yaml"):
        defaults = config.load(ROOT / "config" / name)["training_defaults"]
        assert (defaults["channels"], defaults["hidden"]) == ([70, 110, 180], [2000, 200])


def test_ri_at_the_studys_learning_rate_leaves_the_majority_class_within_three_epochs(toy_cache):
    # With PyTorch's default init (the study's script's) the network's outputs hardly depend on
    # the image at first: at lr 0.001 it predicts one class for every image for epochs.
    study = {**SETTINGS, "lr": 0.001, "epochs": 3}
    _, history, meta = stage.train_model(study, toy_cache)
    assert meta["majority_share"] == 0.5 and meta["left_majority_epoch"] <= 2
    assert history["val_acc"].iloc[-1] == 1.0
    _, history, meta = stage.train_model({**study, "init": "pytorch"}, toy_cache)
    assert meta["left_majority_epoch"] is None and (history["val_acc"] == 0.5).all()


def test_training_stuck_at_the_majority_share_is_warned_once(toy_cache, caplog):
    # PyTorch's init starts with nearly constant outputs; lr 0 keeps them so.
    settings = {**SETTINGS, "lr": 0.0, "init": "pytorch", "epochs": 4, "collapse_warning_epochs": 3}
    with caplog.at_level(logging.WARNING, logger="fishid.train.loop"):
        _, _, meta = stage.train_model(settings, toy_cache)
    warned = [r for r in caplog.records if "majority class's share (0.500) for 3 epochs" in r.getMessage()]
    assert len(warned) == 1
    assert meta["left_majority_epoch"] is None


def test_augmentation_keeps_shape_and_range_and_full_crop_is_identity():
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    out = augment.random_resized_crop_flip(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 24, 24) and out.min() >= 0 and out.max() <= 1
    same = augment.random_resized_crop_flip(images, scale=(1, 1), ratio=(1, 1), flip=False)
    assert torch.allclose(same, runtime.to_float(images), atol=1e-5)


def test_normalised_images_give_the_floats_of_all_at_once_a_batch_at_a_time():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    at_once = runtime.normalise(runtime.to_float(images), mean, std)
    lazy = runtime.Normalised(images, mean, std)
    assert len(lazy) == 10 and [len(b) for b in lazy.split(4)] == [4, 4, 2]
    assert torch.equal(torch.cat(list(lazy.split(4))), at_once)
    assert torch.equal(lazy[torch.tensor([7, 2])], at_once[[7, 2]])
    assert [b.shape for b in runtime.Normalised(images[:0], mean, std).split(4)] == [
        b.shape for b in at_once[:0].split(4)
    ]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    cpu = torch.device("cpu")
    assert torch.equal(runtime.predict_logits(model, lazy, cpu, 3), runtime.predict_logits(model, at_once, cpu, 3))


def test_channel_statistics_past_the_at_once_size_are_summed_to_the_same_values(monkeypatch):
    images = torch.randint(0, 256, (2500, 3, 4, 4), dtype=torch.uint8)
    rows = torch.arange(2500) % 3 != 0
    at_once = imagecache.channel_stats(images, rows)
    monkeypatch.setattr(imagecache, "STATS_AT_ONCE_BYTES", 1000)
    summed = imagecache.channel_stats(images, rows)
    for a, b in zip(summed, at_once):
        assert torch.allclose(a, b, rtol=1e-5) and not torch.equal(a, torch.zeros(3))


def test_training_rows_are_the_images_of_their_role_read_where_indexed(toy_cache):
    data = training_data(toy_cache)
    train, _ = imagecache.subset(toy_cache, "train")
    assert len(data.train_x) == len(train) == len(data.train_y) and data.train_x.nbytes == train.nbytes
    assert torch.equal(data.train_x[torch.tensor([3, 0])], train[[3, 0]]) and torch.equal(data.train_x.to("cpu"), train)


def test_the_cache_step_writes_what_build_gives_and_leaves_no_scratch_file(toy_cache, tmp_path):
    out = tmp_path / "cache" / "32px.pt"
    imagecache.cache_step(tmp_path / "split.tsv", tmp_path, 32, out)
    written, built = imagecache.load(out), imagecache.build(tmp_path / "split.tsv", tmp_path, 32)
    assert torch.equal(written["images"], built["images"]) and written["sha256"] == built["sha256"]
    assert torch.equal(written["mean"], built["mean"]) and sorted(p.name for p in out.parent.iterdir()) == ["32px.pt"]


def test_cache_holds_training_statistics(toy_cache, tmp_path):
    assert toy_cache["classes"] == ["blue fish", "red fish"]
    assert toy_cache["split_sha256"] == hashlib.sha256((tmp_path / "split.tsv").read_bytes()).hexdigest()
    assert toy_cache["images"].shape == (60, 3, 32, 32) and toy_cache["images"].dtype == torch.uint8
    assert toy_cache["split"].count("val") == 12
    # Red and blue images in equal numbers: the red and blue channel means are about equal.
    assert abs(toy_cache["mean"][0] - toy_cache["mean"][2]) < 0.05


def test_ri_learns_and_saves_loadable_weights(toy_cache, tmp_path):
    result = stage.train_model(SETTINGS, toy_cache)
    weights_, history, meta = result
    assert list(history["epoch"]) == list(range(1, 7))
    assert history["val_acc"].iloc[-1] == 1.0
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert meta["device"] == DEVICE and meta["n_train"] == 48
    record.save(*result, tmp_path / "w.pt", tmp_path / "h.csv", tmp_path / "m.json")
    predictions = evaluate.predict(SETTINGS, tmp_path / "w.pt", toy_cache, "val")
    assert (predictions["label"] == predictions["predicted"]).all()
    scores = predictions[[c for c in predictions if c.startswith("score:")]].sum(axis=1)
    assert np.allclose(scores, 1, atol=1e-4)


def test_same_seed_same_training_on_cpu(toy_cache, on_cpu):
    settings = {**SETTINGS, "epochs": 2}
    timings = ["seconds", "data_seconds"]
    first, second = (stage.train_model(settings, toy_cache) for _ in range(2))
    assert first[1].drop(columns=timings).equals(second[1].drop(columns=timings))
    assert all(torch.equal(first[0]["model"][k], second[0]["model"][k]) for k in first[0]["model"])


def test_meta_names_data_code_libraries_and_device(toy_cache):
    _, history, meta = stage.train_model({**SETTINGS, "epochs": 1}, toy_cache)
    assert list(history.columns) == [
        "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "data_seconds", "selected"
    ]  # fmt: skip
    assert meta["dataset_table_sha256"] == toy_cache["split_sha256"]
    assert meta["device"] == DEVICE and meta["mixed_precision"] == PRECISION and meta["threads"] >= 1
    assert meta["versions"]["torch"] == torch.__version__
    # This checkout is a git repository: the commit is named, "+dirty" when files changed.
    assert len(meta["code_version"].split("+")[0]) == 40
    assert meta["settings"]["optimizer"] == "sgd" and meta["settings"]["lr"] == SETTINGS["lr"]


def test_tl_trains_only_the_new_layer_on_a_frozen_backbone(toy_cache, tmp_path):
    torch.manual_seed(0)  # the stand-in "pre-trained" backbone is random: the same one every run
    pretrained = models.backbone_resnet18()
    torch.save({"model": pretrained.state_dict()}, tmp_path / "backbone.pt")
    settings = {**SETTINGS, "arch": "tl", "backbone": "pool", "epochs": 4}
    weights_, history, _ = stage.train_model(settings, toy_cache, tmp_path / "backbone.pt")
    trained = weights_["model"]
    for name, value in pretrained.named_parameters():
        assert torch.equal(trained[name], value), f"{name} changed although frozen"
    assert trained["fc.weight"].shape == (2, 512)
    # The layer learned (chance is 0.5; 12 validation images on a random "pre-trained" backbone).
    assert history["val_acc"].iloc[-1] >= 0.75
    # Batch-norm statistics follow the new images, as in the study's training-mode loop...
    assert not torch.equal(trained["bn1.running_mean"], pretrained.bn1.running_mean)
    # ...unless the model keeps the backbone's.
    kept, kept_history, _ = stage.train_model(
        {**settings, "refit_batchnorm": False}, toy_cache, tmp_path / "backbone.pt"
    )
    assert all(torch.equal(kept["model"][name], value) for name, value in pretrained.state_dict().items())
    assert kept_history["val_acc"].iloc[-1] >= 0.75


def test_pretrained_backbone_drops_its_classifier(toy_cache, tmp_path):
    weights_, _, _ = stage.pretrain_backbone({**SETTINGS, "epochs": 1}, toy_cache)
    assert not [k for k in weights_["model"] if k.startswith("fc.")]
    torch.save(weights_, tmp_path / "backbone.pt")
    models.load_backbone_state(models.backbone_resnet18(), tmp_path / "backbone.pt")


class FakeWeights:
    """A weights entry like torchvision's, pointing at a file this test makes."""

    def __init__(self, url):
        self.url = url


def test_imagenet_weights_offline_and_missing_names_the_file_to_place(tmp_path):
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.ensure_imagenet_weights(tmp_path / "weights", allow_download=False)
    message = str(error.value)
    assert ResNet18_Weights.IMAGENET1K_V1.url in message
    assert str(tmp_path / "weights" / "resnet18-f37072fd.pth") in message


def test_imagenet_weights_cached_file_is_checked_then_loads(tmp_path):
    state = models.backbone_resnet18().state_dict()
    torch.save(state, tmp_path / "scratch.pth")
    digest = hashlib.sha256((tmp_path / "scratch.pth").read_bytes()).hexdigest()
    good = tmp_path / f"resnet18-{digest[:8]}.pth"
    (tmp_path / "scratch.pth").rename(good)
    path = weights.ensure_imagenet_weights(tmp_path, False, FakeWeights(f"https://host/models/{good.name}"))
    models.load_backbone_state(models.backbone_resnet18(), path)

    bad = tmp_path / "resnet18-00000000.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(weights.WeightsUnavailable, match="corrupt or not the expected file"):
        weights.ensure_imagenet_weights(tmp_path, False, FakeWeights(f"https://host/models/{bad.name}"))


def test_cpu_bfloat16_is_a_setting_that_changes_the_numbers_not_the_learning(toy_cache, on_cpu):
    float32 = stage.train_model(SETTINGS, toy_cache)
    bfloat16 = stage.train_model({**SETTINGS, "cpu_bfloat16": True}, toy_cache)
    assert bfloat16[2]["mixed_precision"] == "bfloat16" and float32[2]["mixed_precision"] == "no"
    assert not bfloat16[1]["train_loss"].equals(float32[1]["train_loss"])
    assert bfloat16[1]["val_acc"].iloc[-1] == 1.0


def test_with_a_test_split_the_best_validation_epoch_is_kept(tmp_path):
    cache = make_toy_cache(tmp_path, per_label=30, n_val=4, n_test=4)
    settings = {**SETTINGS, "epochs": 5, "lr": 0.003}
    weights_, history, _ = stage.train_model(settings, cache)
    best = history["val_acc"].idxmax()  # the first epoch with the highest validation accuracy
    assert history["selected"].tolist() == [i == best for i in range(len(history))]
    torch.save(weights_, tmp_path / "w.pt")
    val = evaluate.predict(settings, tmp_path / "w.pt", cache, "val")
    assert (val["label"] == val["predicted"]).mean() == pytest.approx(history["val_acc"][best])


def test_without_a_test_split_the_last_epoch_is_kept(toy_cache):
    _, history, _ = stage.train_model({**SETTINGS, "epochs": 3}, toy_cache)
    assert history["selected"].tolist() == [False, False, True]


def test_training_mode_features_never_pass_a_batch_of_one_image(monkeypatch):
    # 5 images in batches of at most 4: 4 + 1 would stop the batch norms (one value per channel).
    monkeypatch.setattr(features, "FEATURE_BATCH", 4)
    encoder = models.backbone_resnet18()
    encoder.fc = torch.nn.Identity()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    data = Data(images, torch.zeros(5), images, torch.zeros(5), ["a"], torch.full((3,), 0.5), torch.ones(3))
    generator = torch.Generator().manual_seed(0)
    extracted = features.extract_features(
        encoder, images, data, SETTINGS, torch.device("cpu"), 1, generator, train_mode=True
    )
    assert extracted.shape == (1, 5, 512) and torch.isfinite(extracted).all()
    assert not encoder.training


def test_on_the_cpu_training_images_stay_where_they_are(tmp_path):
    data = training_data(make_toy_cache(tmp_path))
    assert on_device(data, torch.device("cpu")) is data


def test_a_feature_constant_over_the_training_set_is_centred_not_blown_up():
    from fishid.models.heads import FeatureScaler

    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
    scaler = FeatureScaler(2).fit(features)
    # A photo that lights the channel no training photo lit keeps a value of its own scale.
    out = scaler(torch.tensor([[3.0, 0.25]]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.25]]))
    assert torch.isfinite(scaler(torch.tensor([[3.0, 0.25]])).half()).all()


def test_the_cache_holds_each_photo_as_decoded_and_its_training_statistics(tmp_path):
    from PIL import Image

    from fishid.train import imagecache

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    images = imagecache.load_squares(paths, 16)
    expected = np.stack([imagecache.load_square(p, 16) for p in paths]).transpose(0, 3, 1, 2)
    assert images.dtype == torch.uint8 and np.array_equal(images.numpy(), expected)
    # Written into a mapped file as they are read: the same images, in the file.
    mapped = imagecache.load_squares(paths, 16, into=tmp_path / "images.part")
    assert torch.equal(mapped, images) and np.array_equal(np.load(tmp_path / "images.part"), expected)
    # Statistics over the training rows only, chunk by chunk, equal the direct computation.
    train = torch.tensor([True, False, True, True, False])
    pixels = images[train].double().div(255)
    mean, std = imagecache.channel_stats(images, train)
    assert torch.allclose(mean.double(), pixels.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), pixels.std(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(imagecache.channel_stats(images, torch.tensor([0, 2, 3]))[1], std)
