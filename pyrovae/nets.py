"""Encoder and decoder networks, chosen by name: ``mlp`` and ``conv``.

An encoder maps a batch ``x`` of shape ``(B, *x_shape)`` to the parameters ``(loc, scale)``
of the amortized diagonal Gaussian q(z|x) (Kingma & Welling 2013, Appendix C.2). A decoder maps
``z`` of shape ``(B, z_dim)`` to one unconstrained output per data value, shape
``(B, *x_shape)``, which a likelihood turns into p(x|z) (logits, a location, ...).

Shapes: ``(C, H, W)`` images (any C, any H and W, square or not), ``(C, L)`` sequences and flat
vectors ``(D,)`` all work; the conv nets use 2-d convolutions for images and 1-d convolutions
otherwise (a flat vector is one channel of length D).

Outputs come in the dtype of the input: under ``torch.autocast`` (``train.precision=bfloat16``)
the layers compute in bfloat16 and the distribution parameters are cast back to float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn
from torch.nn import functional as F

from pyrovae.errors import choice_error
from pyrovae.options import Option, checked, fill

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}

SCALE_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # sigma = exp(log sigma^2 / 2): the log-variance parameterization of Kingma & Welling.
    "exp": lambda raw: torch.exp(0.5 * raw),
    # sigma = softplus(raw): smoother for large raw values (used by the conv config).
    "softplus": F.softplus,
}

_MIN_SCALE = 1e-6

# The options of the nets (``model.net: {name: ..., <option>: value}``; see pyrovae.options).
# Each encoder and decoder class declares those it takes; a net's options are the two together.
ACTIVATION = Option(str, "relu", "the hidden layers' non-linearity", choices=tuple(ACTIVATIONS))
SCALE_FN = Option(str, "exp", "how the encoder makes sigma: exp (of half the log-variance) or "
                  "softplus", choices=tuple(SCALE_FNS))
_MLP = {
    "hidden": Option(list, (400,), "widths of the dense hidden layers (encoder; mirrored in the "
                     "decoder)", range="> 0"),
    "activation": ACTIVATION,
}
_CONV = {
    "channels": Option(list, (32, 64), "channels of the strided conv layers (mirrored in the "
                       "decoder)", range="> 0", min_items=1),
    "hidden": Option(list, (256,), "widths of the dense layers after the convolutions "
                     "(mirrored in the decoder)", range="> 0"),
    "activation": ACTIVATION,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise choice_error("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]()


def _mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, an activation after every layer but the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


class Encoder(PyroModule):
    """Base encoder: ``forward(x) -> (loc, scale)``, both of shape ``(B, z_dim)``."""

    #: The options the encoder takes (keyword arguments of ``__init__``).
    options: dict[str, Option] = {"scale_fn": SCALE_FN}

    def __init__(self, z_dim: int, scale_fn: str = SCALE_FN.default) -> None:
        super().__init__()
        scale_fn = checked(self, scale_fn=scale_fn)["scale_fn"]
        self.z_dim = z_dim
        self.scale_fn = scale_fn

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # .to(x.dtype): under autocast the layers run in bfloat16, the Gaussian in float32
        loc, raw = self.features(x).to(x.dtype).split(self.z_dim, dim=-1)
        return loc, SCALE_FNS[self.scale_fn](raw) + _MIN_SCALE


class MLPEncoder(Encoder):
    """x -> flatten -> [Linear -> act] * len(hidden) -> Linear(2 * z_dim)."""

    options = {**_MLP, **Encoder.options}

    def __init__(
        self,
        x_shape: tuple[int, ...],
        z_dim: int,
        hidden: Sequence[int] = _MLP["hidden"].default,
        activation: str = ACTIVATION.default,
        scale_fn: str = SCALE_FN.default,
    ) -> None:
        super().__init__(z_dim, scale_fn)
        self.x_shape = tuple(x_shape)
        self.net = _mlp([math.prod(x_shape), *hidden, 2 * z_dim], activation)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[: x.dim() - len(self.x_shape)] + (-1,)))


class MLPDecoder(PyroModule):
    """z -> [Linear -> act] * len(hidden) -> Linear(prod(x_shape)) -> reshape to x_shape."""

    options = _MLP

    def __init__(
        self,
        x_shape: tuple[int, ...],
        z_dim: int,
        hidden: Sequence[int] = _MLP["hidden"].default,
        activation: str = ACTIVATION.default,
    ) -> None:
        super().__init__()
        self.out_shape = tuple(x_shape)
        self.net = _mlp([z_dim, *hidden, math.prod(self.out_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).to(z.dtype).reshape(z.shape[:-1] + self.out_shape)

    def set_output_bias(self, value: torch.Tensor) -> None:
        """Set the last layer's bias so that the output is ``value`` (shape ``x_shape``) where
        the layer's weights contribute nothing."""
        with torch.no_grad():
            self.net[-1].bias.copy_(value.reshape(-1))


def _as_channels(x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (C, *spatial) shape the conv nets work on: a flat vector (D,) becomes (1, D)."""
    return (1, x_shape[0]) if len(x_shape) == 1 else tuple(x_shape)


def _conv_layers(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    if dims == 1:
        return nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d
    return nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d


def _downsampled(size: Sequence[int]) -> tuple[int, ...]:
    """Spatial size after a 3x3 (or 3) convolution with stride 2 and padding 1: ceil(n / 2)."""
    return tuple((n + 1) // 2 for n in size)


class ConvEncoder(Encoder):
    """Strided convolutions with batch norm, then dense layers to (loc, scale).

    Each stage halves the spatial size (kernel 3, stride 2, padding 1: n -> ceil(n / 2)),
    so any input size works, down to a single pixel.
    """

    options = {**_CONV, **Encoder.options}

    def __init__(
        self,
        x_shape: tuple[int, ...],
        z_dim: int,
        channels: Sequence[int] = _CONV["channels"].default,
        hidden: Sequence[int] = _CONV["hidden"].default,
        activation: str = ACTIVATION.default,
        scale_fn: str = SCALE_FN.default,
    ) -> None:
        super().__init__(z_dim, scale_fn)
        self.x_shape = tuple(x_shape)
        shape = _as_channels(self.x_shape)
        conv, _, norm = _conv_layers(len(shape) - 1)
        layers: list[nn.Module] = []
        c_in, size = shape[0], shape[1:]
        for c_out in channels:
            # no bias: the batch norm right after subtracts it again (Ioffe & Szegedy 2015)
            layers += [conv(c_in, c_out, 3, 2, 1, bias=False), norm(c_out),
                       _activation(activation)]
            c_in, size = c_out, _downsampled(size)
        self.conv = nn.Sequential(*layers)
        self.dense = _mlp([c_in * math.prod(size), *hidden, 2 * z_dim], activation)
        self._in_shape = shape

    def features(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.x_shape)]
        h = self.conv(x.reshape((-1,) + self._in_shape))
        return self.dense(h.flatten(1)).reshape(batch + (-1,))


class ConvDecoder(PyroModule):
    """Dense layers, then transposed convolutions that undo the encoder's strides exactly.

    The output padding of each transposed convolution is chosen so that the sizes retrace the
    encoder's (2n - 1 for odd, 2n for even targets): the output has exactly ``x_shape``.
    """

    options = _CONV

    def __init__(
        self,
        x_shape: tuple[int, ...],
        z_dim: int,
        channels: Sequence[int] = _CONV["channels"].default,
        hidden: Sequence[int] = _CONV["hidden"].default,
        activation: str = ACTIVATION.default,
    ) -> None:
        super().__init__()
        self.out_shape = tuple(x_shape)
        shape = _as_channels(self.out_shape)
        _, deconv, norm = _conv_layers(len(shape) - 1)
        sizes = [tuple(shape[1:])]
        for _ in channels:
            sizes.append(_downsampled(sizes[-1]))
        self._start = (channels[-1], *sizes[-1])
        self.dense = nn.Sequential(
            _mlp([z_dim, *hidden, math.prod(self._start)], activation),
            _activation(activation),
        )
        layers: list[nn.Module] = []
        c_in = self._start[0]
        reversed_channels = list(channels[::-1][1:]) + [shape[0]]
        for i, c_out in enumerate(reversed_channels):
            target, source = sizes[-2 - i], sizes[-1 - i]
            pad = tuple(t - (2 * s - 1) for t, s in zip(target, source))
            last = i == len(reversed_channels) - 1
            layers += [deconv(c_in, c_out, 3, 2, 1, output_padding=pad, bias=last)]
            if not last:
                layers += [norm(c_out), _activation(activation)]
            c_in = c_out
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).reshape((-1,) + self._start)
        return self.deconv(h).to(z.dtype).reshape(batch + self.out_shape)

    def set_output_bias(self, value: torch.Tensor) -> None:
        """Set the last transposed convolution's bias (one per channel) to the mean of ``value``
        (shape ``x_shape``) over each channel."""
        channels = _as_channels(self.out_shape)[0]
        with torch.no_grad():
            self.deconv[-1].bias.copy_(value.reshape(channels, -1).mean(-1))


NETS: dict[str, tuple[type[Encoder], type[nn.Module]]] = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
}


def net_options(name: str) -> dict[str, Option]:
    """The options of the net registered under ``name``: its encoder's and its decoder's."""
    if not isinstance(name, str) or name not in NETS:
        raise choice_error("net", name, list(NETS))
    encoder, decoder = NETS[name]
    return {**encoder.options, **decoder.options}


def build_nets(
    name: str, x_shape: tuple[int, ...], z_dim: int, **options
) -> tuple[Encoder, nn.Module]:
    """The encoder and decoder registered under ``name``, as PyroModules.

    ``options`` are the net's options (``net_options(name)``: ``hidden``, ``activation``,
    ``scale_fn``, ``channels`` for ``conv``), checked; those not given or None take their
    defaults. Each of the two networks gets the options its class declares.
    """
    filled = fill(net_options(name), options, f"net={name}")
    enc_cls, dec_cls = NETS[name]
    encoder = enc_cls(x_shape, z_dim, **{k: filled[k] for k in enc_cls.options})
    decoder = dec_cls(x_shape, z_dim, **{k: filled[k] for k in dec_cls.options})
    to_pyro_module_(encoder)
    to_pyro_module_(decoder)
    return encoder, decoder
