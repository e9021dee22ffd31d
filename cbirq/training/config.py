"""TrainConfig: what a training job was asked to do (stdlib only, so the CLI can check it)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from cbirq.arguments import Choice, Number, Optional, Whole
from cbirq.errors import CbirqError

SCHEDULES = ("recommended", "fast")
DEVICES = ("auto", "cpu", "cuda")
# The CIFAR-10 training set's channel statistics: training standardises with them, and so
# does the resnet20 backbone (stdlib here, so the model families can name them).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
EPOCHS = Whole(1, 1000)
BATCH_SIZE = Whole(1, 65536)
SEED = Whole(-(2**63), 2**63 - 1)
LR = Number(0, low_open=True)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    schedule: str = "recommended"
    lr: float | None = None  # None: the schedule's own (0.1 recommended, 0.4 peak fast)
    batch_size: int = 128
    seed: int = 0
    momentum: float = 0.9
    weight_decay: float | None = None  # None: the schedule's own (5e-4 recommended, 2.5e-4 fast)
    device: str = "auto"  # auto: the worker's GPU if it has one

    def __post_init__(self) -> None:
        # Checked here, not only by the CLI, because scripts build configs too: an lr of 0
        # would otherwise fall back to the schedule's default without a word.
        for name, check in TRAINING.items():
            check(name, getattr(self, name))

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @property
    def fast(self) -> bool:
        return self.schedule == "fast"

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.4 if self.fast else 0.1

    @property
    def base_weight_decay(self) -> float:
        # Ten epochs leave ResNet20 underfitting, so the fast recipe regularises less: halving
        # the decay led on 5,000 held-out training images in two seeds (docs/training-ablations.md).
        if self.weight_decay is not None:  # 0.0 is a choice, not a missing value
            return self.weight_decay
        return 2.5e-4 if self.fast else 5e-4


TRAINING = {
    "epochs": EPOCHS,
    "schedule": Choice(SCHEDULES),
    "lr": Optional(LR),
    "batch_size": BATCH_SIZE,
    "seed": SEED,
    "momentum": Number(0, 1),
    "weight_decay": Optional(Number(0)),
    "device": Choice(DEVICES),
}


BATCHES_DIR = "cifar-10-batches-py"  # torchvision's layout of the pickled batches


def data_layout(root: Path) -> str:
    """Which layout `root` holds ("batches": CIFAR-10's pickles, or "tree" of class folders
    that `tree_classes` accepts); a CbirqError saying what is missing otherwise. Stdlib only:
    `cbirq submit-train` checks its folder before the job."""
    if not root.is_dir():
        raise CbirqError(f"no CIFAR-10 data folder at {root} (set --data or CBIRQ_DATA_DIR)")
    if (root / BATCHES_DIR).is_dir():
        return "batches"
    if (root / "train").is_dir() and (root / "test").is_dir():
        tree_classes(root)
        return "tree"
    raise CbirqError(
        f"{root} holds neither {BATCHES_DIR}/ nor train/<class>/ and test/<class>/ folders"
    )


def tree_classes(root: Path) -> tuple[str, ...]:
    """The class names of an image tree, sorted: the folders of `root/train`, which must be
    those of `root/test` (a class seen in one split only could not be learnt or scored)."""
    train, test = (_folders(root / split) for split in ("train", "test"))
    if train != test:
        only = sorted(train ^ test)
        raise CbirqError(
            f"{root}: train/ and test/ must hold the same class folders; "
            f"in one only: {', '.join(only)}"
        )
    if len(train) < 2:
        raise CbirqError(f"{root}/train needs at least two class folders, found {len(train)}")
    return tuple(sorted(train))


def _folders(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
