"""The deterministic training loop, following compare_gan v2.

Per step t = 1 .. steps (one step = one D update, as compare_gan counts):

1. take the next batch of real images (order: one permutation of the
   training split per epoch, drawn from the `data` stream);
2. draw z ~ U(-1, 1) of shape [batch, z_dim] from the `latent` stream of
   step t;
3. update D on (real, G(z)); G runs in training mode, so its batch-norm
   statistics move as they did in compare_gan;
4. if (t - 1) % n_disc == 0, update G with the same z (compare_gan v2 feeds
   the D step's z to the G step too).

Spectral norm runs one power iteration per D update and one per G update,
as compare_gan's `u_var` assignment fires in both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmark import faults
from benchmark.errors import DivergedError, UserError
from benchmark.fileio import append_json_line, atomic_write_bytes, ensure_directory
from benchmark.models import build_models
from benchmark.progress import progress_bar
from benchmark.training import checkpoint as checkpoints
from benchmark.training import determinism
from benchmark.training.losses import DISCRIMINATOR_LOSSES, GENERATOR_LOSSES
from benchmark.training.penalties import penalty

logger = logging.getLogger(__name__)

LOG_EVERY = 100


@dataclass(frozen=True)
class TrainConfig:
    """The resolved settings that determine a trained model, bit for bit."""

    architecture: str
    resolution: int
    z_dim: int
    d_norm: str
    loss: str
    penalty: str
    penalty_weight: float
    batch_size: int
    steps: int
    n_disc: int
    lr: float
    beta1: float
    beta2: float
    checkpoint_every: int
    eval_every: int

    def digest(self) -> str:
        """Return SHA-256 of the settings that change the trained weights."""
        fields = asdict(self)
        # How often weights are saved or evaluated does not change them.
        fields.pop("checkpoint_every")
        fields.pop("eval_every")
        fields.pop("steps")
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def save_steps(self) -> set[int]:
        """Return every step at which a checkpoint is written."""
        saved = set(range(self.checkpoint_every, self.steps + 1, self.checkpoint_every))
        saved |= self.eval_steps()
        return saved

    def eval_steps(self) -> set[int]:
        """Return every step at which the model is evaluated (always the last)."""
        steps = set(range(self.eval_every, self.steps + 1, self.eval_every))
        steps.add(self.steps)
        return steps


def images_to_unit_interval(batch: torch.Tensor) -> torch.Tensor:
    """Convert uint8 NHWC images in [0, 255] to float32 NCHW in [0, 1].

    This is the scaling compare_gan applies to real images before D sees them.
    """
    return batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def sample_latents(
    run_seed: int, step: int, batch_size: int, z_dim: int
) -> torch.Tensor:
    """Return z ~ U(-1, 1) of shape [batch_size, z_dim] for one training step."""
    seed = determinism.derive_seed(run_seed, determinism.STREAM_LATENT, step)
    rng = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, z_dim, generator=rng).mul_(2.0).sub_(1.0)


class BatchSampler:
    """Real-image indices for each step: a fresh permutation per epoch.

    Stateless: the indices of step t depend only on the run seed, t, the batch
    size and the split size, so a resumed run reads the same batches.
    """

    def __init__(self, run_seed: int, count: int, batch_size: int):
        self.run_seed = run_seed
        self.count = count
        self.batch_size = batch_size
        self._epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    def _permutation_of(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            seed = determinism.derive_seed(
                self.run_seed, determinism.STREAM_DATA, epoch
            )
            self._permutation = np.random.default_rng(seed).permutation(self.count)
            self._epoch = epoch
        return self._permutation

    def indices(self, step: int) -> np.ndarray:
        """Return the dataset indices of step `step` (1-based)."""
        start = (step - 1) * self.batch_size
        picked = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.count)
            picked.append(self._permutation_of(epoch)[offset])
        return np.asarray(picked, dtype=np.int64)


@dataclass
class TrainingState:
    """Everything that changes during training."""

    generator: nn.Module
    discriminator: nn.Module
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    step: int
    # The last G loss and its step: G is updated only every n_disc steps.
    g_loss: float = math.nan
    g_loss_step: int = 0


def make_state(
    config: TrainConfig, run_seed: int, device: torch.device
) -> TrainingState:
    """Build models and optimisers at step 0."""
    init_seed = determinism.derive_seed(run_seed, determinism.STREAM_INIT)
    generator, discriminator = build_models(
        config.architecture, config.z_dim, config.d_norm, init_seed, config.resolution
    )
    generator.to(device).train()
    discriminator.to(device).train()
    betas = (config.beta1, config.beta2)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr, betas=betas
    )
    return TrainingState(generator, discriminator, g_optimizer, d_optimizer, step=0)


def state_dict(state: TrainingState, config: TrainConfig, run_seed: int) -> dict:
    """Return the checkpoint contents of a training state."""
    return {
        "step": state.step,
        "run_seed": run_seed,
        "config_digest": config.digest(),
        "config": asdict(config),
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "g_optimizer": state.g_optimizer.state_dict(),
        "d_optimizer": state.d_optimizer.state_dict(),
        "g_loss": state.g_loss,
        "g_loss_step": state.g_loss_step,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore(
    state: TrainingState, saved: dict, config: TrainConfig, run_seed: int, path: Path
):
    """Load a checkpoint into `state`, refusing one from another config or seed."""
    if (
        saved.get("config_digest") != config.digest()
        or saved.get("run_seed") != run_seed
    ):
        raise UserError(
            f"checkpoint {str(path)!r} was written by a different configuration or "
            "seed; use a new --out directory or delete the old run"
        )
    state.generator.load_state_dict(saved["generator"])
    state.discriminator.load_state_dict(saved["discriminator"])
    state.g_optimizer.load_state_dict(saved["g_optimizer"])
    state.d_optimizer.load_state_dict(saved["d_optimizer"])
    state.g_loss = float(saved["g_loss"])
    state.g_loss_step = int(saved["g_loss_step"])
    torch.set_rng_state(saved["torch_rng"])
    cuda_states = saved.get("cuda_rng") or []
    if (
        cuda_states
        and torch.cuda.is_available()
        and len(cuda_states) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(cuda_states)
    state.step = int(saved["step"])


@dataclass
class StepResult:
    """Losses of one training step; `d_loss` includes lambda times the penalty."""

    d_loss: float
    penalty: float | None
    g_loss: float | None


def train_step(
    state: TrainingState,
    config: TrainConfig,
    real: torch.Tensor,
    z: torch.Tensor,
    step: int,
    penalty_rng: torch.Generator | None = None,
) -> StepResult:
    """Run one D update and, every n_disc steps, one G update.

    Args:
        real: [B, 3, H, W] float32 in [0, 1].
        z: [B, z_dim] float32 in [-1, 1].
        step: 1-based step number.
        penalty_rng: CPU generator for the GP and DRAGAN noise of this step;
            `train` passes the run's penalty stream, and a direct call without
            one gets a generator seeded with the step.
    """
    generator, discriminator = state.generator, state.discriminator
    d_loss_fn = DISCRIMINATOR_LOSSES[config.loss]
    g_loss_fn = GENERATOR_LOSSES[config.loss]

    # D update. Within one update, D sees one set of normalised weights, so
    # spectral norm runs a single power iteration for the real, fake and
    # penalty passes, as compare_gan's single session run did.
    with torch.no_grad():
        fake = generator(z)
    with parametrize.cached():
        d_loss = d_loss_fn(discriminator(real), discriminator(fake))
        if penalty_rng is None:
            penalty_rng = torch.Generator().manual_seed(step)
        penalty_value = penalty(config.penalty, discriminator, real, fake, penalty_rng)
        if penalty_value is not None:
            d_loss = d_loss + config.penalty_weight * penalty_value
    state.d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    state.d_optimizer.step()

    g_loss = None
    if (step - 1) % config.n_disc == 0:
        fake = generator(z)
        g_loss = g_loss_fn(discriminator(fake))
        state.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        # D's gradients from this pass are never applied: the next D update
        # zeroes them first.
        state.g_optimizer.step()
    return StepResult(
        d_loss=d_loss.item(),
        penalty=None if penalty_value is None else penalty_value.item(),
        g_loss=None if g_loss is None else g_loss.item(),
    )


EvaluateFn = Callable[[int, nn.Module], None]
StepsFn = Callable[[], set[int]]


def train(
    config: TrainConfig,
    run_seed: int,
    train_images: torch.Tensor,
    run_dir: Path,
    device: torch.device,
    evaluate: EvaluateFn | None = None,
    evaluated_steps: StepsFn = set,
    kept_steps: StepsFn = set,
    progress: bool = True,
    stop_after: int | None = None,
    on_log: Callable[[dict], None] | None = None,
) -> TrainingState:
    """Train (or resume) one run and evaluate at the configured steps.

    Args:
        config: resolved settings.
        run_seed: the run's seed; every stream is derived from it.
        train_images: [N, H, W, C] uint8 tensor of the training split, in the
            order the batch sampler indexes.
        run_dir: folder for `checkpoints/` and `train.jsonl`.
        device: where the models run; z and data order are drawn on the CPU.
        evaluate: called as evaluate(step, generator) after the checkpoint of
            each evaluation step is on disk.
        evaluated_steps: returns the steps already evaluated, so that a resumed
            run evaluates a saved checkpoint whose evaluation was interrupted.
        kept_steps: returns the steps whose checkpoints must survive when a
            newer one is written (the best evaluation so far); only the latest
            checkpoint and these are kept.
        progress: show a progress bar on stderr.
        stop_after: stop after this step (for tests of resumption).
        on_log: also called with each train.jsonl entry (e.g. for TensorBoard).

    Raises:
        DivergedError: a loss became NaN or infinite.
    """
    ensure_directory(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    log_path = run_dir / "train.jsonl"
    state = make_state(config, run_seed, device)
    for path in checkpoints.remove_temporary_files(checkpoint_dir):
        logger.warning("removed %s, left by a checkpoint write that was cut off", path)
    saved = checkpoints.list_checkpoints(checkpoint_dir)
    if saved:
        step, path = saved[-1]
        restore(state, checkpoints.load_checkpoint(path), config, run_seed, path)
        logger.info("resuming run seed %d from %s (step %d)", run_seed, path, step)
    else:
        # Nothing in training draws from torch's global generator, but library
        # code might; seeding it also makes the saved RNG state, and so the
        # checkpoint bytes, the same in every process.
        torch.manual_seed(determinism.derive_seed(run_seed, determinism.STREAM_GLOBAL))
    # Lines after the restored step (or all lines, for a fresh start) belong
    # to an interrupted session and will be written again.
    _truncate_log(log_path, state.step)
    if (
        evaluate
        and state.step in config.eval_steps()
        and state.step not in evaluated_steps()
    ):
        evaluate(state.step, state.generator)

    sampler = BatchSampler(run_seed, len(train_images), config.batch_size)
    last = config.steps if stop_after is None else min(stop_after, config.steps)
    save_steps = config.save_steps()
    eval_steps = config.eval_steps()
    bar = progress_bar(
        config.steps, f"seed {run_seed}", "step", enabled=progress, initial=state.step
    )
    started = time.perf_counter()
    with bar:
        for step in range(state.step + 1, last + 1):
            indices = torch.from_numpy(sampler.indices(step))
            real = images_to_unit_interval(train_images[indices]).to(device)
            z = sample_latents(run_seed, step, config.batch_size, config.z_dim)
            penalty_rng = torch.Generator().manual_seed(
                determinism.derive_seed(run_seed, determinism.STREAM_PENALTY, step)
            )
            result = train_step(state, config, real, z.to(device), step, penalty_rng)
            state.step = step
            if result.g_loss is not None:
                state.g_loss, state.g_loss_step = result.g_loss, step
            losses = [result.d_loss, result.g_loss, result.penalty]
            if not all(math.isfinite(value) for value in losses if value is not None):
                raise DivergedError(
                    f"loss is not finite at step {step} (d_loss={result.d_loss}, "
                    f"g_loss={result.g_loss}, penalty={result.penalty})",
                    step,
                )
            faults.reach("step")
            bar.update(1)

            if step % LOG_EVERY == 0 or step in save_steps:
                bar.set_postfix(
                    d_loss=f"{result.d_loss:.4f}", g_loss=f"{state.g_loss:.4f}"
                )
                entry = {
                    "step": step,
                    "d_loss": result.d_loss,
                    "penalty": result.penalty,
                    "g_loss": state.g_loss,
                    "g_loss_step": state.g_loss_step,
                    "session_seconds": round(time.perf_counter() - started, 3),
                }
                append_json_line(log_path, entry)
                if on_log is not None:
                    on_log(entry)
            if step in save_steps:
                path = checkpoints.checkpoint_path(checkpoint_dir, step)
                checkpoints.save_checkpoint(path, state_dict(state, config, run_seed))
                if evaluate and step in eval_steps:
                    evaluate(step, state.generator)
                _remove_older_checkpoints(checkpoint_dir, step, kept_steps())
    return state


def _remove_older_checkpoints(directory: Path, newest: int, keep: set[int]) -> None:
    """Delete checkpoints before `newest` except those in `keep`."""
    for step, path in checkpoints.list_checkpoints(directory):
        if step < newest and step not in keep:
            checkpoints.remove_checkpoint(path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after `step`, which the resumed run will write again."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            logged_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the interruption
        if logged_step <= step:
            kept.append(line)
    atomic_write_bytes(path, "".join(kept).encode("utf-8"))
