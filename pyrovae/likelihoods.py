"""Likelihoods p(x|z), chosen by name: ``bernoulli``, ``gaussian``, ``continuous_bernoulli``,
``laplace``.

A likelihood is a PyroModule that turns the decoder's output (one unconstrained number per data
value, shape ``(..., *x_shape)``) into a ``pyro.distributions`` distribution whose event is one
whole example: ``.to_event(len(x_shape))``. ``check(x)`` refuses data outside the support with a
one-line error that says how to fix it.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.options import Option, checked, fill, label

LEARN_SCALE = ("none", "global", "pixel")
#: The default floor of a learned gaussian / laplace scale: a quarter of an 8-bit grey level
#: on data in [0, 1] (see :class:`_LocScale`).
MIN_SCALE = 1 / (4 * 255)


def _range(x: torch.Tensor) -> str:
    return f"[{x.min().item():.4g}, {x.max().item():.4g}]"


class Likelihood(PyroModule):
    """Base likelihood over examples of shape ``x_shape``."""

    #: The options this likelihood takes (``model.likelihood: {name: ..., <option>: value}``;
    #: see :mod:`pyrovae.options`): keyword arguments of ``__init__``, filled in and checked.
    options: dict[str, Option] = {}

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

    def output_for_mean(self, mean: torch.Tensor) -> torch.Tensor:
        """The decoder output whose distribution has mean ``mean`` (``model.output_bias=
        data_mean`` starts the decoder's output bias there); a likelihood that has no such
        inverse leaves this out and the option is a one-line error."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i)) for binary data (K&W 2013, App. C.1)."""

    def base(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=out, validate_args=False)

    def output_for_mean(self, mean: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """The logit of the mean, clamped to [eps, 1 - eps] (an all-black pixel: a finite one)."""
        p = mean.clamp(eps, 1 - eps)
        return p.log() - (-p).log1p()

    def check(self, x: torch.Tensor) -> None:
        if not ((x == 0) | (x == 1)).all():
            raise PyrovaeError(
                f"the bernoulli likelihood needs binary data (0 or 1), got values in {_range(x)}: "
                "binarize the data (data.binarize=dynamic) or use "
                "likelihood=continuous_bernoulli for data in [0, 1]"
            )


class LogitContinuousBernoulli(dist.ContinuousBernoulli):
    """The continuous Bernoulli CB(x; L) = C(L) exp(x L - softplus(L)) on [0, 1], computed from
    the logit L alone, normalised for every finite L in float32 as in float64.

    With lambda = sigmoid(L), the normaliser C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)
    (Loaiza-Ganem & Cunningham 2019, eq. 3) is, since 1 - 2 lambda = -tanh(L / 2),

        C(L) = L / tanh(L / 2),   log C(L) = log 2 + L^2/12 - 7 L^4/1440 + 31 L^6/90720 - ...,

    so log CB(x; L) = x L - softplus(L) + log(L / tanh(L / 2)), the series (to L^18, whose next
    term is below 1.1e-17 for |L| < 0.5: float64 rounding) for |L| < 0.5. The
    moments and the inverse CDF are written in L too: mean = 1 / (1 - e^-L) - 1 / L, variance =
    1 / L^2 - 1 / (4 sinh^2(L / 2)) (the mean's derivative), icdf(u) = log1p(u expm1(L)) / L;
    the mean and variance by their series for |L| < 0.5 too (to L^17 and L^16: float64 rounding),
    and ``kl_divergence`` between two of them (or from a Beta) with this normaliser.

    torch's ``ContinuousBernoulli`` clamps lambda to [eps, 1 - eps] in the normaliser only, so
    beyond |L| ~ 12 its density no longer integrates to 1 in float32 (0.80 at |L| = 20, 0.53 at
    30); its mean and variance are clamped the same way. Construct it with ``logits``.
    """

    #: below this |L| the closed forms lose precision to cancellation: Taylor series instead
    SERIES = 0.5
    #: log C(L) - log 2 = sum_j LOG_NORM_SERIES[j] L^(2j + 2), the Taylor coefficients to L^18
    LOG_NORM_SERIES = (1 / 12, -7 / 1440, 31 / 90720, -127 / 4838400, 73 / 34214400,
                       -1414477 / 7846046208000, 8191 / 523069747200,
                       -16931177 / 12194997534720000, 5749691557 / 45981847954538496000)
    #: mean - 1/2 = sum_n MEAN_SERIES[n] L^(2n + 1), B_(2n+2) / (2n+2)! (Bernoulli numbers), to
    #: L^17; the variance is its derivative
    MEAN_SERIES = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600, 1 / 47900160,
                   -691 / 1307674368000, 1 / 74724249600, -3617 / 10670622842880000,
                   43867 / 5109094217170944000)
    ICDF_SERIES = 0.05
    #: from this logit on, the inverse CDF is written without expm1(L)
    ICDF_LARGE = 50.0

    @staticmethod
    def _split(logits: torch.Tensor, cut: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(|L| < cut; L there and 0 elsewhere; L elsewhere and 1 there): the series are
        evaluated on the second and the closed forms on the third, so that neither an overflow
        of a high power of a large L nor a 0/0 at L = 0 reaches the values, or the gradients
        (0 * inf is NaN), of the branch that ``where`` drops."""
        small = logits.abs() < cut
        return (small, torch.where(small, logits, torch.zeros_like(logits)),
                torch.where(small, torch.ones_like(logits), logits))

    def _log_norm(self) -> torch.Tensor:
        """log C(L) = log(L / tanh(L / 2)), exact to float rounding for every finite L."""
        small, tiny, safe = self._split(self.logits, self.SERIES)
        x = tiny * tiny
        series = torch.zeros_like(x)
        for coefficient in reversed(self.LOG_NORM_SERIES):  # Horner, in x = L^2
            series = (series + coefficient) * x
        closed = torch.log(safe / torch.tanh(safe / 2))
        return torch.where(small, math.log(2.0) + series, closed)

    def _log_normalizer(self, x: torch.Tensor) -> torch.Tensor:
        """A(L) = log integral_0^1 e^(L x) dx = log(expm1(L) / L) = softplus(L) - log C(L)."""
        return type(self)(logits=x)._log_norm().neg() + torch.nn.functional.softplus(x)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return value * logits - torch.nn.functional.softplus(logits) + self._log_norm().expand(
            logits.shape
        )

    def _mean_series(self, tiny: torch.Tensor, derivative: bool) -> torch.Tensor:
        """sum_n MEAN_SERIES[n] L^(2n + 1), or its derivative in L, by Horner in x = L^2."""
        x, series = tiny * tiny, torch.zeros_like(tiny)
        for n, coefficient in reversed(list(enumerate(self.MEAN_SERIES))):
            series = series * x + (coefficient * (2 * n + 1) if derivative else coefficient)
        return series if derivative else series * tiny

    @property
    def mean(self) -> torch.Tensor:
        small, tiny, safe = self._split(self.logits, self.SERIES)
        series = 0.5 + self._mean_series(tiny, derivative=False)
        return torch.where(small, series, -1 / torch.expm1(-safe) - 1 / safe)

    @property
    def variance(self) -> torch.Tensor:
        small, tiny, safe = self._split(self.logits, self.SERIES)
        series = self._mean_series(tiny, derivative=True)
        return torch.where(small, series, 1 / (safe * safe) - 0.25 / torch.sinh(safe / 2) ** 2)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        value = value.clamp(0, 1)
        zero = logits == 0
        safe = torch.where(zero, torch.ones_like(logits), logits)
        # (e^{xL} - 1) / (e^L - 1), rewritten for L > 0 so that nothing overflows
        neg = torch.expm1(value * safe) / torch.expm1(safe)
        pos = torch.exp((value - 1) * safe) * torch.expm1(-value * safe) / torch.expm1(-safe)
        return torch.where(zero, value, torch.where(safe > 0, pos, neg))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        logits, u = torch.broadcast_tensors(self.logits, value)
        small, tiny, safe = self._split(logits, self.ICDF_SERIES)
        a = u * (u - 1)
        series = u + tiny * (-a / 2 + tiny * (a * (2 * u - 1) / 6 - tiny * a * (6 * a + 1) / 24))
        # log1p(u expm1(L)) / L, which keeps the relative precision of small x, below
        # ICDF_LARGE; above (expm1 overflows float32 at L = 89) the same number written as
        # 1 + log(u + (1 - u) e^-L) / L, its logarithm a logaddexp that loses nothing
        large = safe >= self.ICDF_LARGE
        direct_l = torch.where(large, torch.ones_like(safe), safe)
        large_l = torch.where(large, safe, torch.ones_like(safe))
        direct = torch.log1p(u * torch.expm1(direct_l)) / direct_l
        near_one = 1 + torch.logaddexp(torch.log(u), torch.log1p(-u) - large_l) / large_l
        return torch.where(small, series, torch.where(large, near_one, direct)).clamp(0, 1)

    def entropy(self) -> torch.Tensor:
        logits = self.logits
        return torch.nn.functional.softplus(logits) - self._log_norm() - self.mean * logits


def _expected_log_prob(q: LogitContinuousBernoulli, mean: torch.Tensor) -> torch.Tensor:
    """E_p[log q(x)] = E_p[x] L_q - softplus(L_q) + log C(L_q): it depends on p through its mean
    alone."""
    return mean * q.logits - torch.nn.functional.softplus(q.logits) + q._log_norm()


@torch.distributions.register_kl(LogitContinuousBernoulli, LogitContinuousBernoulli)
def _kl_continuous_bernoulli(p: LogitContinuousBernoulli, q: LogitContinuousBernoulli
                             ) -> torch.Tensor:
    """KL(p || q) = E_p[log p(x)] - E_p[log q(x)]; torch's rule for its class reads the
    clamped normaliser (wrong, even negative, for logits beyond ~12)."""
    return _expected_log_prob(p, p.mean) - _expected_log_prob(q, p.mean)


@torch.distributions.register_kl(torch.distributions.Beta, LogitContinuousBernoulli)
def _kl_beta_continuous_bernoulli(p: torch.distributions.Beta, q: LogitContinuousBernoulli
                                  ) -> torch.Tensor:
    """KL(Beta || CB) = -H(p) - E_p[log q(x)], with the normaliser above."""
    return -p.entropy() - _expected_log_prob(q, p.mean)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 3): the properly
    normalised density behind binary cross-entropy on grey levels, as
    :class:`LogitContinuousBernoulli` (normalised for every logit in float32; its ``.mean`` is
    the mean the figures draw).

    Exact 0s and 1s (the black background of MNIST and FashionMNIST) are accepted: they lie in
    the support, and their log-density is finite for every finite logit L, but it is unbounded
    above as the decoder saturates: at x = 0 it is log C(L) - softplus(L) -> log |L| as
    L -> -inf (3.9 nats at L = -50, 6.9 at -1000; x = 1 likewise as L -> +inf). The ELBO of a
    dataset with many exact 0s and 1s therefore keeps rising, slowly, as the logits grow; torch's
    clamped normaliser capped that (wrongly: its density then integrates to less than 1) at about
    2.77 nats per pixel in float32."""

    def base(self, out: torch.Tensor) -> dist.Distribution:
        return LogitContinuousBernoulli(logits=out, validate_args=False)

    def check(self, x: torch.Tensor) -> None:
        """Refuse values outside [0, 1]; exact 0s and 1s pass (see the class docstring for
        their unbounded log-density)."""
        if not ((x >= 0) & (x <= 1)).all():
            raise PyrovaeError(
                f"the continuous_bernoulli likelihood needs data in [0, 1], got values in "
                f"{_range(x)}: rescale the data to [0, 1] or use likelihood=gaussian"
            )


class _LocScale(Likelihood):
    """A location-scale likelihood: location from the decoder, scale fixed or learned.

    ``learn_scale``: ``none`` (fixed at ``scale``), ``global`` (one learned scale) or ``pixel``
    (one learned scale per data value); learned scales start at ``scale``.

    A learned scale is kept above ``min_scale`` (default :data:`MIN_SCALE`, a quarter of an
    8-bit grey level): it is ``min_scale + exp(u)`` with u the unconstrained parameter. Without
    a floor the likelihood is unbounded: on a data value that is the same in every example (the
    black border of MNIST) the decoder predicts it exactly and the ELBO rises without limit as
    that value's scale shrinks to 0 (-log scale nats per value). With the floor, such a value
    contributes at most -log(min_scale) - log sqrt(2 pi) nats (gaussian; -log(2 min_scale) for
    laplace): 6.0 and 6.2 nats at the default. ``min_scale=0`` turns the floor off.
    """

    family: type[dist.Distribution]
    options = {
        "scale": Option(float, 1.0, "the scale (its initial value, if learned)", range="> 0",
                        alias="likelihood_scale"),
        "learn_scale": Option(str, "none", "whether the scale is learned: none, global or pixel",
                              choices=LEARN_SCALE),
        "min_scale": Option(float, MIN_SCALE, "the floor of a learned scale (0: none)",
                            range=">= 0"),
    }

    def __init__(
        self,
        x_shape: tuple[int, ...],
        scale: float = options["scale"].default,
        learn_scale: str = options["learn_scale"].default,
        min_scale: float = options["min_scale"].default,
        **context,
    ) -> None:
        super().__init__(x_shape, **context)
        values = checked(self, scale=scale, learn_scale=learn_scale, min_scale=min_scale)
        scale, learn_scale, min_scale = values["scale"], values["learn_scale"], values["min_scale"]
        if learn_scale != "none" and not scale > min_scale:
            raise PyrovaeError(
                f"the learned likelihood scale starts at {scale}, which is not above its floor "
                f"min_scale = {min_scale}: start it higher or lower min_scale"
            )
        self.learn_scale = learn_scale
        self.min_scale = float(min_scale)
        shape = {"none": (), "global": (), "pixel": self.x_shape}[learn_scale]
        init = torch.full(shape, float(scale))
        if learn_scale == "none":
            self.register_buffer("scale", init)
        else:
            floor = constraints.greater_than(self.min_scale) if min_scale else constraints.positive
            self.scale = PyroParam(init, constraint=floor)

    def base(self, out: torch.Tensor) -> dist.Distribution:
        return self.family(out, self.scale.expand(out.shape), validate_args=False)

    def output_for_mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean  # the location is the mean


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


def build_likelihood(name: str | type[Likelihood], x_shape: tuple[int, ...],
                     **options) -> Likelihood:
    """The likelihood registered under ``name`` (or the ``Likelihood`` subclass ``name``), with
    its ``options`` (see ``Likelihood.options``; None: the default) checked and filled in."""
    cls = likelihood_class(name)
    return cls(x_shape, **fill(cls.options, options, f"likelihood={label(name)}"))


def likelihood_class(name: str | type[Likelihood]) -> type[Likelihood]:
    """The ``Likelihood`` subclass registered under ``name`` (a subclass is returned as it is)."""
    if isinstance(name, type) and issubclass(name, Likelihood):
        return name
    if not isinstance(name, str) or name not in LIKELIHOODS:
        raise choice_error("likelihood", name, list(LIKELIHOODS))
    return LIKELIHOODS[name]
