# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The evidence lower bound (ELBO)
#
# Kingma & Welling (2013) fit a latent-variable model $p_\theta(x, z) = p(z)\,p_\theta(x\mid z)$
# by maximising a lower bound on $\log p_\theta(x)$ built from an approximate posterior
# $q_\phi(z\mid x)$ (the generative story, the Pyro primitives and `pyrovae.VAE` are introduced in
# [00](00_first_steps.ipynb)). This notebook
#
# 1. derives the bound twice: through Jensen's inequality, and as an exact identity
#    $\log p(x) = \mathrm{ELBO}(x) + \mathrm{KL}(q(z\mid x) \,\Vert\, p(z\mid x))$;
# 2. splits it into $\mathbb{E}_q[\log p(x\mid z)] - \mathrm{KL}(q(z\mid x)\,\Vert\,p(z))$ and shows
#    the Pyro `model`/`guide` and the `pyrovae` function behind every term;
# 3. checks the identity to machine precision on a VAE whose $\log p(x)$ and $p(z\mid x)$
#    are known exactly (linear-Gaussian decoder), and on a non-linear VAE trained on MNIST
#    with a 1-d latent, where $\log p(x)$ is computed by quadrature;
# 4. shows that maximum likelihood is minimizing $\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)$, that
#    setting $q$ to the exact posterior (done in step 3) is the E-step of EM, and that the
#    gradient with respect to the decoder's parameters is a plain Monte Carlo average;
# 5. checks Pyro's sampled ELBO (`Trace_ELBO`) against the closed-form-KL ELBO on real
#    MNIST test images, with standard errors shrinking like $1/\sqrt{N}$;
# 6. shows numerically why the objective "$\mathbb{E}_q[\log p(x\mid z)] + \mathrm{KL}(p(z)\,\Vert\,q(z\mid x))$"
#    (wrong sign *and* direction, seen in write-ups) is not a lower bound.
#
# The statistical assertions use tolerances derived from standard errors, the exact ones float64
# round-off, and a few fixed margins sit far from the values they bound, so a wrong
# implementation fails the notebook. `PYROVAE_FAST=1` runs a smaller version.

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
from pyrovae.model import VAE

# %% [markdown]
# ## 1. Two derivations of the bound
#
# ### 1a. Jensen's inequality
#
# For any density $q(z\mid x)$ that is positive wherever $p(x, z)$ is,
# $$
# \log p(x) = \log \int p(x, z)\,dz
#           = \log \int q(z\mid x)\,\frac{p(x, z)}{q(z\mid x)}\,dz
#           = \log \mathbb{E}_{q(z\mid x)}\!\left[\frac{p(x, z)}{q(z\mid x)}\right]
#           \;\ge\; \mathbb{E}_{q(z\mid x)}\!\left[\log \frac{p(x, z)}{q(z\mid x)}\right]
#           =: \mathcal{L}(x),
# $$
# because $\log$ is concave ($\log \mathbb{E}[W] \ge \mathbb{E}[\log W]$). Jensen says
# there is a gap but not what it is.
#
# ### 1b. The exact identity
#
# For every $z$ with $p(z\mid x) > 0$, Bayes' rule gives $\log p(x) = \log p(x, z) - \log p(z\mid x)$.
# The left side does not depend on $z$, so it equals its own average under $q(z\mid x)$:
# $$
# \log p(x) = \mathbb{E}_{q}\big[\log p(x, z) - \log q(z\mid x)\big]
#           + \mathbb{E}_{q}\big[\log q(z\mid x) - \log p(z\mid x)\big]
#           = \mathcal{L}(x) + \mathrm{KL}\big(q(z\mid x)\,\Vert\,p(z\mid x)\big).
# $$
# Since $\mathrm{KL} \ge 0$, this *is* the bound, and the Jensen gap is exactly the KL
# divergence from $q$ to the true posterior: $\mathcal{L}(x) = \log p(x)$ iff
# $q(z\mid x) = p(z\mid x)$. For fixed $\theta$, maximising $\mathcal{L}$ over $q$ is
# minimising $\mathrm{KL}(q \,\Vert\, p(z\mid x))$.
#
# ### 1c. Reconstruction minus KL to the prior
#
# With $\log p(x, z) = \log p(x\mid z) + \log p(z)$,
# $$
# \mathcal{L}(x) = \mathbb{E}_{q(z\mid x)}\big[\log p(x\mid z)\big]
#                - \mathbb{E}_{q(z\mid x)}\big[\log q(z\mid x) - \log p(z)\big]
#                = \underbrace{\mathbb{E}_{q(z\mid x)}\big[\log p(x\mid z)\big]}_{\text{reconstruction}}
#                - \underbrace{\mathrm{KL}\big(q(z\mid x)\,\Vert\,p(z)\big)}_{\text{closed form for Gaussians}}
# $$
# (Kingma & Welling 2013, eq. 3). The KL here is from $q$ to the **prior**, with $q$
# first: it is an expectation under $q$, which is what we can sample.
# (Written as $\mathbb{E}_q[\log p(x, z)] + H[q]$, the second term is the entropy
# $H[q] = -\int q \log q$; [02](02_gaussian_kl.ipynb) shows numerically that $\int q \log q$ is *minus the
# entropy*, $\mathbb{E}_q[\log q(Z)]$, and not an "expected value" of $z$.)

# %% [markdown]
# ## 2. The Pyro program, and the function behind each term
#
# | mathematics | `pyrovae` |
# |---|---|
# | $p(z) = \mathcal{N}(0, I)$ | `vae.prior()` |
# | $q(z\mid x) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x))$ | `vae.encode(x)`; its parameters `vae.encoder(x) -> (loc, scale)` |
# | $\log p(x\mid z)$ | `vae.decode(z).log_prob(x)` |
# | $\mathrm{KL}(q(z\mid x)\,\Vert\,p(z))$ in closed form | `objectives.closed_form_kl(vae, loc, scale)` → `objectives.kl_standard_normal(loc, log_var)` |
# | $\mathbb{E}_q[\log p(x\mid z)]$ by $z = \mu + \sigma\varepsilon$ | `objectives.analytic_elbo_terms` |
# | one sample of $\log p(x, z) - \log q(z\mid x)$, $z \sim q$ | `pyro.infer.Trace_ELBO` (`objectives.pyro_elbo("trace")`); per particle: `check.trace_elbo_particles` |
# | one sample of $\log p(x\mid z) - \mathrm{KL}$ (closed form) | `check.closed_form_elbo_particles`; as a loss: `objectives.build("analytic", vae)` |
# | the training loss $-\frac{N}{B}\sum_b \mathcal{L}_\beta(x_b)$ of a minibatch | `objectives.build("trace", vae).loss(x, num_data, beta)`; per example: `.bound(x, beta)` |
#
# The model samples the site `"z"` from the prior and observes `"x"`; the guide samples
# the same site `"z"` from $q(z\mid x)$. `Trace_ELBO` runs the guide, replays the model
# with the guide's `z`, and sums every site's log-density: model sites count $+$, guide
# sites $-$, which is one sample of $\log p(x, z) - \log q(z\mid x)$. The `data` plate
# scales by `num_data / B` on minibatches. The objectives of `pyrovae.objectives` read the
# same two traces per example and weight the KL term by `beta`, an argument of their loss
# (here `beta = 1`, the exact ELBO); the model and the guide themselves know no `beta`.

# %%
print(inspect.getsource(VAE.model))
print(inspect.getsource(VAE.guide))

# %%
print(inspect.getsource(objectives.closed_form_kl))
print(inspect.getsource(objectives.kl_standard_normal))
print(inspect.getsource(objectives.analytic_elbo_terms))

# %% [markdown]
# ## 3. The identity, exactly: a linear-Gaussian VAE
#
# With `hidden=()` the encoder and the decoder of `VAE` are single affine layers, and with
# `likelihood="gaussian"` and a fixed scale $s$ the model is probabilistic PCA:
# $$
# p(z) = \mathcal{N}(0, I_k), \qquad p(x\mid z) = \mathcal{N}(Wz + b,\; s^2 I_D).
# $$
# Everything is Gaussian, so completing the square gives the evidence and the posterior:
# $$
# p(x) = \mathcal{N}\big(x;\; b,\; WW^\top + s^2 I_D\big), \qquad
# p(z\mid x) = \mathcal{N}\big(m(x), S\big), \quad S = \big(I_k + W^\top W / s^2\big)^{-1}, \quad
# m(x) = S W^\top (x - b)/s^2 .
# $$
# For $q = \mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)$ the reconstruction term is also in closed form,
# since $\mathbb{E}_q\lVert x - Wz - b\rVert^2 = \lVert x - W\mu - b\rVert^2 + \sum_j \sigma_j^2 \lVert w_j\rVert^2$:
# $$
# \mathbb{E}_q[\log p(x\mid z)] = -\tfrac{D}{2}\log(2\pi s^2)
#     - \frac{\lVert x - W\mu - b\rVert^2 + \sum_j \sigma_j^2 \lVert w_j\rVert^2}{2 s^2}.
# $$
# So $\log p(x)$, $\mathcal{L}(x)$ and $\mathrm{KL}(q\,\Vert\,p(z\mid x))$ (`objectives.kl_mvn`,
# derived in [02](02_gaussian_kl.ipynb)) can each be computed *exactly* and independently, in float64.
# We pick $W$ with orthogonal columns so that $S$ is diagonal: then the encoder can
# represent the exact posterior, and we can watch the gap close.

# %%
D, K, S_LIK, B_LIN = 6, 2, 0.5, 5
pyro.set_rng_seed(1)
lin = VAE(x_shape=(D,), z_dim=K, hidden=(), likelihood="gaussian",
          likelihood_scale=S_LIK).double()
print(lin.encoder, lin.decoder, sep="\n")
dec_layer, enc_layer = lin.decoder.net[0], lin.encoder.net[0]

g = torch.Generator().manual_seed(1)
Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
W = Q[:, :K] * torch.tensor([2.0, 1.0], dtype=torch.float64)  # orthogonal columns
b = 0.3 * torch.randn(D, generator=g, dtype=torch.float64)
with torch.no_grad():
    dec_layer.weight.copy_(W)
    dec_layer.bias.copy_(b)
I_D, I_K = torch.eye(D, dtype=torch.float64), torch.eye(K, dtype=torch.float64)
evidence = dist.MultivariateNormal(b, W @ W.T + S_LIK**2 * I_D)  # p(x)
S_post = torch.linalg.inv(I_K + W.T @ W / S_LIK**2)                # Cov of p(z|x)

def log_evidence(x):
    return evidence.log_prob(x)

def posterior(x):
    m = (x - b) @ W @ S_post / S_LIK**2
    return m, S_post.expand(x.shape[0], K, K)

def exact_elbo_terms(vae, x):
    """Closed-form E_q[log p(x|z)] and objectives.closed_form_kl for the linear VAE."""
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        resid = x - loc @ W.T - b
        recon = -0.5 * D * math.log(2 * math.pi * S_LIK**2) - (
            resid.pow(2).sum(-1) + (scale.pow(2) * W.pow(2).sum(0)).sum(-1)
        ) / (2 * S_LIK**2)
        kl = objectives.closed_form_kl(vae, loc, scale)
    return recon, kl, loc, scale

x_lin = evidence.sample((B_LIN,))  # data drawn from the model itself

# The formulas above are the model that vae.decode / vae.prior implement: Bayes' rule
# log p(x|z) + log p(z) - log p(x) = log p(z|x) holds at arbitrary z, to round-off.
z_any = torch.randn(B_LIN, K, dtype=torch.float64)
with torch.no_grad():
    lhs = lin.decode(z_any).log_prob(x_lin) + lin.prior().log_prob(z_any) - log_evidence(x_lin)
rhs = dist.MultivariateNormal(*posterior(x_lin)).log_prob(z_any)
print("max |Bayes' rule residual| =", (lhs - rhs).abs().max().item())
assert torch.allclose(lhs, rhs, rtol=0, atol=1e-10)


# %% [markdown]
# **The identity** with the encoder at its random initialisation (so $q$ is far from the
# posterior): the three numbers are computed by three different routes, and
# $\mathcal{L} + \mathrm{KL}(q\,\Vert\,p(z\mid x)) - \log p(x)$ must vanish to float64 round-off.

# %%
def identity_table(vae, x):
    recon, kl, loc, scale = exact_elbo_terms(vae, x)
    elbo = recon - kl
    m, S = posterior(x)
    kl_post = objectives.kl_mvn(loc, torch.diag_embed(scale**2), m, S)  # KL(q || p(z|x))
    logpx = log_evidence(x)
    print(f"{'':>3} {'log p(x)':>11} {'ELBO':>11} {'KL(q||p(z|x))':>14} {'ELBO+KL-log p(x)':>17}")
    for i in range(x.shape[0]):
        print(f"{i:>3} {logpx[i]:11.6f} {elbo[i]:11.6f} {kl_post[i]:14.6f} "
              f"{(elbo + kl_post - logpx)[i]:17.2e}")
    return logpx, elbo, kl_post

logpx, elbo_exact, kl_post = identity_table(lin, x_lin)
assert (elbo_exact + kl_post - logpx).abs().max() < 1e-10
assert (elbo_exact < logpx).all() and (kl_post > 0).all()

# %% [markdown]
# **Pyro's sampled ELBO is the same quantity.** `check.trace_elbo_particles` runs
# `Trace_ELBO`'s own vectorized traces of `model` and `guide` and returns, per particle,
# $\log p(x, z) - \log q(z\mid x)$; its mean must match the exact ELBO within a few
# standard errors (threshold Bonferroni-adjusted over the data points by `check.family_threshold`).

# %%
N_LIN = 4000 if FAST else 40000
thr = check.family_threshold(B_LIN)
print(f"{'':>3} {'exact ELBO':>11} {'Trace_ELBO':>11} {'SE':>7} {'z':>6}")
for i in range(B_LIN):
    parts = check.trace_elbo_particles(lin, x_lin[i : i + 1], N_LIN)
    mean, se = parts.mean().item(), parts.std().item() / math.sqrt(N_LIN)
    zscore = (mean - elbo_exact[i].item()) / se
    print(f"{i:>3} {elbo_exact[i]:11.5f} {mean:11.5f} {se:7.4f} {zscore:6.2f}")
    assert abs(zscore) <= thr
print(f"|z| threshold {thr:.2f} (Bonferroni over {B_LIN} data points)")

# %% [markdown]
# **Closing the gap.** Set the encoder (still one affine layer of `VAE`) to the exact
# posterior: `loc` $= m(x)$ is affine in $x$, and `scale` $= \sqrt{\mathrm{diag}\,S}$ is constant,
# so the first half of the layer's weights is $(W S/s^2)^\top$ and the second half zero, with
# bias $\log \mathrm{diag}\,S$ (the encoder's `scale_fn="exp"` takes $\sigma = e^{\text{raw}/2}$,
# plus $10^{-6}$). Then $\mathcal{L}(x) = \log p(x)$ and every single particle of `Trace_ELBO`
# equals $\log p(x)$: with $q = p(z\mid x)$, $\log p(x,z) - \log q(z\mid x) = \log p(x)$
# whatever $z$ is drawn. Setting $q$ to the exact posterior, which makes the bound tight, is
# the **E-step** of the EM algorithm (section 4b).

# %%
A = W @ S_post / S_LIK**2  # m(x) = (x - b) @ A

def set_encoder(vae, scale_factor=1.0, shift=0.0):
    """q(z|x) = N(m(x) + shift, diag(scale_factor^2 * S)) through the encoder's weights."""
    with torch.no_grad():
        weight = torch.zeros(2 * K, D, dtype=torch.float64)
        bias = torch.zeros(2 * K, dtype=torch.float64)
        weight[:K] = A.T
        bias[:K] = -(b @ A) + shift
        bias[K:] = torch.log(scale_factor**2 * torch.diagonal(S_post))
        vae.encoder.net[0].weight.copy_(weight)
        vae.encoder.net[0].bias.copy_(bias)

set_encoder(lin)
logpx, elbo_exact, kl_post = identity_table(lin, x_lin)
parts = check.trace_elbo_particles(lin, x_lin, 1000)
print("Trace_ELBO particles (batch sums): mean", f"{parts.mean():.8f}",
      "std", f"{parts.std():.2e}", "| sum of log p(x):", f"{logpx.sum():.8f}")
assert kl_post.max() < 1e-9 and (logpx - elbo_exact).abs().max() < 1e-9
assert parts.std() < 1e-4 and abs(parts.mean() - logpx.sum()) < 1e-4

# %% [markdown]
# **Jensen, numerically.** With $w = p(x, z)/q(z\mid x)$, $z \sim q$: the mean of $\log w$
# estimates $\mathcal{L}(x)$, while the log of the mean of $w$ estimates $\log \mathbb{E}_q[w] = \log p(x)$
# (importance sampling); the distance between the two is the Jensen gap. Here $q$ is slightly
# off the posterior, $q = \mathcal{N}(m(x) + \tfrac12\sqrt{\mathrm{diag}\,S},\; 1.3^2\,S)$, and wider than
# it, so that the weights $w$ are bounded and the delta-method standard error of
# $\log \overline{w}$ can be trusted.

# %%
set_encoder(lin, scale_factor=1.3, shift=0.5 * torch.diagonal(S_post).sqrt())
recon, kl, _, _ = exact_elbo_terms(lin, x_lin)
elbo_off = recon - kl
with torch.no_grad():
    q = lin.encode(x_lin)
    zs = q.sample((N_LIN,))
    log_w = lin.decode(zs).log_prob(x_lin) + lin.prior().log_prob(zs) - q.log_prob(zs)
thr = check.family_threshold(2 * B_LIN)
print(f"{'':>3} {'exact ELBO':>11} {'mean log w':>11} {'SE':>7} {'z':>6} | "
      f"{'log p(x)':>10} {'log mean w':>11} {'SE':>7} {'z':>6}")
for i in range(B_LIN):
    lw = log_w[:, i]
    mean, se = lw.mean().item(), lw.std().item() / math.sqrt(N_LIN)
    w = (lw - lw.max()).exp()                               # rescaled weights
    log_mean_w = (w.mean().log() + lw.max()).item()
    se_log = (w.std() / w.mean()).item() / math.sqrt(N_LIN)  # delta method
    z1 = (mean - elbo_off[i].item()) / se
    z2 = (log_mean_w - logpx[i].item()) / se_log
    print(f"{i:>3} {elbo_off[i]:11.5f} {mean:11.5f} {se:7.4f} {z1:6.2f} | "
          f"{logpx[i]:10.5f} {log_mean_w:11.5f} {se_log:7.4f} {z2:6.2f}")
    assert abs(z1) <= thr and abs(z2) <= thr
    assert mean < log_mean_w - 5 * se  # Jensen: E[log w] < log E[w], by many SEs
print(f"|z| threshold {thr:.2f} (Bonferroni over {2 * B_LIN} tests)")


# %% [markdown]
# **A mistake: "$\mathbb{E}_q[\log p(x\mid z)] + \mathrm{KL}(p(z)\,\Vert\,q(z\mid x))$".**
# Flipping the sign *and* the direction of the KL gives an objective that is not the ELBO
# and not a bound: $\mathrm{KL}(p\,\Vert\,q) \ge 0$ is *added*, and since
# $\mathbb{E}_q[\log p(x\mid z)] = \log p(x) + \mathrm{KL}(q\,\Vert\,p(z)) - \mathrm{KL}(q\,\Vert\,p(z\mid x))$,
# at $q = p(z\mid x)$ it equals $\log p(x) + \mathrm{KL}(q\,\Vert\,p(z)) + \mathrm{KL}(p(z)\,\Vert\,q) > \log p(x)$.
# With $p(z) = \mathcal{N}(0, I)$ and $q = \mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)$, the diagonal formula of
# [02](02_gaussian_kl.ipynb) with the arguments swapped gives
# $$
# \mathrm{KL}(p(z)\,\Vert\,q) = \tfrac12\sum_j\Big[\frac{1 + \mu_j^2}{\sigma_j^2} - 1 + \log\sigma_j^2\Big],
# $$
# so as $q$ narrows it grows like $\tfrac12\sum_j (1 + \mu_j^2)/\sigma_j^2 \to \infty$ (the mean enters
# too: $\tfrac12\sum_j 1/\sigma_j^2$ alone drops $\tfrac12\sum_j \mu_j^2/\sigma_j^2$): maximising it
# collapses $q$ to a point. Below: $q = \mathcal{N}(m(x), c^2 S)$ (left, varying $c$) and
# $q = \mathcal{N}(m(x) + \delta, S)$ (right, varying $\delta$), for the first data point.
# The reverse KL is `objectives.kl_diag_normals` with the arguments swapped.

# %%
def wrong_objective(vae, x):
    recon, _, loc, scale = exact_elbo_terms(vae, x)
    zeros = torch.zeros_like(loc)
    kl_pq = objectives.kl_diag_normals(zeros, zeros, loc, 2 * scale.log())  # KL(p(z)||q)
    return recon + kl_pq, kl_pq

# the swapped-argument call really is KL(p(z) || q(z|x)), and the formula above
_, kl_pq = wrong_objective(lin, x_lin)
with torch.no_grad():
    assert torch.allclose(kl_pq, torch.distributions.kl_divergence(lin.prior(), lin.encode(x_lin)))
    loc, scale = lin.encoder(x_lin)
var = scale.pow(2)
assert torch.allclose(kl_pq, 0.5 * ((1 + loc**2) / var - 1 + var.log()).sum(-1), rtol=1e-12)

# a narrow q: q = N(m(x), c^2 S) with c = 0.05, for the first data point
set_encoder(lin, scale_factor=0.05)
_, kl_narrow = wrong_objective(lin, x_lin[:1])
with torch.no_grad():
    loc, scale = lin.encoder(x_lin[:1])
var = scale.pow(2)
lead, no_mean = (0.5 * ((1 + loc**2) / var).sum()).item(), (0.5 / var).sum().item()
print(f"q = N(m(x), 0.05² S), first data point: mu = {loc[0].numpy().round(3).tolist()}, "
      f"sigma = {scale[0].numpy().round(4).tolist()}")
print(f"KL(p(z) || q) = {kl_narrow.item():.1f};  ½ Σ (1 + mu_j²)/sigma_j² = {lead:.1f};  "
      f"½ Σ 1/sigma_j² = {no_mean:.1f}")
assert abs(lead / kl_narrow.item() - 1) < 0.01  # the leading term
assert no_mean < 0.9 * kl_narrow.item()          # without the mean term: too small

set_encoder(lin)  # q = p(z|x)
wrong, _ = wrong_objective(lin, x_lin)
print(f"{'':>3} {'log p(x)':>10} {'ELBO':>10} {'E_q[log p(x|z)] + KL(p||q)':>28}")
for i in range(B_LIN):
    print(f"{i:>3} {logpx[i]:10.5f} {elbo_exact[i]:10.5f} {wrong[i]:28.5f}")
assert (wrong > logpx + 0.5).all(), "the wrong objective exceeds log p(x): it is no bound"

factors = torch.logspace(-1.3, 0.6, 60).tolist()
shifts = torch.linspace(-2, 2, 61).tolist()
curves = {"scale": [], "shift": []}
for key, grid in (("scale", factors), ("shift", shifts)):
    for v in grid:
        set_encoder(lin, **({"scale_factor": v} if key == "scale" else {"shift": v}))
        recon, kl, loc, scale = exact_elbo_terms(lin, x_lin[:1])
        m, S = posterior(x_lin[:1])
        kl_p = objectives.kl_mvn(loc, torch.diag_embed(scale**2), m, S)
        curves[key].append(((recon - kl).item(), (recon - kl + kl_p).item(),
                            wrong_objective(lin, x_lin[:1])[0].item()))
set_encoder(lin)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, key, grid, label in ((axes[0], "scale", factors, "scale factor c (q = N(m, c² S))"),
                             (axes[1], "shift", shifts, "shift δ of the mean (q = N(m + δ, S))")):
    arr = np.array(curves[key])
    ax.axhline(logpx[0].item(), color="k", lw=3, alpha=0.3, label="log p(x) (exact)")
    ax.plot(grid, arr[:, 0], label="ELBO (closed form)")
    ax.plot(grid, arr[:, 1], "--", label="ELBO + KL(q || p(z|x))")
    ax.plot(grid, arr[:, 2], ":", lw=2, label="E_q[log p(x|z)] + KL(p(z) || q)  (wrong)")
    ax.set_xlabel(label)
axes[0].set_xscale("log")
axes[0].set_ylabel("nats")
axes[0].set_ylim(logpx[0].item() - 10, wrong[0].item() + 12)  # wrong: at q = p(z|x)
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
fig.suptitle("linear VAE, first data point: the ELBO touches log p(x) only at q = p(z|x)")
plt.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()

arr = np.array(curves["scale"])
assert np.allclose(arr[:, 1], logpx[0].item(), atol=1e-9)  # the identity along the curve
assert (arr[:, 0] <= logpx[0].item() + 1e-9).all()         # the ELBO is a bound
assert arr[0, 2] > arr[-1, 2] and arr[0, 2] > logpx[0].item() + 10  # wrong one blows up

# %% [markdown]
# ## 4. Maximum likelihood, the E-step of EM, and the decoder's gradient
#
# ### 4a. Maximum likelihood is minimizing $\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)$
#
# Let $p_\text{data}$ be the distribution the data are drawn from. For every $\theta$,
# $$
# \mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)
#   = \mathbb{E}_{p_\text{data}}[\log p_\text{data}(x)] - \mathbb{E}_{p_\text{data}}[\log p_\theta(x)]
#   = -H[p_\text{data}] - \mathbb{E}_{p_\text{data}}[\log p_\theta(x)],
# $$
# and the entropy $H[p_\text{data}]$ does not depend on $\theta$. So the $\theta$ that maximizes the
# expected log-likelihood $\mathbb{E}_{p_\text{data}}[\log p_\theta(x)]$, which the average
# $\frac1N\sum_n \log p_\theta(x_n)$ over a sample estimates (maximum likelihood), is the $\theta$ that
# minimizes $\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)$: the KL with the data *first*, an
# expectation under the data, which is what a sample can average. A model that cannot represent
# $p_\text{data}$ ends at the smallest KL it can reach, not at zero. Since
# $\mathcal{L}(x) \le \log p_\theta(x)$ for every $x$, the average ELBO is a lower bound on
# $-\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta) - H[p_\text{data}]$: training a VAE raises a lower bound
# on the quantity maximum likelihood maximizes.
#
# **Check.** The linear-Gaussian model of section 3 has $p_\theta(x) = \mathcal{N}(b, WW^\top + s^2 I_D)$ in
# closed form. Take $p_\text{data} = \mathcal{N}(m_0, C_0)$ in $D = 6$ dimensions with a covariance of
# full rank, which $K = 2$ latent dimensions cannot represent, so that
# $\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)$ is `objectives.kl_mvn` and $H[p_\text{data}]$ is exact. The
# decoders $\theta_t$ come from the EM iterations of 4b, fitted to a training sample; on a separate
# test sample from $p_\text{data}$ the average log-likelihood must equal
# $-H[p_\text{data}] - \mathrm{KL}(p_\text{data}\,\Vert\,p_{\theta_t})$ within its standard error, and the
# likelihood gained between the first and the last decoder (a paired difference on the same
# sample) must equal the KL lost.
#
# ### 4b. EM: the E-step is $q = p_\theta(z\mid x)$
#
# By section 1b, $\mathcal{L}(q, \theta; x) = \log p_\theta(x) - \mathrm{KL}(q(z\mid x)\,\Vert\,p_\theta(z\mid x))$.
# The EM algorithm (Dempster, Laird & Rubin 1977) maximizes it in turns:
#
# * **E-step**: for fixed $\theta$, the best $q$ is the exact posterior $p_\theta(z\mid x)$, where the KL
#   vanishes and $\mathcal{L} = \log p_\theta(x)$. This is what "closing the gap" did above when it set
#   the encoder to $m(x)$ and $S$.
# * **M-step**: for fixed $q$, maximize
#   $\mathcal{L}(q, \theta) = \mathbb{E}_q[\log p_\theta(x, z)] + H[q]$ over $\theta$; the entropy of $q$
#   does not depend on $\theta$.
#
# Each round cannot lower the likelihood:
# $\log p_{\theta'}(x) \ge \mathcal{L}(q, \theta') \ge \mathcal{L}(q, \theta) = \log p_\theta(x)$ (the bound,
# then the M-step, then the tight E-step). For the linear-Gaussian model both steps are closed
# forms. E-step: $q(z\mid x_n) = \mathcal{N}(m_n, S)$ with $S = (I_k + W^\top W/s^2)^{-1}$ and
# $m_n = S W^\top (x_n - b)/s^2$, a full covariance. M-step: with $\tilde z = (z, 1)$ and
# $\tilde W = [W\;\, b]$, setting the gradient of
# $\sum_n \mathbb{E}_q\big[-\lVert x_n - \tilde W\tilde z\rVert^2\big]/(2s^2)$ to zero gives
# $\tilde W = \big(\sum_n x_n\,\mathbb{E}[\tilde z_n]^\top\big)\big(\sum_n \mathbb{E}[\tilde z_n\tilde z_n^\top]\big)^{-1}$,
# with $\mathbb{E}[zz^\top] = S + m_n m_n^\top$. A VAE replaces both steps by gradient steps on the same
# $\mathcal{L}$: the encoder is an *amortized, approximate* E-step (one network for all $x$, and
# only diagonal Gaussians), and each decoder update is a stochastic partial M-step.
#
# Maximum likelihood for this model with $s$ fixed is also known in closed form (Tipping &
# Bishop 1999): $b = m_0$, $W = U_K(\Lambda_K - s^2 I)^{1/2}$ from the top $K$ eigenvectors and
# eigenvalues of $C_0$ (a column whose eigenvalue is not above $s^2$ is 0; here all are). It gives the smallest $\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)$ the model can
# reach, which EM on a large sample must approach.

# %%
def marginal(W_, b_):
    """p_theta(x) of the linear-Gaussian model: N(b, W W^T + s^2 I)."""
    return dist.MultivariateNormal(b_, W_ @ W_.T + S_LIK**2 * I_D)

def e_step(W_, b_, x):
    """The exact posterior N(m_n, S) of every row of x (S is the same for all)."""
    S = torch.linalg.inv(I_K + W_.T @ W_ / S_LIK**2)
    return (x - b_) @ W_ @ S / S_LIK**2, S

def m_step(m, S, x):
    """argmax over (W, b) of sum_n E_q[log p(x_n, z)] for q(z|x_n) = N(m_n, S)."""
    n = x.shape[0]
    ez = torch.cat([m, torch.ones(n, 1, dtype=x.dtype)], 1)        # E[z~_n] = (m_n, 1)
    ezz = torch.ones(K + 1, K + 1, dtype=x.dtype) * n               # sum_n E[z~_n z~_n^T]
    ezz[:K, :K] = n * S + m.T @ m
    ezz[:K, K] = ezz[K, :K] = m.sum(0)
    Wb = (x.T @ ez) @ torch.linalg.inv(ezz)
    return Wb[:, :K], Wb[:, K]

def elbo_at(m, S, W_, b_, x):
    """The ELBO of q(z|x_n) = N(m_n, S) (full covariance) under (W, b), in closed form."""
    resid = x - m @ W_.T - b_
    recon = -0.5 * D * math.log(2 * math.pi * S_LIK**2) - (
        resid.pow(2).sum(-1) + torch.trace(W_ @ S @ W_.T)) / (2 * S_LIK**2)
    kl = objectives.kl_mvn(m, S.expand(x.shape[0], K, K), torch.zeros(K, dtype=x.dtype), I_K)
    return recon - kl

gd = torch.Generator().manual_seed(2)
A0 = torch.randn(D, D, generator=gd, dtype=torch.float64)
C0 = A0 @ A0.T / D + 0.1 * I_D                     # full rank: not N(b, W W^T + s^2 I)
m0 = torch.randn(D, generator=gd, dtype=torch.float64)
p_data = dist.MultivariateNormal(m0, C0)
N_DATA = 20_000
x_train, x_test = p_data.sample((N_DATA,)), p_data.sample((N_DATA,))
H_data = p_data.entropy().item()

W_t, b_t = W.clone(), b.clone()                    # start from the decoder of section 3
history = []
for t in range(31):
    post_m, post_S = e_step(W_t, b_t, x_train)
    log_p = marginal(W_t, b_t).log_prob(x_train)
    gap = (elbo_at(post_m, post_S, W_t, b_t, x_train) - log_p).abs().max()
    kl_t = objectives.kl_mvn(m0, C0, b_t, W_t @ W_t.T + S_LIK**2 * I_D).item()
    ll_test = marginal(W_t, b_t).log_prob(x_test)
    history.append(dict(t=t, W=W_t, b=b_t, ll_train=log_p.mean().item(), gap=gap.item(), kl=kl_t,
                        ll_test=ll_test))
    W_t, b_t = m_step(post_m, post_S, x_train)

lam, U = torch.linalg.eigh(C0)                      # ascending eigenvalues
W_ml = U[:, -K:] @ torch.diag((lam[-K:] - S_LIK**2).sqrt())
kl_ml = objectives.kl_mvn(m0, C0, m0, W_ml @ W_ml.T + S_LIK**2 * I_D).item()

thr = check.family_threshold(len(history))
print(f"H[p_data] = {H_data:.4f} nats; smallest reachable KL (Tipping & Bishop) = {kl_ml:.4f}")
print(f"{'EM iter':>7} {'train avg log p':>15} {'ELBO - log p':>12} {'KL(p_data||p_theta)':>19} "
      f"{'test avg log p':>14} {'SE':>6} {'-H - KL':>9} {'z':>6}")
for h in history:
    mean, se = h["ll_test"].mean().item(), h["ll_test"].std().item() / math.sqrt(N_DATA)
    zscore = (mean - (-H_data - h["kl"])) / se
    if h["t"] in (0, 1, 2, 3, 5, 10, 20, 30):
        print(f"{h['t']:>7} {h['ll_train']:15.5f} {h['gap']:12.1e} {h['kl']:19.5f} "
              f"{mean:14.5f} {se:6.4f} {-H_data - h['kl']:9.4f} {zscore:6.2f}")
    assert abs(zscore) <= thr
print(f"|z| threshold {thr:.2f} (Bonferroni over the {len(history)} decoders)")
first, last = history[0], history[-1]
diff = last["ll_test"] - first["ll_test"]            # paired: the same test sample
se_diff = diff.std().item() / math.sqrt(N_DATA)
print(f"likelihood gained, first -> last decoder: {diff.mean():.4f} +- {se_diff:.4f} nats; "
      f"KL lost: {first['kl'] - last['kl']:.4f} nats")
assert abs(diff.mean().item() - (first["kl"] - last["kl"])) <= 4 * se_diff
ll = np.array([h["ll_train"] for h in history])
assert (np.diff(ll) >= -1e-10).all(), "EM never lowers the likelihood of its training data"
assert max(h["gap"] for h in history) < 1e-9        # after the E-step the bound is tight
assert 0 <= last["kl"] - kl_ml < 0.01               # EM reaches the smallest reachable KL

# %% [markdown]
# ### 4c. The gradient with respect to the decoder's parameters
#
# The decoder's parameters $\theta$ enter the ELBO only through $\log p_\theta(x\mid z)$: neither
# $q_\phi(z\mid x)$ nor $p(z)$ depends on them (with a learned prior the same argument adds
# $\nabla_\theta \log p_\theta(z)$). So the gradient moves inside the expectation without any change of
# variables, and the average over draws from $q$ is unbiased:
# $$
# \nabla_\theta \mathcal{L}(x) = \nabla_\theta\, \mathbb{E}_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z) + \log p(z) - \log q_\phi(z\mid x)\big]
#   = \mathbb{E}_{q_\phi(z\mid x)}\big[\nabla_\theta \log p_\theta(x\mid z)\big]
#   \approx \frac1S \sum_{s=1}^S \nabla_\theta \log p_\theta(x\mid z_s), \quad z_s \sim q_\phi(z\mid x).
# $$
# No reparameterization is needed for $\theta$ ([03](03_reparameterization.ipynb) is about $\phi$, where it is). At the
# E-step, $q = p_\theta(z\mid x)$, this is the gradient of the log-likelihood itself (Fisher's identity):
# $$
# \nabla_\theta \log p_\theta(x) = \frac{\int \nabla_\theta\, p_\theta(x, z)\,dz}{p_\theta(x)}
#   = \int \frac{p_\theta(x, z)}{p_\theta(x)}\,\nabla_\theta \log p_\theta(x, z)\,dz
#   = \mathbb{E}_{p_\theta(z\mid x)}\big[\nabla_\theta \log p_\theta(x, z)\big].
# $$
# For any other $q$ it is the gradient of the ELBO, which differs from $\nabla_\theta \log p_\theta(x)$
# by $-\nabla_\theta \mathrm{KL}(q\,\Vert\,p_\theta(z\mid x))$. **Check** on the linear VAE of section 3 and its
# five data points: the Monte Carlo gradient with respect to the decoder layer's weight and bias
# (18 numbers, by autograd through `vae.decode(z).log_prob(x)`, with $z$ drawn without a gradient
# path), against the exact $\nabla_\theta \log p_\theta(x)$ (autograd of the Gaussian evidence) and the
# exact $\nabla_\theta \mathcal{L}$ (autograd of the closed-form ELBO), with the encoder at the exact
# posterior (but for the $10^{-6}$ the encoder adds to $\sigma$) and then off it. The per-draw
# gradients, for the standard errors, are $\nabla_W \log p(x\mid z) = r z^\top/s^2$ and
# $\nabla_b = r/s^2$ with $r = x - Wz - b$; their mean must equal autograd's to round-off.

# %%
dec_params = [dec_layer.weight, dec_layer.bias]

def flat_grad(value):
    return torch.cat([g_.reshape(-1) for g_ in torch.autograd.grad(value, dec_params)])

def exact_grad_log_px(x):
    return flat_grad(marginal(dec_layer.weight, dec_layer.bias).log_prob(x).sum())

def exact_grad_elbo(x):
    with torch.no_grad():
        loc, scale = lin.encoder(x)
    W_, b_ = dec_params
    resid = x - loc @ W_.T - b_
    recon = -(resid.pow(2).sum(-1) + (scale.pow(2) * W_.pow(2).sum(0)).sum(-1)) / (2 * S_LIK**2)
    return flat_grad(recon.sum())  # log p(z) and log q(z|x) do not depend on the decoder

def mc_grad(x, n_draws):
    """Autograd of (1/S) sum_s log p(x|z_s), z_s ~ q(z|x), and the S per-draw gradients."""
    with torch.no_grad():
        z = lin.encode(x).sample((n_draws,))            # (S, B, K): no gradient path
    auto = flat_grad(lin.decode(z).log_prob(x).sum() / n_draws)
    with torch.no_grad():
        r = (x - z @ dec_layer.weight.T - dec_layer.bias) / S_LIK**2
        per_draw = torch.cat([torch.einsum("sbd,sbk->sdk", r, z).flatten(1), r.sum(1)], 1)
    return auto, per_draw

N_GRAD = 4000 if FAST else 40000
thr = check.family_threshold(2 * 18)
print(f"{'q(z|x)':>22} {'|autograd - mean|':>17} {'max |z| vs grad log p(x)':>25} "
      f"{'max |z| vs grad ELBO':>21} {'max |grad log p - grad ELBO|':>29}")
for name, options in (("exact posterior", {}),
                      ("off the posterior", dict(scale_factor=1.3,
                                                 shift=0.5 * torch.diagonal(S_post).sqrt()))):
    set_encoder(lin, **options)
    auto, per_draw = mc_grad(x_lin, N_GRAD)
    mean, se = per_draw.mean(0), per_draw.std(0) / math.sqrt(N_GRAD)
    g_px, g_elbo = exact_grad_log_px(x_lin), exact_grad_elbo(x_lin)
    z_px = ((mean - g_px) / se).abs().max().item()
    z_elbo = ((mean - g_elbo) / se).abs().max().item()
    print(f"{name:>22} {(auto - mean).abs().max():17.1e} {z_px:25.2f} {z_elbo:21.2f} "
          f"{(g_px - g_elbo).abs().max():29.1e}")
    assert (auto - mean).abs().max() < 1e-10
    assert z_elbo <= thr                       # unbiased for the ELBO's gradient, always
    if name == "exact posterior":
        assert z_px <= thr                     # Fisher's identity
        assert (g_px - g_elbo).abs().max() < 1e-3  # equal but for the 1e-6 floor of sigma
    else:
        assert z_px > 10 * thr                 # not the likelihood's gradient
print(f"|z| threshold {thr:.2f} (Bonferroni over 18 coordinates and two comparisons)")
set_encoder(lin)

# %% [markdown]
# ## 5. A non-linear VAE on MNIST, $\log p(x)$ by quadrature
#
# Now a real VAE (an MLP decoder with a Bernoulli likelihood, trained briefly on MNIST)
# with a **1-d latent**, so that
# $$
# \log p(x) = \log \int_{-\infty}^{\infty} \mathcal{N}(z; 0, 1)\, p(x\mid z)\, dz
# \approx \log \sum_i \mathcal{N}(z_i; 0, 1)\, p(x\mid z_i)\, \Delta
# $$
# on a fine grid $z_i \in [-15, 15]$ (spacing $10^{-3}$; $3 \cdot 10^{-3}$ in fast mode) (computed with
# `logsumexp`), the posterior on the grid is
# $p(z_i\mid x) = p(x, z_i)/p(x)$, and
# $\mathrm{KL}(q\,\Vert\,p(z\mid x)) \approx \sum_i q(z_i\mid x)\,[\log q(z_i\mid x) - \log p(z_i\mid x)]\,\Delta$.
# The grid is checked by halving its spacing (the ReLU decoder is only piecewise smooth in
# $z$, so the sum converges like $\Delta^2$: the two grids must agree to $10^{-5}$ nats, far below
# the Monte Carlo standard errors), and by the integrand at its ends being negligible. Then
# `Trace_ELBO`'s estimate must equal $\log p(x) - \mathrm{KL}(q\,\Vert\,p(z\mid x))$ within its standard
# error, image by image.

# %%
splits = nb.load_data("mnist")  # dynamically binarized; fast mode: 2,000 training images
print(splits)
print("test set:", splits.test_binarization)

# %% [markdown]
# The VAEs of this notebook (and of [02](02_gaussian_kl.ipynb) and [03](03_reparameterization.ipynb)) are trained by `nb.train_vae`, a plain
# `pyro.infer.SVI` loop over the training minibatches:

# %%
print(inspect.getsource(nb.train_vae))

# %%
vae1, losses1 = nb.train_vae(splits, steps=60 if FAST else 600, z_dim=1, hidden=(200,))
vae1 = vae1.double()
print(f"trained the 1-d VAE: {len(losses1)} SVI steps, "
      f"last 50 steps' loss {np.mean(losses1[-50:]):.1f} nats per image")

# %%
B1 = 4 if FAST else 8
x1 = splits.test[:B1].double()

def quadrature(vae, x, points):
    """log p(x), log p(x, z_i), and KL(q(z|x) || p(z|x)) on a grid of `points` over [-15, 15]."""
    z = torch.linspace(-15, 15, points, dtype=torch.float64).unsqueeze(-1)  # (G, 1)
    dz = 30 / (points - 1)
    with torch.no_grad():
        px_z = vae.decode(z)  # p(x|z_i): batch shape (G,), one decoder pass for all images
        log_lik = torch.stack([px_z.log_prob(xi) for xi in x])  # (B, G)
        log_joint = log_lik + vae.prior().log_prob(z)
        log_px = torch.logsumexp(log_joint, -1) + math.log(dz)
        log_post = log_joint - log_px[:, None]
        log_q = vae.encode(x).log_prob(z.unsqueeze(1)).T  # (B, G)
        kl_post = (log_q.exp() * (log_q - log_post)).sum(-1) * dz
        recon = (log_q.exp() * log_lik).sum(-1) * dz
    return dict(z=z.squeeze(-1), dz=dz, log_joint=log_joint, log_px=log_px,
                log_post=log_post, log_q=log_q, kl_post=kl_post, recon=recon)

G = 10001 if FAST else 30001  # spacing 3e-3 in fast mode, 1e-3 in full mode
fine, coarse = quadrature(vae1, x1, G), quadrature(vae1, x1, (G + 1) // 2)
_, scale1 = vae1.encoder(x1)
print("grid spacing", fine["dz"], "| smallest encoder scale", f"{scale1.min().item():.3f}")
print("max |log p(x) fine - coarse|  =", f"{(fine['log_px'] - coarse['log_px']).abs().max():.1e}")
print("max |KL fine - coarse|        =", f"{(fine['kl_post'] - coarse['kl_post']).abs().max():.1e}")
edge = (fine["log_joint"][:, [0, -1]] - fine["log_px"][:, None]).max().item()
print("integrand at the grid ends, relative to p(x): exp(", f"{edge:.0f}", ")")
assert scale1.min() > 30 * fine["dz"]
assert (fine["log_px"] - coarse["log_px"]).abs().max() < 1e-5
assert (fine["kl_post"] - coarse["kl_post"]).abs().max() < 1e-5
assert edge < -30

# %%
N1 = 2000 if FAST else 50000
thr = check.family_threshold(B1)
wrong1 = fine["recon"] + torch.distributions.kl_divergence(vae1.prior(), vae1.encode(x1)).detach()
print(f"{'':>2} {'log p(x)':>10} {'KL(q||post)':>11} {'log p(x)-KL':>12} {'Trace_ELBO':>11} "
      f"{'SE':>6} {'z':>6} | {'recon + KL(p||q)':>16}")
for i in range(B1):
    parts = check.trace_elbo_particles(vae1, x1[i : i + 1], N1)
    mean, se = parts.mean().item(), parts.std().item() / math.sqrt(N1)
    target = (fine["log_px"][i] - fine["kl_post"][i]).item()
    zscore = (mean - target) / se
    print(f"{i:>2} {fine['log_px'][i]:10.3f} {fine['kl_post'][i]:11.4f} {target:12.3f} "
          f"{mean:11.3f} {se:6.3f} {zscore:6.2f} | {wrong1[i]:16.2f}")
    assert abs(zscore) <= thr
print(f"|z| threshold {thr:.2f} (Bonferroni over {B1} images)")
assert (fine["kl_post"] > 0).all()
assert (wrong1 > fine["log_px"]).all(), "recon + KL(p || q) is above log p(x): not a bound"

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3))
for j, ax in enumerate(axes[:3]):
    z = fine["z"].numpy()
    post, qd = fine["log_post"][j].exp().numpy(), fine["log_q"][j].exp().numpy()
    lo, hi = z[post > 1e-4 * post.max()].min(), z[post > 1e-4 * post.max()].max()
    pad = 0.5 * (hi - lo)
    keep = (z > lo - pad) & (z < hi + pad)
    ax.plot(z[keep], post[keep], label="p(z|x) (quadrature)")
    ax.plot(z[keep], qd[keep], "--", label="q(z|x) (encoder)")
    ax.set_title(f"test image {j}: KL(q||p(z|x)) = {fine['kl_post'][j]:.3f}", fontsize=9)
    ax.set_xlabel("z")
    ax.set_ylabel("density")
axes[0].legend(fontsize=8)
axes[3].imshow(torch.cat(list(x1[:3, 0]), dim=1).numpy(), cmap="gray")
axes[3].set_title("the images (binarized)", fontsize=9)
axes[3].axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Sampled ELBO against closed-form ELBO on MNIST test images
#
# A VAE with a 20-d latent, briefly trained with `pyro.infer.SVI`. On a batch of $B$ real
# MNIST test images, two estimators of the batch ELBO (per image), each with $N$ independent
# particles:
#
# * `check.trace_elbo_particles`: Pyro's `Trace_ELBO`, everything sampled,
#   $\frac1B\sum_b \big[\log p(x_b\mid z_b) + \log p(z_b) - \log q(z_b\mid x_b)\big]$;
# * `check.closed_form_elbo_particles`: $\frac1B\sum_b \big[\log p(x_b\mid z_b)\big] - \frac1B\sum_b \mathrm{KL}_b$,
#   the KL from `objectives.closed_form_kl`.
#
# Both estimate the same number, so their means must agree within
# a multiple of $\sqrt{\mathrm{SE}_1^2 + \mathrm{SE}_2^2}$ Bonferroni-adjusted over the values of
# $N$ (3.40 here);
# each standard error must fall like $1/\sqrt{N}$ (slope $-\tfrac12$ of $\log \mathrm{SE}$
# against $\log N$, within `check.SLOPE_TOLERANCE`).

# %%
vae20, losses20 = nb.train_vae(splits, steps=40 if FAST else 600, z_dim=20)
print(f"trained the 20-d VAE: {len(losses20)} SVI steps")
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(losses20, lw=0.5, alpha=0.5, label="minibatch")
ax.plot(np.convolve(losses20, np.ones(25) / 25, mode="valid"), label="running mean (25)")
ax.set_xlabel("SVI step")
ax.set_ylabel("-ELBO (nats / image)")
ax.set_ylim(top=min(400, max(losses20)))
ax.legend()
plt.show()

# %%
B = 8 if FAST else 32
NS = (30, 300, 2000) if FAST else (10, 100, 1000, 10000)
x = splits.test[:B]
thr = check.family_threshold(len(NS))
res = {"trace": [], "closed": []}
print(f"{'N':>6} {'Trace_ELBO':>11} {'SE':>7} {'closed-form':>12} {'SE':>7} {'z':>6}")
for n in NS:
    est = {}
    for key, fn in (("trace", check.trace_elbo_particles),
                    ("closed", check.closed_form_elbo_particles)):
        parts = fn(vae20, x, n).double() / B
        est[key] = (parts.mean().item(), parts.std().item() / math.sqrt(n))
        res[key].append(est[key])
    (m_t, se_t), (m_c, se_c) = est["trace"], est["closed"]
    zscore = (m_t - m_c) / math.hypot(se_t, se_c)
    print(f"{n:>6} {m_t:11.3f} {se_t:7.4f} {m_c:12.3f} {se_c:7.4f} {zscore:6.2f}")
    assert abs(zscore) <= thr, f"N={n}: the two ELBO estimates disagree"
print(f"|z| threshold {thr:.2f}")

slopes = {}
for key in res:
    ses = np.array([se for _, se in res[key]])
    slopes[key] = np.polyfit(np.log(NS), np.log(ses), 1)[0]
    print(f"{key:>6}: slope of log SE vs log N = {slopes[key]:+.3f};  SE*sqrt(N) =",
          ", ".join(f"{se * math.sqrt(n):.3f}" for se, n in zip(ses, NS)))
    assert abs(slopes[key] + 0.5) <= check.SLOPE_TOLERANCE

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ns = np.array(NS, dtype=float)
for key, label, marker in (("trace", "Trace_ELBO (KL sampled)", "o"),
                           ("closed", "closed-form KL", "s")):
    ses = np.array([se for _, se in res[key]])
    ax.loglog(ns, ses, marker, label=f"{label}: slope {slopes[key]:+.2f}")
    ax.loglog(ns, ses[0] * np.sqrt(ns[0] / ns), "k:", lw=1)
ax.plot([], [], "k:", lw=1, label="reference  SE(N0) · sqrt(N0 / N)")
ax.set_xlabel("number of particles N")
ax.set_ylabel("standard error of the ELBO (nats / image)")
ax.set_title(f"{B} MNIST test images, 20-d VAE")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Which estimator has the smaller standard error?** Not necessarily the closed-form one.
# Per particle, `Trace_ELBO` adds the sampled $\log p(z) - \log q(z\mid x)$, whose mean is
# $-\mathrm{KL}$. With common draws $z$, $\mathrm{Var}[R - \widehat{\mathrm{KL}}] = \mathrm{Var}[R] +
# \mathrm{Var}[\widehat{\mathrm{KL}}] - 2\,\mathrm{Cov}[R, \widehat{\mathrm{KL}}]$, with $R$ the
# reconstruction: replacing $\widehat{\mathrm{KL}}$ by its mean removes its variance but also the
# covariance term. The numbers for this model and batch:

# %%
with torch.no_grad():
    q, p = vae20.encode(x), vae20.prior()
    z = q.sample((500 if FAST else 2000,))
    recon = vae20.decode(z).log_prob(x).sum(-1).double() / B  # R, per image
    kl_mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).double() / B
cov = torch.cov(torch.stack([recon, kl_mc]))
print(f"Var[R] = {cov[0, 0]:.4f}   Var[KL_mc] = {cov[1, 1]:.4f}   "
      f"Cov = {cov[0, 1]:.4f}   corr = {cov[0, 1] / cov.diagonal().prod().sqrt():.3f}")
print(f"Var[R - KL_mc] = {(recon - kl_mc).var():.4f}  (Trace_ELBO)   "
      f"Var[R] = {recon.var():.4f}  (closed-form KL)")

# %% [markdown]
# **The KL term alone, image by image.** `check.kl_agreement` takes the `z`-site
# log-densities out of `Trace_ELBO`'s traces, $\log q(z\mid x) - \log p(z)$, averages them
# over $N$ particles per image, and compares with `objectives.closed_form_kl`, with a
# Bonferroni threshold over the images.

# %%
row = check.kl_agreement(vae20, x, num_particles=500 if FAST else 20000)
print(row.check)
print(f"mean over images: Monte Carlo {row.estimate:.4f} vs closed form {row.reference:.4f} nats;",
      row.detail, f"| worst z {row.z:+.2f}, threshold {row.threshold:.2f}")
assert row.passed

# %% [markdown]
# ## Summary
#
# * $\log p(x) = \mathcal{L}(x) + \mathrm{KL}(q(z\mid x)\,\Vert\,p(z\mid x))$ held to $10^{-10}$ on
#   the linear-Gaussian VAE, with $\log p(x)$, $\mathcal{L}$ and the KL computed independently;
#   the gap closed exactly when the encoder was set to the posterior, and then every particle
#   of `Trace_ELBO` equalled $\log p(x)$.
# * Maximum likelihood is minimum $\mathrm{KL}(p_\text{data}\,\Vert\,p_\theta)$: on a test sample the average
#   log-likelihood of every EM iterate equalled $-H[p_\text{data}] - \mathrm{KL}$ within its standard
#   error, and the likelihood gained equalled the KL lost. EM's E-step is $q = p_\theta(z\mid x)$ (the
#   bound becomes tight), its rounds never lowered the likelihood, and it reached the smallest
#   KL the model can reach. The Monte Carlo decoder gradient $\mathbb{E}_q[\nabla_\theta \log p_\theta(x\mid z)]$
#   matched $\nabla_\theta\mathcal{L}$ for both encoders tried, and $\nabla_\theta \log p_\theta(x)$ only at the
#   E-step (for the other encoder it missed it by many standard errors).
# * On a non-linear MNIST VAE with a 1-d latent, `Trace_ELBO` matched
#   $\log p(x) - \mathrm{KL}(q\,\Vert\,p(z\mid x))$ computed by quadrature, within its standard error.
# * On MNIST test images, `Trace_ELBO` (KL sampled) and the closed-form-KL ELBO agreed within
#   standard errors that fall like $1/\sqrt{N}$, and the sampled KL matched
#   `objectives.closed_form_kl` per image.
# * "$\mathbb{E}_q[\log p(x\mid z)] + \mathrm{KL}(p(z)\,\Vert\,q(z\mid x))$" exceeded $\log p(x)$
#   on both models: it is not a lower bound, and it grows without limit as $q$ narrows.

# %% [markdown]
# ## References
#
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes.
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# * A. P. Dempster, N. M. Laird, D. B. Rubin (1977). Maximum likelihood from incomplete data via
#   the EM algorithm. JRSS B 39(1). [doi:10.1111/j.2517-6161.1977.tb01600.x](https://doi.org/10.1111/j.2517-6161.1977.tb01600.x)
# * R. M. Neal, G. E. Hinton (1998). A view of the EM algorithm that justifies incremental, sparse,
#   and other variants. In *Learning in Graphical Models* (EM as maximizing one function of $q$ and
#   $\theta$, the ELBO). [PDF](https://www.cs.toronto.edu/~hinton/absps/emk.pdf)
# * M. E. Tipping, C. M. Bishop (1999). Probabilistic principal component analysis. JRSS B 61(3).
#   [doi:10.1111/1467-9868.00196](https://doi.org/10.1111/1467-9868.00196)
# * D. M. Blei, A. Kucukelbir, J. D. McAuliffe (2017). Variational inference: a review for
#   statisticians. JASA 112. [arXiv:1601.00670](https://arxiv.org/abs/1601.00670)
#
# The other notebooks: [00 First steps](00_first_steps.ipynb) · [02 The Gaussian KL](02_gaussian_kl.ipynb)
# · [03 Reparameterization](03_reparameterization.ipynb) ·
# [04 Training on MNIST](04_train_mnist.ipynb) ·
# [05 Priors and likelihoods](05_priors_and_likelihoods.ipynb) ·
# [06 Posterior checks](06_posterior_checks.ipynb) · [07 Tighter bounds](07_tighter_bounds.ipynb).
