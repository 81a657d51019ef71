"""The importance-weighted bound with doubly reparameterized gradients for the encoder
(Tucker, Lawson, Gu & Maddison 2018, "Doubly Reparameterized Gradient Estimators for Monte
Carlo Objectives", eq. 5).

The value is the IWAE bound L_K (:mod:`pyrovae.objectives.iwae`). The gradients are:

- decoder and prior parameters theta: sum_k w~_k grad_theta log w_k, the IWAE gradient (the
  same numbers as ``iwae`` with the same noise);
- encoder parameters phi: sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi), with log q's own
  dependence on phi stopped: the score-function term of the IWAE gradient, whose expectation
  is zero, is replaced by its reparameterization, so that the encoder's signal-to-noise ratio
  does not fall as K grows (Rainforth et al. 2018 show that it falls like 1/sqrt(K) for IWAE).

With a KL weight beta (warm-up, beta-VAE), log w_k = log p(x|z_k) + beta (log p(z_k) -
log q(z_k|x)) holds the score term with weight beta, so only that part is reparameterized: the
encoder's weights are (1 - beta) w~_k + beta w~_k^2, the unbiased form for any beta (w~_k^2 at
beta = 1; w~_k, the plain reparameterized IWAE gradient, at beta = 0, where log w_k does not
depend on q). Tucker et al.'s identity, E[sum_k w~_k d log q(z_k|x) / d phi] =
E[sum_k w~_k (1 - w~_k) (d log w_k / d z_k) (d z_k / d phi)], gives the rest.

The surrogate computes d log w_k / d z_k with ``torch.autograd.grad`` and adds
sum_k (beta (w~_k^2 - w~_k) d log w_k / d z_k) . z_k (coefficient detached) to
sum_k w~_k log w_k, whose gradient through z_k carries the weights w~_k: their sum carries
(1 - beta) w~_k + beta w~_k^2.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.objectives.base import Objective, log_mean_exp


class IWAEDReG(Objective):
    """L_K with the doubly reparameterized encoder gradient."""

    name = "iwae_dreg"
    bound_name = "IWAE"

    def bound(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        p = self.particles(x)
        q = p.guide.base_dist  # the guide's Normal: its loc and scale depend on the encoder
        log_q_stopped = dist.Normal(q.loc.detach(), q.scale.detach()).log_prob(p.z).sum(-1)
        log_w = p.log_px + beta * (p.log_pz - log_q_stopped)
        w = torch.softmax(log_w.detach(), dim=0)
        (dlogw_dz,) = torch.autograd.grad(log_w.sum(), p.z, retain_graph=True)
        correction = (self.correction(w, beta).unsqueeze(-1) * dlogw_dz).detach() * p.z
        surrogate = (w * log_w).sum(0) + correction.sum((0, -1))
        value = log_mean_exp(p.log_weights(beta))
        return value.detach() + (surrogate - surrogate.detach())

    def correction(self, w: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        """What the surrogate adds to the weights w~_k of the encoder's path gradient:
        beta (w~_k^2 - w~_k), so that they become (1 - beta) w~_k + beta w~_k^2."""
        return beta * (w * w - w)
