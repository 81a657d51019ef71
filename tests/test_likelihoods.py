import math

import pytest
import torch

from pyrovae import VAE
from pyrovae.errors import PyrovaeError
from pyrovae.likelihoods import LIKELIHOODS, build_likelihood

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


def test_continuous_bernoulli_is_normalised_on_unit_interval():
    lik = build_likelihood("continuous_bernoulli", (1,))
    grid = torch.linspace(0, 1, 20001)[:, None]
    for logit in (-3.0, 0.0, 0.01, 2.5):
        dens = lik(torch.full((grid.shape[0], 1), logit)).log_prob(grid).exp()
        assert abs(torch.trapezoid(dens, grid[:, 0]).item() - 1) < 1e-4


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
