"""Likelihoods p(x|z), chosen by name: ``bernoulli``, ``gaussian``, ``continuous_bernoulli``,
``laplace``.

A likelihood is a PyroModule that turns the decoder's output (one unconstrained number per data
value, shape ``(..., *x_shape)``) into a ``pyro.distributions`` distribution whose event is one
whole example: ``.to_event(len(x_shape))``. ``check(x)`` refuses data outside the support with a
one-line error that says how to fix it.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from pyrovae.errors import PyrovaeError, choice_error

LEARN_SCALE = ("none", "global", "pixel")


def _range(x: torch.Tensor) -> str:
    return f"[{x.min().item():.4g}, {x.max().item():.4g}]"


class Likelihood(PyroModule):
    """Base likelihood over examples of shape ``x_shape``."""

    def __init__(self, x_shape: tuple[int, ...], **_options) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)

    def base(self, out: torch.Tensor) -> dist.Distribution:  # pragma: no cover - abstract
        """The per-value distribution (batch shape ``out.shape``)."""
        raise NotImplementedError

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return self.base(out).to_event(len(self.x_shape))

    def check(self, x: torch.Tensor) -> None:
        """Raise a one-line PyrovaeError when ``x`` lies outside the support."""


class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i)) for binary data (K&W 2013, App. C.1)."""

    def base(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=out, validate_args=False)

    def check(self, x: torch.Tensor) -> None:
        if not ((x == 0) | (x == 1)).all():
            raise PyrovaeError(
                f"the bernoulli likelihood needs binary data (0 or 1), got values in {_range(x)}: "
                "binarize the data (data.binarize=dynamic) or use "
                "likelihood=continuous_bernoulli for data in [0, 1]"
            )


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 3): the properly
    normalised density behind binary cross-entropy on grey levels.

    Its log-density is unbounded at 0 and 1. torch keeps lambda = sigmoid(logits) inside
    [eps, 1 - eps] (eps = float32's, 1.2e-7), so a pixel at exactly 0 or 1 contributes at most
    about 2.77 nats in float32: ELBOs of models that saturate are capped by that arithmetic."""

    def base(self, out: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=out, validate_args=False)

    def check(self, x: torch.Tensor) -> None:
        if not ((x >= 0) & (x <= 1)).all():
            raise PyrovaeError(
                f"the continuous_bernoulli likelihood needs data in [0, 1], got values in "
                f"{_range(x)}: rescale the data to [0, 1] or use likelihood=gaussian"
            )


class _LocScale(Likelihood):
    """A location-scale likelihood: location from the decoder, scale fixed or learned.

    ``learn_scale``: ``none`` (fixed at ``scale``), ``global`` (one learned scale) or ``pixel``
    (one learned scale per data value); learned scales start at ``scale``.
    """

    family: type[dist.Distribution]

    def __init__(
        self, x_shape: tuple[int, ...], scale: float = 1.0, learn_scale: str = "none", **options
    ) -> None:
        super().__init__(x_shape, **options)
        if learn_scale not in LEARN_SCALE:
            raise choice_error("learn_scale", learn_scale, LEARN_SCALE)
        if not scale > 0:
            raise PyrovaeError(f"the likelihood scale must be > 0, got {scale}")
        self.learn_scale = learn_scale
        shape = {"none": (), "global": (), "pixel": self.x_shape}[learn_scale]
        init = torch.full(shape, float(scale))
        if learn_scale == "none":
            self.register_buffer("scale", init)
        else:
            self.scale = PyroParam(init, constraint=constraints.positive)

    def base(self, out: torch.Tensor) -> dist.Distribution:
        return self.family(out, self.scale.expand(out.shape), validate_args=False)


class Gaussian(_LocScale):
    """p(x|z) = N(x; mu(z), sigma^2): with fixed sigma, -log p is the tutorials' MSE loss
    ||x - mu||^2 / (2 sigma^2) plus a constant."""

    family = dist.Normal


class Laplace(_LocScale):
    """p(x|z) = Laplace(x; mu(z), b): -log p is the L1 loss |x - mu| / b plus a constant."""

    family = dist.Laplace


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "continuous_bernoulli": ContinuousBernoulli,
    "laplace": Laplace,
}


def build_likelihood(name: str, x_shape: tuple[int, ...], **options) -> Likelihood:
    """The likelihood registered under ``name``; ``options`` (``scale``, ``learn_scale``) go to
    location-scale likelihoods and are ignored by the others."""
    if name not in LIKELIHOODS:
        raise choice_error("likelihood", name, list(LIKELIHOODS))
    options = {k: v for k, v in options.items() if v is not None}
    return LIKELIHOODS[name](x_shape, **options)
