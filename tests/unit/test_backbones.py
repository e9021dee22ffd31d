import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models

from cbirq.embed import backbones, builders
from cbirq.embed.families import FAMILIES
from cbirq.embed.images import load_array
from cbirq.errors import BackboneError

CHELSEA = Path(__file__).resolve().parents[1] / "data" / "chelsea.jpg"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def out_dim(net, shape):
    with torch.no_grad():
        return net.eval()(torch.zeros(1, *shape)).flatten(1).shape[1]


def test_strip_classifier_cuts_the_last_linear():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    stripped = backbones.strip_classifier(net, "tiny")
    assert out_dim(stripped, (4,)) == 8
    assert isinstance(stripped[2], nn.Identity)
    assert isinstance(stripped[0], nn.Linear)


def test_strip_classifier_in_a_nested_module():
    net = nn.Sequential(nn.Linear(4, 6), nn.Sequential(nn.ReLU(), nn.Dropout(), nn.Linear(6, 2)))
    assert out_dim(backbones.strip_classifier(net, "nested"), (4,)) == 6


def test_strip_classifier_without_linear_fails():
    with pytest.raises(BackboneError, match="convnet"):
        backbones.strip_classifier(nn.Sequential(nn.Conv2d(3, 4, 3)), "convnet")


def test_strip_classifier_on_resnet18():
    net = models.resnet18(weights=None)
    assert out_dim(net, (3, 64, 64)) == 1000
    assert out_dim(backbones.strip_classifier(net, "resnet18"), (3, 64, 64)) == 512


@pytest.fixture(scope="module")
def resnet18_random():
    return backbones.load_backbone("resnet18", weights="none")


def test_random_weights_are_the_same_every_time(resnet18_random):
    again = backbones.load_backbone("resnet18", weights="none")
    first, second = resnet18_random.net.state_dict(), again.net.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_random_weights_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    backbones.load_backbone("resnet18", weights="none")
    assert torch.equal(torch.rand(3), expected)


def test_resnet18_backbone_settings(resnet18_random):
    assert resnet18_random.dim == 512
    assert (resnet18_random.resize, resnet18_random.crop) == (256, 224)
    assert resnet18_random.mean == pytest.approx(backbones.IMAGENET_MEAN)
    assert resnet18_random.std == pytest.approx(backbones.IMAGENET_STD)
    assert not resnet18_random.net.training


def test_embed_gives_unit_float32_rows(resnet18_random):
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    vectors = resnet18_random.embed(batch)
    assert vectors.shape == (3, 512)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_embed_is_independent_of_batching(resnet18_random, monkeypatch):
    rng = np.random.default_rng(1)
    batch = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    together = resnet18_random.embed(batch)
    monkeypatch.setattr(resnet18_random, "batch_size", 2)
    split = resnet18_random.embed(batch)
    alone = np.concatenate([resnet18_random.embed([image]) for image in batch])
    assert np.allclose(together, split, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-5)


def test_embed_nothing(resnet18_random):
    empty = resnet18_random.embed([])
    assert empty.shape == (0, 512)
    assert empty.dtype == np.float32


def test_unknown_model_name():
    with pytest.raises(BackboneError, match="no_such_net"):
        backbones.load_backbone("no_such_net", weights="none")


def test_unknown_weights_choice():
    with pytest.raises(BackboneError, match="weights"):
        backbones.load_backbone("resnet18", weights="random")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    def no_network(url, dst, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def test_missing_hub_weights_name_the_file(offline_hub):
    filename = Path(models.get_model_weights("resnet18").DEFAULT.url).name
    with pytest.raises(BackboneError) as exc_info:
        backbones.load_backbone("resnet18", weights="imagenet")
    message = str(exc_info.value)
    assert filename in message
    assert str(offline_hub / "checkpoints") in message
    assert "network is unreachable" in message


def fake_hub_file(offline_hub) -> Path:
    """resnet18's weights file in the hub cache, with other weights than the real ones."""
    reference = models.resnet18(weights=None)
    with torch.no_grad():
        reference.layer1[0].conv1.weight.fill_(0.25)
    url = models.get_model_weights("resnet18").DEFAULT.url
    cached = offline_hub / "checkpoints" / Path(url).name
    cached.parent.mkdir()
    torch.save(reference.state_dict(), cached)
    return cached


def test_hub_weights_are_read_from_the_cache(offline_hub, monkeypatch):
    fake_hub_file(offline_hub)
    checked = []
    monkeypatch.setattr(builders, "check_hub_hash", lambda name, data: checked.append(name))
    loaded = backbones.load_backbone("resnet18", weights="imagenet")
    assert torch.all(loaded.net.layer1[0].conv1.weight == 0.25)
    assert checked == ["resnet18-f37072fd.pth"]


def test_hub_weights_that_do_not_match_their_name_are_refused(offline_hub):
    fake_hub_file(offline_hub)
    with pytest.raises(BackboneError, match="does not match the hash in its name"):
        backbones.load_backbone("resnet18", weights="imagenet")


def test_the_hub_hash_is_the_sha256_prefix():
    data = b"weights"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    builders.check_hub_hash(f"net-{prefix}.pth", data)  # accepted
    builders.check_hub_hash("net.pth", data)  # no hash in the name: nothing to check
    with pytest.raises(BackboneError):
        builders.check_hub_hash(f"net-{prefix}.pth", data + b"!")


# Each EfficientNet-Lite member at its native preprocessing: (resize, crop), as in the
# reference TF evaluation (resize to crop + 32, centre crop).
LITE_SIZES = {
    "efficientnet_lite0": (256, 224),
    "efficientnet_lite1": (272, 240),
    "efficientnet_lite2": (292, 260),
}


def cat_probabilities(name, weights):
    net, prep = backbones.build_classifier(name, weights)
    assert (prep.resize, prep.crop) == LITE_SIZES[name]
    image = load_array(CHELSEA, prep.resize, prep.crop)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (prep.mean, prep.std))
    assert mean.tolist() == std.tolist() == [[[[0.5]], [[0.5]], [[0.5]]]]
    x = (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        return net.eval()(x).softmax(1)[0]


@pytest.mark.parametrize("name", sorted(LITE_SIZES))
def test_bundled_efficientnet_weights_recognise_a_cat(name):
    probs = cat_probabilities(name, "imagenet")
    assert int(probs.argmax()) in IMAGENET_CATS
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.5


@pytest.mark.parametrize("name", sorted(LITE_SIZES))
def test_random_efficientnet_does_not_recognise_the_cat(name):
    probs = cat_probabilities(name, "none")
    assert float(probs[list(IMAGENET_CATS)].max()) < 0.05


def test_each_lite_member_loads_its_own_weights():
    # The same layer's weights differ between members: each package's file was loaded.
    stems = [backbones.build_classifier(n, "imagenet")[0]._conv_stem.weight for n in LITE_SIZES]
    assert all(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(stems, stems[1:]))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_builds_with_its_registered_feature_size(name):
    backbone = backbones.load_backbone(name, weights="none")
    assert backbone.dim == FAMILIES[name].dim
    assert backbone.batch_size == FAMILIES[name].batch
    rgb = np.random.default_rng(2).integers(0, 256, (backbone.crop, backbone.crop, 3), np.uint8)
    assert backbone.embed([rgb]).shape == (1, backbone.dim)


@pytest.mark.parametrize("name", sorted(LITE_SIZES))
def test_efficientnet_preprocessing(name):
    backbone = backbones.load_backbone(name, weights="none")
    assert (backbone.resize, backbone.crop) == LITE_SIZES[name]
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
