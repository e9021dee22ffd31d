"""Try a training recipe on held-out training images, never on the test set.

Trains exactly as `cbirq submit-train` does (`cbirq.training.loop.train`), on 45,000 of the 50,000
training images, and evaluates each epoch on the other 5,000 (a fixed split), with the recipe's
own test-time views. It covers what `submit-train` can change (schedule, lr, batch size, seed)
and the weight decay; the tables in docs/training-ablations.md came from a standalone runner with
the same split and loop.

    python scripts/ablate_train.py --data data/cifar10 --schedule fast --batch-size 64 --lr 0.2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cbirq.errors import CbirqError
from cbirq.training.cifar import load_cifar
from cbirq.training.config import TrainConfig
from cbirq.training.loop import train


def main() -> None:
    try:
        ablate()
    except CbirqError as exc:  # bad data or options: one line, not a traceback
        sys.exit(f"error: {exc}")


def ablate() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cifar10"))
    parser.add_argument("--cache", type=Path, default=Path("data/cache"))
    parser.add_argument("--hold-out", type=int, default=5000)
    parser.add_argument("--schedule", default="fast")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asked = {
        "epochs": args.epochs,
        "schedule": args.schedule,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
    }
    config = TrainConfig(**{name: value for name, value in asked.items() if value is not None})
    data = load_cifar(args.data, args.cache).held_out(args.hold_out)
    print(f"{len(data.train_x)} training images, {len(data.test_x)} held out; {config}")

    def on_epoch(checkpoint: dict) -> None:
        row = checkpoint["history"][-1]
        print(f"epoch {row['epoch']:2d}  held-out acc {row['test_acc']:.2%}  {row['seconds']} s")

    final = train(config, data, torch.device("cpu"), None, on_epoch, lambda *_: None)
    print(json.dumps({"config": final["config"], "held_out_acc": final["history"][-1]["test_acc"]}))


if __name__ == "__main__":
    main()
