"""TensorBoard scalars, written only when the tensorboard package is installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ScalarLog:
    """Writes training losses and evaluation metrics as TensorBoard scalars.

    Without the tensorboard package every method does nothing; the same numbers
    are always in the run's JSON Lines files.
    """

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._writer = None
            logger.debug("tensorboard is not installed; scalars go to JSON Lines only")
        else:
            self._writer = SummaryWriter(log_dir=str(folder))

    def training(self, entry: dict[str, Any]) -> None:
        """Write the losses of one train.jsonl entry."""
        if self._writer is None:
            return
        for name in ("d_loss", "g_loss", "penalty"):
            value = entry.get(name)
            if value is not None:
                self._writer.add_scalar(f"train/{name}", value, entry["step"])

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        """Write FID, KID and IS of one evaluation."""
        if self._writer is None:
            return
        for name in ("fid", "kid", "inception_score"):
            value = metrics.get(name)
            if value is not None:
                self._writer.add_scalar(f"eval/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
