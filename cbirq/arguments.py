"""The values a caller may pass, checked alike wherever they arrive: the Client's arguments
(`checked`), the Click options that stand for them (cbirq.cli.options.Checked), RankOptions
and TrainConfig. A bad value is one InvalidArgument naming the argument, never a TypeError
from deep inside. Stdlib only: the CLI starts without numpy."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cbirq.errors import InvalidArgument
from cbirq.settings import ENGINES

F = TypeVar("F", bound=Callable)


class Check:
    """What one argument accepts; `what` says it in words ("a whole number from 1 to 10")."""

    what = "a value"

    def accepts(self, value: object) -> bool:
        raise NotImplementedError

    def parse(self, text: str) -> object:
        """The command line's text as a Python caller would pass it (left as text if it is not:
        `accepts` then refuses it)."""
        return text

    def __call__(self, name: str, value: object) -> None:
        if not self.accepts(value):
            raise InvalidArgument(f"{name} must be {self.what}, not {value!r}")


def _span(low: float, high: float | None, low_open: bool = False) -> str:
    if high is None:
        return f" above {low:g}" if low_open else f" of at least {low:g}"
    return f" from {low:g} to {high:g}" if isinstance(high, float) else f" from {low} to {high}"


@dataclass(frozen=True)
class Whole(Check):
    low: int
    high: int | None = None

    @property
    def what(self) -> str:
        return "a whole number" + _span(self.low, self.high)

    def accepts(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return self.low <= value and (self.high is None or value <= self.high)

    def parse(self, text: str) -> object:
        try:
            return int(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Number(Check):
    low: float
    high: float | None = None
    low_open: bool = False  # the low end itself is refused (a learning rate of 0)

    @property
    def what(self) -> str:
        return "a number" + _span(self.low, self.high, self.low_open)

    def accepts(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return math.isfinite(value) and above and (self.high is None or value <= self.high)

    def parse(self, text: str) -> object:
        try:
            return float(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Choice(Check):
    values: tuple[str, ...]

    @property
    def what(self) -> str:
        return "one of " + ", ".join(self.values)

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and value in self.values


@dataclass(frozen=True)
class Kind(Check):
    """A value of these types (a non-empty one, for strings and paths)."""

    types: tuple[type, ...]
    words: str

    @property
    def what(self) -> str:
        return self.words

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.types) and not isinstance(value, bool) and value != ""


@dataclass(frozen=True)
class Phrase(Check):
    """Words to search by: a text tower reads a few dozen tokens, so a long text is a mistake
    (or a 20 MB form field that would hold the query thread while it is tokenised)."""

    longest: int

    @property
    def what(self) -> str:
        return f"a non-empty string of at most {self.longest} characters"

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and bool(value.strip()) and len(value) <= self.longest


@dataclass(frozen=True)
class Optional(Check):
    inner: Check

    @property
    def what(self) -> str:
        return f"{self.inner.what}, or None"

    def accepts(self, value: object) -> bool:
        return value is None or self.inner.accepts(value)


@dataclass(frozen=True)
class Several(Check):
    inner: Check

    @property
    def what(self) -> str:
        return f"a non-empty list, each {self.inner.what}"

    def accepts(self, value: object) -> bool:
        kept = isinstance(value, (list, tuple)) and bool(value)
        return kept and all(map(self.inner.accepts, value))


@dataclass(frozen=True)
class Keywords(Check):
    """A function's `**keywords`: each a name of `checks`, checked by it."""

    checks: Mapping[str, Check]

    def __call__(self, name: str, value: object) -> None:
        for key, item in dict(value).items():
            if key not in self.checks:
                raise InvalidArgument(f"unknown argument {key!r}: use {', '.join(self.checks)}")
            self.checks[key](key, item)


class _Flag(Check):
    what = "True or False"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)


class _Function(Check):
    what = "a function"

    def accepts(self, value: object) -> bool:
        return callable(value)


FLAG = _Flag()
FUNCTION = _Function()
TEXT = Kind((str,), "a non-empty string")  # index names, model names, job ids
PATH = Kind((str, os.PathLike), "a path (str or os.PathLike)")
IMAGE = Kind((str, os.PathLike, bytes), "a path (str or os.PathLike) or the image's bytes")
WORDS = Phrase(1000)

# Bounds the CLI's options and the Client share (cbirq.cli.options.Checked).
TOP = Whole(1, 1000)
CHUNK = Whole(1, 10_000)
SHARDS = Whole(1, 256)
LIMIT = Whole(1, 1000)
QE = Whole(0, 1000)
QE_RATIO = Number(0, 1)
MIN_SCORE = Number(-1, 1)
THRESHOLD = Number(0, 2)
KS = Several(Whole(1))  # eval's cut-offs
METRICS = ("cosine", "euclidean")
POOLS = ("avg", "gem")
# How to rank (cbirq.rank.options.RankOptions; `plain`: start from plain cosine). None: the
# model family's default.
RANKING = {
    "plain": FLAG,
    "center": FLAG,
    "whiten": FLAG,
    "qe": QE,
    "qe_ratio": QE_RATIO,
    "multiscale": FLAG,
}

# The Client's: what its methods share.
MAYBE_PATH = Optional(PATH)
ENGINE = Optional(Choice(ENGINES))
FEATURES = {
    "model": TEXT,
    "weights": TEXT,
    "pool": Optional(Choice(POOLS)),
    "flip": Optional(FLAG),
    "chunk": CHUNK,
}
RANKED = Keywords({name: Optional(check) for name, check in RANKING.items()})


def checked(**checks: Check) -> Callable[[F], F]:
    """Check a function's arguments by name before it runs (defaults are trusted)."""

    def wrap(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args: object, **kwargs: object) -> object:
            for name, value in signature.bind(*args, **kwargs).arguments.items():
                if name in checks:
                    checks[name](name, value)
            return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
