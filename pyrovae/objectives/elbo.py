"""The ELBO (Kingma & Welling 2013, eq. 3), from the Pyro traces of the model and the guide:

    ELBO(x) = E_q(z|x)[log p(x|z)] - beta KL(q(z|x) || p(z)),

``trace``: both terms by Monte Carlo (what ``pyro.infer.Trace_ELBO`` computes);
``meanfield``: the KL in closed form where ``torch.distributions`` registers it, else by Monte
Carlo (what ``pyro.infer.TraceMeanField_ELBO`` computes).
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from pyrovae.objectives.base import Objective


class TraceELBO(Objective):
    """(1/K) sum_k [log p(x|z_k) + beta (log p(z_k) - log q(z_k|x))], z_k ~ q(z|x)."""

    name = "trace"
    bound_name = "ELBO"

    def bound(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.particles(x).log_weights(beta).mean(0)


class MeanFieldELBO(Objective):
    """(1/K) sum_k log p(x|z_k) - beta KL(q(z|x) || p(z)), the KL in closed form."""

    name = "meanfield"
    bound_name = "ELBO"

    def bound(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        p = self.particles(x)
        try:
            kl = kl_divergence(p.guide, p.prior)
        except NotImplementedError:  # no closed form (mixture priors): Monte Carlo, as Pyro does
            kl = p.log_qz - p.log_pz
        return (p.log_px - beta * kl).mean(0)
