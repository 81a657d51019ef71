import math

import pyro
import pytest
import torch

from pyrovae import VAE, likelihoods
from pyrovae.errors import PyrovaeError
from pyrovae.likelihoods import LIKELIHOODS, LogitContinuousBernoulli, build_likelihood

SHAPE = (1, 4, 3)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_event_is_one_whole_example(name):
    lik = build_likelihood(name, SHAPE)
    d = lik(torch.randn(5, *SHAPE))
    assert d.batch_shape == (5,) and d.event_shape == SHAPE
    x = torch.bernoulli(torch.full((5, *SHAPE), 0.5))
    assert d.log_prob(x).shape == (5,)


def test_gaussian_fixed_scale_is_the_mse_loss():
    sigma, mu, x = 0.3, torch.randn(2, *SHAPE), torch.rand(2, *SHAPE)
    lik = build_likelihood("gaussian", SHAPE, scale=sigma)
    d = math.prod(SHAPE)
    mse = ((x - mu) ** 2).flatten(1).sum(1) / (2 * sigma**2)
    const = d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(-lik(mu).log_prob(x), mse + const, atol=1e-5)


def test_laplace_fixed_scale_is_the_l1_loss():
    b, mu, x = 0.5, torch.randn(2, *SHAPE), torch.rand(2, *SHAPE)
    lik = build_likelihood("laplace", SHAPE, scale=b)
    l1 = (x - mu).abs().flatten(1).sum(1) / b + math.prod(SHAPE) * math.log(2 * b)
    assert torch.allclose(-lik(mu).log_prob(x), l1, atol=1e-5)


@pytest.mark.parametrize("learn, shape", [("global", ()), ("pixel", SHAPE)])
def test_learned_scale(learn, shape):
    lik = build_likelihood("gaussian", SHAPE, scale=2.0, learn_scale=learn)
    params = dict(lik.named_parameters())
    assert len(params) == 1
    assert lik.scale.shape == shape and torch.allclose(lik.scale, torch.tensor(2.0))
    assert build_likelihood("gaussian", SHAPE, learn_scale="none").scale.requires_grad is False


LOGITS = (-50.0, -30.0, -20.0, -12.0, -3.0, -0.5, -0.01, 0.0, 1e-3, 0.3, 0.5, 2.5, 15.0, 50.0)


def _quadrature(density) -> tuple[torch.Tensor, torch.Tensor]:
    """A fine grid on [0, 1] (float32, as the models use) and the float32 density of each
    logit of LOGITS on it, shape (len(LOGITS), grid)."""
    grid = torch.linspace(0, 1, 40001)
    logits = torch.tensor(LOGITS)[:, None].expand(-1, grid.shape[0])
    return grid, density(logits).log_prob(grid.expand_as(logits)).double().exp()


def _integral(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(values, grid.double(), dim=-1)


def test_continuous_bernoulli_is_normalised_for_every_logit_in_float32():
    lik = build_likelihood("continuous_bernoulli", (1,))
    grid, dens = _quadrature(lambda logits: lik.base(logits))
    assert dens.dtype == torch.float64 and lik.base(torch.zeros(3)).log_prob(
        torch.zeros(3)).dtype == torch.float32
    # trapezoid error ~ h^2 L^2 / 12 < 2e-7 at |L| = 50; float32 rounding ~ 1e-7
    assert (_integral(dens, grid) - 1).abs().max() < 1e-4


def test_torch_continuous_bernoulli_fails_the_same_check():
    """The test double: torch's own class, clamped in the normaliser only, integrates to 0.32
    at |L| = 50 and 0.80 at |L| = 20, so the check above can fail."""
    grid, dens = _quadrature(lambda logits: torch.distributions.ContinuousBernoulli(logits=logits))
    mass = dict(zip(LOGITS, _integral(dens, grid).tolist()))
    assert abs(mass[-3.0] - 1) < 1e-4  # fine in the middle
    assert mass[-20.0] < 0.81 and mass[-50.0] < 0.33 and mass[50.0] < 0.33


def test_continuous_bernoulli_log_normaliser_is_the_closed_form():
    """log p(x) = x L - softplus(L) + log(L / tanh(L / 2)), against float64, and torch's value
    where torch is right (|L| < 10), including its own Taylor region near L = 0."""
    logits = torch.tensor(LOGITS)
    x = torch.rand(len(LOGITS), generator=torch.Generator().manual_seed(0))
    d = build_likelihood("continuous_bernoulli", (1,)).base(logits)
    l64, x64 = logits.double(), x.double()
    safe = torch.where(l64 == 0, torch.ones_like(l64), l64)
    log_c = (safe / torch.tanh(safe / 2)).log()
    log_c = torch.where(l64 == 0, torch.full_like(l64, math.log(2)), log_c)
    exact = x64 * l64 - torch.nn.functional.softplus(l64) + log_c
    torch.testing.assert_close(d.log_prob(x).double(), exact, rtol=1e-6, atol=1e-6)
    inner = logits.abs() < 10
    torch.testing.assert_close(
        d.log_prob(x)[inner],
        torch.distributions.ContinuousBernoulli(logits=logits[inner]).log_prob(x[inner]),
        rtol=1e-5,
        atol=2e-5,
    )
    # near L = 0: log 2 + L^2 / 12 (not L^2 / 24)
    small = torch.tensor([1e-3, 0.1, 0.4])
    ds = build_likelihood("continuous_bernoulli", (1,)).base(small)
    shift = ds.log_prob(torch.zeros(3)) + torch.nn.functional.softplus(small)
    torch.testing.assert_close(shift, math.log(2) + small**2 / 12 - 7 * small**4 / 1440)


class ShortSeries(LogitContinuousBernoulli):
    """Test double: the series of log C(L) cut after L^6 (off by up to 1e-7 near |L| = 0.5)
    and those of the mean and variance after L^7 and L^6 (off by 4e-11 and 7e-10)."""

    LOG_NORM_SERIES = LogitContinuousBernoulli.LOG_NORM_SERIES[:3]
    MEAN_SERIES = LogitContinuousBernoulli.MEAN_SERIES[:4]


@pytest.mark.parametrize("cls, exact", [(LogitContinuousBernoulli, True), (ShortSeries, False)])
def test_continuous_bernoulli_series_are_exact_in_float64(cls, exact):
    """In float64, the Taylor series that log C(L), the mean and the variance take for
    |L| < 0.5 equal their closed forms to the closed forms' own rounding (they lose digits to
    cancellation as L -> 0: compared where they keep all but a few); the short series of the
    test double do not."""
    logits = torch.linspace(0.2, 0.4999, 60).double()
    logits = torch.cat([logits, -logits])
    d = cls(logits=logits)
    closed = {  # (value, its rounding error: float64 eps times the cancelled magnitude)
        "log C": (torch.log(logits / torch.tanh(logits / 2)), 4e-16),
        "mean": (-1 / torch.expm1(-logits) - 1 / logits, 4e-15),
        "variance": (1 / logits**2 - 0.25 / torch.sinh(logits / 2) ** 2, 4e-14),
    }
    series = {"log C": d._log_norm(), "mean": d.mean, "variance": d.variance}
    for name, (value, rounding) in closed.items():
        error = (series[name] - value).abs().max().item()
        assert (error < rounding) if exact else (error > 1e-11), (name, error)


def test_continuous_bernoulli_icdf_keeps_float32_precision():
    """Sampling by the inverse CDF in float32 agrees with float64 to float32 rounding for every
    logit and u, also for the small x that a small u gives at a positive logit, where the form
    1 + log1p((1 - u) expm1(-L)) / L (the test double: the previous one) cancels to 4% error."""
    logits = torch.tensor([-200.0, -1.0, 0.3, 1.0, 5.0, 20.0, 49.0, 50.0, 60.0, 200.0, 5000.0])
    u = torch.tensor([1e-6, 1e-3, 0.5, 0.999])[:, None].expand(-1, len(logits))
    exact = LogitContinuousBernoulli(logits=logits.double()).icdf(u.double())
    ours = LogitContinuousBernoulli(logits=logits).icdf(u)
    assert ((ours.double() - exact).abs() / exact).max() < 1e-6
    one = torch.tensor(1.0)
    previous = 1 + torch.log1p((1 - u[0, 3]) * torch.expm1(-one)) / one
    assert abs(previous.double() - exact[0, 3]) / exact[0, 3] > 1e-2


def _kl_by_quadrature(p, q, n: int = 400_000) -> torch.Tensor:
    """KL(p || q) = integral of p (log p - log q) over [0, 1], midpoint rule in float64."""
    x = ((torch.arange(n, dtype=torch.float64) + 0.5) / n)[:, None]
    log_p, log_q = p.log_prob(x), q.log_prob(x)
    return (log_p.exp() * (log_p - log_q)).mean(0)


def test_kl_divergence_uses_the_normaliser_for_every_logit():
    """kl_divergence between two continuous Bernoullis, and from a Beta, against quadrature, at
    logits up to 50, where torch's rule for its own class (the test double) reads its clamped
    normaliser and is wrong, even negative."""
    a = torch.tensor([30.0, 50.0, -50.0, 0.3, 0.0, -3.0], dtype=torch.float64)
    b = torch.tensor([-30.0, 0.0, -20.0, -0.2, 0.0, 12.0], dtype=torch.float64)
    p, q = LogitContinuousBernoulli(logits=a), LogitContinuousBernoulli(logits=b)
    exact = _kl_by_quadrature(p, q)
    torch.testing.assert_close(torch.distributions.kl_divergence(p, q), exact, rtol=1e-6,
                               atol=1e-9)
    torch_rule = torch.distributions.kl._kl_continuous_bernoulli_continuous_bernoulli(p, q)
    assert ((torch_rule - exact).abs() > 1).any()
    beta = torch.distributions.Beta(torch.tensor([2.0, 3.0]).double(),
                                    torch.tensor([5.0, 1.5]).double())
    cb = LogitContinuousBernoulli(logits=torch.tensor([-40.0, 3.0]).double())
    torch.testing.assert_close(torch.distributions.kl_divergence(beta, cb),
                               _kl_by_quadrature(beta, cb), rtol=2e-3, atol=0)


def test_continuous_bernoulli_mean_variance_and_sampling():
    lik = build_likelihood("continuous_bernoulli", (1,))
    grid, dens = _quadrature(lambda logits: lik.base(logits))
    mean = _integral(dens * grid.double(), grid)
    var = _integral(dens * (grid.double() - mean[:, None]) ** 2, grid)
    d = lik.base(torch.tensor(LOGITS))
    torch.testing.assert_close(d.mean.double(), mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(d.variance.double(), var, rtol=1e-4, atol=1e-7)
    # the mean the figures use: 1 - 1/L for a large logit, not torch's clamped value
    assert abs(d.mean[-1].item() - (1 - 1 / 50)) < 1e-6
    # sampling by the inverse CDF: the sample mean within 4 standard errors of .mean
    n = 20000
    pyro.set_rng_seed(0)
    draws = d.sample((n,))
    assert ((draws >= 0) & (draws <= 1)).all()
    z = (draws.double().mean(0) - d.mean.double()) / (d.variance.double() / n).sqrt()
    assert z.abs().max() < 4, z
    u = torch.rand(100, len(LOGITS))
    torch.testing.assert_close(d.cdf(d.icdf(u)), u, rtol=0, atol=2e-5)


def test_continuous_bernoulli_gradient_is_x_minus_mean():
    """d log p / dL = x - E[x] for an exponential family: finite everywhere, also at L = 0 and
    at the logits of thousands that a decoder reaches on data with exact 0s and 1s (where L^18,
    of the series for |L| < 0.5, would overflow float32)."""
    logits = torch.tensor((*LOGITS, -5000.0, -200.0, 200.0, 5000.0), requires_grad=True)
    x = torch.full((logits.shape[0],), 0.3)
    d = build_likelihood("continuous_bernoulli", (1,)).base(logits)
    (grad,) = torch.autograd.grad(d.log_prob(x).sum(), logits)
    torch.testing.assert_close(grad, x - d.mean.detach(), rtol=0, atol=2e-6)


def test_continuous_bernoulli_at_exact_zeros_and_ones():
    """Exact 0s and 1s pass the data check; their log-density is finite for every finite logit
    but grows like log |L| as the decoder saturates (no cap)."""
    vae = VAE(x_shape=SHAPE, z_dim=2, hidden=[8], likelihood="continuous_bernoulli")
    vae.check(torch.bernoulli(torch.full((4, *SHAPE), 0.5)))  # no error
    lik = build_likelihood("continuous_bernoulli", (1,))
    logits = torch.tensor([-1e3, -50.0, -20.0, 20.0, 50.0, 1e3])
    x = (logits > 0).float()  # each logit saturating towards its value
    lp = lik.base(logits).log_prob(x)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, logits.abs().log(), rtol=0, atol=1e-6)
    assert lp[0] > lp[1] > lp[2] > 2.77  # above torch's old cap of 2.77 nats per value


def test_bernoulli_refuses_grey_levels_and_names_the_fixes():
    vae = VAE(x_shape=SHAPE, z_dim=2, hidden=[8])
    with pytest.raises(PyrovaeError) as err:
        vae.model(torch.full((2, *SHAPE), 0.5))
    msg = str(err.value)
    assert "binarize" in msg and "continuous_bernoulli" in msg and "\n" not in msg


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_continuous_bernoulli_support(bad):
    vae = VAE(x_shape=SHAPE, z_dim=2, hidden=[8], likelihood="continuous_bernoulli")
    with pytest.raises(PyrovaeError, match=r"needs data in \[0, 1\]"):
        vae.guide(torch.full((2, *SHAPE), bad))


def test_unknown_likelihood_and_bad_scale():
    with pytest.raises(PyrovaeError, match="unknown likelihood 'poisson'; choose one of"):
        VAE(likelihood="poisson")
    with pytest.raises(PyrovaeError, match="scale must be > 0"):
        VAE(likelihood="gaussian", likelihood_scale=0.0)
    with pytest.raises(PyrovaeError, match="unknown learn_scale"):
        VAE(likelihood="laplace", learn_scale="channel")


# ---- the floor of learned scales -------------------------------------------------------------


def _fit_scale_to_constant_data(min_scale: float | None, name: str) -> tuple[float, float]:
    """Learn a global scale by Adam on data that the location predicts exactly (a constant
    pixel): the likelihood rises as the scale shrinks. Returns (scale, log-density)."""
    pyro.clear_param_store()  # a PyroParam is shared through the param store by its name
    lik = build_likelihood(name, (4,), scale=0.1, learn_scale="global", min_scale=min_scale)
    x, loc = torch.full((16, 4), 0.0), torch.zeros(16, 4)
    opt = torch.optim.Adam(lik.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        loss = -lik(loc).log_prob(x).mean()
        loss.backward()
        opt.step()
    return lik.scale.item(), -loss.item() / 4


@pytest.mark.parametrize("name, bound", [
    ("gaussian", lambda s: -math.log(s) - 0.5 * math.log(2 * math.pi)),
    ("laplace", lambda s: -math.log(2 * s)),
])
def test_a_learned_scale_stops_at_its_floor(name, bound):
    # without a floor (the test double) the scale runs away: 300 Adam steps of 0.1 in log-scale
    # take it from 0.1 to about e^-30 and the log-density up by as many nats
    scale, log_p = _fit_scale_to_constant_data(0.0, name)
    assert scale < 1e-9 and log_p > 20
    scale, log_p = _fit_scale_to_constant_data(None, name)  # the default floor
    floor = likelihoods.MIN_SCALE
    # at the floor (Adam's steps shrink near it: within 5%), and the log-density at its bound
    assert floor <= scale < floor * 1.05
    assert bound(floor) - 0.05 < log_p <= bound(floor) + 1e-4
    scale, _ = _fit_scale_to_constant_data(0.05, name)
    assert 0.05 <= scale < 0.05 * 1.05


@pytest.mark.parametrize("learn, shape", [("global", ()), ("pixel", SHAPE)])
def test_the_floor_holds_for_any_parameter_value(learn, shape):
    pyro.clear_param_store()
    lik = build_likelihood("gaussian", SHAPE, scale=0.5, learn_scale=learn, min_scale=0.01)
    assert lik.min_scale == 0.01 and torch.allclose(lik.scale, torch.tensor(0.5))
    with torch.no_grad():
        lik.scale_unconstrained.fill_(-1e4)  # as far down as a parameter can go
    assert lik.scale.shape == shape and bool((lik.scale == 0.01).all())
    fixed = build_likelihood("gaussian", SHAPE, scale=1e-4)  # a fixed scale is the user's choice
    assert fixed.scale.item() == pytest.approx(1e-4)


@pytest.mark.parametrize("options, words", [
    ({"min_scale": -1.0}, "min_scale must be >= 0"),
    ({"min_scale": float("nan")}, "min_scale must be a finite number"),
    ({"min_scale": True}, "min_scale must be a finite number"),
    ({"min_scale": 0.5, "scale": 0.5, "learn_scale": "pixel"}, "not above its floor"),
])
def test_bad_floors_are_one_line_errors(options, words):
    with pytest.raises(PyrovaeError, match=words) as err:
        build_likelihood("laplace", SHAPE, **options)
    assert "\n" not in str(err.value)
