"""Muon for convolution filters, Nesterov SGD for the rest: the fast recipe's optimizer.

Muon (Jordan et al. 2024, as in airbench) replaces a filter bank's momentum update by the
nearest orthogonal matrix, so every direction of the filters learns at the same rate instead
of the few with the largest gradients. It lifted ResNet20's 10-epoch accuracy by 1.3 points on
5,000 held-out training images (three seeds) and by 1.2 on the test set (two seeds), to 87.4-87.5%
(docs/training-ablations.md).
"""

from __future__ import annotations

import torch
from torch import nn

# Coefficients of the quintic iteration from Jordan's Muon: they push every singular value to
# about 0.7-1.2 in five steps, close enough to orthogonal for an update direction.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T for update = U S V^T (a 2-d matrix), by a Newton-Schulz iteration."""
    a, b, c = NEWTON_SCHULZ
    x = update.bfloat16()  # the iteration tolerates bf16 and runs faster in it
    x = x / (x.norm() + 1e-7)
    tall = update.size(0) > update.size(1)  # iterate on the smaller Gram matrix
    wide = x.T if tall else x
    for _ in range(steps):
        gram = wide @ wide.T
        wide = a * wide + (b * gram + c * gram @ gram) @ wide
    return (wide.T if tall else wide).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum for every group; groups with `orthogonal=True` (conv filters followed
    by BatchNorm) then step along the orthogonalised update at `lr * lr_scale`, from weights
    rescaled to norm sqrt(out channels): BatchNorm makes their scale irrelevant, and a fixed
    scale keeps the step's relative size fixed. Other groups are plain SGD with weight decay."""

    def __init__(self, groups: list[dict], lr: float, momentum: float) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=0.0, orthogonal=False, lr_scale=1.0)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)

    def _update(self, p: torch.Tensor, group: dict) -> None:
        grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
        momentum = group["momentum"]
        buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        buf.mul_(momentum).add_(grad)
        update = grad.add(buf, alpha=momentum)  # Nesterov, as torch.optim.SGD computes it
        if group["orthogonal"]:
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
            update = orthogonalize(update.reshape(len(p), -1)).view_as(p)
        p.add_(update, alpha=-group["lr"] * group["lr_scale"])


def muon_groups(net: nn.Module, weight_decay: float, lr_scale: float, momentum: float) -> list:
    """Conv filters orthogonal; the classifier's weights decayed; BatchNorm and biases neither."""
    params = list(net.parameters())
    return [
        {
            "params": [p for p in params if p.ndim == 4],
            "orthogonal": True,
            "lr_scale": lr_scale,
            "momentum": momentum,
        },
        {"params": [p for p in params if p.ndim == 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1]},
    ]
