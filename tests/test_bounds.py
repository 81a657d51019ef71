"""The training objectives: each over the registry (scaling, SVI form, beta, the bound it names
and its expected value), Pyro's own ELBOs
with the same noise, the IWAE bound against an independent log-mean-exp, the bound rising with
K, and the doubly reparameterized gradient: the same decoder gradient, the same mean encoder
gradient with a lower variance, also under a KL weight (biased estimators, the test doubles, fail
the same test)."""

from __future__ import annotations

import functools
import math

import pyro
import pytest
import torch

from pyrovae import VAE
from pyrovae.objectives import (
    IWAE,
    OBJECTIVES,
    IWAEDReG,
    TraceELBO,
    build,
    mean_stderr,
    pyro_elbo,
)
from pyrovae.objectives.base import Objective
from pyrovae.priors import PRIORS

_G = torch.Generator().manual_seed(0)  # the data are the same whatever ran before (xdist)
X = torch.bernoulli(torch.rand(6, 1, 6, 6, generator=_G), generator=_G)


def _vae(prior: str = "normal", seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(x_shape=(1, 6, 6), z_dim=3, hidden=[16], prior=prior,
               components=3 if prior in ("mog", "vamp") else None).double()


def _loss(vae, name, k=1, seed=1, num_data=None, beta=1.0, x=X):
    torch.manual_seed(seed)
    return build(name, vae, k).loss(x.double(), num_data, beta)


def _applies(name: str, prior: str) -> bool:
    return name != "analytic" or PRIORS[prior].closed_form_kl


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_scales_by_num_data_once_and_is_svis_loss(name):
    """loss(N) = (N / B) loss(B) exactly (the scale is outside every non-linearity), and the
    form pyro.infer.SVI calls equals the direct loss."""
    vae = _vae()
    k = 3
    small, large = _loss(vae, name, k), _loss(vae, name, k, num_data=60)
    assert torch.allclose(large, 10 * small, rtol=1e-12)
    torch.manual_seed(1)
    via_svi = build(name, vae, k)(vae.model, vae.guide, X.double(), num_data=60)
    assert torch.equal(via_svi, large)
    assert math.isfinite(large.item())


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_has_a_kl_weight(name):
    """beta weights the KL part only: at beta -> 0 the ELBOs are the reconstruction term."""
    vae = _vae()
    full, half = _loss(vae, name, beta=1.0), _loss(vae, name, beta=0.5)
    assert not torch.equal(full, half)


@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("k", [1, 4])
def test_trace_is_pyros_trace_elbo_with_the_same_noise(prior, k):
    vae = _vae(prior)
    ours = _loss(vae, "trace", k, num_data=60)
    torch.manual_seed(1)
    pyros = pyro_elbo("trace", k).differentiable_loss(vae.model, vae.guide, X.double(), 60)
    assert torch.allclose(ours, pyros, rtol=1e-12)


@pytest.mark.parametrize("prior", list(PRIORS))
def test_iwae_is_the_log_mean_exp_of_the_models_own_densities(prior):
    """L_K by hand from q.rsample((K,)) (the noise the guide draws under the particle plate),
    the decoder's, the prior's and the encoder's own log-densities."""
    vae, k = _vae(prior), 7
    x = X.double()
    torch.manual_seed(1)
    q = vae.encode(x)
    z = q.rsample((k,))
    log_w = vae.decode(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)
    by_hand = torch.logsumexp(log_w, 0) - math.log(k)
    torch.manual_seed(1)
    ours = build("iwae", vae, k).bound(x)
    assert torch.allclose(ours, by_hand, rtol=1e-12)
    torch.manual_seed(1)
    assert torch.allclose(build("iwae_dreg", vae, k).bound(x), by_hand, rtol=1e-12)


@pytest.mark.parametrize("prior", list(PRIORS))
def test_iwae_with_one_particle_is_the_elbo_value_and_gradient(prior):
    vae = _vae(prior)
    params = list(vae.parameters())
    a, b = _loss(vae, "iwae", 1, num_data=60), _loss(vae, "trace", 1, num_data=60)
    assert torch.equal(a, b)
    for ga, gb in zip(torch.autograd.grad(a, params), torch.autograd.grad(b, params)):
        assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-12)


def _data() -> torch.Tensor:
    """64 binary 6 x 6 images: 4 random prototypes with 10% of their pixels flipped, so that
    the latent code carries information (which prototype) and the posterior is not the prior."""
    g = torch.Generator().manual_seed(3)
    prototypes = torch.bernoulli(torch.full((4, 1, 6, 6), 0.5), generator=g)
    flips = torch.bernoulli(torch.full((64, 1, 6, 6), 0.1), generator=g)
    return (prototypes.repeat(16, 1, 1, 1) - flips).abs().double()


@functools.cache
def _trained(seed: int = 0, steps: int = 200) -> VAE:
    """A small VAE trained briefly on :func:`_data`; trained once and shared by the tests, which
    only read it."""
    vae = _vae(seed=seed)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    data = _data()
    objective = build("trace", vae)
    torch.manual_seed(seed)
    with pyro.validation_enabled(False):
        for _ in range(steps):
            opt.zero_grad()
            objective.loss(data).backward()
            opt.step()
    return vae


def test_bound_rises_with_k_on_a_trained_model():
    """E[L_1] < E[L_5] < E[L_50] (Burda et al. 2015, Theorem 1): the mean bound over 64 images,
    with 30 replicates each; every difference more than 4 standard errors."""
    vae, data = _trained(), _data()
    torch.manual_seed(0)
    means = {}
    with torch.no_grad():
        for k in (1, 5, 50):
            reps = torch.stack([build("iwae", vae, k).bound(data).mean()
                                for _ in range(30)])
            means[k] = (reps.mean().item(), reps.std().item() / math.sqrt(30))
    for lo, hi in ((1, 5), (5, 50)):
        diff = means[hi][0] - means[lo][0]
        assert diff > 4 * math.hypot(means[hi][1], means[lo][1]), means


def _grads(vae, objective: Objective, reps: int, seed: int, x: torch.Tensor,
           beta: float = 1.0) -> tuple:
    """``reps`` gradients of the loss, split into (encoder, decoder) flat vectors."""
    enc = [p for n, p in vae.named_parameters() if n.startswith("encoder")]
    dec = [p for n, p in vae.named_parameters() if n.startswith("decoder")]
    torch.manual_seed(seed)
    out_e, out_d = [], []
    for _ in range(reps):
        g = torch.autograd.grad(objective.loss(x, beta=beta), enc + dec)
        out_e.append(torch.cat([t.reshape(-1) for t in g[: len(enc)]]))
        out_d.append(torch.cat([t.reshape(-1) for t in g[len(enc):]]))
    return torch.stack(out_e), torch.stack(out_d)


class ELBONamedIWAE(TraceELBO):
    """Test double: the ELBO, declaring itself the IWAE bound."""

    bound_name = "IWAE"


def _mean_bound(objective_cls, vae, x, k: int, reps: int, seed: int) -> tuple[float, float]:
    """The mean over ``reps`` draws of the bound averaged over ``x``, and its standard error."""
    torch.manual_seed(seed)
    return mean_stderr(torch.stack([objective_cls(vae, k).bound(x).detach().mean()
                                    for _ in range(reps)]))


_NAMES = list(OBJECTIVES)
_SAME_BOUND = [(OBJECTIVES[a], OBJECTIVES[b], True) for i, a in enumerate(_NAMES)
               for b in _NAMES[i + 1:] if OBJECTIVES[a].bound_name == OBJECTIVES[b].bound_name]


class ShiftedELBO(TraceELBO):
    """Test double: the ELBO half a nat too high."""

    def bound(self, x, beta=1.0):
        return super().bound(x, beta) + 0.5


@pytest.mark.parametrize("a, same", [(OBJECTIVES[name], True) for name in _NAMES
                                     if OBJECTIVES[name] is not TraceELBO]
                         + [(ShiftedELBO, False)])
def test_every_objective_with_one_particle_has_the_elbos_expected_value(a, same):
    """Every bound pyrovae trains is the ELBO at K = 1 (the IWAE bound, its DReG estimator, the
    closed-form-KL and mean-field ELBOs; a Renyi bound too): a new objective's value is checked
    whatever bound it declares. Mean values over 30 draws (64 images each) within 4 standard
    errors of trace's; the ELBO half a nat too high (the test double) is not."""
    vae, x = _trained(), _data()
    (ma, sa), (mb, sb) = _mean_bound(a, vae, x, 1, 30, 1), _mean_bound(TraceELBO, vae, x, 1, 30, 2)
    z = abs(ma - mb) / math.hypot(sa, sb)
    assert (z < 4) if same else (z > 4), (ma, mb, z)


@pytest.mark.parametrize("name", _NAMES)
def test_every_objective_names_its_bound(name):
    """Published results are matched by the bound an objective trains (pyrovae.literature)."""
    assert OBJECTIVES[name].bound_name


@pytest.mark.parametrize("a, b, same", _SAME_BOUND + [(IWAE, ELBONamedIWAE, False)])
def test_objectives_of_one_bound_have_the_same_expected_value(a, b, same):
    """Objectives that declare the same bound differ only in their estimators: with K = 5 on a
    trained model, their mean values over 30 independent draws (64 images each) agree within 4
    standard errors. The ELBO declaring itself the IWAE bound (the test double) is more than 4
    SE below it."""
    vae, x = _trained(), _data()
    (ma, sa), (mb, sb) = _mean_bound(a, vae, x, 5, 30, 1), _mean_bound(b, vae, x, 5, 30, 2)
    z = abs(ma - mb) / math.hypot(sa, sb)
    assert (z < 4) if same else (z > 4), (ma, mb, z)


def test_dreg_decoder_gradient_is_the_iwae_decoder_gradient():
    vae, x = _trained(), _data()[:6]
    _, dec_iwae = _grads(vae, build("iwae", vae, 10), 3, 5, x)
    _, dec_dreg = _grads(vae, build("iwae_dreg", vae, 10), 3, 5, x)
    assert torch.allclose(dec_dreg, dec_iwae, rtol=1e-9, atol=1e-11)


class PathOnlyIWAE(IWAEDReG):
    """Test double: the encoder gradient without the score term and without the squared
    weights (sum_k w~_k d log w_k / d z_k dz_k/dphi): biased for K > 1."""

    def correction(self, w, beta):
        return torch.zeros_like(w)


class SquaredWeightsAtAnyBeta(IWAEDReG):
    """Test double: the encoder weights w~_k^2 whatever beta, right only at beta = 1 (with a KL
    weight beta < 1 only beta of the score term is there to reparameterize)."""

    def correction(self, w, beta):
        return w * w - w


def _encoder_moments(objective_cls, vae, k, reps=400, seed=11, beta=1.0):
    x = _data()[:2]
    enc, _ = _grads(vae, objective_cls(vae, k), reps, seed, x, beta)
    return enc.mean(0), enc.std(0) / math.sqrt(reps), enc.var(0)


@pytest.mark.parametrize("estimator, beta, unbiased", [
    (IWAEDReG, 1.0, True), (PathOnlyIWAE, 1.0, False),
    (IWAEDReG, 0.2, True), (SquaredWeightsAtAnyBeta, 0.2, False),
])
def test_dreg_encoder_gradient_has_the_iwae_mean_and_a_lower_variance(estimator, beta,
                                                                      unbiased):
    """Every encoder gradient coordinate: |mean_DReG - mean_IWAE| within 4.5 standard errors
    (Bonferroni over the coordinates at 5%: z = 4.5 covers up to ~7,000 coordinates), with
    independent noise, at beta = 1 and with a KL weight beta = 0.2 (warm-up); the summed
    variance is lower for DReG at K = 20. The biased test doubles fail the same test: the path
    term alone at beta = 1, and the squared weights of beta = 1 used at beta = 0.2."""
    vae, k = _trained(), 20
    m_ref, se_ref, var_ref = _encoder_moments(IWAE, vae, k, seed=1, beta=beta)
    m, se, var = _encoder_moments(estimator, vae, k, seed=2, beta=beta)
    z = (m - m_ref).abs() / torch.sqrt(se**2 + se_ref**2).clamp_min(1e-30)
    if unbiased:
        assert z.max() < 4.5, z.max()
        assert var.sum() < var_ref.sum()
    else:
        assert z.max() > 4.5
