"""Priors p(z), chosen by name: ``normal``, ``diag_normal``, ``mog`` and ``vamp``.

A prior is a PyroModule whose ``forward()`` returns a ``pyro.distributions`` distribution with
batch shape ``()`` and event shape ``(z_dim,)``. ``closed_form_kl`` says whether
KL(q(z|x) || p(z)) has a closed form for a diagonal-Gaussian q (``torch.distributions``
registers one), which is what ``TraceMeanField_ELBO`` and the analytic loss need.

A prior that runs data-like inputs through one of the VAE's networks (``vamp``: pseudo-inputs
through the encoder) does so with :func:`as_evaluated`: the network as it is evaluated at test
time, whatever the VAE's train/eval mode, and without touching its buffers. The prior is then
one distribution in training and in evaluation (the KL that is trained is the KL that is
reported), and the batch-norm statistics remain those of the data alone.
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn
from torch.func import functional_call

from pyrovae.errors import choice_error
from pyrovae.options import Option, checked, fill, label


def as_evaluated(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` computed as in eval mode, reading a snapshot of its buffers.

    Every submodule runs with ``training = False`` for this call (batch norm normalizes with its
    running statistics instead of the batch's, dropout is off), and the flags are restored
    afterwards, even on an error. The buffers are read through clones (``functional_call``):

    - nothing is written to them: the pseudo-inputs never enter the running statistics;
    - the result, and its gradient, are those of the buffers at the call: a data pass in
      training mode that updates the statistics in place before ``backward`` (a guide run after
      the prior) cannot change them (eval-mode batch norm's backward reads the statistics
      tensors themselves, and would silently use the updated values).

    Gradients reach the module's parameters and the inputs; the statistics are constants.
    Only Python flags and tensor operations: no Python reads a tensor's value, so ``make_fx``
    records it (the ``traced`` and ``compiled`` engines) as the eager call runs it.
    """
    modes = [(m, m.training) for m in module.modules()]
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    try:
        module.train(False)
        return functional_call(module, buffers, args, strict=False)
    finally:
        for m, mode in modes:
            m.training = mode


class Prior(PyroModule):
    """Base prior. Subclasses implement ``forward() -> Distribution`` (event shape ``(z_dim,)``)."""

    closed_form_kl: bool = False
    #: The options this prior takes (``model.prior: {name: ..., <option>: value}``; see
    #: :mod:`pyrovae.options`): keyword arguments of ``__init__``, filled in and checked.
    options: dict[str, Option] = {}

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

    options = {"components": Option(int, 10, "K, the number of mixture components", range="> 0")}

    def __init__(self, z_dim: int, components: int = options["components"].default,
                 **context) -> None:
        super().__init__(z_dim, **context)
        components = checked(self, components=components)["components"]
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, z_dim))
        self.scale = PyroParam(torch.ones(components, z_dim), constraint=constraints.positive)

    def forward(self) -> dist.Distribution:
        return _mixture(self.logits, self.loc, self.scale)


class VampPrior(Prior):
    """VampPrior: p(z) = 1/K sum_k q(z | u_k) with K learned pseudo-inputs u_k.

    Tomczak & Welling (2018), "VAE with a VampPrior", eq. (9). The pseudo-inputs go through
    the same encoder as the data; they start near the middle of the data range.

    q(z|u_k) is the encoder as evaluated at test time (:func:`as_evaluated`), in training mode
    too: its batch-norm layers (``net=conv``) normalize the pseudo-inputs with the running
    statistics of the data, and neither update them nor use the statistics of the K
    pseudo-inputs as a batch of their own. So the prior does not depend on the train/eval mode:
    the prior trained is the prior in the ELBO and KL that ``evaluate`` and ``metrics.csv``
    report, each u_k is encoded as a test input would be, and the running statistics are the
    data's alone. (Run as a batch in training mode, the K pseudo-inputs entered the running
    statistics, about half of them at K = 50, and trained a different prior from the one
    evaluated: a conv VAE's test ELBO was -105.7 with the training-mode function and -296.5
    as evaluated, issue 11.) Gradients reach the pseudo-inputs and the encoder's weights, not
    the running statistics, which are estimates, not parameters; the data's own passes in
    training still use batch statistics, as batch norm does. Without batch norm (``net=mlp``)
    this is the plain encoder.
    """

    options = {"components": Option(int, 500, "K, the number of pseudo-inputs", range="> 0")}

    def __init__(
        self, z_dim: int, x_shape: tuple[int, ...], encoder: nn.Module,
        components: int = options["components"].default, **context,
    ) -> None:
        super().__init__(z_dim, **context)
        components = checked(self, components=components)["components"]
        self.pseudo_inputs = nn.Parameter(0.5 + 0.01 * torch.randn(components, *x_shape))
        # A reference, not a submodule: the encoder's weights belong to the VAE, once.
        object.__setattr__(self, "_encoder", encoder)

    def forward(self) -> dist.Distribution:
        loc, scale = as_evaluated(self._encoder, self.pseudo_inputs)
        return _mixture(torch.zeros_like(loc[:, 0]), loc, scale)


PRIORS: dict[str, type[Prior]] = {
    "normal": StandardNormal,
    "diag_normal": DiagNormal,
    "mog": MixtureOfGaussians,
    "vamp": VampPrior,
}


def build_prior(
    name: str | type[Prior], z_dim: int, x_shape: tuple[int, ...], encoder: nn.Module,
    **options,
) -> Prior:
    """The prior registered under ``name`` (or the ``Prior`` subclass ``name``), with its
    ``options`` (see ``Prior.options``; None: the default) checked and filled in."""
    cls = prior_class(name)
    filled = fill(cls.options, options, f"prior={label(name)}")
    return cls(z_dim, x_shape=x_shape, encoder=encoder, **filled)


def prior_class(name: str | type[Prior]) -> type[Prior]:
    """The ``Prior`` subclass registered under ``name`` (a subclass is returned as it is)."""
    if isinstance(name, type) and issubclass(name, Prior):
        return name
    if not isinstance(name, str) or name not in PRIORS:
        raise choice_error("prior", name, list(PRIORS))
    return PRIORS[name]
