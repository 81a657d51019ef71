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
from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from pyro.poutine.util import is_validation_enabled
from torch import nn

from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.likelihoods import LIKELIHOODS, Likelihood, build_likelihood
from pyrovae.nets import NETS, build_nets, net_options
from pyrovae.options import Option, fill, label, route
from pyrovae.priors import PRIORS, Prior, build_prior

_INSTANCES = itertools.count()


def _whole(value) -> bool:
    """A whole number (an int, or a float or 0-d tensor without a fractional part), not a bool."""
    if isinstance(value, bool) or isinstance(value, str):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError, RuntimeError):
        return False


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
        **options: options of the chosen components in their flat form (``hidden=[512, 256]``,
            ``components=10``), each going to the component that declares it (each class lists
            its own in ``options``; see ``pyrovae.options``). None: the default. An option that
            none of the chosen components takes is a one-line error.

    Each component is given as a registered name; a mapping of the name and options, as in a
    config (``prior={"name": "mog", "components": 10}``); a class (``prior=MyPrior``, built
    with its declared options, registered or not); or, for a prior or likelihood, a built
    instance (``prior=priors.DiagNormal(20)``), and for the net an ``(encoder, decoder)`` pair
    of modules. ``spec`` holds the components with every option filled in, in the nested form
    of the config: for components given by name, mapping or class, ``VAE(x_shape, z_dim,
    **vae.spec)`` builds the same architecture (a built instance is recorded by its class
    name only).

    Each VAE registers its parameters in Pyro's global parameter store under its own prefix
    (``vae0.encoder...``, ``vae1.encoder...``), so that ``pyro.infer.SVI`` and ``pyro.optim``
    find them and two VAEs in one process never share weights; ``pyro_prefix`` tells it. A VAE
    that is garbage-collected takes its parameters out of the store (long processes do not grow).
    """

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 20,
        prior: Any = "normal",
        likelihood: Any = "bernoulli",
        net: Any = "mlp",
        **options: Any,
    ) -> None:
        super().__init__(name=f"vae{next(_INSTANCES)}")
        # Pyro's global store keeps every parameter it has seen: forget ours when we are freed.
        weakref.finalize(self, _forget_params, self.pyro_prefix)
        self.x_shape = _shape(x_shape)
        if not _whole(z_dim) or z_dim < 1:
            raise PyrovaeError(f"z_dim must be a positive integer, got {z_dim!r}")
        self.z_dim = int(z_dim)
        parts = {"prior": _component("prior", prior), "likelihood": _component(
            "likelihood", likelihood), "net": _component("net", net)}
        filled = resolve_options(parts, options)
        self.spec = {kind: {"name": part.target if isinstance(part.target, str) else part.label,
                            **filled[kind]} for kind, part in parts.items()}
        target = parts["net"].target
        if isinstance(target, str):
            self.encoder, self.decoder = build_nets(target, self.x_shape, self.z_dim,
                                                    **filled["net"])
        else:
            self.encoder, self.decoder = target
            for module in target:  # Pyro's SVI sees the parameters of PyroModules only
                to_pyro_module_(module)
            _same(self.encoder, "z_dim", self.z_dim, "net", "the encoder")
        target = parts["prior"].target
        if isinstance(target, Prior):
            _same(target, "z_dim", self.z_dim, "prior", "the prior")
            self.prior_net = target
        else:
            self.prior_net = build_prior(target, self.z_dim, self.x_shape, self.encoder,
                                         **filled["prior"])
        target = parts["likelihood"].target
        if isinstance(target, Likelihood):
            _same(target, "x_shape", self.x_shape, "likelihood", "the likelihood")
            self.likelihood = target
        else:
            self.likelihood = build_likelihood(target, self.x_shape, **filled["likelihood"])

    def __setstate__(self, state: dict) -> None:
        """A copy (``copy.deepcopy``, pickle) gets a prefix of its own in Pyro's parameter store:
        with the original's, SVI would step the original's parameters, not the copy's."""
        super().__setstate__(state)
        name = f"vae{next(_INSTANCES)}"
        for path, module in self.named_modules():
            if isinstance(module, PyroModule):
                module._pyro_name = f"{name}.{path}" if path else name
        weakref.finalize(self, _forget_params, self.pyro_prefix)

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

    def set_output_bias_to_mean(self, mean: torch.Tensor) -> None:
        """Start the decoder's output bias at the likelihood's parameter of ``mean`` (the
        training data's mean example; ``Likelihood.output_for_mean``): the logit of the mean
        pixel for ``bernoulli`` (Burda et al. 2015 start this way), the mean itself for a
        location (``gaussian``, ``laplace``). Before any training the decoder then predicts the
        data's mean image."""
        try:
            value = self.likelihood.output_for_mean(mean)
        except NotImplementedError:
            able = [name for name, cls in LIKELIHOODS.items()
                    if cls.output_for_mean is not Likelihood.output_for_mean]
            raise PyrovaeError(
                f"model.output_bias=data_mean is for the {', '.join(able)} likelihoods, not "
                f"{type(self.likelihood).__name__}: use model.output_bias=default") from None
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
        weights = next(self.parameters()).dtype
        if x.dtype != weights:
            fix = (f"convert it, e.g. x.to({weights}) or the VAE, vae.to({x.dtype})"
                   if x.is_floating_point()
                   else "convert it, e.g. x.float() / 255 for 8-bit images")
            raise PyrovaeError(f"x is {x.dtype} but this VAE's weights are {weights}: {fix}")
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise PyrovaeError(f"x holds {bad} NaN or inf values: clean or impute the data first")
        if support:
            self.likelihood.check(x)


#: The kinds of components of a VAE, and the base class of each that takes a class or instance.
KINDS = ("prior", "likelihood", "net")
_BASES = {"prior": Prior, "likelihood": Likelihood}


def registries() -> dict[str, dict[str, dict[str, Option]]]:
    """kind -> registered name -> the options that component declares. Read at each call, so
    that a component registered at run time (a test patching ``PRIORS``) counts."""
    return {"prior": {k: dict(c.options) for k, c in PRIORS.items()},
            "likelihood": {k: dict(c.options) for k, c in LIKELIHOODS.items()},
            "net": {k: net_options(k) for k in NETS}}


class Component:
    """One component as given: ``target`` (a registered name, a class, or a built instance),
    the options given with it (``nested``), its ``label`` in messages and the options it
    declares (``specs``; none for a built instance)."""

    def __init__(self, kind: str, target: Any, nested: dict, specs: Mapping[str, Option],
                 prefix: str = "") -> None:
        self.kind, self.target, self.nested, self.specs = kind, target, nested, specs
        self.label = label(target)
        if not isinstance(target, str):
            for name, cls in {"prior": PRIORS, "likelihood": LIKELIHOODS}.get(kind, {}).items():
                if cls is target:
                    self.label = name
        self.prefix = prefix

    @property
    def title(self) -> str:
        return f"{self.prefix}{self.kind}={self.label}"


def _component(kind: str, value: Any, prefix: str = "") -> Component:
    """A ``VAE`` argument ``prior`` / ``likelihood`` / ``net`` as a :class:`Component`."""
    registry = registries()[kind]
    base = _BASES.get(kind)
    if isinstance(value, str):
        if value not in registry:
            raise choice_error(kind, value, list(registry))
        return Component(kind, value, {}, registry[value], prefix)
    if isinstance(value, Mapping):
        nested = dict(value)
        name = nested.pop("name", None)
        if name is None:
            raise PyrovaeError(f"{prefix}{kind}={value!r} has no name: write "
                               f"{{name: <one of {', '.join(registry)}>, <option>: value}}")
        if isinstance(name, Mapping):
            raise PyrovaeError(f"{prefix}{kind}.name must be a name, got {name!r}")
        component = _component(kind, name, prefix)
        if isinstance(component.target, (str, type)):
            component.nested = nested
            return component
        if nested:
            raise PyrovaeError(f"{prefix}{kind} is a built {component.label}, which takes no "
                               f"options: remove {', '.join(map(str, nested))}")
        return component
    if base is not None and isinstance(value, type) and issubclass(value, base):
        return Component(kind, value, {}, dict(value.options), prefix)
    if base is not None and isinstance(value, base):
        return Component(kind, value, {}, {}, prefix)
    if kind == "net" and isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, nn.Module) for v in value):
        return Component(kind, tuple(value), {}, {}, prefix)
    built = f", a {base.__name__} subclass or instance" if base is not None else (
        ", or an (encoder, decoder) pair of modules")
    raise PyrovaeError(f"{prefix}{kind} must be a name (one of {', '.join(registry)}), a "
                       f"mapping {{name: ..., <option>: value}}{built}; got {value!r}")


def resolve_options(parts: Mapping[str, Component], flat: Mapping[str, Any],
                    keys: Mapping[str, Mapping[str, str]] | None = None,
                    prefix: str = "") -> dict[str, dict[str, Any]]:
    """kind -> every option of that component, filled in and checked: those given with the
    component (``parts[kind].nested``) and the ``flat`` ones, each sent to the component that
    declares it. ``keys[kind][option]`` is the key the user wrote, for messages."""
    regs = registries()
    routed = route(flat, {k: (p.label, p.specs) for k, p in parts.items()}, regs, prefix)
    filled = {}
    for kind, part in parts.items():
        given_keys = dict((keys or {}).get(kind, {}))
        for name in routed[kind]:
            if part.nested.get(name) is not None:
                raise PyrovaeError(
                    f"the {kind} option {name} is given twice, as "
                    f"{given_keys.get(name, f'{prefix}{kind}.{name}')} and as "
                    f"{prefix}{part.specs[name].key(name)}: keep one")
            given_keys[name] = f"{prefix}{part.specs[name].key(name)}"
        given = {**part.nested, **routed[kind]}
        for name in part.nested:
            given_keys.setdefault(name, f"{prefix}{kind}.{name}")

        def takers(option: str, kind: str = kind, name: str = part.label) -> list[str]:
            return [f"{prefix}{k}={n}" for k, registry in regs.items() for n, specs in
                    registry.items() if option in specs and (k, n) != (kind, name)]

        filled[kind] = fill(part.specs, given, part.title, given_keys, takers)
    return filled


def _same(component: Any, attribute: str, expected: Any, kind: str, what: str) -> None:
    value = getattr(component, attribute, expected)
    if isinstance(value, list):
        value = tuple(value)
    if value != expected:
        raise PyrovaeError(f"{what} given as {kind} was built with {attribute}={value!r}, but "
                           f"this VAE has {attribute}={expected!r}: build it with {attribute}="
                           f"{expected!r}")


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
