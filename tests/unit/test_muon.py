"""The fast recipe's optimizer: Newton-Schulz orthogonalisation, Muon steps, plain SGD groups."""

import copy

import pytest
import torch
from torch import nn

from cbirq.training.muon import Muon, muon_groups, orthogonalize


@pytest.mark.parametrize("shape", [(16, 27), (64, 576), (40, 10)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    update = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    update[0] *= 100  # one dominant direction: plain SGD would follow little else
    result = orthogonalize(update)
    assert result.shape == update.shape and result.dtype == update.dtype
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.5 and singular.max() < 1.3


def _grads(params: list[torch.Tensor], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)


def test_groups_that_are_not_orthogonal_step_exactly_as_nesterov_sgd():
    ours = [torch.randn(8, 4), torch.randn(8)]
    reference = [p.clone() for p in ours]
    muon = Muon([{"params": ours[:1], "weight_decay": 1e-2}, {"params": ours[1:]}], 0.1, 0.9)
    sgd = torch.optim.SGD(
        [{"params": reference[:1], "weight_decay": 1e-2}, {"params": reference[1:]}],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
    )
    for seed in range(3):
        _grads(ours, seed)
        _grads(reference, seed)
        muon.step()
        sgd.step()
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine, theirs)


def test_an_orthogonal_step_ignores_the_filters_scale_and_keeps_it_fixed():
    filters = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(1))
    runs = []
    for scale in (1.0, 10.0):
        p = filters.clone() * scale
        optimizer = Muon([{"params": [p], "orthogonal": True, "lr_scale": 0.5}], 0.1, 0.6)
        for seed in range(3):
            _grads([p], seed)
            optimizer.step()
        runs.append(p)
    torch.testing.assert_close(runs[0], runs[1])
    # Rescaled to norm 4 (sqrt of 16 filters) before each step of relative size about 0.05.
    assert runs[0].norm().item() == pytest.approx(4.0, rel=0.1)
    assert not torch.allclose(runs[0] / runs[0].norm(), filters / filters.norm())


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(72, 2))


def test_a_restored_state_continues_the_same_steps():
    net = _small_net()

    def optimizer_of(model: nn.Module) -> Muon:
        return Muon(muon_groups(model, 1e-3, lr_scale=0.5, momentum=0.6), 0.1, 0.9)

    first = optimizer_of(net)
    _grads(list(net.parameters()), 0)
    first.step()
    twin = _small_net()
    twin.load_state_dict(net.state_dict())
    second = optimizer_of(twin)
    second.load_state_dict(copy.deepcopy(first.state_dict()))  # as from a checkpoint file
    for model, optimizer in ((net, first), (twin, second)):
        _grads(list(model.parameters()), 1)
        optimizer.step()
    for mine, theirs in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(mine, theirs)


def test_groups_cover_every_parameter_once():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Linear(8, 2))
    groups = muon_groups(net, 5e-4, lr_scale=0.1, momentum=0.6)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert groups[0]["params"] == [net[0].weight] and groups[0]["orthogonal"]
