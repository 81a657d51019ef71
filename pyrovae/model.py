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
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyrovae.errors import PyrovaeError
from pyrovae.likelihoods import build_likelihood
from pyrovae.nets import build_nets
from pyrovae.priors import build_prior

_INSTANCES = itertools.count()


def _shape(x_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in x_shape)
    except (TypeError, ValueError):
        raise PyrovaeError(
            f"x_shape must be a tuple of sizes like (1, 28, 28), got {x_shape!r}"
        ) from None
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
            (``none`` | ``global`` | ``pixel``).

    Each VAE registers its parameters in Pyro's global parameter store under its own prefix
    (``vae0.encoder...``, ``vae1.encoder...``), so that ``pyro.infer.SVI`` and ``pyro.optim``
    find them and two VAEs in one process never share weights; ``pyro_prefix`` tells it.
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
    ) -> None:
        super().__init__(name=f"vae{next(_INSTANCES)}")
        self.x_shape = _shape(x_shape)
        if int(z_dim) != z_dim or z_dim < 1:
            raise PyrovaeError(f"z_dim must be a positive integer, got {z_dim!r}")
        self.z_dim = int(z_dim)
        self.validate_inputs = True
        options = {"hidden": hidden, "activation": activation}
        if channels is not None:
            if net != "conv":
                raise PyrovaeError(f"channels is an option of the conv net, not of net={net!r}")
            options["channels"] = channels
        self.encoder, self.decoder = build_nets(
            net, self.x_shape, self.z_dim, scale_fn=scale_fn, **options
        )
        self.prior_net = build_prior(prior, self.z_dim, self.x_shape, self.encoder, components)
        self.likelihood = build_likelihood(
            likelihood, self.x_shape, scale=likelihood_scale, learn_scale=learn_scale
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
        """q(z|x) = N(loc(x), diag(scale(x)^2)): batch shape ``(B,)``, event shape ``(z_dim,)``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z): batch shape ``z.shape[:-1]``, event shape ``x_shape`` (one whole example)."""
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

    def check(self, x: torch.Tensor) -> None:
        """Refuse a batch of the wrong shape, with NaN or inf, or outside the likelihood's
        support, with a one-line error (skipped when ``validate_inputs`` is False)."""
        if not self.validate_inputs:
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
        self.likelihood.check(x)


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
