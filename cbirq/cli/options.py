"""Options that `cbirq index`, `query` and `eval` share: which features, how to rank them."""

from __future__ import annotations

from collections.abc import Callable

import click

from cbirq import arguments as arg
from cbirq.embed.families import CLIP, FAMILIES, OTHER_TORCHVISION, Family
from cbirq.settings import DEFAULT_MODEL


class Checked(click.ParamType):
    """An option's value checked as the Client checks its argument (cbirq.arguments): the
    bounds are written once, and a bad value still exits 2 with Click's usage line."""

    def __init__(self, check: arg.Check) -> None:
        self.check = check
        self.name = check.what

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return {arg.Whole: "INTEGER", arg.Number: "FLOAT"}.get(type(self.check), "VALUE")

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        found = self.check.parse(value) if isinstance(value, str) else value
        if not self.check.accepts(found):
            self.fail(f"{value} is not {self.check.what}", param, ctx)
        return found


def _default_for(option: str, off: object = False) -> str:
    """'[default: ...]' naming each model family whose own default differs from `off`."""

    def value(family: Family) -> object:
        defaults = family.default_features if option in ("pool", "flip") else family.ranking
        return getattr(defaults, option)

    values = {name: value(family) for name, family in sorted(FAMILIES.items())}
    words = {True: "on", False: "off"}
    shown = [f"{m}: {words.get(v, v)}" for m, v in values.items() if v != off]
    other = words.get(off, off)
    if not shown:
        return f"[default: {other}]"
    return f"[default: {', '.join(shown)}; {other} for other models]"


def _model_help() -> str:
    """Each model family with its one-line summary, from the registry."""
    families = [
        f"{name}{':CHECKPOINT' if family.checkpoint else ''} ({family.summary})"
        for name, family in FAMILIES.items()
    ]
    clip = f"clip:ARCH[:TAG|:FILE] ({CLIP.summary})"
    return "; ".join([*families, clip, f"or {OTHER_TORCHVISION.summary}."])


def model_options(command: Callable) -> Callable:
    """--model, --weights, --pool, --flip and --chunk: the features an index holds."""
    for option in reversed(
        [
            click.option(
                "--model",
                "-m",
                default=DEFAULT_MODEL,
                show_default=True,
                help=_model_help(),
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
                type=click.Choice(arg.POOLS),
                default=None,
                help="Pool the last feature map by average or by GeM (p=3) "
                + _default_for("pool", "avg"),
            ),
            click.option(
                "--flip/--no-flip",
                default=None,
                help="Add the descriptor of the mirrored image " + _default_for("flip"),
            ),
            click.option(
                "--chunk",
                default=64,
                show_default=True,
                type=Checked(arg.CHUNK),
                help="Images per task sent to a worker.",
            ),
        ]
    ):
        command = option(command)
    return command


def ranking_options(command: Callable) -> Callable:
    """--plain, --center, --whiten, --qe, --qe-ratio, --multiscale: how to rank; unset ones take the
    model family's default (cbirq.embed.families)."""
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
                help="Subtract the library's mean vector " + _default_for("center"),
            ),
            click.option(
                "--whiten/--no-whiten",
                default=None,
                help="PCA-whitening learned on the library " + _default_for("whiten"),
            ),
            click.option(
                "--qe",
                type=Checked(arg.QE),
                default=None,
                help="Query expansion: alpha-QE over the top N results, 0 for none "
                + _default_for("qe", 0),
            ),
            click.option(
                "--qe-ratio",
                type=Checked(arg.QE_RATIO),
                default=None,
                help="Query expansion only over those of the top N that score at least this "
                "share of the best one, 0 for all " + _default_for("qe_ratio", 0),
            ),
            click.option(
                "--multiscale/--no-multiscale",
                default=None,
                help="Describe the query at scales 1, 0.71 and 0.5 " + _default_for("multiscale"),
            ),
        ]
    ):
        command = option(command)
    return command
