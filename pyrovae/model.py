"""The VAE as a Pyro program: ``model`` p(x, z) = p(z) p(x|z) and amortized ``guide`` q(z|x).

Kingma & Welling (2013), "Auto-Encoding Variational Bayes". The ELBO that ``Trace_ELBO``
estimates from these two programs is

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)),      (K&W eq. 3)

the training objectives (ELBO, IWAE, ...; KL weight beta) live in ``pyrovae.objectives``, and the
accessors ``prior()``, ``encode(x)`` and ``decode(z)`` return the very distributions that
``model`` and ``guide`` sample from, so every term can be computed by hand.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.poutine.util import is_validation_enabled

from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.likelihoods import LIKELIHOODS, build_likelihood
from pyrovae.nets import NET_OPTIONS, build_nets
from pyrovae.priors import PRIORS, build_prior

_INSTANCES = itertools.count()


def _whole(value) -> bool:
    """A whole number (an int, or a float or 0-d tensor without a fractional part), not a bool."""
    if isinstance(value, bool) or isinstance(value, str):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError, RuntimeError):
        return False


def _check_arguments(z_dim, hidden, channels, components) -> None:
    """One-line errors for ``VAE`` arguments of the wrong type (before torch sees them)."""
    if not _whole(z_dim) or z_dim < 1:
        raise PyrovaeError(f"z_dim must be a positive integer, got {z_dim!r}")
    for name, widths in (("hidden", hidden), ("channels", channels)):
        if widths is None:
            continue
        if isinstance(widths, str) or not isinstance(widths, Sequence) or not all(
                _whole(w) and w >= 1 for w in widths):
            raise PyrovaeError(f"{name} must be a list of positive integers such as [512, 256], "
                               f"got {widths!r}")
    if components is not None and (not _whole(components) or components < 1):
        raise PyrovaeError(f"components must be a positive integer, got {components!r}")


def _shape(x_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(x_shape, str) or not isinstance(x_shape, Sequence) or not all(
            _whole(n) for n in x_shape):
        raise PyrovaeError(f"x_shape must be a tuple of whole sizes like (1, 28, 28), got "
                           f"{x_shape!r}")
    shape = tuple(int(n) for n in x_shape)
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise PyrovaeError(
            f"x_shape must be (D,), (C, L) or (C, H, W) with positive sizes, got {x_shape!r}"
        )
    return shape


class VAE(PyroModule):
    """A variational autoencoder: ``model`` and ``guide`` for ``pyro.infer.SVI``.

    Args:
        x_shape: shape of one example, ``(C, H, W)``, ``(C, L)`` or ``(D,)``.
        z_dim: latent dimension.
        prior: ``normal`` | ``diag_normal`` | ``mog`` | ``vamp`` (see ``pyrovae.priors``).
        likelihood: ``bernoulli`` | ``gaussian`` | ``continuous_bernoulli`` | ``laplace``.
        net: ``mlp`` | ``conv`` (see ``pyrovae.nets``).
        hidden: widths of the dense hidden layers (encoder; mirrored in the decoder).
        channels: channels of the strided conv layers (``conv`` only).
        activation: hidden-layer non-linearity.
        scale_fn: how the encoder makes sigma: ``exp`` (of half the log-variance) or ``softplus``.
        components: K for the ``mog`` and ``vamp`` priors.
        likelihood_scale, learn_scale: scale of ``gaussian``/``laplace`` and whether it is learned
            (``none`` | ``global`` | ``pixel``); min_scale: the floor of a learned scale.

    Each VAE registers its parameters in Pyro's global parameter store under its own prefix
    (``vae0.encoder...``, ``vae1.encoder...``), so that ``pyro.infer.SVI`` and ``pyro.optim``
    find them and two VAEs in one process never share weights; ``pyro_prefix`` tells it. A VAE
    that is garbage-collected takes its parameters out of the store (long processes do not grow).
    """

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 20,
        prior: str = "normal",
        likelihood: str = "bernoulli",
        net: str = "mlp",
        hidden: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        activation: str | None = None,
        scale_fn: str = "exp",
        components: int | None = None,
        likelihood_scale: float | None = None,
        learn_scale: str | None = None,
        min_scale: float | None = None,
    ) -> None:
        super().__init__(name=f"vae{next(_INSTANCES)}")
        # Pyro's global store keeps every parameter it has seen: forget ours when we are freed.
        weakref.finalize(self, _forget_params, self.pyro_prefix)
        self.x_shape = _shape(x_shape)
        _check_arguments(z_dim, hidden, channels, components)
        self.z_dim = int(z_dim)
        check_component_options(prior, likelihood, net, {
            "components": components, "likelihood_scale": likelihood_scale,
            "learn_scale": learn_scale, "min_scale": min_scale, "channels": channels})
        options = {"hidden": hidden, "activation": activation}
        if channels is not None:
            options["channels"] = channels
        self.encoder, self.decoder = build_nets(
            net, self.x_shape, self.z_dim, scale_fn=scale_fn, **options
        )
        self.prior_net = build_prior(prior, self.z_dim, self.x_shape, self.encoder, components)
        self.likelihood = build_likelihood(
            likelihood, self.x_shape, scale=likelihood_scale, learn_scale=learn_scale,
            **({} if min_scale is None else {"min_scale": min_scale}),
        )

    @property
    def pyro_prefix(self) -> str:
        """The prefix of this VAE's names in Pyro's parameter store (``vae<N>.``)."""
        return self._pyro_name + "."

    # ---- distributions -------------------------------------------------------------------

    def prior(self) -> dist.Distribution:
        """p(z): batch shape ``()``, event shape ``(z_dim,)``."""
        return self.prior_net()

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z|x) = N(loc(x), diag(scale(x)^2)): batch shape ``(B,)``, event shape ``(z_dim,)``.
        ``x`` is checked for its shape and finiteness (any real input can be encoded, e.g. the
        VampPrior's pseudo-inputs; ``model``/``guide`` also check the likelihood's support)."""
        self.check(x, support=False)
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z): batch shape ``z.shape[:-1]``, event shape ``x_shape`` (one whole example)."""
        self.check_z(z)
        return self.likelihood(self.decoder(z))

    def set_output_bias_to_mean(self, mean: torch.Tensor, eps: float = 1e-3) -> None:
        """Start the decoder's output bias at the likelihood's parameter of ``mean`` (the
        training data's mean example): the logit of the mean pixel for ``bernoulli`` (Burda et
        al. 2015 start this way), the mean itself for a location (``gaussian``, ``laplace``).
        Before any training the decoder then predicts the data's mean image."""
        name = type(self.likelihood).__name__.lower()
        if name == "bernoulli":
            p = mean.clamp(eps, 1 - eps)
            value = p.log() - (-p).log1p()
        elif name in ("gaussian", "laplace"):
            value = mean
        else:
            raise PyrovaeError(f"model.output_bias=data_mean is for the bernoulli, gaussian and "
                               f"laplace likelihoods, not {name}: use model.output_bias=default")
        self.decoder.set_output_bias(value.to(next(self.decoder.parameters()).dtype))

    # ---- the Pyro program ----------------------------------------------------------------

    def model(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """p(x, z) = p(z) p(x|z), log-densities scaled by ``num_data / B`` on a minibatch."""
        self.check(x)
        batch = x.shape[0]
        prior = self.prior()
        with _data_plate(x, num_data):
            z = pyro.sample("z", prior.expand([batch]))
            pyro.sample("x", self.decode(z), obs=x)
        return z

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """q(z|x): the amortized diagonal Gaussian, in the same ``data`` plate as the model."""
        self.check(x)
        q = self.encode(x)
        with _data_plate(x, num_data):
            return pyro.sample("z", q)

    # ---- input checks --------------------------------------------------------------------

    def check_z(self, z: torch.Tensor) -> None:
        """Refuse latents that are not a float tensor of shape ``(..., z_dim)`` with finite
        values, with a one-line error (skipped while Pyro's validation is off:
        ``pyro.validation_enabled(False)``, as the training engines run their steps)."""
        if not is_validation_enabled():
            return
        if not isinstance(z, torch.Tensor):
            raise PyrovaeError(f"z must be a torch.Tensor of shape (B, {self.z_dim}), got "
                               f"{type(z).__name__}")
        if z.dim() < 1 or z.shape[-1] != self.z_dim:
            raise PyrovaeError(
                f"z has shape {tuple(z.shape)} but this VAE's latents have z_dim={self.z_dim}: "
                f"pass a tensor of shape (B, {self.z_dim}) (e.g. z.reshape(-1, {self.z_dim}))"
            )
        if not torch.is_floating_point(z):
            raise PyrovaeError(f"z has dtype {z.dtype}: pass floating-point latents "
                               "(e.g. z.float())")
        if not torch.isfinite(z).all():
            bad = (~torch.isfinite(z)).sum().item()
            raise PyrovaeError(f"z holds {bad} NaN or inf values: pass finite latents (in "
                               "training or evaluation: the model diverged, lower train.lr)")

    def check(self, x: torch.Tensor, support: bool = True) -> None:
        """Refuse a batch of the wrong shape, with NaN or inf, or (``support``) outside the
        likelihood's support, with a one-line error (skipped while Pyro's
        validation is off: ``pyro.validation_enabled(False)``)."""
        if not is_validation_enabled():
            return
        if not isinstance(x, torch.Tensor):
            raise PyrovaeError(f"x must be a torch.Tensor of shape (B, *{self.x_shape}), got "
                               f"{type(x).__name__}")
        if tuple(x.shape[1:]) != self.x_shape or x.dim() != len(self.x_shape) + 1:
            raise PyrovaeError(
                f"x has shape {tuple(x.shape)} but this VAE takes batches of shape "
                f"(B, {', '.join(map(str, self.x_shape))}): reshape the data or build the VAE "
                f"with x_shape={tuple(x.shape[1:])}"
            )
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise PyrovaeError(f"x holds {bad} NaN or inf values: clean or impute the data first")
        if support:
            self.likelihood.check(x)


def check_component_options(prior: str, likelihood: str, net: str, options: dict,
                            prefix: str = "") -> None:
    """A one-line error for an option set (not None) for components that do not take it, such as
    ``learn_scale`` with the ``bernoulli`` likelihood: each prior, likelihood and net declares
    the options it takes (``options`` on the class; ``nets.NET_OPTIONS``)."""
    registries = {"prior": {k: c.options for k, c in PRIORS.items()},
                  "likelihood": {k: c.options for k, c in LIKELIHOODS.items()},
                  "net": NET_OPTIONS}
    chosen = {"prior": prior, "likelihood": likelihood, "net": net}
    for kind, name in chosen.items():
        if name not in registries[kind]:
            raise choice_error(kind, name, list(registries[kind]))
    taken = {o for kind, name in chosen.items() for o in registries[kind][name]}
    for option, value in options.items():
        if value is None or option in taken:
            continue
        takers = [f"{prefix}{kind}={name}" for kind, registry in registries.items()
                  for name, opts in registry.items() if option in opts]
        raise PyrovaeError(
            f"{prefix}{option} does not apply to {prefix}prior={prior}, "
            f"{prefix}likelihood={likelihood}, {prefix}net={net} (it is an option of "
            f"{' / '.join(takers)}): remove it"
        )


def _forget_params(prefix: str) -> None:
    """Remove the parameters named ``prefix...`` from Pyro's global parameter store."""
    store = pyro.get_param_store()
    for name in [n for n in store.keys() if n.startswith(prefix)]:
        del store[name]


def _data_plate(x: torch.Tensor, num_data: int | None) -> pyro.plate:
    """The ``data`` plate over a minibatch of a dataset of ``num_data`` examples.

    The caller has already drawn the minibatch, so the plate is given it as its subsample: Pyro
    then scales every log-density inside by ``num_data / B`` (an unbiased estimate of the full
    dataset's ELBO), and by 1 when ``num_data`` is None (the batch is the data).
    """
    batch = x.shape[0]
    size = batch if num_data is None else int(num_data)
    if size < batch:
        raise PyrovaeError(f"num_data ({size}) is smaller than the batch ({batch})")
    return pyro.plate("data", size, subsample=torch.arange(batch, device=x.device))
