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
# The ELBO's second term, $\mathrm{KL}(q(z\mid x)\,\Vert\,p(z))$ ([01](01_elbo.ipynb), section 1c), has a
# closed form when both are Gaussian. This notebook derives the general multivariate formula (trace, Mahalanobis and
# log-determinant terms), its diagonal and standard-normal special cases, the log-variance form
# the code uses, and the full-covariance KL to $\mathcal{N}(0, I)$ (where "$\mu^2$" must be
# $\mu^\top\mu$), and checks each `pyrovae.objectives` function against
# `torch.distributions.kl_divergence` (to round-off) and against Monte Carlo (within
# standard errors). Along the way: $\int p \log p$ is minus the entropy, and the KL is not
# symmetric.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, few particles, few steps

# %%
import inspect
import math

import numpy as np
import pyro.distributions as dist
import torch

from pyrovae import check, objectives
from pyrovae.model import VAE

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
# same test to show that it has the power to catch them. How far a wrong formula lands from the
# Monte Carlo mean depends on the pair: the swap changes the KL by exactly
# $-(\log\det\Sigma_p - \log\det\Sigma_q)$, so it is rejected by $|\text{logdet}|/\mathrm{SE}$ standard errors,
# few where the two determinants are close (check 1's `logdet` column). The lines under the
# table give, for each wrong formula, its smallest and largest $|z|$ over the six pairs and on how
# many pairs it is rejected.

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
    zw = ((mc - w).abs() / se).sort().values
    print(f"{name}: |z| over the {P} pairs from {zw[0]:.1f} to {zw[-1]:.1f} (median "
          f"{zw.median():.1f}); rejected (|z| > {thr:.2f}) for {int((zw > thr).sum())} of {P}")
    assert zw[-1] > 10 * thr, f"the test cannot tell {name}"


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
# ### 3b. A full covariance against $\mathcal{N}(0, I)$
#
# For a guide with a full covariance, $q = \mathcal{N}(\mu, \Sigma)$ (say $\Sigma = LL^\top$ from a
# Cholesky factor that an encoder outputs), against the prior $\mathcal{N}(0, I_k)$, put
# $\mu_q = \mu$, $\Sigma_q = \Sigma$, $\mu_p = 0$, $\Sigma_p = I_k$ into the boxed formula of section 1:
# $\Sigma_p^{-1} = I_k$ and $\log\det I_k = 0$, so
# $$
# \boxed{\;\mathrm{KL}\big(\mathcal{N}(\mu, \Sigma)\,\Vert\,\mathcal{N}(0, I_k)\big)
#   = \tfrac12\big(\mathrm{tr}\,\Sigma + \mu^\top\mu - k - \log\det\Sigma\big).\;}
# $$
# Every term is a number: $\mu^\top\mu = \lVert\mu\rVert^2 = \sum_j \mu_j^2$. A write-up that prints this
# formula with "$\mu^2$" can only mean that number, but read as code, `mu**2` is the *vector*
# $(\mu_1^2, \dots, \mu_k^2)$: added to the numbers $\mathrm{tr}\,\Sigma - k - \log\det\Sigma$ it broadcasts
# them into each of its $k$ entries, so a `.sum()` afterwards counts them $k$ times (an excess of
# $\tfrac{k-1}2(\mathrm{tr}\,\Sigma - k - \log\det\Sigma)$), and a `.mean()` divides $\lVert\mu\rVert^2$ by $k$.
# (In the diagonal formula of section 3 the sum over $j$ encloses everything, and there the
# per-dimension $\mu_j^2$ is right.) The log-determinant is that of the whole matrix,
# $\log\det\Sigma = 2\sum_i \log L_{ii}$; the diagonal formula fed with the diagonal of a correlated
# $\Sigma$ uses $\sum_i \log \Sigma_{ii}$ instead, which is larger (Hadamard's inequality
# $\det\Sigma \le \prod_i \Sigma_{ii}$), and so understates the KL by
# $\tfrac12(\sum_i\log\Sigma_{ii} - \log\det\Sigma)$. Checked on six random pairs in $k = 5$ dimensions,
# against `torch.distributions.kl_divergence` of two `MultivariateNormal`s and `objectives.kl_mvn`:

# %%
g = torch.Generator().manual_seed(4)
P, K = 6, 5
mu_f = torch.randn(P, K, generator=g, dtype=torch.float64)
L_f = (0.6 * torch.randn(P, K, K, generator=g, dtype=torch.float64).tril(-1)
       + torch.diag_embed(0.3 + torch.rand(P, K, generator=g, dtype=torch.float64)))
Sigma_f = L_f @ L_f.transpose(-1, -2)                 # full covariances, Cholesky factor L_f
I_k, zero_k = torch.eye(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)

tr = Sigma_f.diagonal(dim1=-2, dim2=-1).sum(-1)
mu_t_mu = (mu_f * mu_f).sum(-1)                       # mu^T mu, one number per pair
logdet = 2 * L_f.diagonal(dim1=-2, dim2=-1).log().sum(-1)
kl_full = 0.5 * (tr + mu_t_mu - K - logdet)
kl_torch = torch.distributions.kl_divergence(dist.MultivariateNormal(mu_f, scale_tril=L_f),
                                             dist.MultivariateNormal(zero_k, I_k))
kl_general = objectives.kl_mvn(mu_f, Sigma_f, zero_k.expand(P, K), I_k.expand(P, K, K))

broadcast = 0.5 * ((tr - K - logdet)[:, None] + mu_f**2)   # "mu^2" as code: shape (P, K)
diag_only = objectives.kl_standard_normal(mu_f, Sigma_f.diagonal(dim1=-2, dim2=-1).log())
print(f"{'pair':>4} {'formula':>9} {'torch MVN':>10} {'kl_mvn':>9} | {'mu**2 .sum()':>12} "
      f"{'mu**2 .mean()':>13} {'diagonal only':>13}")
for i in range(P):
    print(f"{i:>4} {kl_full[i]:9.5f} {kl_torch[i]:10.5f} {kl_general[i]:9.5f} | "
          f"{broadcast[i].sum():12.5f} {broadcast[i].mean():13.5f} {diag_only[i]:13.5f}")
print("shape of the broadcast expression before reducing:", tuple(broadcast.shape))
assert torch.allclose(kl_full, kl_torch, rtol=1e-10) and torch.allclose(kl_full, kl_general,
                                                                       rtol=1e-10)
excess = 0.5 * (tr - K - logdet)
assert torch.allclose(broadcast.sum(-1), kl_full + (K - 1) * excess, rtol=1e-10)
assert torch.allclose(broadcast.mean(-1), excess + mu_t_mu / (2 * K), rtol=1e-10)
assert ((broadcast.sum(-1) - kl_full).abs() > 0.5).all()
assert ((broadcast.mean(-1) - kl_full).abs() > 0.5).all()
hadamard = 0.5 * (Sigma_f.diagonal(dim1=-2, dim2=-1).log().sum(-1) - logdet)
assert torch.allclose(kl_full - diag_only, hadamard, rtol=1e-10) and (hadamard > 0).all()

# with a diagonal Sigma the full formula is section 3's diagonal one
diag_var = Sigma_f.diagonal(dim1=-2, dim2=-1)
kl_of_diag = 0.5 * (diag_var.sum(-1) + mu_t_mu - K - diag_var.log().sum(-1))
assert torch.allclose(kl_of_diag, objectives.kl_standard_normal(mu_f, diag_var.log()), rtol=1e-12)

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
splits = nb.load_data("mnist")  # dynamically binarized; fast mode: 2,000 training images
print(splits)
print("test set:", splits.test_binarization)

# %%
vae, _ = nb.train_vae(splits, steps=100 if FAST else 400, z_dim=20)
x = splits.test[:16 if FAST else 64]
with torch.no_grad():
    loc, scale = vae.encoder(x)
    kl_code = objectives.closed_form_kl(vae, loc, scale)
    kl_torch = torch.distributions.kl_divergence(vae.encode(x), vae.prior())
print("KL(q(z|x) || p(z)) for the first 8 images:", np.round(kl_code[:8].numpy(), 3))
print("max |closed_form_kl - torch| =", f"{(kl_code - kl_torch).abs().max():.1e}")
assert torch.allclose(kl_code, kl_torch, rtol=1e-5, atol=1e-4)
row = check.kl_agreement(vae, x, num_particles=300 if FAST else 10000)
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
row = check.kl_agreement(vae_d, x, num_particles=300 if FAST else 10000)
print(row.detail, f"| worst z {row.z:+.2f}, threshold {row.threshold:.2f}")
assert row.passed

# %% [markdown]
# **The KL is not symmetric.** The ELBO needs $\mathrm{KL}(q(z\mid x)\,\Vert\,p(z))$: an expectation under
# $q$, small when $q$ sits inside the prior. The reverse $\mathrm{KL}(p(z)\,\Vert\,q(z\mid x))$ averages under
# the prior and punishes a narrow $q$: section 2's formula with the arguments swapped
# ($p = \mathcal{N}(0, I)$ first) is
# $$
# \mathrm{KL}\big(\mathcal{N}(0, I)\,\Vert\,\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)\big)
#   = \tfrac12\sum_j\Big[\frac{1 + \mu_j^2}{\sigma_j^2} - 1 + \log\sigma_j^2\Big],
# $$
# which for small $\sigma_j$ is dominated by $\tfrac12\sum_j (1 + \mu_j^2)/\sigma_j^2$: the approximation
# $\tfrac12\sum_j 1/\sigma_j^2$ drops the mean term $\tfrac12\sum_j \mu_j^2/\sigma_j^2$. On the same encoder
# outputs the two directions differ by a wide margin, so they cannot be swapped
# ([01](01_elbo.ipynb), section 3, shows that $\mathbb{E}_q[\log p(x\mid z)] + \mathrm{KL}(p\,\Vert\,q)$ is not a
# bound). The table checks the formula against `torch`, and then narrows each image's $q$ to
# $q_c = \mathcal{N}(\mu, c^2\,\mathrm{diag}\,\sigma^2)$ with $c = 0.05$, where the leading term must be within
# 2% and the approximation without the mean term falls short by $\tfrac12\sum_j \mu_j^2/(c\sigma_j)^2$:

# %%
with torch.no_grad():
    kl_qp = torch.distributions.kl_divergence(vae.encode(x), vae.prior())
    kl_pq = torch.distributions.kl_divergence(vae.prior(), vae.encode(x))
zeros = torch.zeros_like(loc)
kl_pq_code = objectives.kl_diag_normals(zeros, zeros, loc, 2 * scale.log())  # swapped args
assert torch.allclose(kl_pq, kl_pq_code, rtol=1e-5)
mu2 = loc.double().pow(2)

def kl_prior_to(var):
    """KL(N(0, I) || N(loc, diag var)) by the formula above."""
    return 0.5 * ((1 + mu2) / var - 1 + var.log()).sum(-1)

assert torch.allclose(kl_pq.double(), kl_prior_to(scale.double().pow(2)), rtol=1e-5)
C = 0.05
var_c = (C * scale.double()).pow(2)
with torch.no_grad():
    std_normal = dist.Normal(torch.zeros_like(mu2), 1.0).to_event(1)  # p(z), in float64
    kl_pq_c = torch.distributions.kl_divergence(
        std_normal, dist.Normal(loc.double(), C * scale.double()).to_event(1))
lead, no_mean = 0.5 * ((1 + mu2) / var_c).sum(-1), 0.5 * (1 / var_c).sum(-1)
assert torch.allclose(kl_pq_c, kl_prior_to(var_c), rtol=1e-10)
print(f"{'':>5} {'':>9} {'':>9} {'':>7} | q narrowed to N(μ, ({C}σ)²):")
print(f"{'image':>5} {'KL(q||p)':>9} {'KL(p||q)':>9} {'min σ':>7} | {'KL(p||q_c)':>10} "
      f"{'½Σ(1+μ²)/(cσ)²':>15} {'½Σ1/(cσ)²':>10}")
for i in range(8):
    print(f"{i:>5} {kl_qp[i]:9.3f} {kl_pq[i]:9.3f} {scale[i].min():7.3f} | {kl_pq_c[i]:10.1f} "
          f"{lead[i]:15.1f} {no_mean[i]:10.1f}")
rel_lead, rel_no_mean = lead / kl_pq_c - 1, no_mean / kl_pq_c - 1
print(f"mean over {x.shape[0]} images: KL(q||p) = {kl_qp.mean():.2f}, "
      f"KL(p||q) = {kl_pq.mean():.2f}")
print(f"narrowed: relative error of ½Σ(1+μ²)/(cσ)² from {rel_lead.min():+.2%} to "
      f"{rel_lead.max():+.2%}; of ½Σ1/(cσ)² from {rel_no_mean.min():+.1%} to "
      f"{rel_no_mean.max():+.1%}")
assert (kl_pq - kl_qp).abs().mean() > 1.0
assert rel_lead.abs().max() < 0.02
assert torch.allclose(lead - no_mean, 0.5 * (mu2 / var_c).sum(-1), rtol=1e-10)

# %% [markdown]
# ## Summary
#
# * `objectives.kl_mvn` (Cholesky route) equals `torch.distributions.kl_divergence` and the
#   $\Sigma^{-1}$/`slogdet` route term by term to ~$10^{-10}$, and the Monte Carlo mean of
#   $\log q - \log p$ within standard errors. The same test (400,000 draws per pair in the full run)
#   rejected both deliberately wrong formulas on all six pairs, by margins that depend on the pair:
#   the Mahalanobis term with $\Sigma_q^{-1}$ by 66 to 791 standard errors, the swapped
#   log-determinants by 4.1 to 200 (4.1 on pair 2, whose two log-determinants differ by only 0.036,
#   which is exactly that formula's error).
# * `kl_diag_normals` = `kl_mvn` on diagonal covariances; `kl_standard_normal` = `kl_diag_normals`
#   against $\mathcal{N}(0, I)$; both match `torch` and Monte Carlo. The log-variance form stays finite
#   in float32 where the $\sigma$-form returns $\infty$.
# * Against $\mathcal{N}(0, I)$ a full covariance gives
#   $\tfrac12(\mathrm{tr}\,\Sigma + \mu^\top\mu - k - \log\det\Sigma)$, equal to `torch`'s `MultivariateNormal`
#   KL to round-off; "$\mu^2$" taken as the vector `mu**2` (then summed or averaged), or the
#   diagonal formula on the diagonal of $\Sigma$, gives other numbers, by exactly the amounts
#   derived.
# * $\int p\log p = \mathbb{E}_p[\log p(Z)] = -H[p]$: the quadrature, the Monte Carlo mean and the
#   formula agree, and differ from $\mathbb{E}[Z]$, $\log p(\mathbb{E}Z)$ and $\log\int p^2$.
# * In the VAE, `closed_form_kl` matches `torch` and the per-image Monte Carlo KL from Pyro's traces
#   for both closed-form priors; $\mathrm{KL}(p\,\Vert\,q) \ne \mathrm{KL}(q\,\Vert\,p)$ (87.4 against 17.7 nats on
#   average over 64 test images in the full run). The reverse KL is
#   $\tfrac12\sum_j[(1 + \mu_j^2)/\sigma_j^2 - 1 + \log\sigma_j^2]$: for $q$ narrowed to $0.05\,\sigma$ its leading
#   term $\tfrac12\sum_j (1 + \mu_j^2)/\sigma_j^2$ was within 0.5%, while $\tfrac12\sum_j 1/\sigma_j^2$, which drops
#   the mean, fell short by 33% to 70%.

# %% [markdown]
# ## References
#
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes, Appendix B (the KL to
#   $\mathcal{N}(0, I)$ in closed form). [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# * K. B. Petersen, M. S. Pedersen (2012). The Matrix Cookbook (the trace trick, expectations of
#   quadratic forms, the Gaussian KL). [PDF](https://www.math.uwaterloo.ca/~hwolkowi/matrixcookbook.pdf)
# * T. M. Cover, J. A. Thomas (2006). Elements of Information Theory, 2nd ed., Wiley: chapter 8
#   (differential entropy; the entropy of a Gaussian) and Hadamard's inequality (chapter 17).
# * C. M. Bishop (2006). Pattern Recognition and Machine Learning, Springer: sections 1.6
#   (entropy, KL divergence) and 10.1 (the two directions of the KL).
#
# The other notebooks: [00 First steps](00_first_steps.ipynb) · [01 The ELBO](01_elbo.ipynb)
# · [03 Reparameterization](03_reparameterization.ipynb) ·
# [04 Training on MNIST](04_train_mnist.ipynb) ·
# [05 Priors and likelihoods](05_priors_and_likelihoods.ipynb) ·
# [06 Posterior checks](06_posterior_checks.ipynb) · [07 Tighter bounds](07_tighter_bounds.ipynb).
