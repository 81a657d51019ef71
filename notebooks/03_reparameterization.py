# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Gradient estimators: score function and reparameterization
#
# Training a VAE needs $\nabla_\phi\,\mathbb{E}_{q_\phi(z\mid x)}[f(z)]$, where the distribution
# itself depends on $\phi$ (the ELBO of [01](01_elbo.ipynb) is such an expectation). This notebook derives the two classical unbiased estimators
# (score function / REINFORCE, and reparameterization), checks that both are unbiased
# against exact gradients, measures how their variances grow with the number of samples
# and with the dimension (against exact variance formulas), compares them on a trained
# VAE's encoder output for real MNIST images and inside Pyro's `Trace_ELBO`, and shows the
# sampling mistake $z = \mu + \Sigma\varepsilon$.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, few particles, few steps

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyrovae import check, objectives

# %% [markdown]
# ## 1. Two estimators of $\nabla_\phi\,\mathbb{E}_{q_\phi}[f(z)]$
#
# **Score function (REINFORCE, likelihood ratio).** Differentiate under the integral and use
# $\nabla_\phi q_\phi = q_\phi \nabla_\phi \log q_\phi$:
# $$
# \nabla_\phi \int q_\phi(z) f(z)\,dz = \int f(z)\,\nabla_\phi q_\phi(z)\,dz
#   = \mathbb{E}_{q_\phi}\big[f(z)\,\nabla_\phi \log q_\phi(z)\big]
#   \approx \frac1N\sum_{n=1}^N f(z_n)\,\nabla_\phi\log q_\phi(z_n), \quad z_n \sim q_\phi .
# $$
# It needs only $\log q_\phi$ to be differentiable, not $f$. Since
# $\mathbb{E}_q[\nabla_\phi\log q_\phi] = \nabla_\phi\int q_\phi = 0$, any baseline $b$ independent of
# $z_n$ can be subtracted: $(f(z_n) - b)\nabla_\phi\log q_\phi(z_n)$ stays unbiased (here: the
# leave-one-out mean $b_n = \frac{1}{N-1}\sum_{m\ne n} f(z_m)$). For $q = \mathcal{N}(\mu, \sigma^2)$:
# $\partial_\mu \log q = (z - \mu)/\sigma^2$ and $\partial_\sigma\log q = ((z-\mu)^2 - \sigma^2)/\sigma^3$.
# In code: draw `z = q.sample()` (no gradient path), differentiate the *surrogate*
# `f(z).detach() * q.log_prob(z)`. This is what Pyro's `Trace_ELBO` does at sites whose
# distribution has no `rsample` (its `score_function_term`).
#
# **Reparameterization (pathwise).** Write $z = g_\phi(\varepsilon) = \mu + \sigma\varepsilon$ with
# $\varepsilon\sim\mathcal{N}(0, 1)$ independent of $\phi$; then
# $\mathbb{E}_{q_\phi}[f(z)] = \mathbb{E}_{\varepsilon}[f(\mu + \sigma\varepsilon)]$ and the gradient
# moves inside:
# $$
# \nabla_\phi\,\mathbb{E}_\varepsilon\big[f(g_\phi(\varepsilon))\big]
#   = \mathbb{E}_\varepsilon\big[f'(g_\phi(\varepsilon))\,\nabla_\phi g_\phi(\varepsilon)\big],
#   \qquad \partial_\mu = \mathbb{E}[f'(z)], \quad \partial_\sigma = \mathbb{E}[f'(z)\,\varepsilon].
# $$
# It needs $f$ differentiable. In code: `z = q.rsample()` (`loc + scale * eps`), differentiate
# `f(z)`: Kingma & Welling (2013) eq. 10, `objectives.analytic_elbo_terms` (`z = loc + scale * eps`),
# and what `Trace_ELBO` does when the guide's distribution has `rsample` (the VAE's does).
#
# Only the encoder's $\phi$ needs either estimator. The decoder's $\theta$ does not enter the
# distribution $z$ is drawn from, so the gradient moves inside directly,
# $\nabla_\theta\,\mathbb{E}_{q_\phi}[\log p_\theta(x\mid z)] = \mathbb{E}_{q_\phi}[\nabla_\theta \log p_\theta(x\mid z)]$,
# a plain Monte Carlo average ([01](01_elbo.ipynb), section 4c, checks it against the exact gradient).

# %%
print(inspect.getsource(objectives.analytic_elbo_terms))
print(inspect.getsource(dist.Normal.rsample))

# %% [markdown]
# ## 2. Unbiasedness against an exact gradient
#
# $f(z) = z^4 - 2z^2 + z$ and $z\sim\mathcal{N}(\mu,\sigma^2)$. From $\mathbb{E}z^2 = \mu^2 + \sigma^2$ and
# $\mathbb{E}z^4 = \mu^4 + 6\mu^2\sigma^2 + 3\sigma^4$,
# $$
# \mathbb{E}f = \mu^4 + 6\mu^2\sigma^2 + 3\sigma^4 - 2(\mu^2 + \sigma^2) + \mu,\qquad
# \partial_\mu\mathbb{E}f = 4\mu^3 + 12\mu\sigma^2 - 4\mu + 1,\qquad
# \partial_\sigma\mathbb{E}f = 12\mu^2\sigma + 12\sigma^3 - 4\sigma .
# $$
# Per-sample gradients come from autograd: each sample gets its own copy of $(\mu, \sigma)$, so the
# gradient of the sum is the vector of per-sample gradients.

# %%
MU, SIGMA = 0.7, 1.3

def f(z):
    return z**4 - 2 * z**2 + z

EXACT = {"mu": 4 * MU**3 + 12 * MU * SIGMA**2 - 4 * MU + 1,
         "sigma": 12 * MU**2 * SIGMA + 12 * SIGMA**3 - 4 * SIGMA}

def per_sample_grads(estimator, shape, seed=0):
    """Per-sample gradient estimates of d/d(mu, sigma) E[f(z)], z ~ N(mu, sigma^2)."""
    torch.manual_seed(seed)
    mu = torch.full(shape, MU, dtype=torch.float64, requires_grad=True)
    sigma = torch.full(shape, SIGMA, dtype=torch.float64, requires_grad=True)
    q = dist.Normal(mu, sigma)
    if estimator == "reparam":
        surrogate = f(q.rsample())                     # z = mu + sigma * eps
    else:
        z = q.sample()                                 # no gradient path through z
        fz = f(z)
        if estimator == "score + baseline":           # leave-one-out mean over the last dim
            n = shape[-1]
            fz = fz - (fz.sum(-1, keepdim=True) - fz) / (n - 1)
        surrogate = fz * q.log_prob(z)                 # grad = f(z) grad log q(z)
    g_mu, g_sigma = torch.autograd.grad(surrogate.sum(), (mu, sigma))
    return {"mu": g_mu, "sigma": g_sigma}

# the score of the Gaussian, by autograd = the formulas above
torch.manual_seed(0)
mu_t = torch.tensor(MU, dtype=torch.float64, requires_grad=True)
sg_t = torch.tensor(SIGMA, dtype=torch.float64, requires_grad=True)
z0 = torch.tensor(0.37, dtype=torch.float64)
d_mu, d_sg = torch.autograd.grad(dist.Normal(mu_t, sg_t).log_prob(z0), (mu_t, sg_t))
assert abs(d_mu - (z0 - MU) / SIGMA**2) < 1e-12
assert abs(d_sg - ((z0 - MU) ** 2 - SIGMA**2) / SIGMA**3) < 1e-12

N = 200_000 if FAST else 2_000_000
ESTIMATORS = ("score", "score + baseline", "reparam")
thr = check.family_threshold(2 * len(ESTIMATORS))
per_sample_var = {}
print(f"{'estimator':>17} {'param':>6} {'mean':>9} {'SE':>7} {'exact':>9} {'z':>6} "
      f"{'var/sample':>11}")
for est in ESTIMATORS:
    grads = per_sample_grads(est, (N,))
    for par in ("mu", "sigma"):
        gvals = grads[par]
        mean, se = gvals.mean().item(), gvals.std().item() / math.sqrt(N)
        zscore = (mean - EXACT[par]) / se
        per_sample_var[est, par] = gvals.var().item()
        print(f"{est:>17} {par:>6} {mean:9.4f} {se:7.4f} {EXACT[par]:9.4f} {zscore:6.2f} "
              f"{gvals.var().item():11.2f}")
        assert abs(zscore) <= thr, f"{est} is biased for d/d{par}"
print(f"|z| threshold {thr:.2f}")
for par in ("mu", "sigma"):
    assert per_sample_var["reparam", par] < per_sample_var["score", par]

# %% [markdown]
# ## 3. Variance against the number of samples
#
# Both are averages of $N$ i.i.d. terms, so the spread of the estimate is
# $\sqrt{\mathrm{Var}_1/N}$: the same $1/\sqrt{N}$ rate, with a constant set by the per-sample
# variance $\mathrm{Var}_1$. Measured: the standard deviation over $R$ independent repetitions of the
# $N$-sample estimate of $\partial_\mu\mathbb{E}f$.

# %%
R = 200 if FAST else 400
NS = [3, 10, 30, 100, 300, 1000] + ([] if FAST else [3000, 10000])
spread = {est: [] for est in ESTIMATORS}
for i, n in enumerate(NS):
    for est in ESTIMATORS:
        estimates = per_sample_grads(est, (R, n), seed=100 + i)["mu"].mean(-1)
        spread[est].append(estimates.std().item())

fig, ax = plt.subplots(figsize=(6.5, 4))
for est, marker in zip(ESTIMATORS, "osd"):
    s = np.array(spread[est])
    slope = np.polyfit(np.log(NS), np.log(s), 1)[0]
    ax.loglog(NS, s, marker, label=f"{est}: slope {slope:+.2f}")
    ax.loglog(NS, np.sqrt(per_sample_var[est, "mu"] / np.array(NS)), "k:", lw=1)
    print(f"{est:>17}: slope {slope:+.3f};  std * sqrt(N) =",
          ", ".join(f"{v * math.sqrt(n):.2f}" for v, n in zip(s, NS)),
          f"| sqrt(var per sample) = {math.sqrt(per_sample_var[est, 'mu']):.2f}")
    assert abs(slope + 0.5) <= 0.1
ax.plot([], [], "k:", lw=1, label="sqrt(Var_1 / N) from section 2")
ax.set_xlabel("samples N")
ax.set_ylabel("std of the estimate of dE[f]/dμ")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 4. Variance against the dimension
#
# Let $z\in\mathbb{R}^D$, $q = \mathcal{N}(m\mathbf 1, s^2 I)$, $f(z) = \lVert z\rVert^2$, so
# $\partial_{\mu_1}\mathbb{E}f = 2m$. With $u = (z_1 - \mu_1)/s$, $a_d = z_d^2$ and $R = \sum_{d\ge 2} a_d$:
#
# * reparameterization: $\partial_{\mu_1} f(\mu + s\varepsilon) = 2(\mu_1 + s\varepsilon_1)$, variance $4s^2$, **independent of $D$**;
# * score function: $f(z)\,u/s$; since $f = a_1 + R$ with $R$ independent of $u$,
#   $\mathbb{E}[f^2u^2] = \mathbb{E}[a_1^2u^2] + 2\,\mathbb{E}[a_1u^2]\,\mathbb{E}R + \mathbb{E}R^2$ with
#   $\mathbb{E}[a_1^2u^2] = m^4 + 18m^2s^2 + 15s^4$, $\mathbb{E}[a_1u^2] = m^2 + 3s^2$,
#   $\mathbb{E}R = (D-1)(m^2 + s^2)$, $\mathbb{E}R^2 = (D-1)(4m^2s^2 + 2s^4) + (\mathbb{E}R)^2$, so
#   $\mathrm{Var} = \mathbb{E}[f^2u^2]/s^2 - 4m^2$, which grows like $D^2$ (the other dimensions' mean $\mathbb{E}R$ multiplies the noise);
# * score function with the constant baseline $c = \mathbb{E}f = D(m^2 + s^2)$:
#   $\mathrm{Var} = \big(\mathbb{E}[f^2u^2] - 2c\,\mathbb{E}[fu^2] + c^2\big)/s^2 - 4m^2$ with
#   $\mathbb{E}[fu^2] = m^2 + 3s^2 + \mathbb{E}R$: grows like $D$ (the other dimensions' *noise* remains).
#
# Measured per-sample variances (markers) must match these formulas (lines) within their
# standard errors.

# %%
M_, S_ = 0.5, 0.8
DS = [1, 2, 4, 8, 16, 32, 64] + ([] if FAST else [128, 256])
NV = 10_000 if FAST else 50_000

def exact_var(D):
    Ea2u2, Eau2 = M_**4 + 18 * M_**2 * S_**2 + 15 * S_**4, M_**2 + 3 * S_**2
    ER = (D - 1) * (M_**2 + S_**2)
    ER2 = (D - 1) * (4 * M_**2 * S_**2 + 2 * S_**4) + ER**2
    Ef2u2 = Ea2u2 + 2 * Eau2 * ER + ER2
    c = D * (M_**2 + S_**2)
    return {"score": Ef2u2 / S_**2 - 4 * M_**2,
            "score + baseline": (Ef2u2 - 2 * c * (Eau2 + ER) + c**2) / S_**2 - 4 * M_**2,
            "reparam": 4 * S_**2}

def grads_mu1(estimator, D, n, seed):
    torch.manual_seed(seed)
    mu = torch.full((n, D), M_, dtype=torch.float64, requires_grad=True)
    q = dist.Normal(mu, S_).to_event(1)
    if estimator == "reparam":
        surrogate = q.rsample().pow(2).sum(-1)
    else:
        z = q.sample()
        fz = z.pow(2).sum(-1)
        if estimator == "score + baseline":
            fz = fz - D * (M_**2 + S_**2)
        surrogate = fz * q.log_prob(z)
    return torch.autograd.grad(surrogate.sum(), mu)[0][:, 0]

thr = check.family_threshold(len(DS) * len(ESTIMATORS))
measured = {est: [] for est in ESTIMATORS}
worst = 0.0
for i, D in enumerate(DS):
    ex = exact_var(D)
    for est in ESTIMATORS:
        gvals = grads_mu1(est, D, NV, seed=1000 + i)
        mean_z = (gvals.mean().item() - 2 * M_) / (gvals.std().item() / math.sqrt(NV))
        dev2 = (gvals - gvals.mean()) ** 2
        var, se_var = dev2.mean().item(), dev2.std().item() / math.sqrt(NV)
        measured[est].append((var, se_var))
        worst = max(worst, abs(var - ex[est]) / se_var, abs(mean_z))
        assert abs(var - ex[est]) <= thr * se_var, f"{est}, D={D}: {var} vs {ex[est]}"
        assert abs(mean_z) <= thr, f"{est}, D={D}: biased"
print(f"all {len(DS) * len(ESTIMATORS)} measured variances and means match; "
      f"worst |z| {worst:.2f} (threshold {thr:.2f})")

fig, ax = plt.subplots(figsize=(6.5, 4))
dgrid = np.array(DS, dtype=float)
for est, marker in zip(ESTIMATORS, "osd"):
    v = np.array([m for m, _ in measured[est]])
    ax.loglog(dgrid, v, marker, label=f"{est} (measured)")
    ax.loglog(dgrid, [exact_var(d)[est] for d in DS], "k-", lw=0.8)
    slope = np.polyfit(np.log(dgrid[-4:]), np.log(v[-4:]), 1)[0]
    print(f"{est:>17}: variance at D = {DS[0]}: {v[0]:9.2f}, at D = {DS[-1]}: {v[-1]:11.1f}; "
          f"log-log slope over the last 4 D: {slope:+.2f}")
ax.plot([], [], "k-", lw=0.8, label="exact")
ax.set_xlabel("dimension D")
ax.set_ylabel("variance per sample of the dE[f]/dμ₁ estimate")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 5. On a VAE's encoder output, for real MNIST images
#
# Now $f(z) = \log p_\theta(x\mid z)$ = `vae.decode(z).log_prob(x)` for a briefly trained VAE and a few
# MNIST test images, and $\phi$ = the encoder's output $(\mu(x), \sigma(x))$ for each image
# (20 numbers per image for a 10-d latent). The exact gradient is unknown, but all three
# estimators are unbiased, so their means must agree within the standard errors (Bonferroni over
# all coordinates); their per-coordinate variances are compared.

# %%
splits = nb.load_data("mnist")  # dynamically binarized; fast mode: 2,000 training images
print(splits)
print("test set:", splits.test_binarization)

# %%
vae, _ = nb.train_vae(splits, steps=100 if FAST else 400, z_dim=10, hidden=(200,))
x = splits.test[:4]
B, ZD = x.shape[0], vae.z_dim
with torch.no_grad():
    loc0, scale0 = vae.encoder(x)
print("guide distribution:", vae.encode(x), "| has_rsample:", vae.encode(x).has_rsample)

def vae_grads(estimator, n, seed, chunk=2500):
    """Per-sample estimates of d/d(loc, scale) E_q[log p(x|z)], shape (n, B, 2 * z_dim)."""
    torch.manual_seed(seed)
    out = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        loc = loc0.expand(m, B, ZD).clone().requires_grad_()
        scale = scale0.expand(m, B, ZD).clone().requires_grad_()
        q = dist.Normal(loc, scale).to_event(1)  # q(z|x), replicated m times
        if estimator == "reparam":
            surrogate = vae.decode(q.rsample()).log_prob(x)
        else:
            z = q.sample()
            fz = vae.decode(z).log_prob(x).detach()
            if estimator == "score + baseline":
                fz = fz - (fz.sum(0) - fz) / (m - 1)
            surrogate = fz * q.log_prob(z)
        g_loc, g_scale = torch.autograd.grad(surrogate.sum(), (loc, scale))
        out.append(torch.cat([g_loc, g_scale], -1).double())
    return torch.cat(out)

NE = 2000 if FAST else 20000
G = {est: vae_grads(est, NE, seed=7) for est in ESTIMATORS}
thr = check.family_threshold(2 * B * 2 * ZD)
for est in ("score", "score + baseline"):
    zs = (G[est].mean(0) - G["reparam"].mean(0)) / (
        (G[est].var(0) + G["reparam"].var(0)) / NE).sqrt()
    ratio = G[est].var(0) / G["reparam"].var(0)
    print(f"{est:>17} vs reparam: worst |z| over {zs.numel()} coordinates {zs.abs().max():.2f} "
          f"(threshold {thr:.2f}); variance ratio median {ratio.median():.0f}, "
          f"min {ratio.min():.1f}")
    assert zs.abs().max() <= thr
    assert ratio.median() > 3
print("first image, d/d loc[:5]:")
for est in ESTIMATORS:
    print(f"{est:>17}", np.round(G[est].mean(0)[0, :5].numpy(), 3),
          "± SE", np.round((G[est].std(0)[0, :5] / math.sqrt(NE)).numpy(), 3))

# %%
fig, ax = plt.subplots(figsize=(5.5, 4.5))
v_rep = G["reparam"].var(0).flatten().numpy()
for est, marker in (("score", "o"), ("score + baseline", "s")):
    ax.loglog(v_rep, G[est].var(0).flatten().numpy(), marker, ms=3, label=est)
lims = [v_rep.min() / 2, G["score"].var(0).max().item() * 2]
ax.loglog(lims, lims, "k:", lw=1, label="equal variance")
ax.set_xlabel("variance per sample, reparameterization")
ax.set_ylabel("variance per sample, score function")
ax.set_title("gradient w.r.t. q(z|x)'s (loc, scale), 4 MNIST test images", fontsize=9)
ax.legend(fontsize=8)
plt.show()


# %% [markdown]
# ### Inside Pyro: `Trace_ELBO` picks the estimator from `has_rsample`
#
# The VAE's guide samples from `Normal(loc, scale).to_event(1)`, which has `rsample`, so
# `Trace_ELBO` differentiates through the sample (reparameterization). A guide whose distribution
# reports `has_rsample = False` makes `Trace_ELBO` build the score-function surrogate
# $\log q \cdot \mathrm{stop\_grad}(\log p(x, z) - \log q(z\mid x))$ instead, per data point (the
# `data` plate keeps each image's $\log r$ separate). Both are unbiased for the same ELBO gradient.
# Below: 8 random directions in the encoder's parameter space, $R$ gradient draws each (one
# particle, 16 images). (`Normal(...).has_rsample_(False).to_event(1)` would be the short way,
# but inside a plate Pyro 1.9.2's broadcasting copies `has_rsample` onto the expanded
# `Independent`, where torch makes it a read-only property, and fails; a `Normal` subclass
# with the class attribute `has_rsample = False` does the same job.)

# %%
class NormalNoRsample(dist.Normal):
    has_rsample = False  # Pyro: sample without a gradient path, use the score function

def score_function_guide(x, num_data=None):
    loc, scale = vae.encoder(x)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("z", NormalNoRsample(loc, scale).to_event(1))

x16 = splits.test[:16]
params = list(vae.encoder.parameters())
elbo = objectives.pyro_elbo("trace", num_particles=1)
gen = torch.Generator().manual_seed(0)
basis = torch.randn(8, sum(p.numel() for p in params), generator=gen, dtype=torch.float64)
basis /= basis.norm(dim=1, keepdim=True)
R = 30 if FAST else 300
pyro.set_rng_seed(0)
proj = {}
for name, guide in (("reparam (vae.guide)", vae.guide), ("score function", score_function_guide)):
    rows = []
    for _ in range(R):
        loss = elbo.differentiable_loss(vae.model, guide, x16)
        grads = torch.autograd.grad(loss, params)
        rows.append(basis @ torch.cat([gr.reshape(-1) for gr in grads]).double())
    proj[name] = torch.stack(rows)
a, b = proj.values()
zs = (a.mean(0) - b.mean(0)) / ((a.var(0) + b.var(0)) / R).sqrt()
ratio = b.var(0) / a.var(0)
thr = check.family_threshold(8)
print("z of the difference in the 8 directions:", np.round(zs.numpy(), 2), f"(threshold {thr:.2f})")
print("variance ratio score / reparam per direction:", np.round(ratio.numpy(), 0))
assert zs.abs().max() <= thr
assert ratio.median() > 3

# %% [markdown]
# ## 6. A sampling mistake: $z = \mu + \Sigma\varepsilon$
#
# For $z = \mu + A\varepsilon$ with $\varepsilon\sim\mathcal{N}(0, I)$, $\mathrm{Cov}[z] = AA^\top$. So $A$ must be a
# *square root* of $\Sigma$: the Cholesky factor $L$ ($LL^\top = \Sigma$; what
# `MultivariateNormal.rsample` uses), or the symmetric root $\Sigma^{1/2}$; in the diagonal case
# $A = \mathrm{diag}(\sigma)$, the standard deviations. Writing $z = \mu + \Sigma\varepsilon$ gives
# $\mathrm{Cov}[z] = \Sigma\Sigma^\top = \Sigma^2$; in the diagonal VAE, $z = \mu + \sigma^2\varepsilon$
# (e.g. `exp(log_var)` instead of `exp(0.5 * log_var)`) gives variances $\sigma^4$. Sample covariances
# below are checked against $\Sigma$ and $\Sigma^2$ with the standard error of a Gaussian sample
# covariance, $\sqrt{(C_{ii}C_{jj} + C_{ij}^2)/n}$.

# %%
n = 20_000 if FAST else 200_000
mu2 = torch.tensor([1.0, -1.0], dtype=torch.float64)
Sigma = torch.tensor([[2.0, 1.2], [1.2, 1.0]], dtype=torch.float64)
L = torch.linalg.cholesky(Sigma)
evals, evecs = torch.linalg.eigh(Sigma)
Sigma_half = evecs @ torch.diag(evals.sqrt()) @ evecs.T
assert torch.allclose(dist.MultivariateNormal(mu2, Sigma).scale_tril, L)
torch.manual_seed(0)
eps = torch.randn(n, 2, dtype=torch.float64)
samples = {"mu + Sigma eps   (wrong)": mu2 + eps @ Sigma.T,
           "mu + L eps       (Cholesky)": mu2 + eps @ L.T,
           "mu + Sigma^½ eps (sym. root)": mu2 + eps @ Sigma_half.T}

def cov_se(C, n):
    d = C.diagonal()
    return ((d[:, None] * d[None, :] + C**2) / n).sqrt()

Sigma2 = Sigma @ Sigma.T
print("Sigma  =", np.round(Sigma.numpy(), 3).tolist(),
      "   Sigma² =", np.round(Sigma2.numpy(), 3).tolist())
print(f"{'draw':>29} {'sample covariance':>32} {'max |z| vs Sigma':>17} {'vs Sigma²':>10}")
for name, z in samples.items():
    C = torch.cov(z.T)
    z_sigma = ((C - Sigma) / cov_se(Sigma, n)).abs().max().item()
    z_sigma2 = ((C - Sigma2) / cov_se(Sigma2, n)).abs().max().item()
    print(f"{name:>29} {str(np.round(C.numpy(), 3).tolist()):>32} {z_sigma:17.1f} {z_sigma2:10.1f}")
    if "wrong" in name:
        assert z_sigma2 <= 4 and z_sigma > 50  # its covariance is Sigma², not Sigma
    else:
        assert z_sigma <= 4 and z_sigma2 > 50

fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
t = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
circle = torch.stack([t.cos(), t.sin()], -1)
for ax, name in zip(axes, list(samples)[:2]):
    z = samples[name][:2000]
    ax.plot(z[:, 0], z[:, 1], ".", ms=2, alpha=0.4)
    for k in (1, 2):
        ell = mu2 + k * circle @ L.T
        ax.plot(ell[:, 0], ell[:, 1], "k-", lw=1)
    ax.set_title(" ".join(name.split()) + ";  black: 1σ, 2σ ellipses of Σ", fontsize=9)
    ax.set_xlabel("z₁")
    ax.set_aspect("equal")
axes[0].set_ylabel("z₂")
plt.tight_layout()
plt.show()

# %% [markdown]
# **In the VAE.** With the encoder's $(\mu, \sigma)$ for MNIST test images, the correct draw
# $z = \mu + \sigma\varepsilon$ reproduces the closed-form KL through the Monte Carlo mean of
# $\log q(z\mid x) - \log p(z)$; the draw $z = \mu + \sigma^2\varepsilon$ has variance ratio
# $\sigma^2$ instead of $1$ and a Monte Carlo "KL" that misses `objectives.closed_form_kl` by many
# standard errors.

# %%
xk = splits.test[:8]
NK = 5000 if FAST else 50000
with torch.no_grad():
    loc, scale = vae.encoder(xk)
    q, p = vae.encode(xk), vae.prior()
    kl_closed = objectives.closed_form_kl(vae, loc, scale).double()
    eps = torch.randn(NK, *loc.shape)
    draws = {"mu + sigma eps": loc + scale * eps, "mu + sigma² eps (wrong)": loc + scale**2 * eps}
thr = check.family_threshold(xk.shape[0])
for name, z in draws.items():
    ratio = ((z - loc).pow(2).mean(0) / scale**2)
    lr = (q.log_prob(z) - p.log_prob(z)).double()
    mc, se = lr.mean(0), lr.std(0) / math.sqrt(NK)
    zs = (mc - kl_closed) / se
    print(f"{name:>24}: sample var / σ² over dims: median {ratio.median():.3f} "
          f"(σ² median {scale.pow(2).median():.3f}); "
          f"MC KL - closed form, max |z| = {zs.abs().max():.1f}")
    if "wrong" in name:
        assert zs.abs().max() > 10 * thr
    else:
        assert zs.abs().max() <= thr
print("closed-form KL per image:", np.round(kl_closed.numpy(), 2))

# %% [markdown]
# ## Summary
#
# * Score-function and reparameterization gradients of $\mathbb{E}[z^4 - 2z^2 + z]$ matched the exact
#   gradient within their standard errors; the reparameterization estimator had the smaller
#   per-sample variance, and a baseline reduced the score function's.
# * Both estimators' spread falls like $1/\sqrt{N}$; the constant is the per-sample variance.
# * With the dimension, the per-sample variance of the score function grows like $D^2$ ($D$ with a
#   baseline) while the reparameterization's stays constant: measured values matched the exact
#   formulas.
# * On a trained VAE's encoder output for MNIST images, and inside Pyro's `Trace_ELBO`, the two
#   estimators agreed in mean and differed in variance by the ratios printed above.
# * $z = \mu + \Sigma\varepsilon$ has covariance $\Sigma^2$; $\mu + L\varepsilon$ (Cholesky) or
#   $\mu + \Sigma^{1/2}\varepsilon$ has $\Sigma$; in the diagonal VAE, $\mu + \sigma^2\varepsilon$ breaks the KL.

# %% [markdown]
# ## References
#
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes (the reparameterization
#   trick, eq. 10). [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# * D. J. Rezende, S. Mohamed, D. Wierstra (2014). Stochastic backpropagation and approximate
#   inference in deep generative models. ICML. [arXiv:1401.4082](https://arxiv.org/abs/1401.4082)
# * R. J. Williams (1992). Simple statistical gradient-following algorithms for connectionist
#   reinforcement learning. Machine Learning 8 (REINFORCE, the score function with a baseline).
#   [doi:10.1007/BF00992696](https://doi.org/10.1007/BF00992696)
# * S. Mohamed, M. Rosca, M. Figurnov, A. Mnih (2020). Monte Carlo gradient estimation in machine
#   learning. JMLR 21 (both estimators, their variances and baselines).
#   [arXiv:1906.10652](https://arxiv.org/abs/1906.10652)
# * J. Schulman, N. Heess, T. Weber, P. Abbeel (2015). Gradient estimation using stochastic
#   computation graphs (the surrogate losses Pyro builds). [arXiv:1506.05254](https://arxiv.org/abs/1506.05254)
#
# The other notebooks: [00 First steps](00_first_steps.ipynb) · [01 The ELBO](01_elbo.ipynb)
# · [02 The Gaussian KL](02_gaussian_kl.ipynb) ·
# [04 Training on MNIST](04_train_mnist.ipynb) ·
# [05 Priors and likelihoods](05_priors_and_likelihoods.ipynb) ·
# [06 Posterior checks](06_posterior_checks.ipynb) · [07 Tighter bounds](07_tighter_bounds.ipynb).
