"""GAN losses on D's logits, as compare_gan v2 `gans_with_penalty.py`.

All means are over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ns_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """Return the non-saturating D loss: sigmoid cross-entropy, labels 1 and 0.

    Written with softplus: mean softplus(-D(x)) + mean softplus(D(G(z))).
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def ns_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the non-saturating G loss: mean softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


DISCRIMINATOR_LOSSES = {"ns": ns_discriminator_loss}
GENERATOR_LOSSES = {"ns": ns_generator_loss}
