"""The model-family registry: defaults, and everything that must list its families."""

import importlib.metadata
import re
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

from cbirq.cli import main
from cbirq.embed import onnx_runner
from cbirq.embed.families import (
    CLIP,
    FAMILIES,
    GRAPH_DISTRIBUTIONS,
    OTHER_TORCHVISION,
    family,
    resolve_options,
)
from cbirq.embed.specs import FeatureSpec
from cbirq.rank.options import RankOptions

REPO = Path(__file__).resolve().parents[2]


def test_explicit_choices_override_the_family_default(monkeypatch):
    chosen = replace(FAMILIES["resnet50"], ranking=RankOptions(whiten=True, qe=5))
    monkeypatch.setitem(FAMILIES, "resnet50", chosen)
    assert resolve_options("resnet50+gem") == RankOptions(whiten=True, qe=5)
    assert resolve_options("resnet50", plain=True) == RankOptions.plain()
    assert resolve_options("resnet50", qe=0) == RankOptions(whiten=True, qe=0)
    assert resolve_options("resnet50", plain=True, multiscale=True) == RankOptions(multiscale=True)
    assert resolve_options("resnet50", center=True, whiten=None).center
    assert resolve_options("vgg16") == RankOptions.plain()
    assert resolve_options("resnet50", qe=3, qe_ratio=0.8).qe_ratio == 0.8


def test_an_unregistered_name_is_a_plain_torchvision_model():
    vgg = family("vgg16")
    assert vgg.name == "vgg16" and vgg.builder == OTHER_TORCHVISION.builder
    assert vgg.default_features == FeatureSpec("vgg16") and vgg.preprocessing is None
    assert family("resnet20").default_features == FeatureSpec("resnet20", flip=True)


def distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("name", [*FAMILIES, OTHER_TORCHVISION.name])
def test_a_family_installs_what_it_is_built_from(name):
    declared = {distribution(r) for r in pyproject()["dependencies"]}
    needed = {distribution(d) for d in family(name).distributions}
    assert needed <= declared, f"add {sorted(needed - declared)} to pyproject's dependencies"


def test_the_graph_distributions_are_declared():
    project = pyproject()
    extras = project["optional-dependencies"].values()
    declared = {distribution(r) for r in [*project["dependencies"], *sum(extras, [])]}
    assert {distribution(d) for d in GRAPH_DISTRIBUTIONS} <= declared


FAMILY_DISTRIBUTIONS = sorted({d for f in (*FAMILIES.values(), CLIP) for d in f.distributions})


@pytest.mark.parametrize("dist", FAMILY_DISTRIBUTIONS)
def test_a_new_version_of_a_family_distribution_invalidates_the_graphs(dist, monkeypatch):
    before = onnx_runner.provenance()
    real = importlib.metadata.version

    def bumped(asked: str) -> str:
        return "99.0" if distribution(asked) == distribution(dist) else real(asked)

    monkeypatch.setattr(importlib.metadata, "version", bumped)
    assert onnx_runner.provenance() != before


def test_the_cli_help_lists_every_family():
    shown = CliRunner().invoke(main, ["index", "--help"]).output
    words = set(re.findall(r"[\w:]+", shown))
    for name, registered in FAMILIES.items():
        assert (f"{name}:CHECKPOINT" if registered.checkpoint else name) in words
    assert "clip:ARCH" in words


def test_the_clip_extra_installs_what_the_clip_family_is_built_from():
    declared = {distribution(r) for r in pyproject()["optional-dependencies"]["clip"]}
    assert {distribution(d) for d in CLIP.distributions} <= declared


def models_table() -> dict[str, list[str]]:
    """docs/search.md's Models table: model name -> the row's other cells."""
    section = (REPO / "docs" / "search.md").read_text().split("## Models", 1)[1]
    rows = re.findall(r"^\| `(\w+)[^|]*\|(.*)\|$", section.split("\n## ", 1)[0], re.M)
    return {name: [cell.strip() for cell in cells.split("|")] for name, cells in rows}


def test_the_docs_list_every_family_with_its_feature_size():
    table = models_table()
    assert set(table) == {*FAMILIES, CLIP.name}
    for name in FAMILIES:
        assert table[name][1] == str(FAMILIES[name].dim), name


@pytest.mark.parametrize(
    "model, line",
    [
        ("efficientnet_lite0", FAMILIES["efficientnet_lite0"].no_match_below),
        ("efficientnet_lite0+gem", None),  # other features: the line was not measured on them
        ("resnet50", None),
    ],
)
def test_results_under_a_models_no_match_line_are_marked_weak(model, line):
    from cbirq.client.querying import mark_weak

    hits = [{"rank": 1, "score": 0.9, "cosine": 0.8}, {"rank": 2, "score": 0.2, "cosine": 0.1}]
    euclidean = [{"rank": 1, "score": 0.2}, {"rank": 2, "score": 1.34}]  # 0.98 and 0.1 as cosine
    assert mark_weak(hits, model, "cosine") == {"weak_below": line}
    assert mark_weak(euclidean, model, "euclidean") == {"weak_below": line}
    for marked in (hits, euclidean):
        assert [hit["weak"] for hit in marked] == ([False, True] if line else [False, False])
