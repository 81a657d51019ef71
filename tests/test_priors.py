import math

import pytest
import torch

from pyrovae import VAE
from pyrovae.check import move_prior
from pyrovae.errors import PyrovaeError
from pyrovae.nets import NETS
from pyrovae.priors import PRIORS, VampPrior
from tests.conftest import prior_options


def _prior(name: str) -> torch.distributions.Distribution:
    """A fresh prior of 3 dimensions, its parameters moved off their initial values."""
    torch.manual_seed(0)
    vae = VAE(x_shape=(1, 6, 6), z_dim=3, prior=name, hidden=[16],
              **prior_options(name, components=4))
    return move_prior(vae, seed=0).prior()


#: The importance proposal: a product of Cauchy densities (scale 2), whose tails are heavier than
#: any prior's that has a mean, so that the weights p(z) / g(z) have a finite variance.
PROPOSAL = torch.distributions.Cauchy(0.0, 2.0)


def _weights(p, n: int = 200000) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws from the proposal and their weights p(z) / g(z) (float64)."""
    torch.manual_seed(1)
    zg = PROPOSAL.sample((n, 3))
    return zg, (p.log_prob(zg) - PROPOSAL.log_prob(zg).sum(-1)).exp().double()


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_shapes_and_normalisation(name):
    p = _prior(name)
    assert p.batch_shape == () and p.event_shape == (3,)
    assert p.sample((20000,)).shape == (20000, 3)
    _, w = _weights(p)  # E_g[p(z) / g(z)] = 1 for a normalised density p
    assert abs(w.mean().item() - 1) < 4 * w.std().item() / math.sqrt(w.numel())


def _sampler_z(p, sample) -> float:
    """The largest |z| between the mean of tanh(z_j) and tanh(z_j)^2 (bounded, so finite for
    any prior) under draws of ``sample`` and under the density (importance sampling)."""
    torch.manual_seed(2)
    zs = sample((100000,)).double()
    zg, w = _weights(p)
    worst = 0.0
    for h in (torch.tanh, lambda z: torch.tanh(z) ** 2):
        a, b = h(zs), w[:, None] * h(zg.double())
        se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
        worst = max(worst, ((a.mean(0) - b.mean(0)).abs() / se).max().item())
    return worst


@pytest.mark.parametrize("name", list(PRIORS))
def test_samples_follow_the_density(name):
    """A prior's sampler and its log_prob describe one distribution: the moments of bounded
    functions agree within 4.5 standard errors; a sampler 3 times too wide (the test double)
    does not."""
    p = _prior(name)
    assert _sampler_z(p, p.sample) < 4.5
    assert _sampler_z(p, lambda shape: 3 * p.sample(shape)) > 4.5


@pytest.mark.parametrize("name", list(PRIORS))
def test_every_parameter_of_a_prior_trains(name):
    vae = VAE(x_shape=(4,), z_dim=2, prior=name, hidden=[8], likelihood="gaussian",
              **prior_options(name, components=3))
    move_prior(vae, seed=0)  # off the initial values, where some gradients vanish
    own = dict(vae.prior_net.named_parameters())
    if not own:  # a fixed prior (normal): nothing to train
        return
    (-vae.prior().log_prob(torch.randn(10, 2)).sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.values()), own


@pytest.mark.parametrize("net", list(NETS))
def test_vamp_prior_is_the_mean_of_q_at_the_pseudo_inputs(net):
    vae = VAE(x_shape=(1, 5, 5), z_dim=2, prior="vamp", components=3, hidden=[8], net=net)
    assert isinstance(vae.prior_net, VampPrior)
    with torch.no_grad():  # batch-norm running statistics away from their initial 0 and 1
        vae.encoder(torch.bernoulli(torch.full((16, 1, 5, 5), 0.2)))
    z = torch.randn(7, 2)
    vae.eval()  # q(z|u_k) is the encoder as evaluated at test time
    q = vae.encode(vae.prior_net.pseudo_inputs)  # batch (3,)
    expected = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - math.log(3)
    for training in (True, False):  # in both modes of the VAE
        vae.train(training)
        assert torch.allclose(vae.prior().log_prob(z), expected, atol=1e-5)
    # the encoder's weights are not registered twice
    names = [n for n, _ in vae.named_parameters()]
    assert len(names) == len(set(id(p) for p in vae.parameters()))


def test_unknown_prior_and_bad_components():
    with pytest.raises(PyrovaeError, match="unknown prior 'no_such_prior'"):
        VAE(prior="no_such_prior")
    with pytest.raises(PyrovaeError, match="components"):
        VAE(prior="mog", components=0)
