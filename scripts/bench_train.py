"""Epoch time of cbirq's training loop against the course's, measured in the same run.

The course's loop: torchvision ImageFolder + per-image PIL RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize in a DataLoader with 2 workers, batch 128, SGD.
cbirq's: its own `train_epoch`, the whole training set as a uint8 tensor, crop and flip on whole
batches, channels_last; timed in float32 and with bf16 autocast (which cbirq uses on CPUs with
native bf16 instructions; elsewhere that row shows emulated bf16). Both train the same ResNet20
for the same number of batches; times are per full epoch (extrapolated from `--batches`).

    python scripts/bench_train.py --data data/cifar10 [--batches 100]

Accuracy after 10 epochs comes from real runs: `cbirq submit-train --data DIR --wait` (README).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from cbirq.training import loop
from cbirq.training.cifar import MEAN, STD, Cifar, load_cifar
from cbirq.training.config import TrainConfig
from cbirq.training.models import resnet20

BATCH = 128
EPOCH_BATCHES = 50_000 // BATCH


def course_loop(data: Path, batches: int) -> float:
    """Seconds for `batches` steps of the lab's exp2.py-style loop (after one warm-up step)."""
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(data / "train"), tf), batch_size=BATCH, shuffle=True, num_workers=2
    )
    net = resnet20()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    net.train()
    began = None
    for step, (x, y) in enumerate(loader):
        if step == 1:
            began = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == batches:
            break
    return time.perf_counter() - began


def cbirq_loop(cifar: Cifar, batches: int, bf16: bool) -> float:
    """Seconds for `batches` steps of cbirq's own `train_epoch` (after a one-step warm-up), with
    bf16 autocast forced on or off: the loop itself picks it by the CPU (`bf16_autocast`)."""
    config = TrainConfig()
    net = resnet20().to(memory_format=torch.channels_last)
    optimizer = loop.make_optimizer(net, config)

    def epoch_of(images: int) -> None:
        subset = Cifar(cifar.train_x[:images], cifar.train_y[:images], cifar.test_x, cifar.test_y)
        loop.train_epoch(net, optimizer, subset, config, 0, lambda *_: None)

    with patch.object(loop, "bf16_autocast", lambda device: bf16):
        epoch_of(BATCH)
        began = time.perf_counter()
        epoch_of(batches * BATCH)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cifar10"))
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=Path("data/cache"))
    args = parser.parse_args()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    print(f"machine: {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    native = loop.bf16_autocast(torch.device("cpu"))
    print(f"native bf16 on this CPU (cbirq autocasts to it): {'yes' if native else 'no'}")
    cifar = load_cifar(args.data, args.cache)  # decoded once, outside the timing
    per_epoch = EPOCH_BATCHES / args.batches
    course = course_loop(args.data, args.batches) * per_epoch
    rows = {"course: PIL transforms, DataLoader(2 workers)": course}
    for bf16, precision in ((False, "float32"), (True, "bf16 autocast")):
        rows[f"cbirq: uint8 tensor, batched crop/flip, {precision}"] = (
            cbirq_loop(cifar, args.batches, bf16) * per_epoch
        )
    print("| loop | seconds per epoch (50,000 images, batch 128) | speed-up |")
    print("| --- | ---: | ---: |")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.1f} | {course / seconds:.2f} x |")


if __name__ == "__main__":
    main()
