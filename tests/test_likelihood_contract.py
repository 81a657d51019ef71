"""The contract every registered likelihood keeps, tested over the registry (a new likelihood is
picked up with no edit here): its per-value density normalizes, its ``.mean`` is the mean of its
own samples, and its ``check`` accepts its own samples and refuses values outside its support.
Test data come from the likelihoods themselves, never from a rule on their names."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import constraints

from pyrovae.likelihoods import LIKELIHOODS, build_likelihood

OUTPUTS = torch.tensor([-6.0, -1.5, 0.0, 0.7, 4.0])  # decoder outputs (logits or locations)


def _base(name: str):
    return build_likelihood(name, (OUTPUTS.numel(),)).base(OUTPUTS.double())


def _total(base, n: int = 200001) -> torch.Tensor:
    """The density's integral (its sum over a discrete support) for each output. On [0, 1] by
    the trapezoid rule in the logit t of x = sigmoid(t), t in [-30, 30], where a density that is
    unbounded at 0 or 1 but integrable (a Beta with a concentration below 1) is finite; on the
    real line over a wide window around the mean."""
    support = base.support
    if support.is_discrete:
        return base.log_prob(base.enumerate_support(expand=True)).exp().sum(0)
    if support is constraints.unit_interval or support == constraints.interval(0.0, 1.0):
        t = torch.linspace(-30, 30, n, dtype=torch.float64)[:, None].expand(n, OUTPUTS.numel())
        x = torch.sigmoid(t)
        return torch.trapezoid((base.log_prob(x) + torch.nn.functional.logsigmoid(t)
                                + torch.nn.functional.logsigmoid(-t)).exp(), t, dim=0)
    x = base.mean + torch.linspace(-40, 40, n, dtype=torch.float64)[:, None] * base.stddev
    return torch.trapezoid(base.log_prob(x).exp(), x, dim=0)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_density_normalizes(name):
    total = _total(_base(name))
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
    assert not _accepted_outside_support(lik)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_output_for_mean_gives_that_mean(name):
    """``model.output_bias=data_mean``: the output a likelihood gives for a mean has that mean
    (a likelihood without the inverse raises NotImplementedError, and the option is refused)."""
    lik = build_likelihood(name, (5,))
    mean = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    try:
        out = lik.output_for_mean(mean)
    except NotImplementedError:
        return
    torch.testing.assert_close(lik.base(out).mean, mean)


#: Values that some supports exclude: a likelihood's check must refuse those outside its own.
PROBES = (-0.5, 0.5, 1.5, 2.0)


def _accepted_outside_support(lik) -> list[float]:
    """The PROBES outside the likelihood's support that its ``check`` lets through."""
    from pyrovae.errors import PyrovaeError

    support = lik.base(OUTPUTS.double()).support
    accepted = []
    for v in PROBES:
        if not bool(support.check(torch.tensor(v, dtype=torch.float64))):
            try:
                lik.check(torch.full((3, OUTPUTS.numel()), v))
                accepted.append(v)
            except PyrovaeError:
                pass
    return accepted


class CheckNothing(LIKELIHOODS["bernoulli"]):
    """Test double: a Bernoulli likelihood whose check accepts anything."""

    def check(self, x: torch.Tensor) -> None:
        pass


def test_the_contract_can_fail():
    """Test doubles: a density off by a constant does not normalize; a wrong mean is caught; a
    check that accepts anything lets grey levels through."""
    assert _accepted_outside_support(CheckNothing((OUTPUTS.numel(),))) == list(PROBES)
    assert _accepted_outside_support(LIKELIHOODS["bernoulli"]((OUTPUTS.numel(),))) == []
    base = _base("bernoulli")
    values = base.enumerate_support(expand=True)
    assert not torch.allclose((base.log_prob(values) + 0.01).exp().sum(0),
                              torch.ones(OUTPUTS.numel(), dtype=torch.float64), atol=1e-4)
    torch.manual_seed(0)
    x = base.sample((20000,))
    se = x.std(0) / math.sqrt(x.shape[0])
    assert not ((x.mean(0) - (base.mean + 0.05)).abs() <= 4.5 * se).all()
