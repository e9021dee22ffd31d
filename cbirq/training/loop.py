"""Training ResNet20 on CIFAR-10: learning-rate schedules, the loop, checkpoints."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from cbirq.errors import CbirqError
from cbirq.training.cifar import Cifar, augment, normalize
from cbirq.training.config import TrainConfig
from cbirq.training.models import resnet20
from cbirq.training.muon import Muon, muon_groups


def lr_at(config: TrainConfig, epoch: int, step: int = 0, steps: int = 1) -> float:
    """recommended: the course's schedule, base lr for the first half (5 of 10 epochs), then a
    tenth of it. fast: one cycle, a linear warm-up over the first 20% of steps to the peak and a
    linear decay to zero, which lets a large peak lr converge in few epochs (Smith 2018)."""
    if not config.fast:
        return config.base_lr if epoch < config.epochs // 2 else config.base_lr / 10
    progress = (epoch * steps + step) / (config.epochs * steps)
    warm = 0.2
    if progress < warm:
        return config.base_lr * (0.1 + 0.9 * progress / warm)
    return config.base_lr * (1 - progress) / (1 - warm)


def bf16_autocast(device: torch.device) -> bool:
    """Whether to compute in bfloat16: on GPUs, and on CPUs with native bf16 instructions
    (AVX512-BF16 or AMX), where an epoch ran 1.8x faster (README, "Training"). Other
    CPUs emulate bf16 more slowly than they compute float32."""
    if device.type != "cpu":
        return device.type == "cuda"
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # absent from older torch
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.fast:
        # Muon's filters peak at 0.05 when the rest peaks at 0.4, with airbench's momentum of
        # 0.6, chosen on held-out images: a 0.03 peak did about as well; peaks of 0.12 and 0.24,
        # or momentum 0.9 and 0.95, fell 6-15 points behind by mid-run (docs/training-ablations.md).
        groups = muon_groups(net, config.base_weight_decay, lr_scale=0.125, momentum=0.6)
        return Muon(groups, lr=config.base_lr, momentum=config.momentum)
    # No weight decay on BatchNorm and biases: decaying them only fights the normalisation.
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.base_weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum)


def checkpoint_bytes(checkpoint: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()


def read_checkpoint(data: bytes) -> dict:
    """A checkpoint from bytes, without pickle's arbitrary code (weights_only=True)."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CbirqError(f"not a loadable checkpoint: {detail}") from None
    if not isinstance(checkpoint, dict) or "net" not in checkpoint:
        raise CbirqError("not a cbirq checkpoint: expected a dict with a 'net' state_dict")
    return checkpoint


def restore(net: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: dict) -> tuple[int, list]:
    """Load a checkpoint into net (and optimizer); returns (epochs done, history)."""
    outputs = net.linear.out_features
    saved = checkpoint["net"].get("linear.weight") if isinstance(checkpoint["net"], dict) else None
    if isinstance(saved, torch.Tensor) and saved.shape[0] != outputs:
        raise CbirqError(
            f"the checkpoint classifies {saved.shape[0]} classes; --data has {outputs}"
        )
    try:
        net.load_state_dict(checkpoint["net"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CbirqError(f"the checkpoint does not fit ResNet20: {detail}") from None
    if "optimizer" in checkpoint:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CbirqError(f"the checkpoint's optimizer state does not fit: {exc}") from None
    return int(checkpoint.get("epoch", 0)), list(checkpoint.get("history", []))


Progress = Callable[[int, int, int], None]  # (epoch, step, steps)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Cifar,
    config: TrainConfig,
    epoch: int,
    progress: Progress,
) -> tuple[float, float]:
    model.train()
    device = data.train_x.device
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    order = torch.randperm(len(data.train_x), generator=generator).to(device)
    steps = (
        len(order) // config.batch_size
    )  # drop the ragged last batch: BatchNorm dislikes tiny ones
    smoothing = 0.1 if config.fast else 0.0
    # Ten epochs leave ResNet20 underfitting: the fast recipe shifts crops by up to 2 pixels,
    # not 4 (+0.9 points on 5,000 held-out training images; docs/training-ablations.md).
    pad = 2 if config.fast else 4
    bf16 = bf16_autocast(device)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, epoch, step, steps)
        idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        x, y = normalize(augment(data.train_x[idx], generator, pad)), data.train_y[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach()
        correct += (logits.argmax(1) == y).sum()
        if step % 20 == 0 or step == steps - 1:
            progress(epoch, step + 1, steps)
    seen = max(1, steps * config.batch_size)
    return total_loss.item() / max(1, steps), correct.item() / seen


View = tuple[int, int, bool]  # (rows down, columns right, mirrored): a test-time view
PLAIN: tuple[View, ...] = ((0, 0, False),)
# The fast recipe averages the logits of six views: the image, shifted one pixel diagonally
# either way, each also mirrored: on 5,000 held-out training images, +1.3 to +1.4 points over
# the plain view and +0.3 to +0.5 over plain and mirrored, in two runs (docs/training-ablations.md).
SIX_VIEWS: tuple[View, ...] = tuple((d, d, m) for d in (0, 1, -1) for m in (False, True))


def view(x: torch.Tensor, shift: View) -> torch.Tensor:
    """A uint8 batch shifted (zero fill, as training's crops pad) and optionally mirrored."""
    down, right, mirrored = shift
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    out = padded[..., 1 - down : 1 - down + h, 1 - right : 1 - right + w]
    return out.flip(3) if mirrored else out


@torch.no_grad()
def evaluate(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, views: tuple[View, ...] = PLAIN
) -> tuple[float, float]:
    """Loss and accuracy of the logits averaged over `views` of each image."""
    net.eval()
    loss, correct = 0.0, 0
    bf16 = bf16_autocast(x.device)
    for i in range(0, len(x), 1000):
        logits = 0
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            for shift in views:
                logits = logits + net(normalize(view(x[i : i + 1000], shift))).float()
        logits = logits / len(views)
        loss += F.cross_entropy(logits, y[i : i + 1000], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + 1000]).sum().item()
    return loss / len(x), correct / len(x)


def _for_schedule(checkpoint: dict, config: TrainConfig) -> dict:
    """A checkpoint of the other schedule carries the other optimizer (SGD or Muon, with other
    parameter groups): its weights continue, its momentum starts afresh."""
    saved = checkpoint.get("config")
    if isinstance(saved, dict) and saved.get("schedule", config.schedule) != config.schedule:
        return {key: value for key, value in checkpoint.items() if key != "optimizer"}
    return checkpoint


def train(
    config: TrainConfig,
    data: Cifar,
    device: torch.device,
    resume: dict | None,
    on_epoch: Callable[[dict], None],
    progress: Progress,
) -> dict:
    """Train from scratch or from `resume`; `on_epoch` gets each epoch's checkpoint."""
    if len(data.train_x) < config.batch_size:  # every epoch would drop its only, ragged batch
        raise CbirqError(
            f"--batch-size {config.batch_size} exceeds the {len(data.train_x)} training images"
        )
    torch.manual_seed(config.seed)
    net = resnet20(len(data.classes)).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(net, config)
    start, history = restore(net, optimizer, _for_schedule(resume, config)) if resume else (0, [])
    if start >= config.epochs:
        raise CbirqError(f"the checkpoint is at epoch {start}; ask for more than {start} --epochs")
    data = data.to(device)
    checkpoint: dict = {}
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        train_loss, train_acc = train_epoch(net, optimizer, data, config, epoch, progress)
        seconds = time.perf_counter() - began
        test_loss, test_acc = evaluate(
            net, data.test_x, data.test_y, SIX_VIEWS if config.fast else PLAIN
        )
        history.append(
            {
                "epoch": epoch + 1,
                "lr": lr_at(config, epoch),
                "train_loss": round(train_loss, 4),
                "train_acc": round(train_acc, 4),
                "test_loss": round(test_loss, 4),
                "test_acc": round(test_acc, 4),
                "seconds": round(seconds, 1),
            }
        )
        checkpoint = {
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "config": asdict(config),
            "classes": list(data.classes),  # what each of the logits means
        }
        on_epoch(checkpoint)
    return checkpoint
