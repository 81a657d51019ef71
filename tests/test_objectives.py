import math

import pyro
import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from pyrovae import VAE
from pyrovae.check import move_prior
from pyrovae.errors import PyrovaeError
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.objectives import (
    analytic_loss,
    build,
    closed_form_kl,
    kl_diag_normals,
    kl_mvn,
    kl_standard_normal,
    pyro_elbo,
    trace_elbo_log_probs,
)
from pyrovae.priors import PRIORS, Prior
from tests.conftest import binary_batch


def _spd(k, gen):
    a = torch.randn(k, k, generator=gen, dtype=torch.float64)
    return a @ a.T + 0.5 * torch.eye(k, dtype=torch.float64)


def test_kl_standard_normal_equals_torch_and_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    log_var = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    q = Independent(Normal(loc, (0.5 * log_var).exp()), 1)
    p = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    ours = kl_standard_normal(loc, log_var)
    assert torch.allclose(ours, kl_divergence(q, p), rtol=1e-12)
    z = q.sample((200000,))
    mc = q.log_prob(z) - p.log_prob(z)
    se = mc.std(0) / math.sqrt(mc.shape[0])
    assert ((mc.mean(0) - ours).abs() < 4 * se).all()


def test_kl_diag_normals_equals_torch():
    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(6, 3, generator=gen, dtype=torch.float64) for _ in range(4)]
    q = Independent(Normal(args[0], (0.5 * args[1]).exp()), 1)
    p = Independent(Normal(args[2], (0.5 * args[3]).exp()), 1)
    assert torch.allclose(kl_diag_normals(*args), kl_divergence(q, p), rtol=1e-12)


def test_kl_mvn_full_covariance_equals_torch_and_monte_carlo():
    gen = torch.Generator().manual_seed(2)
    k = 4
    mq, mp = torch.randn(k, generator=gen, dtype=torch.float64), torch.randn(
        k, generator=gen, dtype=torch.float64)
    sq, sp = _spd(k, gen), _spd(k, gen)
    q, p = MultivariateNormal(mq, sq), MultivariateNormal(mp, sp)
    ours = kl_mvn(mq, sq, mp, sp)
    assert torch.allclose(ours, kl_divergence(q, p), rtol=1e-10)
    z = q.sample((400000,))
    mc = q.log_prob(z) - p.log_prob(z)
    assert abs(mc.mean() - ours) < 4 * mc.std() / math.sqrt(mc.numel())
    # special cases: diagonal and standard normal
    dq, dp = torch.rand(k, dtype=torch.float64) + 0.1, torch.rand(k, dtype=torch.float64) + 0.1
    assert torch.allclose(kl_mvn(mq, torch.diag(dq), mp, torch.diag(dp)),
                          kl_diag_normals(mq, dq.log(), mp, dp.log()))
    eye = torch.eye(k, dtype=torch.float64)
    assert torch.allclose(kl_mvn(mq, torch.diag(dq), torch.zeros(k, dtype=torch.float64), eye),
                          kl_standard_normal(mq, dq.log()))
    assert kl_mvn(mq, sq, mq, sq).abs() < 1e-12


@pytest.mark.parametrize("prior", [name for name, cls in PRIORS.items() if cls.closed_form_kl])
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_analytic_loss_equals_trace_meanfield_with_same_noise(prior, likelihood):
    """Every prior with a closed-form KL (moved off its initial values, where the terms of its
    parameters vanish), every likelihood: the analytic loss is Pyro's TraceMeanField_ELBO."""
    vae = VAE(x_shape=(1, 6, 6), z_dim=3, prior=prior, likelihood=likelihood, hidden=[16]).double()
    move_prior(vae, seed=0, spread=1.0)
    x = binary_batch(5, (1, 6, 6)).double()
    pyro.set_rng_seed(3)
    ours = build("analytic", vae).loss(x, 50)
    pyro.set_rng_seed(3)
    meanfield = build("meanfield", vae).loss(x, 50)
    pyro.set_rng_seed(3)
    pyros = pyro_elbo("meanfield").differentiable_loss(vae.model, vae.guide, x, 50)
    assert abs(ours.item() - pyros.item()) <= 1e-5 * abs(pyros.item())
    assert abs(meanfield.item() - pyros.item()) <= 1e-10 * abs(pyros.item())


class ShiftedNormalPrior(Prior):
    """A prior declaring a closed-form KL and written nowhere in kl.py: N(0.3, 2^2 I)."""

    closed_form_kl = True

    def forward(self):
        return pyro.distributions.Normal(torch.full((self.z_dim,), 0.3), 2.0).to_event(1)


class MixtureClaimingAClosedForm(PRIORS["mog"]):
    """Test double: a mixture prior that declares a closed-form KL torch does not have."""

    closed_form_kl = True


def test_a_prior_declaring_a_closed_form_kl_gets_torchs():
    """closed_form_kl falls back to the rule torch.distributions registers (here Normal to
    Normal: the diagonal-normal formula), and a prior that declares one torch lacks gets a
    one-line error."""
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.2
    vae = VAE(x_shape=(4,), z_dim=3, hidden=[8], prior=ShiftedNormalPrior)
    expected = kl_diag_normals(loc, 2 * scale.log(), torch.full((3,), 0.3),
                               torch.full((3,), 2 * math.log(2.0)))
    torch.testing.assert_close(closed_form_kl(vae, loc, scale), expected)
    mixture = VAE(x_shape=(4,), z_dim=3, hidden=[8], prior=MixtureClaimingAClosedForm)
    with pytest.raises(PyrovaeError, match="registers no KL from a diagonal Normal") as err:
        closed_form_kl(mixture, loc, scale)
    assert "\n" not in str(err.value)


def test_analytic_loss_scales_by_num_data_and_beta():
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    x = torch.rand(5, 4)
    pyro.set_rng_seed(0)
    a = analytic_loss(vae, x)
    pyro.set_rng_seed(0)
    b = analytic_loss(vae, x, num_data=50)
    assert torch.allclose(b, 10 * a)


def test_analytic_loss_needs_a_closed_form_kl():
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian", prior="mog")
    with pytest.raises(PyrovaeError, match="closed-form KL"):
        build("analytic", vae)
    with pytest.raises(PyrovaeError, match="unknown loss"):
        build("no_such_objective", vae)


@pytest.mark.parametrize("scaled", [True, False])
def test_trace_elbo_log_probs_chunks_keep_particle_and_example_axes(scaled):
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    x = torch.rand(3, 4)
    chunks = list(trace_elbo_log_probs(vae, x, 5, chunk=2, scaled=scaled))  # 2 + 2 + 1
    assert [m["x"].shape for m, _ in chunks] == [(2, 3), (2, 3), (1, 3)]
    model, guide = chunks[-1]
    assert set(model) == {"z", "x"} and set(guide) == {"z"}
    z = vae.guide(x)
    assert model["z"].shape == guide["z"].shape == (1, 3) and z.shape == (3, 2)
    pyro.set_rng_seed(0)
    (m1, g1), = trace_elbo_log_probs(vae, x, 1, scaled=True)
    pyro.set_rng_seed(0)
    (m2, g2), = trace_elbo_log_probs(vae, x, 1, scaled=False)
    assert torch.equal(m1["z"], m2["z"]) and torch.equal(m1["x"], m2["x"])  # the model has no scale
