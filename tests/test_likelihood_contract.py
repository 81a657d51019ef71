"""The contract every registered likelihood keeps, tested over the registry (a new likelihood is
picked up with no edit here): its per-value density normalizes, its ``.mean`` is the mean of its
own samples, and its ``check`` accepts its own samples. Test data come from the likelihoods
themselves, never from a rule on their names."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import constraints

from pyrovae.likelihoods import LIKELIHOODS, build_likelihood

OUTPUTS = torch.tensor([-6.0, -1.5, 0.0, 0.7, 4.0])  # decoder outputs (logits or locations)


def _base(name: str):
    return build_likelihood(name, (OUTPUTS.numel(),)).base(OUTPUTS.double())


def _grid(support, base, n: int = 200001) -> torch.Tensor:
    """A quadrature grid over the support (a wide window of it when unbounded)."""
    if support is constraints.unit_interval or support == constraints.interval(0.0, 1.0):
        return torch.linspace(0, 1, n, dtype=torch.float64)[:, None].expand(n, OUTPUTS.numel())
    loc, spread = base.mean, base.stddev
    t = torch.linspace(-40, 40, n, dtype=torch.float64)[:, None]
    return loc + t * spread


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_density_normalizes(name):
    base = _base(name)
    support = base.support
    if support.is_discrete:
        values = base.enumerate_support(expand=True)
        total = base.log_prob(values).exp().sum(0)
    else:
        x = _grid(support, base)
        total = torch.trapezoid(base.log_prob(x).exp(), x, dim=0)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_mean_is_the_mean_of_its_samples_and_check_accepts_them(name):
    lik = build_likelihood(name, (OUTPUTS.numel(),))
    p = lik(OUTPUTS.double().expand(20000, -1))  # 20,000 examples of D values
    torch.manual_seed(0)
    x = p.sample()
    lik.check(x)  # its own samples are in its support
    se = x.std(0) / math.sqrt(x.shape[0])
    assert ((x.mean(0) - p.mean[0]).abs() <= 4.5 * se + 1e-12).all()


def test_the_contract_can_fail():
    """Test doubles: a density off by a constant does not normalize; a wrong mean is caught."""
    base = _base("bernoulli")
    values = base.enumerate_support(expand=True)
    assert not torch.allclose((base.log_prob(values) + 0.01).exp().sum(0),
                              torch.ones(OUTPUTS.numel(), dtype=torch.float64), atol=1e-4)
    torch.manual_seed(0)
    x = base.sample((20000,))
    se = x.std(0) / math.sqrt(x.shape[0])
    assert not ((x.mean(0) - (base.mean + 0.05)).abs() <= 4.5 * se).all()
