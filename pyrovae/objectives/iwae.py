"""The importance-weighted bound (Burda, Grosse & Salakhutdinov 2015, eq. 8):

    L_K(x) = E_{z_1..z_K ~ q(z|x)} [ log (1/K) sum_k p(x, z_k) / q(z_k|x) ],

with K = ``train.num_particles``. L_1 is the ELBO; L_K rises with K towards log p(x) (their
Theorem 1). Its gradient is the reparameterized gradient of the log-mean-exp,
sum_k w~_k grad log w_k with normalized weights w~_k = w_k / sum_j w_j.
"""

from __future__ import annotations

import torch

from pyrovae.objectives.base import Objective, log_mean_exp


class IWAE(Objective):
    """log (1/K) sum_k w_k, log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x))."""

    name = "iwae"
    bound_name = "IWAE"

    def bound(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        return log_mean_exp(self.particles(x).log_weights(beta))
