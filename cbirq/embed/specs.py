"""What a feature vector is made of and how an index is ranked: the names that the CLI,
workers and the store share. Stdlib only, so the CLI can use them without torch or numpy.

A feature spec is written `MODEL[+gem][+flip][+ms]`: `+gem` pools the last feature map with
GeM instead of averaging it, `+flip` adds the descriptor of the mirrored image, `+ms` adds the
descriptors of the image at smaller scales. The spec is what an index records as its model, so
queries are described as the library was (a multi-scale query fits a one-scale library).
Each model family's default spec and ranking are in cbirq.embed.families.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from cbirq.errors import BackboneError
from cbirq.rank.options import RankOptions

POOLS = ("avg", "gem")
FLAGS = ("gem", "flip", "ms")  # in the order a spec is written
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


def query_spec(library: str, options: RankOptions) -> FeatureSpec:
    """How to describe a query for an index of `library` features."""
    spec = FeatureSpec.parse(library)
    return replace(spec, multiscale=spec.multiscale or options.multiscale)


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
