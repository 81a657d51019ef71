import math

import pytest
import torch

from pyrovae import VAE
from pyrovae.errors import PyrovaeError
from pyrovae.nets import NETS
from pyrovae.priors import PRIORS, VampPrior
from tests.conftest import prior_options


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_shapes_and_normalisation(name):
    vae = VAE(x_shape=(1, 6, 6), z_dim=3, prior=name, hidden=[16],
              **prior_options(name, components=4))
    p = vae.prior()
    assert p.batch_shape == () and p.event_shape == (3,)
    z = p.sample((20000,))
    assert z.shape == (20000, 3)
    # importance check that p is a normalised density: E_{N(0, 4I)}[p(z) / g(z)] = 1
    g = torch.distributions.Normal(0.0, 2.0)
    zg = g.sample((200000, 3))
    w = (p.log_prob(zg) - g.log_prob(zg).sum(-1)).exp().double()
    assert abs(w.mean().item() - 1) < 4 * w.std().item() / math.sqrt(w.numel())


@pytest.mark.parametrize("name", ["diag_normal", "mog", "vamp"])
def test_learned_priors_have_parameters_that_train(name):
    vae = VAE(x_shape=(4,), z_dim=2, prior=name, hidden=[8], likelihood="gaussian",
              **prior_options(name, components=3))
    own = dict(vae.prior_net.named_parameters())
    assert own, "a learned prior must have parameters"
    loss = -vae.prior().log_prob(torch.randn(10, 2)).sum()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in own.values())


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
