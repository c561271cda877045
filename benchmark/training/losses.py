"""GAN losses on D's logits, as compare_gan v2 defines them.

Names: `ns` non-saturating and `mm` minimax (`gans_with_penalty.py` GAN_PENALTY
and `GAN.py`), `wgan` (WGAN_PENALTY), `ls` least squares on the sigmoid
output (LSGAN_PENALTY), `hinge` (compare_gan v3 `loss_lib.py`; v2 has none).
All means are over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ns_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """Return the NS and minimax D loss: sigmoid cross-entropy, labels 1 and 0.

    Written with softplus: mean softplus(-D(x)) + mean softplus(D(G(z))).
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def ns_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the non-saturating G loss: mean softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def mm_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the minimax G loss: minus D's fake term, -mean softplus(D(G(z)))."""
    return -F.softplus(fake_logits).mean()


def wgan_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """Return the WGAN D loss: -mean D(x) + mean D(G(z)), no clipping."""
    return -real_logits.mean() + fake_logits.mean()


def wgan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the WGAN (and hinge) G loss: -mean D(G(z))."""
    return -fake_logits.mean()


def ls_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """Return the LS D loss on probabilities: 0.5 [mean (s(x) - 1)^2 + mean s(G(z))^2].

    compare_gan applies least squares to sigmoid(D), not to the logits.
    """
    real = torch.sigmoid(real_logits)
    fake = torch.sigmoid(fake_logits)
    return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())


def ls_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the LS G loss: 0.5 mean (sigmoid(D(G(z))) - 1)^2."""
    return 0.5 * (torch.sigmoid(fake_logits) - 1.0).square().mean()


def hinge_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """Return the hinge D loss: mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


DISCRIMINATOR_LOSSES = {
    "ns": ns_discriminator_loss,
    "mm": ns_discriminator_loss,
    "wgan": wgan_discriminator_loss,
    "ls": ls_discriminator_loss,
    "hinge": hinge_discriminator_loss,
}
GENERATOR_LOSSES = {
    "ns": ns_generator_loss,
    "mm": mm_generator_loss,
    "wgan": wgan_generator_loss,
    "ls": ls_generator_loss,
    "hinge": wgan_generator_loss,
}
LOSSES = tuple(DISCRIMINATOR_LOSSES)
