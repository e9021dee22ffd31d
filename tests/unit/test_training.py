"""ResNet20, the learning-rate schedules, augmentation, checkpoints and the training loop."""

from __future__ import annotations

import io
import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cbirq.errors import CbirqError
from cbirq.training.cifar import MEAN, STD, Cifar, augment, normalize
from cbirq.training.config import TrainConfig
from cbirq.training.loop import (
    SIX_VIEWS,
    bf16_autocast,
    checkpoint_bytes,
    evaluate,
    lr_at,
    make_optimizer,
    read_checkpoint,
    restore,
    train,
    view,
)
from cbirq.training.models import ResNet, resnet20
from cbirq.training.plot import COLORS, SIZE, accuracy_plot
from tests.conftest import cifar_arrays

CPU = torch.device("cpu")
HISTORY_KEYS = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of 16 train fastest on one thread, and many times faster than on two when the
    cores are busy with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ResNet20


def test_resnet20_has_the_papers_size_and_the_course_parameter_names():
    net = resnet20()
    assert sum(p.numel() for p in net.parameters()) == 269_722
    prefixes = {key.split(".")[0] for key in net.state_dict()}
    assert prefixes == {"conv1", "bn1", "layer1", "layer2", "layer3", "linear"}
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]


def test_resnet20_outputs_logits_and_64_d_features():
    net = resnet20().eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        logits, features = net(x), net.features(x)
    assert logits.shape == (5, 10) and features.shape == (5, 64)
    assert torch.allclose(net.linear(features), logits, atol=1e-5)


def test_resnet20_accepts_channels_last_input_and_gives_the_same_answer():
    net = resnet20().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = net(x)
        net = net.to(memory_format=torch.channels_last)
        fast = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(plain, fast, atol=1e-4)


# Learning-rate schedules


def test_recommended_schedule_is_five_epochs_at_0_1_then_five_at_0_01():
    config = TrainConfig()
    assert (config.epochs, config.schedule, config.base_lr) == (10, "recommended", 0.1)
    lrs = [lr_at(config, epoch) for epoch in range(10)]
    assert lrs == pytest.approx([0.1] * 5 + [0.01] * 5)
    # within an epoch the step schedule does not move
    assert {lr_at(config, 4, step, 100) for step in range(100)} == {lrs[4]}


def test_lr_option_scales_the_recommended_schedule():
    config = TrainConfig(lr=0.05, epochs=6)
    assert [lr_at(config, e) for e in range(6)] == pytest.approx([0.05] * 3 + [0.005] * 3)


def test_fast_schedule_warms_up_to_the_peak_then_decays_to_zero():
    config = TrainConfig(schedule="fast", epochs=5)
    assert config.base_lr == 0.4
    steps = 20  # 100 steps in all: the peak is at step 20
    lrs = [lr_at(config, e, s, steps) for e in range(5) for s in range(steps)]
    peak = lrs.index(max(lrs))
    assert peak == 20 and lrs[peak] == pytest.approx(config.base_lr)
    assert lrs[0] < 0.25 * config.base_lr
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1])), "warm-up rises"
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1 :])), "then it decays"
    assert 0 < lrs[-1] == pytest.approx(config.base_lr / steps / 5 / 0.8)  # one step from 0
    assert lr_at(config, config.epochs, 0, steps) == pytest.approx(0, abs=1e-12)
    scaled = TrainConfig(schedule="fast", epochs=5, lr=0.8)
    assert lr_at(scaled, 1, 0, steps) == pytest.approx(0.8)


def test_config_refuses_unknown_names_and_out_of_range_numbers():
    for bad in (
        {"schedule": "slow"},
        {"device": "tpu"},
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -0.1},
        {"weight_decay": -1e-4},
    ):
        with pytest.raises(CbirqError):
            TrainConfig(**bad)
    again = TrainConfig.from_dict({**TrainConfig(epochs=3).__dict__, "unknown": 1})
    assert again == TrainConfig(epochs=3)


def test_optimizer_decays_weights_but_not_batchnorm_or_biases():
    net = resnet20()
    optimizer = make_optimizer(net, TrainConfig())
    assert isinstance(optimizer, torch.optim.SGD)
    decay, rest = optimizer.param_groups
    assert decay["weight_decay"] == 5e-4 and rest["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(list(net.parameters()))
    assert not decay["nesterov"]


def test_fast_schedule_trains_filters_with_muon_and_decays_only_the_classifier():
    net = resnet20()
    optimizer = make_optimizer(net, TrainConfig(schedule="fast"))
    filters, classifier, rest = optimizer.param_groups
    assert filters["orthogonal"] and filters["lr_scale"] * filters["lr"] == pytest.approx(0.05)
    assert filters["params"] == [p for p in net.parameters() if p.ndim == 4]
    assert classifier["params"] == [net.linear.weight] and classifier["weight_decay"] == 2.5e-4
    assert filters["weight_decay"] == rest["weight_decay"] == 0


def test_fast_schedule_halves_weight_decay_unless_asked():
    def decay_of(config: TrainConfig) -> float:
        groups = make_optimizer(resnet20(), config).param_groups
        return max(group["weight_decay"] for group in groups)

    assert decay_of(TrainConfig(schedule="fast")) == 2.5e-4
    assert decay_of(TrainConfig(schedule="fast", weight_decay=1e-3)) == 1e-3
    assert decay_of(TrainConfig(weight_decay=0.0)) == 0.0


# Augmentation and normalisation


def _all_views(img: torch.Tensor, pad: int) -> torch.Tensor:
    """Every crop of the zero-padded image, and its mirror: (offsets x offsets x 2, C, H, W)."""
    _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    views = []
    for dy, dx in itertools.product(range(2 * pad + 1), repeat=2):
        crop = padded[:, dy : dy + h, dx : dx + w]
        views += [crop, crop.flip(2)]
    return torch.stack(views)


def test_augment_keeps_shape_and_dtype():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_augment_gives_a_padded_crop_optionally_mirrored_of_every_image():
    pad = 4
    g = torch.Generator().manual_seed(1)
    # random noise: no two crops of an image are alike, so each output has one source view
    x = torch.randint(1, 256, (300, 3, 12, 12), dtype=torch.uint8, generator=g)
    out = augment(x, torch.Generator().manual_seed(7), pad=pad)
    seen = set()
    for img, aug in zip(x, out):
        views = _all_views(img, pad)
        matches = (views == aug).flatten(1).all(1).nonzero().flatten().tolist()
        assert len(matches) == 1, "not a crop of the padded image, nor its mirror"
        seen.add(matches[0])
    flips = {m % 2 for m in seen}
    offsets = {m // 2 for m in seen}
    assert flips == {0, 1}, "both flipped and unflipped images"
    assert len(offsets) > 60, "offsets spread over the (2 pad + 1)^2 choices"
    assert {0, (2 * pad + 1) ** 2 - 1} <= offsets, "the extreme offsets are reachable"


def test_augment_is_deterministic_for_a_seed():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    first = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, augment(x, torch.Generator().manual_seed(4)))


def test_normalize_standardises_per_channel_in_channels_last():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(out, (x.float() / 255 - mean) / std, atol=1e-5)
    gray = normalize(torch.full((1, 3, 2, 2), 128, dtype=torch.uint8))
    assert gray[0, :, 0, 0].tolist() == pytest.approx(
        [(128 / 255 - m) / s for m, s in zip(MEAN, STD)], abs=1e-5
    )


# Checkpoints


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Payload:
    """Not a tensor, dict or number: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("payload ran",))


def test_checkpoint_round_trips_through_bytes():
    net = resnet20()
    checkpoint = {
        "net": net.state_dict(),
        "optimizer": make_optimizer(net, TrainConfig()).state_dict(),
        "epoch": 3,
        "history": [{"epoch": 1, "lr": 0.1, "test_acc": 0.5}],
        "config": TrainConfig().__dict__,
    }
    back = read_checkpoint(checkpoint_bytes(checkpoint))
    assert back["epoch"] == 3 and back["history"] == checkpoint["history"]
    assert back["config"] == checkpoint["config"]
    assert back["net"].keys() == checkpoint["net"].keys()
    assert all(torch.equal(back["net"][k], v) for k, v in checkpoint["net"].items())
    fresh = resnet20()
    fresh.load_state_dict(back["net"])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"certainly not a checkpoint", "not a loadable checkpoint"),
        (b"", "not a loadable checkpoint"),
        (_saved({"model": {}}), "expected a dict with a 'net'"),
        (_saved([1, 2, 3]), "expected a dict with a 'net'"),
    ],
)
def test_read_checkpoint_refuses_what_is_not_a_checkpoint(data, message):
    with pytest.raises(CbirqError, match=message) as err:
        read_checkpoint(data)
    assert "\n" not in str(err.value)


def test_read_checkpoint_refuses_arbitrary_pickled_objects(capsys):
    data = _saved({"net": {}, "extra": Payload()})
    with pytest.raises(CbirqError, match="not a loadable checkpoint") as err:
        read_checkpoint(data)
    assert "\n" not in str(err.value)
    assert "payload ran" not in capsys.readouterr().out


def _restore_into_resnet20(state) -> None:
    net = resnet20()
    restore(net, make_optimizer(net, TrainConfig()), {"net": state})


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(ResNet([3, 3, 3], widths=(8, 16, 32)).state_dict(), id="other-widths"),
        pytest.param(ResNet([2, 2, 2]).state_dict(), id="resnet14"),
        pytest.param(torchvision.models.resnet18(num_classes=10).state_dict(), id="resnet18"),
        pytest.param({}, id="empty"),
        pytest.param("weights", id="not-a-dict"),
    ],
)
def test_restore_refuses_checkpoints_of_another_net(state):
    with pytest.raises(CbirqError, match="does not fit ResNet20") as err:
        _restore_into_resnet20(state)
    assert "\n" not in str(err.value)


def test_restore_loads_weights_optimizer_epoch_and_history():
    source = resnet20()
    optimizer = make_optimizer(source, TrainConfig())
    source(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()  # momentum buffers to carry over
    checkpoint = read_checkpoint(
        checkpoint_bytes(
            {
                "net": source.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": 2,
                "history": [{"epoch": 1}, {"epoch": 2}],
            }
        )
    )
    net = resnet20()
    fresh_optimizer = make_optimizer(net, TrainConfig())
    assert restore(net, fresh_optimizer, checkpoint) == (2, [{"epoch": 1}, {"epoch": 2}])
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    buffers = [s["momentum_buffer"] for s in fresh_optimizer.state.values()]
    assert len(buffers) == len(list(net.parameters()))


def test_restore_of_weights_only_starts_at_epoch_0():
    """The course's pretrain_model.pth style: {'net': state_dict} and nothing else."""
    net = resnet20()
    assert restore(net, make_optimizer(net, TrainConfig()), {"net": resnet20().state_dict()}) == (
        0,
        [],
    )


def test_restore_refuses_an_optimizer_state_of_another_layout():
    """A checkpoint from a script with one parameter group: a clear error, not a crash that
    would leave the job 'running' for ever."""
    source = resnet20()
    plain = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    source(torch.randn(2, 3, 32, 32)).sum().backward()
    plain.step()
    checkpoint = {"net": source.state_dict(), "optimizer": plain.state_dict(), "epoch": 1}
    net = resnet20()
    with pytest.raises(CbirqError, match="optimizer") as err:
        restore(net, make_optimizer(net, TrainConfig()), checkpoint)
    assert "\n" not in str(err.value)


# The training loop on a tiny generated CIFAR-10


def tiny_cifar(train_per_class: int = 4, test_per_class: int = 2) -> Cifar:
    arrays = cifar_arrays(train_per_class, test_per_class)
    return Cifar(*(torch.from_numpy(arrays[k]) for k in ("train_x", "train_y", "test_x", "test_y")))


class Run:
    """One train() call, with what its callbacks received (checkpoints kept as bytes, as the
    worker stores them)."""

    def __init__(self, config: TrainConfig, data: Cifar, resume: dict | None = None) -> None:
        self.saved: list[bytes] = []
        self.progress: list[tuple[int, int, int]] = []
        self.final = train(
            config,
            data,
            CPU,
            resume,
            lambda checkpoint: self.saved.append(checkpoint_bytes(checkpoint)),
            lambda *args: self.progress.append(args),
        )

    def checkpoint(self, i: int) -> dict:
        return read_checkpoint(self.saved[i])


CONFIG = TrainConfig(epochs=4, batch_size=16)


@pytest.fixture(scope="module")
def four_epochs() -> Run:
    return Run(CONFIG, tiny_cifar())


def test_train_checkpoints_every_epoch(four_epochs):
    assert len(four_epochs.saved) == 4
    for i in range(4):
        checkpoint = four_epochs.checkpoint(i)
        assert checkpoint["epoch"] == i + 1
        assert [row["epoch"] for row in checkpoint["history"]] == list(range(1, i + 2))
        assert checkpoint["config"] == CONFIG.__dict__
        net = resnet20()
        net.load_state_dict(checkpoint["net"], strict=True)
        assert set(checkpoint["optimizer"]) == {"state", "param_groups"}
    first, last = four_epochs.checkpoint(0)["net"], four_epochs.checkpoint(3)["net"]
    assert not torch.equal(first["conv1.weight"], last["conv1.weight"]), "the weights moved"


def test_train_history_rows(four_epochs):
    history = four_epochs.final["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    for row in history:
        assert set(row) == HISTORY_KEYS
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["test_acc"] <= 1
        assert row["train_loss"] > 0 and row["test_loss"] > 0 and row["seconds"] >= 0
        # 20 test images: accuracy comes in steps of 5%
        assert round(row["test_acc"] * 20, 6) == int(round(row["test_acc"] * 20))


def test_train_reports_progress_steps(four_epochs):
    steps = 40 // 16  # the ragged last batch is dropped
    ends = [p for p in four_epochs.progress if p[1] == p[2]]
    assert ends == [(epoch, steps, steps) for epoch in range(4)]
    assert all(1 <= step <= total == steps for _, step, total in four_epochs.progress)


def test_resume_continues_where_the_checkpoint_left_off(four_epochs):
    at_two = four_epochs.checkpoint(1)
    resumed = Run(CONFIG, tiny_cifar(), resume=at_two)
    assert [read_checkpoint(b)["epoch"] for b in resumed.saved] == [3, 4]
    assert {epoch for epoch, _, _ in resumed.progress} == {2, 3}
    history = resumed.final["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[:2] == at_two["history"]
    assert history[2]["lr"] == pytest.approx(0.01)  # epochs // 2 = 2 epochs at 0.1, done
    # the same seed, weights, momentum and per-epoch shuffles: the uninterrupted run's result
    expected = four_epochs.final
    for key, value in expected["net"].items():
        torch.testing.assert_close(resumed.final["net"][key], value, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(history, expected["history"]):
        assert {k: v for k, v in ours.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in theirs.items() if k != "seconds"}, abs=2e-4
        )


def test_resume_of_the_fast_schedule_continues_its_muon_state():
    fast = replace(CONFIG, epochs=2, schedule="fast")
    whole = Run(fast, tiny_cifar(2, 1))
    resumed = Run(fast, tiny_cifar(2, 1), resume=whole.checkpoint(0))
    for key, value in whole.final["net"].items():
        torch.testing.assert_close(resumed.final["net"][key], value, rtol=1e-4, atol=1e-5)


def test_resume_under_the_other_schedule_keeps_the_weights_and_starts_its_optimizer(four_epochs):
    at_two = four_epochs.checkpoint(1)  # recommended: SGD's two parameter groups
    fast = Run(replace(CONFIG, epochs=3, schedule="fast"), tiny_cifar(), resume=at_two)
    history = fast.final["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3] and history[:2] == at_two["history"]
    assert history[2]["lr"] == pytest.approx(0.4 * (1 - 2 / 3) / 0.8)
    assert len(fast.final["optimizer"]["param_groups"]) == 3  # Muon's


def test_resume_of_a_finished_checkpoint_is_refused(four_epochs):
    data = tiny_cifar()
    for epochs in (4, 3):
        with pytest.raises(CbirqError, match="at epoch 4; ask for more than 4"):
            Run(replace(CONFIG, epochs=epochs), data, resume=four_epochs.checkpoint(3))


def test_fast_schedule_trains_with_flip_evaluation():
    run = Run(TrainConfig(epochs=2, schedule="fast", batch_size=16), tiny_cifar(2, 1))
    history = run.final["history"]
    assert [row["epoch"] for row in history] == [1, 2] and len(run.saved) == 2
    assert history[0]["lr"] == pytest.approx(0.04)  # the schedule at the start of epoch 1
    assert history[1]["lr"] == pytest.approx(0.4 * 0.5 / 0.8)
    assert run.final["config"]["schedule"] == "fast"


@pytest.mark.parametrize(
    ("device", "capabilities", "expected"),
    [
        ("cuda", {}, True),
        ("cpu", {"avx512_bf16": True, "amx_bf16": False}, True),
        ("cpu", {"avx512_bf16": False, "amx_bf16": True}, True),
        ("cpu", {"avx512_bf16": False, "amx_bf16": False, "avx2": True}, False),
        ("mps", {"avx512_bf16": True}, False),
    ],
)
def test_bf16_only_where_the_hardware_computes_it(monkeypatch, device, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    assert bf16_autocast(torch.device(device)) is expected


def test_training_in_bf16_keeps_float32_weights(monkeypatch):
    monkeypatch.setattr("cbirq.training.loop.bf16_autocast", lambda device: True)
    run = Run(replace(CONFIG, epochs=1), tiny_cifar(2, 1))
    assert all(v.dtype in (torch.float32, torch.long) for v in run.final["net"].values())
    assert run.final["history"][0]["train_loss"] > 0
    resnet20().load_state_dict(run.checkpoint(0)["net"])


def test_view_shifts_with_zero_fill_and_mirrors():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    assert view(x, (0, 0, False)).equal(x)
    assert view(x, (1, 1, False))[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    assert view(x, (-1, -1, True))[0, 0].tolist() == [[0, 6, 5], [0, 9, 8], [0, 0, 0]]


def test_six_views_are_the_image_and_its_diagonal_shifts_each_mirrored():
    assert sorted(SIX_VIEWS) == sorted((d, d, m) for d in (-1, 0, 1) for m in (False, True))


def test_evaluate_averages_the_logits_of_the_views(monkeypatch):
    # float32, as the expected sum below is computed
    monkeypatch.setattr("cbirq.training.loop.bf16_autocast", lambda device: False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    x = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    y = torch.randint(0, 10, (50,))
    with torch.no_grad():
        logits = sum(net(normalize(view(x, v))) for v in SIX_VIEWS) / len(SIX_VIEWS)
    loss, acc = evaluate(net, x, y, SIX_VIEWS)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc == (logits.argmax(1) == y).sum().item() / len(y)
    assert evaluate(net, x, y) != (loss, acc)  # one plain view is another answer


# The accuracy plot


LR_MARK = (120, 120, 120)  # the dashed line where the step schedule changed the lr


def _colour_rows(img: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    """The y of every pixel of exactly this colour."""
    return np.nonzero((np.asarray(img.convert("RGB")) == colour).all(axis=2))[0]


def test_accuracy_plot_draws_both_curves(tmp_path):
    history = [
        {"epoch": e, "lr": 0.1 if e <= 2 else 0.01, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.3}
        for e in range(1, 5)
    ]
    out = tmp_path / "plots" / "acc.png"
    accuracy_plot(history, out, "ResNet20 on CIFAR-10")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == SIZE == (900, 540)
        img = img.convert("RGB")
        train_rows = _colour_rows(img, COLORS["train_acc"])
        test_rows = _colour_rows(img, COLORS["test_acc"])
        assert len(train_rows) > 200 and len(test_rows) > 200
        # train accuracy is the higher curve: smaller y, above the test curve
        assert np.median(train_rows) < np.median(test_rows)
        marked = len(_colour_rows(img, LR_MARK))
    accuracy_plot(history, out, "ResNet20 on CIFAR-10", mark_lr=False)
    with Image.open(out) as img:
        assert len(_colour_rows(img, LR_MARK)) < marked - 100, "the lr change is marked"


def test_accuracy_plot_of_one_epoch_and_no_lr_marks(tmp_path):
    out = tmp_path / "one.png"
    accuracy_plot(
        [{"epoch": 1, "lr": 0.4, "train_acc": 1.0, "test_acc": 1.0}], out, "one", mark_lr=False
    )
    with Image.open(out) as img:
        img = img.convert("RGB")
        assert img.size == (900, 540)
        assert len(_colour_rows(img, COLORS["train_acc"])) > 20
        assert len(_colour_rows(img, COLORS["test_acc"])) > 20


# The train_cifar task, called in-process as the embedded CLI does


@pytest.fixture
def task_env(tmp_path):
    """A tiny image tree, and the task module with this test's store (CBIRQ_HOME is
    per test, so runtime's cached store is this test's SQLite file)."""
    from cbirq.tasks import runtime
    from cbirq.tasks import train as task
    from tests.conftest import write_cifar_tree

    tree = write_cifar_tree(tmp_path / "tree", cifar_arrays(2, 1))
    return task, runtime.store(), tree


def _queue(store, config: TrainConfig, data) -> str:
    from cbirq.training.jobs import new_job

    job = new_job(config.__dict__, str(data), None)
    store.put_job(job)
    return job["id"]


def test_task_records_a_crash_as_failed(task_env, monkeypatch):
    """Not only CbirqError: any exception must end the job, or `cbirq wait` follows a job
    that nothing runs any more."""
    task, store, tree = task_env

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(task, "train", crash)
    job_id = _queue(store, TrainConfig(epochs=1, batch_size=16, device="cpu"), tree)
    with pytest.raises(RuntimeError):
        task.train_cifar(job_id)
    job = store.get_job(job_id)
    assert job["state"] == "failed"
    assert job["error"] == "RuntimeError: CUDA out of memory"


def test_task_records_a_user_error_as_failed(task_env, tmp_path):
    task, store, _ = task_env
    job_id = _queue(store, TrainConfig(epochs=1, device="cpu"), tmp_path / "nowhere")
    with pytest.raises(CbirqError, match="no CIFAR-10 data folder"):
        task.train_cifar(job_id)
    job = store.get_job(job_id)
    assert job["state"] == "failed" and job["error"].startswith("no CIFAR-10 data folder at")


def test_a_redelivered_task_goes_on_from_its_last_epoch(task_env):
    """A worker that died after epoch 1 left `last`: the next delivery runs epoch 2 only, and
    a delivery of a finished job does nothing."""
    from cbirq.training.jobs import artifact_key

    task, store, tree = task_env
    config = TrainConfig(epochs=2, batch_size=16, device="cpu")
    first = Run(replace(config, epochs=1), tiny_cifar(2, 1))
    job_id = _queue(store, config, tree)
    store.put_artifact(artifact_key(job_id, "last"), first.saved[0])
    assert task.train_cifar(job_id) == {"id": job_id, "state": "done"}
    job = store.get_job(job_id)
    assert (job["state"], job["epoch"]) == ("done", 2)
    assert job["history"][0] == first.final["history"][0] and len(job["history"]) == 2
    final = read_checkpoint(store.get_artifact(artifact_key(job_id, "final")))
    assert final["epoch"] == 2
    resnet20().load_state_dict(final["net"])
    updated = job["updated"]
    assert task.train_cifar(job_id) == {"id": job_id, "state": "done"}
    assert store.get_job(job_id)["updated"] == updated


def test_a_batch_larger_than_the_training_set_is_refused():
    """Every epoch would drop its one ragged batch and train nothing, reporting 0% accuracy."""
    data = tiny_cifar(2, 1)
    with pytest.raises(CbirqError, match="--batch-size 32 exceeds the 20 training images"):
        Run(TrainConfig(epochs=1, batch_size=32), data)
    assert len(Run(TrainConfig(epochs=1, batch_size=20), data).saved) == 1


def test_an_empty_resume_checkpoint_is_an_error_not_a_fresh_start(task_env):
    from cbirq.training.jobs import artifact_key

    task, store, tree = task_env
    job_id = _queue(store, TrainConfig(epochs=1, batch_size=16, device="cpu"), tree)
    store.put_artifact(artifact_key(job_id, "resume"), b"")
    with pytest.raises(CbirqError, match="not a loadable checkpoint"):
        task.train_cifar(job_id)
    job = store.get_job(job_id)
    assert job["state"] == "failed" and job["history"] == []
    assert store.get_artifact(artifact_key(job_id, "last")) is None
