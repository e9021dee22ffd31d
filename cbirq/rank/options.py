"""How an index is ranked on top of its stored features: the options the CLI, the workers and
the evaluation share. Stdlib only, so the CLI can use them without numpy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cbirq.arguments import RANKING


@dataclass(frozen=True)
class RankOptions:
    """Ranking on top of the stored features; `plain()` is cosine on them as they are."""

    center: bool = False  # subtract the library's mean vector (whitening does it too)
    whiten: bool = False  # PCA-whitening learned on the library (cbirq.rank.whitening)
    qe: int = 0  # alpha-QE over this many top results; 0: off
    # alpha-QE only over those of the top `qe` that score at least this share of the best
    # one: a close match keeps the far ones out (cbirq.rank.ranking.qe_weights); 0: all.
    qe_ratio: float = 0.0
    multiscale: bool = False  # query descriptors averaged over scales 1, 1/sqrt(2), 1/2

    def __post_init__(self) -> None:
        # Every way in (the Client, a worker's JSON, an evaluation) builds one of these.
        for name, value in asdict(self).items():
            RANKING[name](name, value)

    @classmethod
    def plain(cls) -> RankOptions:
        return cls()

    def as_dict(self) -> dict:
        # qe_ratio only when set: a worker of an earlier release, which takes these as
        # RankOptions(**options), still ranks what it can rank.
        found = asdict(self)
        if not self.qe_ratio:
            del found["qe_ratio"]
        return found

    def describe(self) -> str:
        parts = ["whitened" if self.whiten else "centred" if self.center else "plain"]
        if self.qe:
            within = f" within {self.qe_ratio:g} of the best" if self.qe_ratio else ""
            parts.append(f"alpha-QE over the top {self.qe}{within}")
        if self.multiscale:
            parts.append("multi-scale query")
        return ", ".join(parts)
