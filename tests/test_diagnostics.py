"""Tests of pyrovae.diagnostics: the IWAE bound, PSIS, the NUTS reference posterior, the
amortization gap and active units, against exact answers where there are some.

Exact answers come from a linear-Gaussian VAE: p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I) with
orthogonal columns in W, so that p(x) = N(b, WW^T + s^2 I) and p(z|x) is a diagonal Gaussian
whose mean is linear in x; a linear encoder then holds q(z|x) = p(z|x) exactly, or a shifted and
rescaled version of it. The other tests use a VAE trained for an epoch on real MNIST (the tests
fail, not skip, when the data mirror is missing: see conftest.mirror).
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae import checkpoint, diagnostics, fit, objectives
from pyrovae.diagnostics import (
    active_units,
    importance_sampling,
    inference_gaps,
    iwae_bound,
    log_importance_weights,
    mean_stderr,
    nuts_posterior,
    optimize_gaussian,
    pareto_k_summary,
    posterior_comparison,
    psis,
    sampled_elbo,
)
from pyrovae.errors import PyrovaeError
from pyrovae.evaluate import gap_flags
from pyrovae.model import VAE

F64 = torch.float64


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(small_run):
    """The small trained VAE of ``small_run`` and the first 200 examples of its binarized test
    set."""
    vae = checkpoint.load(small_run)
    splits = fit.load_splits(vae.config, torch.device("cpu"))
    return vae, splits.test[:200]


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I), W = Q diag(norms) with orthonormal Q; the
    encoder holds q(z|x) = N(m(x) + shift * sd, (scale * sd)^2), (m(x), sd^2) the exact
    posterior. Everything in float64."""

    def __init__(
        self,
        d: int = 6,
        z_dim: int = 2,
        sigma: float = 0.5,
        shift: float = 0.0,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.vae = (
            VAE(x_shape=(d,), z_dim=z_dim, likelihood="gaussian", likelihood_scale=sigma, hidden=[])
            .double()
            .eval()
        )
        q, _ = torch.linalg.qr(torch.randn(d, z_dim, generator=g, dtype=F64))
        norms = torch.linspace(2.0, 1.0, z_dim, dtype=F64)
        self.w, self.b, self.sigma = q * norms, torch.randn(d, generator=g, dtype=F64), sigma
        self.post_var = 1.0 / (1.0 + norms**2 / sigma**2)
        gain = self.post_var[:, None] * self.w.T / sigma**2  # m(x) = gain (x - b)
        with torch.no_grad():
            self.vae.decoder.net[0].weight.copy_(self.w)
            self.vae.decoder.net[0].bias.copy_(self.b)
            enc = self.vae.encoder.net[0]
            enc.weight.zero_()
            enc.weight[:z_dim].copy_(gain)
            enc.bias[:z_dim].copy_(-gain @ self.b + shift * self.post_var.sqrt())
            # scale_fn exp: sigma = exp(raw / 2) + 1e-6
            enc.bias[z_dim:].copy_(2 * torch.log(scale * self.post_var.sqrt() - 1e-6))
        cov = self.w @ self.w.T + sigma**2 * torch.eye(d, dtype=F64)
        self.marginal = torch.distributions.MultivariateNormal(self.b, cov)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.marginal.sample((n,))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and sd of p(z|x), each (B, z_dim)."""
        mean = self.post_var * ((x - self.b) @ self.w) / self.sigma**2
        return mean, self.post_var.sqrt().expand_as(mean)

    def kl_q_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z|x)) per example, in closed form."""
        loc, scale = self.vae.encoder(x)
        mean, sd = self.posterior(x)
        return (torch.log(sd / scale) + (scale**2 + (loc - mean) ** 2) / (2 * sd**2) - 0.5).sum(-1)


def _z(values: torch.Tensor) -> float:
    """Mean in units of its standard error."""
    mean, se = mean_stderr(values)
    return mean / se


# ---- IWAE and the sampled ELBO -------------------------------------------------------------


def test_iwae_with_one_sample_is_exactly_the_one_sample_elbo(trained):
    vae, x = trained
    x = x[:64]
    pyro.set_rng_seed(3)
    lw = log_importance_weights(vae, x, 1)
    pyro.set_rng_seed(3)
    elbo = sampled_elbo(vae, x, 1)  # from the model's and guide's traces
    pyro.set_rng_seed(3)
    trace_elbo = -Trace_ELBO().loss(vae.model, vae.guide, x)
    assert lw.shape == (1, 64) and lw.dtype == F64
    torch.testing.assert_close(iwae_bound(lw), elbo, rtol=0, atol=1e-9)
    assert elbo.sum().item() == pytest.approx(trace_elbo, rel=1e-6)


def test_iwae_rises_with_k_and_stays_above_the_elbo(trained):
    vae, x = trained
    pyro.set_rng_seed(0)
    bound = {k: iwae_bound(log_importance_weights(vae, x, k)) for k in (1, 10, 100)}
    # Burda et al. Theorem 1, statistically: independent estimates, paired over examples
    assert _z(bound[10] - bound[1]) > 5
    assert _z(bound[100] - bound[10]) > 5
    elbo = objectives.dataset_elbo(vae, x, num_particles=10)["elbo"]
    assert mean_stderr(bound[100])[0] > elbo
    # with the same samples, log-mean-exp >= mean (Jensen), example by example
    lw = log_importance_weights(vae, x, 50)
    assert bool((iwae_bound(lw) >= lw.mean(0) - 1e-9).all())


def test_iwae_chunks_and_batches_keep_the_shapes_and_values(trained):
    vae, x = trained
    pyro.set_rng_seed(0)
    lw = log_importance_weights(vae, x[:7], 23, chunk_size=5)
    assert lw.shape == (23, 7) and torch.isfinite(lw).all()
    result = importance_sampling(vae, x[:30], 40, batch_size=8)
    assert result.log_likelihood.shape == (30,) and result.pareto_k.shape == (30,)
    assert result.psis_log_likelihood.shape == (30,)
    assert importance_sampling(vae, x[:5], 10).pareto_k is None  # K too small for a tail fit
    # without PSIS (the time-to-nats marks): the same IWAE numbers, no tail fits
    torch.manual_seed(3)
    with_fit = importance_sampling(vae, x[:9], 40, batch_size=4)
    torch.manual_seed(3)
    without = importance_sampling(vae, x[:9], 40, batch_size=4, psis_fit=False)
    assert torch.equal(with_fit.log_likelihood, without.log_likelihood)
    assert without.pareto_k is None and without.psis_log_likelihood is None


def test_iwae_converges_to_the_exact_log_likelihood():
    lg = LinearGaussian(shift=0.5, scale=1.3)  # q: off the posterior's mean, 30% too wide
    x = lg.sample(100)
    exact = lg.marginal.log_prob(x)
    pyro.set_rng_seed(0)
    gap = {k: iwae_bound(log_importance_weights(lg.vae, x, k)) - exact for k in (1, 2000)}
    mean, se = mean_stderr(gap[2000])
    assert abs(mean) < 4 * se + 1e-3 and se < 0.01  # unbiased to O(1/K), tight
    # K = 1: the ELBO = log p(x) - KL(q || p(z|x)), with the KL in closed form
    elbo_gap = sampled_elbo(lg.vae, x, 400) - exact + lg.kl_q_posterior(x)
    mean, se = mean_stderr(elbo_gap)
    assert abs(mean) < 4 * se
    assert mean_stderr(gap[1])[0] < -0.3  # the bound at K = 1 sits well below log p(x)


def test_iwae_with_the_exact_posterior_as_proposal_has_no_variance():
    lg = LinearGaussian()
    x = lg.sample(20)
    lw = log_importance_weights(lg.vae, x, 64)
    # w = p(x, z) / p(z|x) = p(x) for every z
    torch.testing.assert_close(lw, lg.marginal.log_prob(x).expand(64, -1), rtol=0, atol=1e-5)


# ---- PSIS ----------------------------------------------------------------------------------


def _gaussian_log_weights(proposal_sd: float, k: int = 2000, n: int = 20) -> torch.Tensor:
    """log N(z; 0, I_2) - log N(z; 0, sd^2 I_2) for z ~ N(0, sd^2 I_2): (k, n) log weights."""
    z = proposal_sd * torch.randn(k, n, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    target, proposal = (
        torch.distributions.Normal(0.0, 1.0),
        torch.distributions.Normal(0.0, proposal_sd),
    )
    return (target.log_prob(z) - proposal.log_prob(z)).sum(-1)


def test_pareto_k_is_small_for_a_wide_proposal_and_large_for_a_narrow_one():
    # a proposal wider than the target has bounded weights: k-hat < 0.5 (Yao et al. 2018);
    # one 0.3 times as wide has weight tails of shape k = 1 - 0.3^2 = 0.91
    good_k, good_ll = psis(_gaussian_log_weights(1.2))
    bad_k, _ = psis(_gaussian_log_weights(0.3))
    assert good_k.shape == (20,) and np.all(good_k < 0.5)
    assert np.all(np.abs(good_ll) < 0.05)  # both densities normalized: log E_q[w] = 0
    assert np.median(bad_k) > 0.7 and pareto_k_summary(bad_k)["pareto_k_frac_bad"] > 0.6
    summary = pareto_k_summary(good_k)
    assert summary["pareto_k_frac_bad"] == 0.0
    assert summary["pareto_k_quantiles"]["0.05"] <= summary["pareto_k_quantiles"]["0.95"]


@pytest.fixture(scope="module")
def exact_posterior_weights():
    """200 examples of the linear-Gaussian VAE whose encoder is the exact posterior: every
    weight is p(x), up to float64 rounding (spreads of ~1e-14 nats)."""
    lg = LinearGaussian()
    x = lg.sample(200)
    pyro.set_rng_seed(0)
    lw = log_importance_weights(lg.vae, x, 200)
    spread = (lw.max(0).values - lw.min(0).values).numpy()
    assert spread.max() < 1e-12 and (spread > 0).sum() > 100  # rounding noise, not zero
    return lw, lg.marginal.log_prob(x).numpy()


def test_pareto_k_summary_counts_unfitted_and_nan_tails_as_bad():
    """inf (no tail fitted) and NaN k-hats are not shown reliable: they count above the
    threshold, as in the gap flags; -inf (equal weights) counts below."""
    summary = pareto_k_summary(np.array([0.1, np.nan, 0.9, -np.inf, np.inf, 0.2]))
    assert summary["pareto_k_frac_bad"] == 3 / 6
    assert gap_flags(np.array([0.1, np.nan, 0.9, -np.inf, np.inf, 0.2]), 6)[
        "gap_pareto_k_frac_bad"] == summary["pareto_k_frac_bad"]


def test_pareto_k_is_minus_inf_when_q_is_the_exact_posterior(exact_posterior_weights):
    lw, exact = exact_posterior_weights
    khat, log_px = psis(lw)
    assert np.all(khat == -np.inf)  # no tail fitted to rounding noise
    np.testing.assert_allclose(log_px, exact, rtol=0, atol=1e-9)
    summary = pareto_k_summary(khat)
    assert summary["pareto_k_frac_bad"] == 0.0 and summary["pareto_k_max"] == -np.inf
    assert all(v == -np.inf for v in summary["pareto_k_quantiles"].values())  # not NaN
    khat, log_px = psis(torch.full((100, 3), -2.0, dtype=F64))  # exactly equal weights
    assert np.all(khat == -np.inf) and np.allclose(log_px, -2.0)


def test_psis_without_the_tolerance_fits_tails_to_rounding_noise(
    exact_posterior_weights, monkeypatch
):
    """The test double: the old guard (spread == 0) fits a Pareto tail to the noise, giving
    k-hats that mean nothing (finite or inf) and broken estimates."""
    lw, exact = exact_posterior_weights
    monkeypatch.setattr(diagnostics, "EQUAL_WEIGHTS_RTOL", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        khat, log_px = psis(lw)
    assert np.sum(khat != -np.inf) > 100
    assert not np.allclose(log_px, exact, rtol=0, atol=1e-9, equal_nan=False)


def test_psis_still_fits_a_small_real_spread():
    """Above the tolerance (1e-9 relative here, 1e-10 is the threshold), weights are fitted."""
    z = torch.randn(500, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    khat, log_px = psis(-10.0 + 1e-8 * z)
    assert np.all(np.isfinite(khat)) and np.all(khat < 0.5)
    np.testing.assert_allclose(log_px, -10.0, rtol=0, atol=1e-7)


def test_psis_of_a_vae_tracks_the_exact_log_likelihood_when_q_is_good():
    x = LinearGaussian().sample(50)
    good = LinearGaussian(scale=1.2)  # q: the posterior, 20% too wide
    bad = LinearGaussian(scale=0.3)  # q: the posterior, 70% too narrow
    pyro.set_rng_seed(0)
    res_good = importance_sampling(good.vae, x, 2000)
    res_bad = importance_sampling(bad.vae, x, 2000)
    exact = good.marginal.log_prob(x).numpy()
    assert pareto_k_summary(res_good.pareto_k)["pareto_k_frac_bad"] == 0.0
    error = torch.as_tensor(res_good.psis_log_likelihood - exact)
    mean, se = mean_stderr(error)
    assert abs(mean) < 4 * se and error.abs().max() < 0.05
    assert pareto_k_summary(res_bad.pareto_k)["pareto_k_frac_bad"] > 0.6


# ---- NUTS ----------------------------------------------------------------------------------


def test_nuts_recovers_the_exact_posterior():
    lg = LinearGaussian(d=5, shift=1.0, scale=2.0)  # q far off, so NUTS cannot just copy it
    x = lg.sample(2)
    idata = nuts_posterior(lg.vae, x, num_warmup=200, num_samples=200, num_chains=2, seed=0)
    assert isinstance(idata, az.InferenceData)
    assert dict(idata.posterior["z"].sizes) == {"chain": 2, "draw": 200, "example": 2, "latent": 2}
    loc, scale = lg.vae.encoder(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # r-hat may cross 1.01 by chance
        rows = posterior_comparison(idata, loc, scale)
    mean, sd = lg.posterior(x)
    for i, row in enumerate(rows):
        # 4 Monte Carlo standard errors, Bonferroni-safe for these 8 comparisons
        assert np.all(
            np.abs(np.array(row["nuts_mean"]) - mean[i].numpy()) < 4 * np.array(row["mcse_mean"])
        )
        assert np.all(
            np.abs(np.array(row["nuts_std"]) - sd[i].numpy()) < 4 * np.array(row["mcse_sd"])
        )
        assert row["max_r_hat"] < 1.05 and row["min_ess_bulk"] > 100
        np.testing.assert_allclose(row["q_mean"], loc[i].detach().numpy())
        np.testing.assert_allclose(
            row["std_ratio"], 2.0 * sd[i].numpy() / row["nuts_std"], rtol=1e-5
        )


def test_posterior_comparison_flags_chains_that_disagree():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 200, 1, 2))
    z[1] += 3.0  # the second chain sits elsewhere
    idata = az.from_dict(posterior={"z": z}, dims={"z": ["example", "latent"]})
    with pytest.warns(UserWarning) as caught:
        (row,) = posterior_comparison(idata, np.zeros((1, 2)), np.ones((1, 2)))
    messages = [str(w.message) for w in caught]
    assert any("r-hat" in m for m in messages) and any("ESS" in m for m in messages)
    assert row["rhat_flag"] and row["max_r_hat"] > 1.5 and row["ess_flag"]
    good = az.from_dict(
        posterior={"z": rng.normal(size=(2, 500, 1, 2))}, dims={"z": ["example", "latent"]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        (row,) = posterior_comparison(good, np.zeros((1, 2)), np.ones((1, 2)))
    assert not row["rhat_flag"] and not row["ess_flag"]


def test_nuts_runs_on_the_trained_decoder(trained):
    vae, x = trained
    idata = nuts_posterior(vae, x[0], num_warmup=50, num_samples=50, num_chains=2, seed=1)
    assert idata.posterior["z"].shape == (2, 50, 1, vae.z_dim)
    assert all(p.requires_grad for p in vae.parameters())  # unfrozen afterwards


# ---- the amortization gap ------------------------------------------------------------------


def test_gaps_on_a_trained_model_are_positive_and_start_from_the_encoders_elbo(trained):
    vae, x = trained
    x = x[:24]
    pyro.set_rng_seed(0)
    log_px = iwae_bound(log_importance_weights(vae, x, 1000))
    gaps = inference_gaps(vae, x, log_px, steps=150, eval_particles=500)
    # the encoder's ELBO as the gaps estimate it (all terms sampled) agrees with the closed-form
    # KL route of training; a 1-nat error would be seen
    with torch.no_grad():
        recon, kl = objectives.analytic_elbo_terms(vae, x, num_particles=4000)
    diff = gaps["elbo_amortized"] - (recon - kl).double()
    assert abs(_z(diff)) < 4 and abs(_z(diff + 1.0)) > 4
    assert _z(gaps["amortization_gap"]) > 3  # the optimized q beats the encoder's
    assert _z(gaps["inference_gap"]) > 3
    mean, se = mean_stderr(gaps["approximation_gap"])
    assert mean > -3 * se  # log p(x) >= the best ELBO, within noise


def test_local_optimization_reaches_the_exact_posterior():
    lg = LinearGaussian(shift=1.0, scale=2.0)  # the posterior is in the family; q is not it
    x = lg.sample(40)
    exact = lg.marginal.log_prob(x)
    pyro.set_rng_seed(0)
    gaps = inference_gaps(lg.vae, x, exact, steps=300, eval_particles=2000)
    # approximation gap = KL(q* || p(z|x)) = 0 for the optimum of a family holding p(z|x)
    assert abs(mean_stderr(gaps["approximation_gap"])[0]) < 0.02
    # amortization gap = KL(q(z|x) || p(z|x)), known in closed form
    diff = gaps["amortization_gap"] - lg.kl_q_posterior(x).detach()
    assert abs(mean_stderr(diff)[0]) < 0.03
    loc, scale = lg.vae.encoder(x)
    best_loc, best_scale = optimize_gaussian(lg.vae, x, loc, scale, steps=300)
    mean, sd = lg.posterior(x)
    # near the posterior up to the optimizer's noise floor: a few hundredths of a posterior sd
    # (costing ~ error^2 / 2 nats per dim, which the approximation gap above bounds)
    loc_error, scale_error = (best_loc - mean) / sd, best_scale / sd - 1
    assert loc_error.pow(2).mean().sqrt() < 0.07 and loc_error.abs().max() < 0.25
    assert scale_error.pow(2).mean().sqrt() < 0.07 and scale_error.abs().max() < 0.25


# ---- active units ----------------------------------------------------------------------------


def test_active_units_counts_the_units_that_vary_with_x():
    vae = VAE(x_shape=(3,), z_dim=3, likelihood="gaussian", hidden=[]).double()
    enc = vae.encoder.net[0]  # loc = [x0, 0.05 x1, 0], so Cov_x = [1, 0.0025, 0] for x ~ N(0, I)
    with torch.no_grad():
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[0, 0], enc.weight[1, 1] = 1.0, 0.05
    n = 20000
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    count, activity = active_units(vae, x, batch_size=3000)
    assert count == 1 and activity.shape == (3,)
    se = torch.tensor([1.0, 0.0025, 0.0], dtype=F64) * math.sqrt(2 / n)  # sd of a variance
    assert abs(activity[0] - 1.0) < 4 * se[0] and abs(activity[1] - 0.0025) < 4 * se[1]
    assert activity[2] == 0
    assert active_units(vae, x, threshold=0.001)[0] == 2


# ---- input errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda vae, x: log_importance_weights(vae, x, 0),
        lambda vae, x: importance_sampling(vae, x, 10, batch_size=0),
        lambda vae, x: sampled_elbo(vae, x, num_particles=0),
        lambda vae, x: psis(torch.zeros(10, 3)),
        lambda vae, x: psis(torch.zeros(100)),
        lambda vae, x: diagnostics.posterior_model(vae, x[0, :3]),
        lambda vae, x: nuts_posterior(vae, x[:1], num_samples=0),
        lambda vae, x: optimize_gaussian(vae, x, *vae.encoder(x), steps=0),
    ],
)
def test_bad_inputs_raise_one_line_errors(call):
    lg = LinearGaussian()
    with pytest.raises(PyrovaeError) as info:
        call(lg.vae, lg.sample(4))
    assert "\n" not in str(info.value) and str(info.value)
