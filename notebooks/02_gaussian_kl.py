# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The KL divergence between Gaussians
#
# The ELBO's second term, $\mathrm{KL}(q(z\mid x)\,\Vert\,p(z))$, has a closed form when both are
# Gaussian. This notebook derives the general multivariate formula (trace, Mahalanobis and
# log-determinant terms), its diagonal and standard-normal special cases, and the
# log-variance form the code uses, and checks each `pyrovae.objectives` function against
# `torch.distributions.kl_divergence` (to round-off) and against Monte Carlo (within
# standard errors). Along the way: $\int p \log p$ is minus the entropy, and the KL is not
# symmetric.

# %%
import inspect
import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI

from pyrovae import check, objectives
from pyrovae import notebook as nb
from pyrovae.data import load_data
from pyrovae.model import VAE

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, few particles, few steps

# %% [markdown]
# ## 1. Two multivariate Gaussians
#
# Let $q = \mathcal{N}(\mu_q, \Sigma_q)$ and $p = \mathcal{N}(\mu_p, \Sigma_p)$ on $\mathbb{R}^k$. With
# $\log \mathcal{N}(z; \mu, \Sigma) = -\tfrac12\big[k \log 2\pi + \log\det\Sigma + (z - \mu)^\top \Sigma^{-1} (z - \mu)\big]$,
# $$
# \log q(z) - \log p(z) = \tfrac12\big[\log\det\Sigma_p - \log\det\Sigma_q\big]
#   - \tfrac12 (z - \mu_q)^\top \Sigma_q^{-1} (z - \mu_q)
#   + \tfrac12 (z - \mu_p)^\top \Sigma_p^{-1} (z - \mu_p).
# $$
# **Lemma** (trace trick). If $\mathbb{E}[z] = \mu$ and $\mathrm{Cov}[z] = \Sigma$, then for any
# symmetric $A$ and vector $a$: $\mathbb{E}[(z - a)^\top A (z - a)] = \mathrm{tr}(A\Sigma) + (\mu - a)^\top A (\mu - a)$,
# because $u^\top A u = \mathrm{tr}(A\,u u^\top)$ and $\mathbb{E}[(z-a)(z-a)^\top] = \Sigma + (\mu - a)(\mu - a)^\top$.
#
# Taking $\mathbb{E}_q$: the $q$-quadratic form gives $\mathrm{tr}(\Sigma_q^{-1}\Sigma_q) = k$, the
# $p$-quadratic form gives $\mathrm{tr}(\Sigma_p^{-1}\Sigma_q) + (\mu_p - \mu_q)^\top\Sigma_p^{-1}(\mu_p - \mu_q)$. Hence
# $$
# \boxed{\;\mathrm{KL}(q\,\Vert\,p) = \tfrac12\Big[\underbrace{\mathrm{tr}(\Sigma_p^{-1}\Sigma_q)}_{\text{trace}}
#   + \underbrace{(\mu_p - \mu_q)^\top\Sigma_p^{-1}(\mu_p - \mu_q)}_{\text{Mahalanobis}} - k
#   + \underbrace{\log\det\Sigma_p - \log\det\Sigma_q}_{\text{log-determinants}}\Big].\;}
# $$
# Note that $\Sigma_p^{-1}$ (the *second* argument's precision) appears in both the trace and the
# Mahalanobis term. `objectives.kl_mvn` computes it through Cholesky factors
# $\Sigma = LL^\top$: $\mathrm{tr}(\Sigma_p^{-1}\Sigma_q) = \lVert L_p^{-1}L_q\rVert_F^2$,
# the Mahalanobis term is $\lVert L_p^{-1}(\mu_p - \mu_q)\rVert^2$, and $\log\det\Sigma = 2\sum_i \log L_{ii}$
# (triangular solves, no explicit inverse).

# %%
print(inspect.getsource(objectives.kl_mvn))

# %% [markdown]
# **Check 1: against `torch.distributions` and against the textbook route.** Six random pairs
# in $k = 4$ dimensions (float64). The naive route uses `torch.linalg.inv` and `slogdet`; every
# term must agree with the Cholesky route, and the sum with `kl_divergence`, to ~$10^{-10}$.

# %%
P, K = 6, 4
g = torch.Generator().manual_seed(0)

def random_spd(n):
    a = torch.randn(n, K, K, generator=g, dtype=torch.float64)
    return a @ a.transpose(-1, -2) / K + 0.3 * torch.eye(K, dtype=torch.float64)

loc_q = torch.randn(P, K, generator=g, dtype=torch.float64)
loc_p = torch.randn(P, K, generator=g, dtype=torch.float64)
cov_q, cov_p = random_spd(P), random_spd(P)

kl = objectives.kl_mvn(loc_q, cov_q, loc_p, cov_p)
q_mvn, p_mvn = dist.MultivariateNormal(loc_q, cov_q), dist.MultivariateNormal(loc_p, cov_p)
kl_torch = torch.distributions.kl_divergence(q_mvn, p_mvn)

inv_p = torch.linalg.inv(cov_p)
diff = loc_p - loc_q
trace = torch.einsum("pij,pji->p", inv_p, cov_q)
maha = torch.einsum("pi,pij,pj->p", diff, inv_p, diff)
logdet = torch.linalg.slogdet(cov_p)[1] - torch.linalg.slogdet(cov_q)[1]
kl_naive = 0.5 * (trace + maha - K + logdet)

print(f"{'pair':>4} {'trace':>8} {'Mahal.':>8} {'logdet':>8} {'kl_mvn':>9} {'torch':>9} "
      f"{'|diff|':>8}")
for i in range(P):
    print(f"{i:>4} {trace[i]:8.4f} {maha[i]:8.4f} {logdet[i]:8.4f} {kl[i]:9.5f} "
          f"{kl_torch[i]:9.5f} {abs(kl[i] - kl_torch[i]):8.1e}")
assert torch.allclose(kl, kl_torch, rtol=1e-10, atol=1e-12)
assert torch.allclose(kl, kl_naive, rtol=1e-10, atol=1e-12)
assert (kl > 0).all()

# %% [markdown]
# **Check 2: against Monte Carlo.** $\mathrm{KL}(q\,\Vert\,p) = \mathbb{E}_q[\log q(z) - \log p(z)]$:
# the mean over $N$ draws, with its standard error, must be within the Bonferroni threshold
# of the closed form. Two deliberately wrong formulas (the Mahalanobis term with
# $\Sigma_q^{-1}$ instead of $\Sigma_p^{-1}$; the log-determinants swapped) are put through the
# same test to show that it has the power to catch them.

# %%
N = 40_000 if FAST else 400_000
zs = q_mvn.sample((N,))                                  # (N, P, K)
log_ratio = q_mvn.log_prob(zs) - p_mvn.log_prob(zs)     # (N, P)
mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(N)
thr = check.family_threshold(P)

maha_wrong = torch.einsum("pi,pij,pj->p", diff, torch.linalg.inv(cov_q), diff)
wrong = {"Mahalanobis with inv(cov_q)": 0.5 * (trace + maha_wrong - K + logdet),
         "log-determinants swapped": 0.5 * (trace + maha - K - logdet)}
print(f"{'pair':>4} {'closed form':>11} {'Monte Carlo':>11} {'SE':>7} {'z':>6} | "
      + " | ".join(f"z of {name}" for name in wrong))
for i in range(P):
    zw = [(mc[i] - w[i]) / se[i] for w in wrong.values()]
    print(f"{i:>4} {kl[i]:11.5f} {mc[i]:11.5f} {se[i]:7.5f} {(mc[i] - kl[i]) / se[i]:6.2f} | "
          + " | ".join(f"{z:>{len(name) + 5}.1f}" for z, name in zip(zw, wrong)))
print(f"|z| threshold {thr:.2f}")
assert ((mc - kl).abs() / se <= thr).all()
for name, w in wrong.items():
    assert ((mc - w).abs() / se).max() > 10 * thr, f"the test cannot tell {name}"


# %% [markdown]
# ### Entropy, cross-entropy, and "$\int p \log p$ is an expected value"
#
# Splitting the KL, $\mathrm{KL}(q\,\Vert\,p) = \int q\log q - \int q \log p = -H[q] + H[q, p]$ with
# $$
# H[q] = -\int q(z)\log q(z)\,dz = \tfrac12\log\det(2\pi e\,\Sigma_q), \qquad
# H[q, p] = -\mathbb{E}_q[\log p(z)] = \tfrac12\big[k\log 2\pi + \log\det\Sigma_p + \mathrm{tr}(\Sigma_p^{-1}\Sigma_q) + (\mu_p-\mu_q)^\top\Sigma_p^{-1}(\mu_p-\mu_q)\big].
# $$
# Write-ups sometimes call $\int p\log p$ "the expected value". It is the expectation of the
# random variable $\log p(Z)$ under $p$, i.e. **minus the (differential) entropy**
# $-H[p] = \mathbb{E}_p[\log p(Z)]$, a number in nats that can have either sign. It is not the
# expected value $\mathbb{E}_p[Z]$, nor $\log p(\mathbb{E}[Z])$ (the log-density at the mean,
# larger by exactly $\tfrac12$ per dimension for a Gaussian), nor $\log \mathbb{E}_p[p(Z)] = \log\int p^2$
# (larger by Jensen). The numbers for two 1-d Gaussians:

# %%
def entropy_table(mu, sigma, n):
    p = dist.Normal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    grid = torch.linspace(mu - 12 * sigma, mu + 12 * sigma, 200_001, dtype=torch.float64)
    dens = p.log_prob(grid).exp()
    integral = (dens * p.log_prob(grid)).sum() * (grid[1] - grid[0])   # ∫ p log p (quadrature)
    z = p.sample((n,))
    lp = p.log_prob(z)
    rows = {
        "∫ p log p  (quadrature)": integral.item(),
        "E_p[log p(Z)]  (Monte Carlo)": lp.mean().item(),
        "-H[p] = -½ log(2πe σ²)  (exact)": -p.entropy().item(),
        "E_p[Z]  (the expected value)": mu,
        "log p(E[Z])": p.log_prob(torch.tensor(mu, dtype=torch.float64)).item(),
        "log E_p[p(Z)] = log ∫ p²": -math.log(2 * sigma * math.sqrt(math.pi)),
    }
    return rows, lp.std().item() / math.sqrt(n)

n = 100_000 if FAST else 1_000_000
tables = [entropy_table(1.5, 0.5, n), entropy_table(1.5, 0.1, n)]
print(f"{'':>34} {'N(1.5, 0.5²)':>13} {'N(1.5, 0.1²)':>14}")
for key in tables[0][0]:
    print(f"{key:>34} {tables[0][0][key]:13.5f} {tables[1][0][key]:14.5f}")
for rows, se in tables:
    exact = rows["-H[p] = -½ log(2πe σ²)  (exact)"]
    assert abs(rows["∫ p log p  (quadrature)"] - exact) < 1e-9
    assert abs(rows["E_p[log p(Z)]  (Monte Carlo)"] - exact) < 4 * se
    assert abs(rows["log p(E[Z])"] - exact - 0.5) < 1e-12
    for other in ("E_p[Z]  (the expected value)", "log E_p[p(Z)] = log ∫ p²"):
        assert abs(rows[other] - exact) > 0.1

# %%
# the multivariate split of check 1's pairs: KL = -H[q] + H[q, p]
ent_q = q_mvn.entropy()
cross = 0.5 * (K * math.log(2 * math.pi) + torch.linalg.slogdet(cov_p)[1] + trace + maha)
mc_ent = -q_mvn.log_prob(zs).mean(0)
mc_cross = -p_mvn.log_prob(zs).mean(0)
print(f"{'pair':>4} {'H[q]':>9} {'MC':>9} {'H[q,p]':>9} {'MC':>9} {'H[q,p]-H[q]':>12} "
      f"{'kl_mvn':>9}")
for i in range(P):
    print(f"{i:>4} {ent_q[i]:9.4f} {mc_ent[i]:9.4f} {cross[i]:9.4f} {mc_cross[i]:9.4f} "
          f"{cross[i] - ent_q[i]:12.5f} {kl[i]:9.5f}")
se_ent = q_mvn.log_prob(zs).std(0) / math.sqrt(N)
se_cross = p_mvn.log_prob(zs).std(0) / math.sqrt(N)
assert torch.allclose(cross - ent_q, kl, rtol=1e-10)
assert ((mc_ent - ent_q).abs() <= thr * se_ent).all()
assert ((mc_cross - cross).abs() <= thr * se_cross).all()

# %% [markdown]
# ## 2. The diagonal case
#
# With $\Sigma_q = \mathrm{diag}(s_q^2)$ and $\Sigma_p = \mathrm{diag}(s_p^2)$ every matrix is diagonal and
# the formula decouples over dimensions:
# $$
# \mathrm{KL}(q\,\Vert\,p) = \tfrac12 \sum_{j=1}^k \left[\frac{s_{q,j}^2}{s_{p,j}^2}
#    + \frac{(\mu_{p,j} - \mu_{q,j})^2}{s_{p,j}^2} - 1 + \log s_{p,j}^2 - \log s_{q,j}^2\right].
# $$
# `objectives.kl_diag_normals` takes log-variances $\log s^2$; it is the KL of the `diag_normal`
# prior (`closed_form_kl` for `prior="diag_normal"`).

# %%
print(inspect.getsource(objectives.kl_diag_normals))

# %%
g = torch.Generator().manual_seed(1)
P, K = 6, 8
mq, mp = (torch.randn(P, K, generator=g, dtype=torch.float64) for _ in range(2))
lvq, lvp = (torch.randn(P, K, generator=g, dtype=torch.float64) for _ in range(2))

kl_d = objectives.kl_diag_normals(mq, lvq, mp, lvp)
kl_full = objectives.kl_mvn(mq, torch.diag_embed(lvq.exp()), mp, torch.diag_embed(lvp.exp()))
qd = dist.Normal(mq, (0.5 * lvq).exp()).to_event(1)
pd = dist.Normal(mp, (0.5 * lvp).exp()).to_event(1)
kl_t = torch.distributions.kl_divergence(qd, pd)
zs = qd.sample((N,))
lr = qd.log_prob(zs) - pd.log_prob(zs)
mc, se = lr.mean(0), lr.std(0) / math.sqrt(N)
thr = check.family_threshold(P)
print(f"{'pair':>4} {'kl_diag_normals':>15} {'kl_mvn(diag)':>12} {'torch':>10} {'MC':>10} "
      f"{'SE':>7} {'z':>6}")
for i in range(P):
    print(f"{i:>4} {kl_d[i]:15.6f} {kl_full[i]:12.6f} {kl_t[i]:10.6f} {mc[i]:10.5f} "
          f"{se[i]:7.5f} {(mc[i] - kl_d[i]) / se[i]:6.2f}")
assert torch.allclose(kl_d, kl_full, rtol=1e-10) and torch.allclose(kl_d, kl_t, rtol=1e-10)
assert ((mc - kl_d).abs() / se <= thr).all()

# %% [markdown]
# ## 3. The standard-normal prior, in the log-variance form
#
# With $p = \mathcal{N}(0, I)$ ($\mu_p = 0$, $s_p = 1$) and writing $\ell_j = \log\sigma_j^2$,
# $$
# \mathrm{KL}\big(\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)\,\Vert\,\mathcal{N}(0, I)\big)
#   = \tfrac12\sum_j\big(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2\big)
#   = \tfrac12\sum_j\big(e^{\ell_j} + \mu_j^2 - 1 - \ell_j\big)
# $$
# (Kingma & Welling 2013, Appendix B; their $-D_{KL} = \tfrac12\sum(1 + \log\sigma^2 - \mu^2 - \sigma^2)$).
# Each summand is $\ge 0$ ($e^\ell \ge 1 + \ell$), and is $0$ iff $\mu_j = 0, \ell_j = 0$.
# This is `objectives.kl_standard_normal(loc, log_var)`.

# %%
print(inspect.getsource(objectives.kl_standard_normal))

# %%
g = torch.Generator().manual_seed(2)
mu = 1.5 * torch.randn(P, K, generator=g, dtype=torch.float64)
log_var = 2 * torch.randn(P, K, generator=g, dtype=torch.float64)
kl_s = objectives.kl_standard_normal(mu, log_var)
zeros = torch.zeros_like(mu)
qs = dist.Normal(mu, (0.5 * log_var).exp()).to_event(1)
ps = dist.Normal(zeros, torch.ones_like(mu)).to_event(1)
kl_t = torch.distributions.kl_divergence(qs, ps)
zs = qs.sample((N,))
lr = qs.log_prob(zs) - ps.log_prob(zs)
mc, se = lr.mean(0), lr.std(0) / math.sqrt(N)
print(f"{'row':>4} {'kl_standard_normal':>18} {'kl_diag_normals':>15} {'torch':>10} "
      f"{'MC':>10} {'SE':>7} {'z':>6}")
kl_dn = objectives.kl_diag_normals(mu, log_var, zeros, zeros)
for i in range(P):
    print(f"{i:>4} {kl_s[i]:18.6f} {kl_dn[i]:15.6f} {kl_t[i]:10.6f} {mc[i]:10.5f} "
          f"{se[i]:7.5f} {(mc[i] - kl_s[i]) / se[i]:6.2f}")
assert torch.allclose(kl_s, kl_dn, rtol=1e-12) and torch.allclose(kl_s, kl_t, rtol=1e-10)
assert ((mc - kl_s).abs() / se <= thr).all()
assert objectives.kl_standard_normal(zeros, zeros).abs().max() == 0

# %% [markdown]
# **Why the log-variance form.** The encoder outputs an unconstrained number per dimension and
# $\sigma^2 = e^{\ell}$ is positive by construction; and $\log\sigma^2$ is then used as it is, never
# recomputed from $\sigma^2$. In float32 the $\sigma$-form $\log(\sigma^2)$ breaks down for small
# variances: $\sigma^2 = e^{-150}$ underflows to $0$ and $\log 0 = -\infty$ makes the KL infinite
# (and at $e^{-100}$, a subnormal float32, it is already wrong in the second decimal),
# while the $\ell$-form is exact. (`closed_form_kl` receives `scale` from the encoder, which adds
# $10^{-6}$ to $\sigma$, and passes `log_var = 2 * scale.log()`, so it never meets this case; the table
# shows why the formula is written in $\ell$.)

# %%
lv = torch.tensor([-200.0, -150.0, -100.0, -20.0, 0.0, 20.0, 80.0])
mu1 = torch.full_like(lv, 0.3)
ref = objectives.kl_standard_normal(mu1.double()[:, None], lv.double()[:, None])
logvar_form = objectives.kl_standard_normal(mu1[:, None], lv[:, None])   # float32
sigma = torch.exp(0.5 * lv)                                               # float32
sigma_form = 0.5 * (sigma**2 + mu1**2 - 1 - torch.log(sigma**2))
print(f"{'log σ²':>7} {'σ² (float32)':>13} {'ℓ-form f32':>13} "
      f"{'σ-form f32':>13} {'float64':>13}")
for i in range(len(lv)):
    print(f"{lv[i]:7.0f} {(sigma[i] ** 2).item():13.3e} {logvar_form[i].item():13.7g} "
          f"{sigma_form[i].item():13.7g} {ref[i].item():13.7g}")
assert torch.allclose(logvar_form.double(), ref, rtol=1e-6)
assert torch.isinf(sigma_form[:2]).all()

# %% [markdown]
# ## 4. In the VAE: `closed_form_kl` on $q(z\mid x)$ for MNIST test images
#
# `objectives.closed_form_kl(vae, loc, scale)` turns the encoder's `scale` into
# `log_var = 2 log scale` and calls `kl_standard_normal` (prior `normal`) or `kl_diag_normals`
# (prior `diag_normal`, learned mean and scale). Below, on the encoder outputs of a briefly
# trained VAE for real MNIST test images, against `kl_divergence(vae.encode(x), vae.prior())`
# and against the Monte Carlo KL that `check.kl_agreement` extracts from Pyro's `Trace_ELBO`
# traces, per image.

# %%
splits = load_data(
    "mnist",
    root=nb.data_root(),
    mirror=nb.data_mirror(),
    limit=2000 if FAST else 10000,
    binarize="dynamic",
)
print(splits)
print("test set:", splits.test_binarization)


# %%
def train_vae(splits, steps, batch_size=100, lr=1e-3, seed=0, **options):
    """`steps` Adam steps of pyro.infer.SVI on the ELBO (loss = objectives.build("trace", vae))
    over dynamically binarized MNIST minibatches; returns the VAE and the losses (negative
    ELBO in nats per training example)."""
    pyro.set_rng_seed(seed)
    vae = VAE(x_shape=splits.x_shape, **options)
    loss = objectives.build("trace", vae)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}), loss=loss)
    gen = torch.Generator().manual_seed(seed)
    n, losses = splits.train.shape[0], []
    while len(losses) < steps:
        for xb in splits.train_batches(batch_size, gen):
            losses.append(svi.step(xb, n) / n)
            if len(losses) == steps:
                break
    vae.eval()
    return vae, losses


# %%
vae, _ = train_vae(splits, steps=100 if FAST else 400, z_dim=20)
x = splits.test[:64]
with torch.no_grad():
    loc, scale = vae.encoder(x)
    kl_code = objectives.closed_form_kl(vae, loc, scale)
    kl_torch = torch.distributions.kl_divergence(vae.encode(x), vae.prior())
print("KL(q(z|x) || p(z)) for the first 8 images:", np.round(kl_code[:8].numpy(), 3))
print("max |closed_form_kl - torch| =", f"{(kl_code - kl_torch).abs().max():.1e}")
assert torch.allclose(kl_code, kl_torch, rtol=1e-5, atol=1e-4)
row = check.kl_agreement(vae, x, num_particles=2000 if FAST else 10000)
print(row.detail, f"| worst z {row.z:+.2f}, threshold {row.threshold:.2f}")
assert row.passed

# %%
# the diag_normal prior: same encoder, a prior with its own mean and scale
vae_d = VAE(x_shape=splits.x_shape, z_dim=20, prior="diag_normal")
vae_d.encoder.load_state_dict(vae.encoder.state_dict())
g = torch.Generator().manual_seed(3)
with torch.no_grad():
    vae_d.prior_net.loc.copy_(0.5 * torch.randn(20, generator=g))
vae_d.prior_net.scale = 0.5 + torch.rand(20, generator=g)
with torch.no_grad():
    kl_code = objectives.closed_form_kl(vae_d, loc, scale)
    kl_torch = torch.distributions.kl_divergence(vae_d.encode(x), vae_d.prior())
print("diag_normal prior: max |closed_form_kl - torch| =",
      f"{(kl_code - kl_torch).abs().max():.1e}")
assert torch.allclose(kl_code, kl_torch, rtol=1e-5, atol=1e-4)
row = check.kl_agreement(vae_d, x, num_particles=2000 if FAST else 10000)
print(row.detail, f"| worst z {row.z:+.2f}, threshold {row.threshold:.2f}")
assert row.passed

# %% [markdown]
# **The KL is not symmetric.** The ELBO needs $\mathrm{KL}(q(z\mid x)\,\Vert\,p(z))$: an expectation under
# $q$, small when $q$ sits inside the prior. The reverse $\mathrm{KL}(p(z)\,\Vert\,q(z\mid x))$ averages under
# the prior and punishes a narrow $q$ by $\approx \tfrac12\sum_j 1/\sigma_j^2$. On the same encoder outputs
# they differ by a wide margin, so the two cannot be swapped (notebook 01 shows that
# $\mathbb{E}_q[\log p(x\mid z)] + \mathrm{KL}(p\,\Vert\,q)$ is not a bound):

# %%
with torch.no_grad():
    kl_qp = torch.distributions.kl_divergence(vae.encode(x), vae.prior())
    kl_pq = torch.distributions.kl_divergence(vae.prior(), vae.encode(x))
zeros = torch.zeros_like(loc)
kl_pq_code = objectives.kl_diag_normals(zeros, zeros, loc, 2 * scale.log())  # swapped args
assert torch.allclose(kl_pq, kl_pq_code, rtol=1e-5)
print(f"{'image':>5} {'KL(q||p)':>9} {'KL(p||q)':>9} {'min σ':>7}")
for i in range(8):
    print(f"{i:>5} {kl_qp[i]:9.3f} {kl_pq[i]:9.3f} {scale[i].min():7.3f}")
print(f"mean over {x.shape[0]} images: KL(q||p) = {kl_qp.mean():.2f}, "
      f"KL(p||q) = {kl_pq.mean():.2f}")
assert (kl_pq - kl_qp).abs().mean() > 1.0

# %% [markdown]
# ## Summary
#
# * `objectives.kl_mvn` (Cholesky route) equals `torch.distributions.kl_divergence` and the
#   $\Sigma^{-1}$/`slogdet` route term by term to ~$10^{-10}$, and the Monte Carlo mean of
#   $\log q - \log p$ within standard errors; the same Monte Carlo test rejects two wrong formulas by
#   hundreds of standard errors.
# * `kl_diag_normals` = `kl_mvn` on diagonal covariances; `kl_standard_normal` = `kl_diag_normals`
#   against $\mathcal{N}(0, I)$; both match `torch` and Monte Carlo. The log-variance form stays finite
#   in float32 where the $\sigma$-form returns $\infty$.
# * $\int p\log p = \mathbb{E}_p[\log p(Z)] = -H[p]$: the quadrature, the Monte Carlo mean and the
#   formula agree, and differ from $\mathbb{E}[Z]$, $\log p(\mathbb{E}Z)$ and $\log\int p^2$.
# * In the VAE, `closed_form_kl` matches `torch` and the per-image Monte Carlo KL from Pyro's traces
#   for both closed-form priors; $\mathrm{KL}(p\,\Vert\,q) \ne \mathrm{KL}(q\,\Vert\,p)$.
