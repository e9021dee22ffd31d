"""The CLIP family (cbirq.embed.clip): names and weights, open_clip's preprocessing, the image
tower on ONNX Runtime against torch, and the one-line errors for what is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cbirq.client.indexer import feature_model
from cbirq.embed import clip
from cbirq.embed.backbones import load_backbone
from cbirq.embed.engines import with_engine
from cbirq.embed.families import CLIP_DEFAULT_TAGS, family, require_text
from cbirq.embed.onnx_engine import sample_images
from cbirq.embed.specs import checkpoint_weights
from cbirq.errors import BackboneError, CbirqError, InvalidArgument
from cbirq.store.sqlite_store import SqliteStore
from tests.conftest import make_photo, run_cli
from tests.tiny_clip import ARCH, CONFIG, text_vectors, write_tiny_clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    configs, weights = write_tiny_clip(tmp_path_factory.mktemp("tiny"))
    clip.use_configs(configs)
    data = weights.read_bytes()
    return configs, weights, checkpoint_weights(data), data


def test_the_family_of_clip_names_has_a_text_tower_and_others_do_not():
    assert family("clip-ViT-B-32").text and not family("clip-ViT-B-32").classifier
    assert not family("efficientnet_lite0").text and not family("resnet50").text
    require_text("clip-ViT-B-32", "photos")
    with pytest.raises(InvalidArgument, match="'photos' holds resnet50 .* no text tower"):
        require_text("resnet50", "photos")


def test_model_names_tags_and_files(tmp_path):
    store = SqliteStore(tmp_path / "store.sqlite3")
    assert feature_model(store, "clip:ViT-B-32", "imagenet", None, None) == (
        "clip-ViT-B-32",
        CLIP_DEFAULT_TAGS["ViT-B-32"],
    )
    assert feature_model(store, "clip:ViT-B-32:openai", "imagenet", None, None)[1] == "openai"
    assert feature_model(store, "clip:RN50", "none", None, None) == ("clip-RN50", "none")
    with pytest.raises(CbirqError, match="name the weights of CLIP RN50"):
        feature_model(store, "clip:RN50", "imagenet", None, None)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    name, stored = feature_model(store, f"clip:RN50:{weights}", "imagenet", None, None)
    assert stored == checkpoint_weights(b"weights") and store.get_artifact(f"weights:{stored}")


def test_preprocessing_is_open_clips_own():
    """ViT-B-32's from open_clip's config (random weights: the public ones are not here), and
    the tiny model's size."""
    prep = clip.preset("clip-ViT-B-32", "none")
    assert (prep.resize, prep.crop) == (224, 224)
    assert prep.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert prep.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))


def test_onnx_image_features_agree_with_torch(tiny, tmp_path):
    _, _, weights, data = tiny
    backbone = load_backbone(f"clip-{ARCH}", weights, checkpoint=data)
    assert (backbone.crop, backbone.dim) == (CONFIG["vision_cfg"]["image_size"], 32)
    on_onnx = with_engine(backbone, "onnx", tmp_path, threads=1)
    assert on_onnx is not backbone and on_onnx.net.path.suffix == ".onnx"
    sample = sample_images(backbone.crop, 8)
    cosines = np.sum(backbone.embed(sample) * on_onnx.embed(sample), axis=1)
    assert cosines.min() > 1 - 1e-5


def test_the_text_tower_is_open_clips_encode_text(tiny):
    configs, path, weights, data = tiny
    tower = clip.text_tower(f"clip-{ARCH}", weights, data, "cpu")
    words = ["a red bus", "two cats"]
    assert np.allclose(tower.encode(words), text_vectors(configs, path, words), atol=1e-6)


def test_weights_of_another_model_are_refused_in_one_line(tiny):
    data = b"not a checkpoint at all"
    with pytest.raises(BackboneError, match=f"do not fit CLIP {ARCH}"):
        clip.model(f"clip-{ARCH}", checkpoint_weights(data), data)


def test_without_open_clip_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(BackboneError, match=r"pip install 'cbirq\[clip\]'"):
        clip.model("clip-RN50", "none")  # not built before: nothing cached


def test_weights_neither_cached_nor_downloadable_say_where_cbirq_looked(tmp_path):
    photo = tmp_path / "lib" / "one.png"
    photo.parent.mkdir()
    make_photo(1).save(photo)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = run_cli("index", str(photo.parent), "--model", "clip:ViT-B-32", env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and str(tmp_path / "hf" / "hub") in line
    assert "laion2b_s34b_b79k" in line and "--model clip:ViT-B-32:FILE" in line
    missing = tmp_path / "nowhere.safetensors"
    done = run_cli("index", str(photo.parent), "--model", f"clip:ViT-B-32:{missing}")
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0
    assert f"cannot read checkpoint {missing}" in done.stderr


def test_a_worker_without_torch_refuses_words_in_one_line(monkeypatch):
    """The CPU image (ONNX Runtime only) has no text tower graph: it says where to ask."""
    from cbirq.tasks import runtime

    monkeypatch.setattr(runtime, "torch_installed", lambda: False)
    with pytest.raises(BackboneError, match="need torch.*cbirq:torch image") as refused:
        runtime.text_tower("clip-ViT-B-32", "laion2b_s34b_b79k")
    assert "\n" not in str(refused.value)


@pytest.mark.gpu
def test_both_towers_on_a_gpu_give_the_cpus_features(tiny):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    _, _, weights, data = tiny
    sample = sample_images(CONFIG["vision_cfg"]["image_size"], 8)
    on_cpu = load_backbone(f"clip-{ARCH}", weights, checkpoint=data).embed(sample)
    words = clip.text_tower(f"clip-{ARCH}", weights, data, "cpu").encode(["a red bus"])
    # One model serves both towers: moved to the GPU, as a GPU worker runs it.
    on_gpu = load_backbone(f"clip-{ARCH}", weights, "cuda", data).embed(sample)
    gpu_words = clip.text_tower(f"clip-{ARCH}", weights, data, "cuda").encode(["a red bus"])
    assert np.sum(on_cpu * on_gpu, axis=1).min() > 1 - 1e-4  # TF32 matmuls on the GPU
    assert float(words[0] @ gpu_words[0]) > 1 - 1e-4
