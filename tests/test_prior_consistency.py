"""Every registered prior x every registered net (issue 11): a prior that runs inputs through a
network leaves the batch-norm statistics to the data, and is one distribution in train and eval
mode. A test double with the old VampPrior (pseudo-inputs through the encoder in training mode,
as a batch of their own) shows that each check fails on it."""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae import VAE
from pyrovae.nets import NETS
from pyrovae.priors import PRIORS, VampPrior
from tests.conftest import prior_options

X_SHAPE, Z_DIM, K, BATCH, STEPS = (1, 6, 6), 3, 4, 16, 4
PAIRS = [(prior, net) for prior in PRIORS for net in NETS]


class TrainModeVampPrior(VampPrior):
    """Test double: the old VampPrior, which ran the K pseudo-inputs through the encoder in the
    VAE's mode, in training mode as a batch of their own (batch statistics, running statistics
    updated)."""

    def forward(self) -> dist.Distribution:
        loc, scale = self._encoder(self.pseudo_inputs)
        uniform = dist.Categorical(logits=torch.zeros_like(loc[:, 0]))
        return dist.MixtureSameFamily(uniform, dist.Normal(loc, scale).to_event(1))


def make_vae(prior: str, net: str, double: bool = False) -> VAE:
    vae = VAE(x_shape=X_SHAPE, z_dim=Z_DIM, prior=prior, net=net, hidden=[8],
              **prior_options(prior, components=K))
    if double:
        vae.prior_net = TrainModeVampPrior(Z_DIM, X_SHAPE, vae.encoder, components=K)
    return vae.train()


def data(step: int) -> torch.Tensor:
    """Binary batches with mean 0.2, unlike the pseudo-inputs (which start near 0.5)."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.bernoulli(torch.full((BATCH, *X_SHAPE), 0.2), generator=g)


def buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in module.named_buffers()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    changed = [name for name in a if not torch.equal(a[name], b[name])]
    assert not changed, f"{what}: {changed}"


def has_batch_norm(vae: VAE) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in vae.modules())


def train_checking_statistics(vae: VAE, steps: int = STEPS, check_call: bool = True) -> None:
    """``steps`` Adam steps of ``Trace_ELBO`` in training mode. At every step: (a) (with
    ``check_call``) calling ``prior()`` in training mode changes no buffer and leaves every
    module in training mode; (b) the encoder's running statistics after the step are those of
    the data pass alone (a copy of the encoder run on the batch in training mode), not of a mix
    of data and prior inputs."""
    optim = torch.optim.Adam(vae.parameters(), lr=1e-2)
    loss_fn = Trace_ELBO()
    for step in range(steps):
        x = data(step)
        if check_call:
            before = buffers(vae)
            vae.prior()
            assert_same(buffers(vae), before, "prior() in training mode changed buffers")
            assert all(m.training for m in vae.modules()), "prior() left a module in eval mode"

        data_only = copy.deepcopy(vae.encoder)
        with torch.no_grad():
            data_only(x)  # the guide's pass over the batch, and nothing else
        optim.zero_grad()
        loss_fn.differentiable_loss(vae.model, vae.guide, x).backward()
        optim.step()
        assert_same(buffers(vae.encoder), buffers(data_only),
                    "running statistics differ from those of the data alone")


def assert_same_in_train_and_eval(vae: VAE) -> None:
    """log p(z) on fixed z is the same with the VAE in train mode and in eval mode."""
    z = 2 * torch.randn(64, Z_DIM, generator=torch.Generator().manual_seed(7))
    vae.train()
    in_train = vae.prior().log_prob(z)
    vae.eval()
    in_eval = vae.prior().log_prob(z)
    vae.train()
    torch.testing.assert_close(in_train, in_eval, msg="the prior differs in train and eval mode")


def assert_traced_prior_follows_eager(vae: VAE) -> None:
    """The prior recorded by ``make_fx`` in training mode (as the traced and compiled engines
    record a step): its replay changes no buffer, equals the eager prior in eval mode, and
    still does after a data pass moved the running statistics (it reads them in place)."""
    z = torch.randn(32, Z_DIM, generator=torch.Generator().manual_seed(3))
    vae.train()
    with pyro.validation_enabled(False):
        graph = make_fx(lambda z: vae.prior().log_prob(z))(z)
    for step in range(2):
        before = buffers(vae)
        replayed = graph(z)
        assert_same(buffers(vae), before, "the recorded prior changed buffers")
        vae.eval()
        torch.testing.assert_close(replayed, vae.prior().log_prob(z))
        vae.train()
        with torch.no_grad():
            vae.encoder(data(step))  # a data pass in training mode: new running statistics


@pytest.mark.parametrize("prior,net", PAIRS)
def test_prior_leaves_statistics_to_the_data(prior, net):
    train_checking_statistics(make_vae(prior, net))


@pytest.mark.parametrize("prior,net", PAIRS)
def test_prior_is_the_same_in_train_and_eval_mode(prior, net):
    vae = make_vae(prior, net)
    train_checking_statistics(vae)  # running statistics away from their initial 0 and 1
    assert_same_in_train_and_eval(vae)


@pytest.mark.parametrize("prior,net", PAIRS)
def test_traced_prior_matches_eager_and_leaves_statistics(prior, net):
    vae = make_vae(prior, net)
    train_checking_statistics(vae, steps=2)
    assert_traced_prior_follows_eager(vae)


def test_prior_gradient_uses_the_statistics_it_read():
    """A data pass in training mode between ``prior()`` and ``backward`` (a guide run after the
    model) updates the statistics in place; the prior's gradient is still that of the
    statistics it was computed with (eval-mode batch norm would otherwise read the new ones)."""
    nets = [net for net in NETS if has_batch_norm(make_vae("vamp", net))]
    assert nets, "no registered net has batch norm"
    for net in nets:
        vae = make_vae("vamp", net)
        z = torch.randn(8, Z_DIM, generator=torch.Generator().manual_seed(5))
        u = vae.prior_net.pseudo_inputs
        expected = torch.autograd.grad(vae.prior().log_prob(z).sum(), u)[0]
        log_p = vae.prior().log_prob(z).sum()
        with torch.no_grad():
            vae.encoder(5 * data(0) + 1)  # moves the running statistics far
        torch.testing.assert_close(torch.autograd.grad(log_p, u)[0], expected)


def test_the_checks_fail_on_the_train_mode_vamp_prior():
    """The test double (the old behaviour) fails every check above on each net with batch norm;
    on a net without batch norm, train and eval mode are one function and it passes."""
    nets = [net for net in NETS if has_batch_norm(make_vae("vamp", net))]
    assert nets, "no registered net has batch norm"
    for net in NETS:
        if net not in nets:
            vae = make_vae("vamp", net, double=True)
            train_checking_statistics(vae)
            assert_same_in_train_and_eval(vae)
            continue
        with pytest.raises(AssertionError, match="prior\\(\\) in training mode changed buffers"):
            train_checking_statistics(make_vae("vamp", net, double=True))
        with pytest.raises(AssertionError, match="running statistics differ"):
            train_checking_statistics(make_vae("vamp", net, double=True), check_call=False)
        vae = make_vae("vamp", net, double=True)
        with torch.no_grad():
            vae.encoder(data(0))  # running statistics away from their initial 0 and 1
        with pytest.raises(AssertionError, match="differs in train and eval mode"):
            assert_same_in_train_and_eval(vae)
        with pytest.raises(AssertionError, match="the recorded prior changed buffers"):
            assert_traced_prior_follows_eager(make_vae("vamp", net, double=True))
