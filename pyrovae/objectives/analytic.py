"""The analytic-KL ELBO in plain PyTorch: the independent check of the Pyro objectives.

    ELBO(x) = E_q(z|x)[log p(x|z)] - beta KL(q(z|x) || p(z)),

the reconstruction term by z = mu + sigma * eps, eps ~ N(0, I) (K&W 2013, eq. 10), the KL in
closed form (:func:`pyrovae.objectives.kl.closed_form_kl`); no Pyro inference code at all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pyrovae.objectives.base import Objective
from pyrovae.objectives.kl import closed_form_kl, closed_form_kl_available


def analytic_elbo_terms(
    vae, x: torch.Tensor, num_particles: int = 1, kl_fn: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the reconstruction term E_q[log p(x|z)] (Monte Carlo, reparameterized,
    averaged over ``num_particles``) and the closed-form KL(q(z|x) || p(z)).

    ``kl_fn(vae, loc, scale)`` replaces :func:`closed_form_kl` (tests pass a wrong one).
    """
    loc, scale = vae.encoder(x)
    eps = torch.randn((num_particles,) + loc.shape, dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps
    recon = vae.decode(z).log_prob(x).mean(0)
    return recon, (kl_fn or closed_form_kl)(vae, loc, scale)


def analytic_loss(vae, x: torch.Tensor, num_data: int | None = None, num_particles: int = 1,
                  beta: float | torch.Tensor = 1.0) -> torch.Tensor:
    """-ELBO with the KL in closed form: (N / B) sum_b [ -E_q[log p(x_b|z)] + beta KL_b ]."""
    return AnalyticELBO(vae, num_particles).loss(x, num_data, beta)


class AnalyticELBO(Objective):
    """E_q[log p(x|z)] - beta KL(q || p), the KL in closed form, in plain PyTorch."""

    name = "analytic"
    bound_name = "ELBO"

    def __init__(self, vae, num_particles: int = 1) -> None:
        closed_form_kl_available(vae)
        super().__init__(vae, num_particles)

    def bound(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        recon, kl = analytic_elbo_terms(self.vae, x, self.num_particles)
        return recon - beta * kl
