"""The base of every training objective: per-example, unscaled log-densities of the model and
the guide from Pyro traces, with K vectorized particles.

An objective turns the log-densities of K particles per example into one number per example,
its *bound* (an ELBO, an importance-weighted bound ...), in :meth:`Objective.bound`; the loss of a
minibatch of B examples from a dataset of N is then

    loss = -(N / B) * sum_b bound_b,

with N / B applied once, outside every non-linearity (the log-mean-exp of IWAE included), so
that the loss is an unbiased estimate of the negative bound of the whole dataset. The KL weight
beta (warm-up, beta-VAE) is an argument of the loss, not a state of the model: the model and the
guide are the plain Pyro programs ``vae.model`` and ``vae.guide``.

A new objective subclasses :class:`Objective`, overrides :meth:`bound`, names its
:attr:`~Objective.bound_name`, and adds one line to the registry in
``pyrovae/objectives/__init__.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from pyrovae.errors import PyrovaeError


@dataclass
class Particles:
    """Log-densities of K particles z_k ~ q(z|x) for each of B examples, shape ``(K, B)``,
    unscaled (no N / B, no beta), from the traces of ``vae.guide`` and ``vae.model``."""

    log_px: torch.Tensor  # log p(x | z_k)
    log_pz: torch.Tensor  # log p(z_k)
    log_qz: torch.Tensor  # log q(z_k | x)
    z: torch.Tensor  # (K, B, z_dim), reparameterized: gradients reach the encoder through it
    guide: pyro.distributions.Distribution  # q(z|x) as the guide sampled it, batch (K, B)
    prior: pyro.distributions.Distribution  # p(z) as the model scored it, batch (K, B)

    def log_weights(self, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)): the log importance
        weights (beta = 1), or their beta-weighted form (KL warm-up, beta-VAE)."""
        return self.log_px + beta * (self.log_pz - self.log_qz)


class Objective:
    """A training objective of a VAE, with ``num_particles`` (K) particles per example.

    ``objective.loss(x, num_data, beta)`` is the loss of a minibatch (a scalar tensor to
    differentiate); ``objective(model, guide, x, num_data, beta)`` is the same, in the form that
    ``pyro.infer.SVI`` calls a loss with.
    """

    #: The name under which the objective is registered (``train.loss``).
    name: str = ""
    #: The bound whose value :meth:`bound` estimates, as the literature names it (``"ELBO"``,
    #: ``"IWAE"``). Objectives of one bound have the same expected value and differ only in
    #: their estimators (tested); published results are matched by it
    #: (:mod:`pyrovae.literature`).
    bound_name: str = ""

    def __init__(self, vae, num_particles: int = 1) -> None:
        if isinstance(num_particles, bool) or int(num_particles) != num_particles \
                or num_particles < 1:
            raise PyrovaeError(
                f"the number of particles must be a positive integer, got {num_particles!r}"
            )
        self.vae = vae
        self.num_particles = int(num_particles)

    # ---- what a subclass overrides ------------------------------------------------------

    def bound(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The objective's value per example, shape ``(B,)``, as a tensor whose gradient is the
        objective's gradient estimator."""
        raise NotImplementedError

    # ---- shared --------------------------------------------------------------------------

    def particles(self, x: torch.Tensor) -> Particles:
        """Run ``vae.guide`` and then ``vae.model`` (replaying the guide's z) under a plate of
        K particles (dim -2, outside the ``data`` plate), and read each site's own
        log-density from the traces: Pyro's vectorized particles, as ``Trace_ELBO`` draws them."""
        k = self.num_particles

        def vectorized(fn):
            def run(*args):
                with pyro.plate("particles", k, dim=-2):
                    return fn(*args)
            return run

        guide_trace = poutine.trace(vectorized(self.vae.guide)).get_trace(x)
        model_trace = poutine.trace(
            poutine.replay(vectorized(self.vae.model), trace=guide_trace)
        ).get_trace(x)
        q, p, obs = guide_trace.nodes["z"], model_trace.nodes["z"], model_trace.nodes["x"]
        z = q["value"]
        return Particles(
            log_px=obs["fn"].log_prob(obs["value"]),
            log_pz=p["fn"].log_prob(z),
            log_qz=q["fn"].log_prob(z),
            z=z,
            guide=q["fn"],
            prior=p["fn"],
        )

    def loss(self, x: torch.Tensor, num_data: int | None = None,
             beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """-(N / B) sum_b bound_b for a minibatch ``x`` of B examples from N (N = B when
        ``num_data`` is None): an unbiased estimate of the dataset's negative objective."""
        self.vae.check(x)
        batch = x.shape[0]
        if num_data is not None and num_data < batch:
            raise PyrovaeError(f"num_data ({num_data}) is smaller than the batch ({batch})")
        scale = 1.0 if num_data is None else num_data / batch
        return -scale * self.bound(x, beta).sum()

    def __call__(self, model, guide, x: torch.Tensor, num_data: int | None = None,
                 beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The loss as ``pyro.infer.SVI`` calls it: ``loss(model, guide, *args, **kwargs)``."""
        if model != self.vae.model or guide != self.vae.guide:
            raise PyrovaeError("this objective belongs to another VAE: build it with the VAE "
                               "whose model and guide SVI trains")
        return self.loss(x, num_data, beta)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k) along ``dim``, stably (log-sum-exp)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
