"""What a feature vector is made of and how an index is ranked: the names that the CLI,
workers and the store share. Stdlib only, so the CLI can use them without torch or numpy.

A feature spec is written `MODEL[+gem][+flip][+ms]`: `+gem` pools the last feature map with
GeM instead of averaging it, `+flip` adds the descriptor of the mirrored image, `+ms` adds the
descriptors of the image at smaller scales. The spec is what an index records as its model, so
queries are described as the library was (a multi-scale query fits a one-scale library).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from cbirq.errors import BackboneError
from cbirq.rank.options import RankOptions

POOLS = ("avg", "gem")
FLAGS = ("gem", "flip", "ms")  # in the order a spec is written
CHECKPOINT_MODEL = "resnet20"  # the only model that takes its weights from a checkpoint file
CHECKPOINT_PREFIX = "ckpt-"


@dataclass(frozen=True)
class FeatureSpec:
    model: str
    pool: str = "avg"
    flip: bool = False
    multiscale: bool = False

    @classmethod
    def parse(cls, text: str) -> FeatureSpec:
        model, *flags = text.split("+")
        unknown = sorted(set(flags) - set(FLAGS))
        if unknown or not model:
            raise BackboneError(f"bad model {text!r}: write MODEL[+gem][+flip][+ms]")
        return cls(model, "gem" if "gem" in flags else "avg", "flip" in flags, "ms" in flags)

    def __str__(self) -> str:
        chosen = (self.pool == "gem", self.flip, self.multiscale)
        return "+".join([self.model, *(flag for flag, on in zip(FLAGS, chosen) if on)])

    def fits(self, library: FeatureSpec) -> bool:
        """Whether queries described by this spec can be ranked against `library`: the same
        features, whatever the scales."""
        return replace(self, multiscale=library.multiscale) == library


# Each backbone's default features and ranking. resnet20's: an option is on only where it
# raised mAP on the CIFAR-10 benchmark (scripts/bench_eval.py; figures in the README).
FEATURES: dict[str, FeatureSpec] = {
    # resnet20 (fast checkpoint): plain mAP 0.7266; mirror descriptors +0.010, centring
    # +0.017, alpha-QE over 50 +0.027 (GeM -0.031, whitening -0.229, multi-scale -0.078).
    "resnet20": FeatureSpec("resnet20", flip=True),
}
# EfficientNet-Lite's: chosen on the validation splits of the development sets
# (scripts/dev_sets.py, scripts/bench_devsets.py; held-out figures in docs/benchmarks.md):
# the highest mean category mAP (CIFAR-10, photos) among the rankings whose instance N-S is
# no lower than plain cosine's. Deep alpha-QE gains category mAP but pulls in photos of
# other objects: over the top 10 (lite0's default before), N-S 3.165 -> 3.068.
DEFAULTS: dict[str, RankOptions] = {
    # validation: plain mAP 0.3184 / 0.5576, N-S 3.165; this 0.3528 / 0.5944, N-S 3.189.
    "efficientnet_lite0": RankOptions(center=True, qe=3, qe_ratio=0.8),
    # validation: plain 0.3221 / 0.5587, N-S 3.188; this 0.3576 / 0.6017, N-S 3.194.
    "efficientnet_lite1": RankOptions(center=True, qe=5, qe_ratio=0.8),
    # validation: plain 0.3247 / 0.5560, N-S 3.121; this 0.3685 / 0.6045, N-S 3.121.
    "efficientnet_lite2": RankOptions(center=True, qe=5),
    # resnet50, measured with random weights only (ImageNet's are not reachable offline):
    # centring +0.004; alpha-QE -0.002 to -0.004, whitening -0.009.
    "resnet50": RankOptions(center=True),
    "resnet20": RankOptions(center=True, qe=50),
}


def query_spec(library: str, options: RankOptions) -> FeatureSpec:
    """How to describe a query for an index of `library` features."""
    spec = FeatureSpec.parse(library)
    return replace(spec, multiscale=spec.multiscale or options.multiscale)


def resolve_options(
    model: str,
    plain: bool = False,
    **chosen: bool | int | float | None,
) -> RankOptions:
    """The backbone's default ranking (plain with `plain`), with the options given in
    `chosen` (center, whiten, qe, qe_ratio, multiscale; None: not given) on top."""
    base = RankOptions.plain() if plain else DEFAULTS.get(FeatureSpec.parse(model).model)
    return replace(base or RankOptions(), **{k: v for k, v in chosen.items() if v is not None})


def checkpoint_weights(data: bytes, digest_size: int = 16) -> str:
    """The weights name of a checkpoint: its content hash (128 bits), so an index names the
    exact net, and the bytes a worker fetches by that name can be checked against it."""
    return CHECKPOINT_PREFIX + hashlib.blake2b(data, digest_size=digest_size).hexdigest()


def verified_checkpoint(weights: str, data: bytes | None) -> bytes:
    """`data` if it is the checkpoint that `weights` names; indexes made before names grew
    to 128 bits carry 64-bit ones, checked at their own length."""
    if data is None:
        raise BackboneError(f"checkpoint {weights} is not in the store: index with it again")
    size = (len(weights) - len(CHECKPOINT_PREFIX)) // 2
    if size < 8 or checkpoint_weights(data, size) != weights:
        raise BackboneError(
            f"the stored checkpoint {weights} does not match its name (changed in the store?): "
            "refusing it; index again with --model resnet20:FILE"
        )
    return data


def checkpoint_key(weights: str) -> str:
    """Where the checkpoint's bytes live in the store, for workers on other hosts."""
    return f"weights:{weights}"


def is_checkpoint(weights: str) -> bool:
    return weights.startswith(CHECKPOINT_PREFIX)
