"""Priors p(z), chosen by name: ``normal``, ``diag_normal``, ``mog`` and ``vamp``.

A prior is a PyroModule whose ``forward()`` returns a ``pyro.distributions`` distribution with
batch shape ``()`` and event shape ``(z_dim,)``. ``closed_form_kl`` says whether
KL(q(z|x) || p(z)) has a closed form for a diagonal-Gaussian q (``torch.distributions``
registers one), which is what ``TraceMeanField_ELBO`` and the analytic loss need.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyrovae.errors import PyrovaeError, choice_error


class Prior(PyroModule):
    """Base prior. Subclasses implement ``forward() -> Distribution`` (event shape ``(z_dim,)``)."""

    closed_form_kl: bool = False

    def __init__(self, z_dim: int, **_context) -> None:
        super().__init__()
        self.z_dim = z_dim

    def forward(self) -> dist.Distribution:  # pragma: no cover - abstract
        raise NotImplementedError


class StandardNormal(Prior):
    """p(z) = N(0, I) (Kingma & Welling 2013, Sec. 3)."""

    closed_form_kl = True

    def __init__(self, z_dim: int, **context) -> None:
        super().__init__(z_dim, **context)
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class DiagNormal(Prior):
    """p(z) = N(m, diag(s^2)) with learned m and s > 0; initialised at N(0, I)."""

    closed_form_kl = True

    def __init__(self, z_dim: int, **context) -> None:
        super().__init__(z_dim, **context)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.scale = PyroParam(torch.ones(z_dim), constraint=constraints.positive)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


def _mixture(logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    """sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)): a mixture of K diagonal Gaussians."""
    return dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )


class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)) with learned weights, means and scales.

    Means start spread out (standard normal draws) so that the components are distinct.
    """

    def __init__(self, z_dim: int, components: int = 10, **context) -> None:
        super().__init__(z_dim, **context)
        if components < 1:
            raise PyrovaeError(f"mog prior needs components >= 1, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, z_dim))
        self.scale = PyroParam(torch.ones(components, z_dim), constraint=constraints.positive)

    def forward(self) -> dist.Distribution:
        return _mixture(self.logits, self.loc, self.scale)


class VampPrior(Prior):
    """VampPrior: p(z) = 1/K sum_k q(z | u_k) with K learned pseudo-inputs u_k.

    Tomczak & Welling (2018), "VAE with a VampPrior", eq. (9). The pseudo-inputs go through
    the same encoder as the data; they start near the middle of the data range.
    """

    def __init__(
        self, z_dim: int, x_shape: tuple[int, ...], encoder: nn.Module, components: int = 500,
        **context,
    ) -> None:
        super().__init__(z_dim, **context)
        if components < 1:
            raise PyrovaeError(f"vamp prior needs components >= 1, got {components}")
        self.pseudo_inputs = nn.Parameter(0.5 + 0.01 * torch.randn(components, *x_shape))
        # A reference, not a submodule: the encoder's weights belong to the VAE, once.
        object.__setattr__(self, "_encoder", encoder)

    def forward(self) -> dist.Distribution:
        loc, scale = self._encoder(self.pseudo_inputs)
        return _mixture(torch.zeros_like(loc[:, 0]), loc, scale)


PRIORS: dict[str, type[Prior]] = {
    "normal": StandardNormal,
    "diag_normal": DiagNormal,
    "mog": MixtureOfGaussians,
    "vamp": VampPrior,
}


def build_prior(
    name: str, z_dim: int, x_shape: tuple[int, ...], encoder: nn.Module,
    components: int | None = None,
) -> Prior:
    """The prior registered under ``name``; ``components`` is K for ``mog`` and ``vamp``."""
    if name not in PRIORS:
        raise choice_error("prior", name, list(PRIORS))
    options = {} if components is None else {"components": components}
    return PRIORS[name](z_dim, x_shape=x_shape, encoder=encoder, **options)
