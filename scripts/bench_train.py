"""Epoch time of cbirq's training loop against the course's, measured in the same run.

The course's loop: torchvision ImageFolder + per-image PIL RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize in a DataLoader with 2 workers, batch 128, SGD.
cbirq's: the whole training set as a uint8 tensor, crop and flip on whole batches, channels_last.
Both train the same ResNet20 for the same number of batches; times are per full epoch
(extrapolated from `--batches`).

    python scripts/bench_train.py --data data/cifar10 [--batches 100]

Accuracy after 10 epochs comes from real runs: `cbirq submit-train --data DIR --wait` (README).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from cbirq.cifar import MEAN, STD, augment, load_cifar, normalize
from cbirq.models import resnet20
from cbirq.train_config import TrainConfig
from cbirq.training import make_optimizer

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


def cbirq_loop(data: Path, batches: int, cache: Path) -> float:
    """Seconds for `batches` steps of cbirq's loop (after one warm-up step)."""
    cifar = load_cifar(data, cache)
    net = resnet20().to(memory_format=torch.channels_last)
    opt = make_optimizer(net, TrainConfig())
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(cifar.train_x), generator=generator)
    net.train()
    for step in range(batches + 1):
        if step == 1:
            began = time.perf_counter()
        idx = order[step * BATCH : (step + 1) * BATCH]
        x, y = normalize(augment(cifar.train_x[idx], generator)), cifar.train_y[idx]
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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
    load_cifar(args.data, args.cache)  # decode once, outside the timing
    per_epoch = EPOCH_BATCHES / args.batches
    cbirq = cbirq_loop(args.data, args.batches, args.cache) * per_epoch
    course = course_loop(args.data, args.batches) * per_epoch
    print("| loop | seconds per epoch (50,000 images, batch 128) | speed-up |")
    print("| --- | ---: | ---: |")
    print(f"| course: PIL transforms, DataLoader(2 workers) | {course:.1f} | 1.00 x |")
    print(f"| cbirq: uint8 tensor, batched crop/flip | {cbirq:.1f} | {course / cbirq:.2f} x |")


if __name__ == "__main__":
    main()
