"""The training loop: seeds, batches, losses, n_disc, determinism and resumption."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from benchmark.errors import DivergedError, UserError
from benchmark.training import checkpoint as checkpoints
from benchmark.training import determinism, losses
from benchmark.training.loop import (
    BatchSampler,
    TrainConfig,
    make_state,
    sample_latents,
    train,
    train_step,
)

CPU = torch.device("cpu")


def tiny_config(**changes) -> TrainConfig:
    values = dict(
        architecture="resnet_cifar",
        resolution=32,
        z_dim=16,
        d_norm="spectral",
        loss="ns",
        penalty="none",
        penalty_weight=0.0,
        batch_size=4,
        steps=4,
        n_disc=2,
        lr=2e-4,
        beta1=0.5,
        beta2=0.999,
        checkpoint_every=2,
        eval_every=4,
    )
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))


def weights_digest(state) -> tuple[str, str]:
    return (
        checkpoints.state_digest(state.generator.state_dict()),
        checkpoints.state_digest(state.discriminator.state_dict()),
    )


def test_derive_seed_follows_documented_rule():
    """Check the seed rule against a hand-computed SHA-256."""
    digest = hashlib.sha256(b"gan-benchmark:3:latent:17").digest()
    expected = int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)
    assert determinism.derive_seed(3, "latent", 17) == expected


def test_streams_are_distinct():
    """Check that streams, seeds and indices give different seeds."""
    seeds = {
        determinism.derive_seed(0, "data"),
        determinism.derive_seed(0, "latent"),
        determinism.derive_seed(1, "data"),
        determinism.derive_seed(0, "data", 0),
    }
    assert len(seeds) == 4


def test_batch_sampler_covers_each_epoch_once():
    """Check that every epoch visits each image exactly once, across batch borders."""
    sampler = BatchSampler(run_seed=5, count=10, batch_size=4)
    drawn = np.concatenate([sampler.indices(step) for step in range(1, 6)])  # 20 draws
    assert sorted(drawn[:10]) == list(range(10))
    assert sorted(drawn[10:]) == list(range(10))
    assert not np.array_equal(drawn[:10], drawn[10:])


def test_batch_sampler_is_stateless():
    """Check that a fresh sampler gives step 7 the same indices as a used one."""
    used = BatchSampler(run_seed=1, count=13, batch_size=5)
    for step in range(1, 7):
        used.indices(step)
    fresh = BatchSampler(run_seed=1, count=13, batch_size=5)
    np.testing.assert_array_equal(used.indices(7), fresh.indices(7))


def test_latents_are_uniform_and_seeded():
    """Check z in [-1, 1), shape, and the same draw for the same seed and step."""
    z = sample_latents(run_seed=0, step=3, batch_size=2000, z_dim=8)
    assert z.shape == (2000, 8)
    assert z.min() >= -1.0
    assert z.max() < 1.0
    assert abs(z.mean().item()) < 0.02
    assert torch.equal(z, sample_latents(0, 3, 2000, 8))
    assert not torch.equal(z, sample_latents(0, 4, 2000, 8))


def test_non_saturating_losses_at_zero_logits():
    """Check the NS losses at D(x) = 0: D loss 2 log 2, G loss log 2."""
    zeros = torch.zeros(5)
    assert losses.ns_discriminator_loss(zeros, zeros).item() == pytest.approx(
        2 * math.log(2)
    )
    assert losses.ns_generator_loss(zeros).item() == pytest.approx(math.log(2))


def test_non_saturating_losses_hand_values():
    """Check the NS losses on logits whose softplus values are known."""
    real = torch.tensor([math.log(3.0)])  # softplus(-log 3) = log(4/3)
    fake = torch.tensor([-math.log(3.0)])  # softplus(-log 3) = log(4/3)
    assert losses.ns_discriminator_loss(real, fake).item() == pytest.approx(
        2 * math.log(4 / 3)
    )
    assert losses.ns_generator_loss(fake).item() == pytest.approx(math.log(4))


def test_generator_updates_every_n_disc_steps():
    """Check that G is updated at steps 1, 4, 7 with n_disc 3 and D at every step."""
    config = tiny_config(n_disc=3)
    state = make_state(config, run_seed=0, device=CPU)
    real = torch.rand(4, 3, 32, 32)
    updated = []
    for step in range(1, 8):
        z = sample_latents(0, step, 4, config.z_dim)
        result = train_step(state, config, real, z, step)
        updated.append(result.g_loss is not None)
    assert updated == [True, False, False, True, False, False, True]
    g_steps = next(iter(state.g_optimizer.state.values()))["step"].item()
    d_steps = next(iter(state.d_optimizer.state.values()))["step"].item()
    assert (g_steps, d_steps) == (3, 7)


def test_spectral_norm_iterates_once_per_update():
    """Check one power iteration per D update and per G update, as compare_gan."""
    config = tiny_config(n_disc=1)
    state = make_state(config, run_seed=0, device=CPU)
    layer = state.discriminator.fc.parametrizations.weight[0]
    calls = []
    original = layer._power_method
    layer._power_method = lambda *args: calls.append(1) or original(*args)
    z = sample_latents(0, 1, 4, config.z_dim)
    train_step(state, config, torch.rand(4, 3, 32, 32), z, step=1)
    assert len(calls) == 2


def test_training_is_deterministic(tmp_path, images):
    """Check same seed, same bits; another seed, other bits."""
    config = tiny_config()
    first = train(config, 0, images, tmp_path / "a", CPU, progress=False)
    again = train(config, 0, images, tmp_path / "b", CPU, progress=False)
    other = train(config, 1, images, tmp_path / "c", CPU, progress=False)
    assert weights_digest(first) == weights_digest(again)
    assert weights_digest(first)[0] != weights_digest(other)[0]
    assert weights_digest(first)[1] != weights_digest(other)[1]


def test_resume_is_bitwise_equal(tmp_path, images):
    """Check that stopping after step 3 and resuming ends with the same bits."""
    config = tiny_config()
    uninterrupted = train(config, 0, images, tmp_path / "full", CPU, progress=False)
    train(config, 0, images, tmp_path / "cut", CPU, progress=False, stop_after=3)
    saved = [
        step
        for step, _ in checkpoints.list_checkpoints(tmp_path / "cut" / "checkpoints")
    ]
    assert saved == [2]
    resumed = train(config, 0, images, tmp_path / "cut", CPU, progress=False)
    assert weights_digest(resumed) == weights_digest(uninterrupted)
    final = "checkpoints/step-000000004.pt"
    assert (tmp_path / "cut" / final).read_bytes() == (
        tmp_path / "full" / final
    ).read_bytes()
    log = (tmp_path / "cut" / "train.jsonl").read_text().splitlines()
    assert len(log) == len((tmp_path / "full" / "train.jsonl").read_text().splitlines())


def test_evaluation_runs_at_eval_steps_and_after_resume(tmp_path, images):
    """Check evaluate(step) at each eval step, and once more for a saved step
    whose evaluation was cut off."""
    config = tiny_config(steps=4, eval_every=2, checkpoint_every=2)
    seen: list[int] = []

    def failing_evaluate(step, generator):
        raise KeyboardInterrupt  # the process is killed during the evaluation

    with pytest.raises(KeyboardInterrupt):
        train(
            config, 0, images, tmp_path, CPU, evaluate=failing_evaluate, progress=False
        )
    train(
        config,
        0,
        images,
        tmp_path,
        CPU,
        evaluate=lambda step, generator: seen.append(step),
        evaluated_steps=lambda: set(seen),
        progress=False,
    )
    assert seen == [2, 4]


def test_resume_rejects_other_config(tmp_path, images):
    """Check that a checkpoint of another configuration is not resumed."""
    train(tiny_config(), 0, images, tmp_path, CPU, progress=False, stop_after=2)
    with pytest.raises(UserError, match="different configuration"):
        train(tiny_config(lr=1e-3), 0, images, tmp_path, CPU, progress=False)


def test_corrupt_checkpoint_is_reported(tmp_path, images):
    """Check that a truncated checkpoint gives a one-line error naming it."""
    train(tiny_config(), 0, images, tmp_path, CPU, progress=False, stop_after=2)
    path = checkpoints.list_checkpoints(tmp_path / "checkpoints")[-1][1]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="corrupt checkpoint") as caught:
        train(tiny_config(), 0, images, tmp_path, CPU, progress=False)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_non_finite_loss_stops_with_step(tmp_path, images, monkeypatch):
    """Check that a NaN loss raises DivergedError carrying the step."""
    calls = {"count": 0}
    original = losses.ns_discriminator_loss

    def nan_on_third(real_logits, fake_logits):
        calls["count"] += 1
        loss = original(real_logits, fake_logits)
        return loss * float("nan") if calls["count"] == 3 else loss

    monkeypatch.setitem(losses.DISCRIMINATOR_LOSSES, "ns", nan_on_third)
    with pytest.raises(DivergedError) as caught:
        train(tiny_config(), 0, images, tmp_path, CPU, progress=False)
    assert caught.value.step == 3


def test_resumed_log_matches_uninterrupted(tmp_path, images):
    """Check that train.jsonl after a resume equals the uninterrupted log
    (apart from wall time), including the last G loss and its step."""
    config = tiny_config(steps=6, n_disc=5, checkpoint_every=2)
    train(config, 0, images, tmp_path / "full", CPU, progress=False)
    train(config, 0, images, tmp_path / "cut", CPU, progress=False, stop_after=3)
    train(config, 0, images, tmp_path / "cut", CPU, progress=False)

    def entries(folder):
        lines = (folder / "train.jsonl").read_text().splitlines()
        parsed = [json.loads(line) for line in lines]
        for entry in parsed:
            entry.pop("session_seconds")
        return parsed

    assert entries(tmp_path / "cut") == entries(tmp_path / "full")
    assert all(math.isfinite(e["g_loss"]) for e in entries(tmp_path / "cut"))


def test_checkpoint_bytes_do_not_depend_on_process_rng(tmp_path, images):
    """Check that the saved RNG state is seeded, so checkpoint bytes repeat
    even when the process's global generator was in another state."""
    config = tiny_config(steps=2)
    torch.manual_seed(123)
    train(config, 0, images, tmp_path / "a", CPU, progress=False)
    torch.manual_seed(456)
    train(config, 0, images, tmp_path / "b", CPU, progress=False)
    name = "checkpoints/step-000000002.pt"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_best_checkpoint_is_kept(tmp_path, images):
    """Check that the checkpoint named by kept_steps survives newer ones."""
    config = tiny_config(steps=6, checkpoint_every=2, eval_every=2)
    train(
        config, 0, images, tmp_path, CPU,
        kept_steps=lambda: {2}, progress=False,
    )  # fmt: skip
    saved = [step for step, _ in checkpoints.list_checkpoints(tmp_path / "checkpoints")]
    assert saved == [2, 6]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint at all", "corrupt checkpoint"),
        (b'{"json": "text"}', "corrupt checkpoint"),
    ],
)
def test_garbage_checkpoint_is_reported(tmp_path, content, message):
    """Check that arbitrary bytes give a one-line UserError, not a traceback."""
    path = tmp_path / "step-000000002.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as caught:
        checkpoints.load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_generator_loader_validates_contents(tmp_path, images):
    """Check load_generator on a good checkpoint and on broken configs."""
    train(tiny_config(steps=2), 0, images, tmp_path, CPU, progress=False)
    path = checkpoints.list_checkpoints(tmp_path / "checkpoints")[-1][1]
    generator, description = checkpoints.load_generator(path)
    assert description["step"] == 2
    assert description["run_seed"] == 0
    assert generator(torch.zeros(1, 16)).shape == (1, 3, 32, 32)

    saved = torch.load(path, weights_only=True)
    broken = [
        ({**saved, "config": {"z_dim": 16}}, "no usable model config"),
        ({**saved, "config": {**saved["config"], "z_dim": 99}}, "do not fit"),
        ({k: v for k, v in saved.items() if k != "generator"}, "no generator"),
    ]
    for index, (state, message) in enumerate(broken):
        bad = tmp_path / f"bad-{index}.pt"
        checkpoints.save_checkpoint(bad, state)
        with pytest.raises(UserError, match=message):
            checkpoints.load_generator(bad)
