"""Options that `cbirq index`, `query` and `eval` share: which features, how to rank them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click

from cbirq.errors import CbirqError
from cbirq.search.specs import (
    CHECKPOINT_MODEL,
    FEATURES,
    FeatureSpec,
    checkpoint_key,
    checkpoint_weights,
)
from cbirq.settings import DEFAULT_MODEL
from cbirq.store import Store


def model_options(command: Callable) -> Callable:
    """--model, --weights, --pool, --flip and --chunk: the features an index holds."""
    for option in reversed(
        [
            click.option(
                "--model",
                default=DEFAULT_MODEL,
                show_default=True,
                help="efficientnet_lite0, resnet20:CHECKPOINT (a `cbirq submit-train` result), "
                "or a torchvision classification model (resnet50, ...).",
            ),
            click.option(
                "--weights",
                type=click.Choice(["imagenet", "none"]),
                default="imagenet",
                show_default=True,
                help="'none' uses random weights (no download needed); resnet20:CHECKPOINT "
                "takes them from the checkpoint.",
            ),
            click.option(
                "--pool",
                type=click.Choice(["avg", "gem"]),
                default=None,
                help="Pool the last feature map by average or by GeM (p=3) [default: the "
                "backbone's].",
            ),
            click.option(
                "--flip/--no-flip",
                default=None,
                help="Add the descriptor of the mirrored image [default: the backbone's].",
            ),
            click.option(
                "--chunk",
                default=64,
                show_default=True,
                type=click.IntRange(1, 10_000),
                help="Images per task sent to a worker.",
            ),
        ]
    ):
        command = option(command)
    return command


def ranking_options(command: Callable) -> Callable:
    """--plain, --center, --whiten, --qe, --multiscale: how to rank; unset ones take the
    backbone's default (cbirq.search.specs.DEFAULTS)."""
    for option in reversed(
        [
            click.option(
                "--plain",
                is_flag=True,
                help="Plain cosine on the features as stored: no centring, whitening, QE or "
                "multi-scale (the baseline); options given next to it still apply.",
            ),
            click.option(
                "--center/--no-center",
                default=None,
                help="Subtract the library's mean vector [default: the backbone's].",
            ),
            click.option(
                "--whiten/--no-whiten",
                default=None,
                help="PCA-whitening learned on the library [default: the backbone's].",
            ),
            click.option(
                "--qe",
                type=click.IntRange(0, 1000),
                default=None,
                help="Query expansion: alpha-QE over the top N results, 0 for none "
                "[default: the backbone's].",
            ),
            click.option(
                "--multiscale/--no-multiscale",
                default=None,
                help="Describe the query at scales 1, 0.71 and 0.5 [default: the backbone's].",
            ),
        ]
    ):
        command = option(command)
    return command


def feature_model(
    store: Store, model: str, weights: str, pool: str | None, flip: bool | None
) -> tuple[str, str]:
    """(feature spec, weights name) for --model/--weights/--pool/--flip. A bare model name
    takes the backbone's default features. A checkpoint's bytes go into the store under its
    content hash, so that workers on any host can load the same net."""
    name, sep, path = model.partition(":")
    if sep:
        if name != CHECKPOINT_MODEL:
            raise CbirqError(f"only {CHECKPOINT_MODEL} takes a checkpoint: --model resnet20:PATH")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CbirqError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
        weights = checkpoint_weights(data)
        store.put_artifact(checkpoint_key(weights), data)
    spec = FeatureSpec.parse(name)
    if "+" not in name:
        spec = FEATURES.get(spec.model, spec)
    chosen = {"pool": pool, "flip": flip}
    return str(replace(spec, **{k: v for k, v in chosen.items() if v is not None})), weights
