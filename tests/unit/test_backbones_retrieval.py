"""Backbone variants for retrieval: GeM pooling, multi-scale descriptors, resnet20 checkpoints."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cbirq.embed import backbones
from cbirq.embed.specs import checkpoint_weights
from cbirq.errors import BackboneError
from cbirq.training.cifar import normalize
from cbirq.training.models import resnet20


def checkpoint_of(net: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "epoch": 1, "history": [], "config": {}}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(7)
    net = resnet20().eval()
    with torch.no_grad():  # a net unlike the seeded random one, with non-trivial BN statistics
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return net


def images(count, side, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), np.uint8))


def test_gem_with_p_1_is_average_pooling_and_leans_to_the_maximum_above():
    x = torch.rand(2, 5, 4, 4)
    assert torch.allclose(backbones.GeM(p=1)(x), x.mean((2, 3), keepdim=True), atol=1e-6)
    gem = backbones.GeM(p=3)(x)
    assert (gem > x.mean((2, 3), keepdim=True)).all() and (
        gem <= x.amax((2, 3), keepdim=True)
    ).all()


def test_gem_replaces_the_global_pool_and_needs_one():
    bb = backbones.load_backbone("resnet18+gem", weights="none")
    assert isinstance(bb.net.avgpool, backbones.GeM) and bb.dim == 512 and bb.name == "resnet18+gem"
    with pytest.raises(BackboneError, match="no global average pooling"):  # as VGG's 7x7
        backbones.use_gem(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(7)), "vgg")


def test_resnet20_checkpoint_gives_its_penultimate_features(trained):
    data = checkpoint_of(trained)
    bb = backbones.load_backbone("resnet20", checkpoint_weights(data), checkpoint=data)
    assert (bb.dim, bb.crop) == (64, 32)
    batch = images(3, 32)
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = F.normalize(trained.features(normalize(x)), dim=1).numpy()
    assert np.allclose(bb.embed(batch), expected, atol=1e-5)


def test_resnet20_loads_a_checkpoint_trained_on_other_classes():
    """`cbirq submit-train` on three class folders gives a 3-way classifier; its penultimate
    features are as good a backbone as a CIFAR-10 one."""
    torch.manual_seed(3)
    net = resnet20(3).eval()
    data = checkpoint_of(net)
    bb = backbones.load_backbone("resnet20", checkpoint_weights(data), checkpoint=data)
    x = torch.from_numpy(np.stack(images(2, 32))).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = F.normalize(net.features(normalize(x)), dim=1).numpy()
    assert bb.dim == 64 and np.allclose(bb.embed(images(2, 32)), expected, atol=1e-5)


def test_resnet20_refuses_missing_or_unfitting_checkpoints():
    with pytest.raises(BackboneError, match="not in the store"):
        backbones.load_backbone("resnet20", "ckpt-0123456789abcdef")
    wrong = checkpoint_of(nn.Linear(3, 3))
    with pytest.raises(BackboneError, match="does not fit resnet20"):
        backbones.load_backbone("resnet20", checkpoint_weights(wrong), checkpoint=wrong)
    with pytest.raises(BackboneError, match="resnet20:PATH"):
        backbones.load_backbone("resnet20", "imagenet")


def test_multiscale_sums_the_unit_descriptors_of_downscaled_images(trained):
    data = checkpoint_of(trained)
    one = backbones.load_backbone("resnet20", checkpoint_weights(data), checkpoint=data)
    multi = backbones.load_backbone("resnet20+ms", checkpoint_weights(data), checkpoint=data)
    assert multi.scales == backbones.MULTISCALE and one.scales == (1.0,)
    batch = images(2, 32, seed=1)
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(one.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(one.std).view(1, 3, 1, 1) * 255
    x = (x - mean) / std
    total = 0
    with torch.no_grad():
        for size in (32, 23, 16):  # 32 x (1, 1/sqrt(2), 1/2)
            scaled = F.interpolate(x, size=size, mode="bilinear", antialias=True)
            total = total + F.normalize(trained.features(scaled), dim=1)
    assert np.allclose(multi.embed(batch), F.normalize(total, dim=1).numpy(), atol=1e-5)
    assert not np.allclose(multi.embed(batch), one.embed(batch), atol=1e-3)


def test_flip_adds_the_mirrored_image(trained):
    data = checkpoint_of(trained)
    one = backbones.load_backbone("resnet20", checkpoint_weights(data), checkpoint=data)
    both = backbones.load_backbone("resnet20+flip", checkpoint_weights(data), checkpoint=data)
    batch = images(2, 32, seed=2)
    mirrored = [np.ascontiguousarray(image[:, ::-1]) for image in batch]
    expected = one.embed(batch) + one.embed(mirrored)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(both.embed(batch), expected, atol=1e-5)
    assert np.allclose(both.embed(mirrored), both.embed(batch), atol=1e-5)  # mirror-invariant
