# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Tighter bounds: the IWAE bound and its DReG gradients
#
# [01](01_elbo.ipynb) obtained the ELBO by applying Jensen's inequality to *one* importance
# weight $w = p(x, z)/q(z\mid x)$. Averaging $K$ weights before taking the log gives the
# importance-weighted bound $\mathcal{L}_K$ of
# [Burda, Grosse & Salakhutdinov (2015)](https://arxiv.org/abs/1509.00519), which rises with $K$
# towards $\log p(x)$. Its gradient with respect to the encoder, however, gets noisier relative to
# its size as $K$ grows ([Rainforth et al. 2018](https://arxiv.org/abs/1802.04537)); the doubly
# reparameterized gradient (DReG) of
# [Tucker, Lawson, Gu & Maddison (2018)](https://arxiv.org/abs/1810.04152) removes the term
# responsible. This notebook puts each step next to the `pyrovae` code that implements it
# (`pyrovae/objectives/`: `base.py`, `iwae.py`, `dreg.py`) and checks it with numbers:
#
# 1. the bound: Jensen's inequality on the average of $K$ weights (`Particles.log_weights`,
#    `log_mean_exp`, `IWAE.bound`);
# 2. a linear-Gaussian VAE whose $\log p(x)$ and ELBO are known exactly: Jensen per example,
#    $\mathcal{L}_1$ = ELBO, and $\mathcal{L}_K$ rising with $K$ towards $\log p(x)$;
# 3. the same on a VAE with the network of `configs/burda_vae.yaml` trained on MNIST, where
#    $\log p(x)$ is unknown: $\mathcal{L}_1 \le \mathcal{L}_5 \le \mathcal{L}_{50}$ with
#    standard errors;
# 4. the gradients (`IWAE.bound`, `IWAEDReG.bound`): the encoder's signal-to-noise ratio (SNR)
#    falls like $1/\sqrt K$ for IWAE and rises for DReG once $K$ is large enough (derived, then
#    measured on the linear-Gaussian VAE); on the MNIST model, DReG's encoder gradient has
#    IWAE's expectation and a smaller variance, and the SNRs are measured against $K$ here and
#    by `benchmarks/gradient_snr.py`;
# 5. the reproduction of Burda et al.'s Table 1 against training time
#    (`benchmarks/reproduce.py`).
#
# **Settings.** Full mode (the saved outputs): the linear-Gaussian VAE's bounds from 1,000 draws
# per example and $K$, its gradient SNRs from 4,000 copies per example and $K = 1, 4, 16, 64$;
# the MNIST model is trained for 2,000 Adam steps (10 epochs of the first 20,000 training
# images), its bounds measured on 1,000 test images, its gradient statistics on 16 test images
# with 200 replicates per objective and $K = 1, 10, 100$. `PYROVAE_FAST=1` (CI): 50 draws,
# 1,000 copies and $K = 1, 4, 16$; 60 steps on 2,000 training images, 100 test images, 20
# replicates and $K = 1, 10$ (the MNIST numbers of a barely trained model: only the asserts
# matter).
# Numbers are nats per example; SE is a standard error. The asserts have tolerances from
# standard errors (for the slopes of the SNR against $K$, bands around the derived rates), so a
# broken objective fails the notebook.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, 60 training steps, few replicates

# %%
import inspect
import json
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch
import torch.distributions as td
from pyro.infer import Trace_ELBO

from pyrovae import objectives
from pyrovae.literature import BURDA_2015, burda_2015
from pyrovae.model import VAE
from pyrovae.objectives import IWAE, IWAEDReG, Particles, TraceELBO, log_mean_exp, mean_stderr

print_table = nb.print_table

# %% [markdown]
# ## 1. The bound
#
# Let $w = p(x, z)/q(z\mid x)$ with $z \sim q(z\mid x)$; then $\mathbb{E}_q[w] = p(x)$. Draw
# $z_1, \dots, z_K$ independently from $q(z\mid x)$. Their average weight is still an unbiased
# estimate of $p(x)$, and since $\log$ is concave, Jensen's inequality gives (Burda et al. 2015,
# eq. 8)
# $$
# \log p(x) = \log \mathbb{E}_{z_{1:K}}\Big[\frac1K \sum_{k=1}^K w_k\Big]
#   \;\ge\; \mathbb{E}_{z_{1:K}}\Big[\log \frac1K \sum_{k=1}^K w_k\Big] =: \mathcal{L}_K(x),
# \qquad \log w_k = \log p(x\mid z_k) + \log p(z_k) - \log q(z_k\mid x).
# $$
#
# * **$K = 1$**: $\mathcal{L}_1 = \mathbb{E}_q[\log w]$ is the ELBO.
# * **Jensen inside each draw**: for any numbers, $\log \frac1K\sum_k w_k \ge \frac1K\sum_k
#   \log w_k$; the right side has expectation $\mathcal{L}_1$, so $\mathcal{L}_K \ge
#   \mathcal{L}_1$ already draw by draw (with the same $z_{1:K}$).
# * **Monotone in $K$** (their Theorem 1): the average of $K+1$ weights is the uniform average,
#   over the $K+1$ subsets $I$ of size $K$, of the subsets' averages; Jensen on that average gives
#   $\mathbb{E}\log\frac1{K+1}\sum_{k\le K+1} w_k \ge \mathbb{E}\,\frac1{K+1}\sum_I
#   \log\frac1K\sum_{k\in I}w_k = \mathcal{L}_K$.
# * **Towards $\log p(x)$**: if the weights are bounded, $\frac1K\sum_k w_k \to p(x)$ almost
#   surely (law of large numbers), and $\mathcal{L}_K \to \log p(x)$.
#
# In `pyrovae`, an objective's `particles(x)` runs the guide and then the model (replaying the
# guide's $z$) under a plate of $K$ vectorized particles and reads each site's log-density from
# the Pyro traces: `(K, B)` tensors for a batch of $B$ examples. `Particles.log_weights` forms
# $\log w_k$ (with a KL weight $\beta$ for warm-up; $\beta = 1$ throughout this notebook), and
# `IWAE.bound` takes their log-mean-exp along the particle dimension; the ELBO of `TraceELBO` is
# their plain mean:

# %%
for fn in (Particles.log_weights, log_mean_exp, IWAE.bound, TraceELBO.bound):
    print(inspect.getsource(fn))

# %% [markdown]
# `log_mean_exp` is `logsumexp - log K`: `torch.logsumexp` subtracts the largest log weight
# before exponentiating. The log weights of an MNIST VAE are around $-100$ nats or lower, and
# `exp` underflows to 0 in float32 below about $-103$ nats (in float64 below $-745$), where the
# naive formula returns $-\infty$. A check against the naive formula where it works, and where
# it does not:

# %%
torch.manual_seed(0)
lw_demo = torch.randn(50, 4, dtype=torch.float64) * 3 - 20  # K = 50 log weights, 4 examples
naive = torch.log(torch.exp(lw_demo).mean(0))
print(f"around -20 nats: max |log_mean_exp - naive| = "
      f"{(log_mean_exp(lw_demo) - naive).abs().max().item():.1e}")
assert torch.allclose(log_mean_exp(lw_demo), naive, rtol=0, atol=1e-12)
far = (lw_demo - 100).float()  # around -120 nats, in float32
print("around -120 nats, float32: log_mean_exp", log_mean_exp(far).numpy().round(3),
      " naive", torch.log(torch.exp(far).mean(0)).numpy())
assert torch.isfinite(log_mean_exp(far)).all()
assert torch.allclose(log_mean_exp(far).double(), log_mean_exp(lw_demo) - 100, atol=1e-4)

# %% [markdown]
# ## 2. A model whose $\log p(x)$ is known: the linear-Gaussian VAE
#
# As in [01](01_elbo.ipynb): $z \sim \mathcal{N}(0, I_d)$, $x \mid z \sim \mathcal{N}(Wz + b,
# s^2 I_D)$. Then $p(x) = \mathcal{N}(x;\, b,\, WW^\top + s^2 I_D)$ and the posterior is
# Gaussian, $p(z\mid x) = \mathcal{N}\big(A(x - b),\ \Sigma\big)$ with
# $\Sigma = (I_d + W^\top W/s^2)^{-1}$ and $A = \Sigma W^\top/s^2$. `pyrovae.VAE` builds this
# model with `likelihood="gaussian"`, a fixed scale $s$ and no hidden layers (`hidden=()`): its
# decoder is one linear layer $z \mapsto Wz + b$, its encoder one linear layer
# $x \mapsto (\mu(x), \log\sigma^2(x))$. The decoder gets a random $W, b$, and the encoder a
# deliberately imperfect guide: the posterior mean times 0.7, the posterior's marginal
# standard deviations times 0.8 (too narrow, as a VAE's guide tends to be:
# [06](06_posterior_checks.ipynb)), and no correlations (the guide is a diagonal Gaussian; the
# posterior is not). Then both $\log p(x)$ (a $D$-dimensional Gaussian density)
# and the ELBO, $\log p(x) - \mathrm{KL}(q(z\mid x)\,\Vert\,p(z\mid x))$ (a KL between two
# Gaussians, [02](02_gaussian_kl.ipynb)), are known exactly. Everything is in float64.

# %%
torch.manual_seed(1)
D, d, s = 8, 3, 0.5
W = torch.randn(D, d, dtype=torch.float64)
b = torch.randn(D, dtype=torch.float64) * 0.5
Sigma = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + W.T @ W / s**2)
A = Sigma @ W.T / s**2
SHRINK, NARROW = 0.7, 0.8


def linear_vae(shrink, narrow):
    """The linear-Gaussian VAE with decoder W, b and the guide N(shrink * A (x - b),
    diag(narrow^2 * diag Sigma)): the posterior's mean shrunk, its marginal sds narrowed."""
    vae = VAE(x_shape=(D,), z_dim=d, hidden=(), likelihood="gaussian",
              likelihood_scale=s).double()
    enc, dec = vae.encoder.net[0], vae.decoder.net[0]
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.weight[:d] = shrink * A                  # mu(x) = shrink * A (x - b)
        enc.bias[:d] = -shrink * A @ b
        enc.bias[d:] = torch.log(narrow**2 * Sigma.diagonal())  # log sigma^2, for every x
    return vae


lin = linear_vae(SHRINK, NARROW)
print(lin.encoder, lin.decoder, sep="\n")

B = 8
x_lin = (torch.randn(B, d, dtype=torch.float64) @ W.T + b
         + s * torch.randn(B, D, dtype=torch.float64))  # data drawn from the model itself
evidence = td.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D, dtype=torch.float64))
log_px = evidence.log_prob(x_lin)                        # exact log p(x)
posterior = td.MultivariateNormal((x_lin - b) @ A.T, Sigma)

# the closed forms are the model that vae.decode / vae.prior implement: Bayes' rule
# log p(x|z) + log p(z) - log p(z|x) = log p(x) at any z
z_any = torch.randn(B, d, dtype=torch.float64)
with torch.no_grad():
    bayes = (lin.decode(z_any).log_prob(x_lin) + lin.prior().log_prob(z_any)
             - posterior.log_prob(z_any))
print(f"Bayes' rule at random z: max |difference| {(bayes - log_px).abs().max().item():.1e}")
assert torch.allclose(bayes, log_px, rtol=0, atol=1e-10)

# the guide as the encoder computes it, against the intended Gaussian; the exact ELBO
with torch.no_grad():
    q = lin.encode(x_lin)
assert torch.allclose(q.mean, SHRINK * (x_lin - b) @ A.T, atol=1e-10)
assert torch.allclose(q.stddev, (NARROW * Sigma.diagonal().sqrt()).expand(B, d), atol=1e-5)
exact_elbo = log_px - td.kl_divergence(td.MultivariateNormal(q.mean, torch.diag_embed(q.variance)),
                                       posterior)  # ELBO = log p(x) - KL(q || p(z|x))
print("exact log p(x) per example:", log_px.numpy().round(2))
print("exact ELBO per example:    ", exact_elbo.numpy().round(2))

# %% [markdown]
# **Jensen, per example.** One draw of $K = 50$ particles from `objectives.build("iwae", lin,
# 50)`: for every example, the log of the mean weight is at least the mean of the log weights,
# and `IWAE.bound` of the same particles is that log-mean-exp.

# %%
iwae50 = objectives.build("iwae", lin, 50)
pyro.set_rng_seed(0)
with torch.no_grad():
    lw50 = iwae50.particles(x_lin).log_weights()        # (K, B) log weights
print(f"log weights {tuple(lw50.shape)} (K, B)")
print("log mean w - mean log w, per example:",
      (log_mean_exp(lw50) - lw50.mean(0)).numpy().round(3))
assert (log_mean_exp(lw50) >= lw50.mean(0)).all()
pyro.set_rng_seed(0)
with torch.no_grad():
    assert torch.equal(iwae50.bound(x_lin), log_mean_exp(lw50))  # the same particles

# %% [markdown]
# **$\mathcal{L}_1$ is the ELBO, exactly.** With $K = 1$ the log-mean-exp of one number is that
# number: with the same seed, `iwae` with $K = 1$, the `trace` ELBO and Pyro's own `Trace_ELBO`
# draw the same $z$ and return the same values, to the last bit for the first two. Over many
# draws, their mean must match the exact ELBO within its SE.
#
# **$\mathcal{L}_K$ against $K$.** `objectives.build("iwae", lin, K).bound(x)` is one draw of
# $\log\frac1K\sum_k w_k$ per example; repeating each example $R$ times in the batch gives $R$
# independent draws, whose mean estimates $\mathcal{L}_K$ with an SE from their spread.

# %%
pyro.set_rng_seed(2)
with torch.no_grad():
    iwae_one = objectives.build("iwae", lin, 1).bound(x_lin)
    pyro.set_rng_seed(2)
    elbo_one = objectives.build("trace", lin, 1).bound(x_lin)
    pyro.set_rng_seed(2)
    pyro_loss = Trace_ELBO().loss(lin.model, lin.guide, x_lin)
print(f"iwae (K = 1) vs trace, same seed: max |difference| "
      f"{(iwae_one - elbo_one).abs().max().item():.1e}; sum {iwae_one.sum().item():.6f}, "
      f"-Trace_ELBO loss {-pyro_loss:.6f}")
assert torch.equal(iwae_one, elbo_one)
assert abs(iwae_one.sum().item() + pyro_loss) < 1e-9 * abs(pyro_loss)

KS_LIN = [1, 5, 50, 500]
R_LIN = 50 if FAST else 1000


def bound_draws(vae, x, k, replicates):
    """(replicates, B) independent draws of log (1/K) sum_k w_k, from objectives.build."""
    objective = objectives.build("iwae", vae, k)
    repeated = x.repeat(replicates, *[1] * (x.dim() - 1))
    with torch.no_grad():
        return objective.bound(repeated).view(replicates, -1).double()


pyro.set_rng_seed(3)
lin_est = {}
for k in KS_LIN:
    draws = bound_draws(lin, x_lin, k, R_LIN)
    lin_est[k] = (draws.mean(0), draws.std(0) / math.sqrt(R_LIN))  # per example: L_K, SE


def mean_over_examples(k):
    """L_K averaged over the B examples, and its SE (independent draws per example)."""
    est, se = lin_est[k]
    return est.mean().item(), se.pow(2).sum().sqrt().item() / B


rows = []
for k in KS_LIN:
    m, se = mean_over_examples(k)
    rows.append([k, m, f"{se:.3f}", log_px.mean().item() - m])
print(f"means over the {B} examples, {R_LIN} draws per example and K: exact log p(x) "
      f"{log_px.mean():.3f}, exact ELBO {exact_elbo.mean():.3f}")
print_table(["K", "L_K", "SE", "log p(x) - L_K"], rows)

z_elbo = (lin_est[1][0] - exact_elbo) / lin_est[1][1]
print("\nL_1 against the exact ELBO, per example, (L_1 - ELBO) / SE:", z_elbo.numpy().round(2))
assert (z_elbo.abs() < 4).all()
for k_lo, k_hi in zip(KS_LIN, KS_LIN[1:]):
    (lo, se_lo), (hi, se_hi) = lin_est[k_lo], lin_est[k_hi]
    step = (hi - lo).mean()
    step_se = (se_lo**2 + se_hi**2).sum().sqrt() / B
    z_each = (hi - lo) / (se_lo**2 + se_hi**2).sqrt()
    print(f"L_{k_hi} - L_{k_lo} = {step:.3f} ± {step_se:.3f} nats ({step / step_se:.0f} SE), "
          f"per example {z_each.min():.1f} to {z_each.max():.1f} SE")
    assert step > 3 * step_se and (z_each > -3.5).all()  # rises; no example falls
for k in KS_LIN:
    est, se = lin_est[k]
    assert ((est - log_px) / se < 4).all()      # below log p(x), within Monte Carlo error
gap_1, gap_max = (log_px - lin_est[1][0]).mean(), (log_px - lin_est[KS_LIN[-1]][0]).mean()
print(f"\nthe gap to log p(x) shrinks from {gap_1:.2f} nats (K = 1) to {gap_max:.2f} nats "
      f"(K = {KS_LIN[-1]}): {100 * (1 - gap_max / gap_1):.0f}% of it closed")
assert gap_max < 0.25 * gap_1

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
means = np.array([mean_over_examples(k)[0] for k in KS_LIN])
ses = np.array([mean_over_examples(k)[1] for k in KS_LIN])
ax1.errorbar(KS_LIN, means, yerr=2 * ses, fmt="o-", capsize=3, label=r"$\mathcal{L}_K$, ±2 SE")
ax1.axhline(log_px.mean().item(), color="k", ls="--", label=r"exact $\log p(x)$")
ax1.axhline(exact_elbo.mean().item(), color="grey", ls=":", label="exact ELBO")
ax1.set_xscale("log")
ax1.set_xlabel("K (importance samples)")
ax1.set_ylabel(f"nats (mean over {B} examples)")
ax1.set_title("the bound rises with K towards log p(x)", fontsize=10)
ax1.legend(fontsize=8)
for i in range(B):
    ax2.plot(KS_LIN, [(log_px[i] - lin_est[k][0][i]).item() for k in KS_LIN], "o-", ms=3,
             label=f"example {i}")
ax2.set_xscale("log")
ax2.set_yscale("symlog", linthresh=0.1)
ax2.set_ylim(bottom=0)
ax2.set_xlabel("K (importance samples)")
ax2.set_ylabel(r"$\log p(x) - \mathcal{L}_K$ (nats)")
ax2.set_title("the gap, per example", fontsize=10)
ax2.legend(fontsize=7, ncol=2)
for ax in (ax1, ax2):
    ax.grid(alpha=0.3, which="both")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The same on MNIST
#
# A VAE with the network of Burda et al.'s one-stochastic-layer model (that of
# `configs/burda_vae.yaml`: 784-200-200-50, tanh, Bernoulli likelihood, $p(z) =
# \mathcal{N}(0, I)$), trained briefly with the ELBO on dynamically binarized MNIST by
# `nb.train_vae` (`pyro.infer.SVI` with `objectives.build("trace", vae)` and Adam at
# $10^{-3}$, as in [01](01_elbo.ipynb)-[03](03_reparameterization.ipynb)). Here $\log p(x)$ is
# unknown, but $\mathcal{L}_1$ is still the ELBO (the same numbers as Pyro's `Trace_ELBO` with
# the same seed) and $\mathcal{L}_K$ must rise with $K$. For each test image, the mean of a few
# independent draws of $\mathcal{L}_1$, $\mathcal{L}_5$ and $\mathcal{L}_{50}$; the differences
# are paired (the same images), so their SE over images is much smaller than that of the bounds
# themselves, which is dominated by how much the images differ.

# %%
splits = nb.load_data("mnist", limit=None if FAST else 20000)  # dynamically binarized
STEPS = 60 if FAST else 2000
vae, losses = nb.train_vae(splits, STEPS, z_dim=50, hidden=[200, 200], activation="tanh")
epochs = STEPS * 100 / len(splits.train)
print(f"784-200-200-50 tanh VAE: {STEPS} Adam steps of 100 images ({epochs:.0f} epochs of "
      f"{len(splits.train):,} training images); training ELBO over the last 50 steps "
      f"{-np.mean(losses[-50:]):.2f} nats; {len(splits.test):,} binary test images")

# %%
N_TEST, R_MNIST = (100, 4) if FAST else (1000, 4)
x_test = splits.test[:N_TEST]
pyro.set_rng_seed(4)
with torch.no_grad():
    one = objectives.build("iwae", vae, 1).bound(x_test)
    pyro.set_rng_seed(4)
    pyro_loss = Trace_ELBO().loss(vae.model, vae.guide, x_test)
print(f"K = 1: sum of IWAE_1 over {N_TEST} images {one.sum().item():.3f}, "
      f"-Trace_ELBO loss {-pyro_loss:.3f} (same seed)")
assert abs(one.sum().item() + pyro_loss) < 1e-6 * abs(pyro_loss)

KS_MNIST = [1, 5, 50]
pyro.set_rng_seed(5)
# per image, the mean of R_MNIST independent draws of the library's bound
mnist_bound = {k: bound_draws(vae, x_test, k, R_MNIST).mean(0) for k in KS_MNIST}
rows = []
for k in KS_MNIST:
    m, se = mean_stderr(mnist_bound[k])
    dm, dse = mean_stderr(mnist_bound[k] - mnist_bound[1]) if k > 1 else (0.0, 0.0)
    rows.append([k, m, f"{se:.2f}", dm, f"{dse:.3f}"])
print(f"{N_TEST} test images, {R_MNIST} independent draws of L_K per image and K")
print_table(["K", "L_K", "SE", "L_K - L_1 (paired)", "SE"], rows)
for k_lo, k_hi in zip(KS_MNIST, KS_MNIST[1:]):
    m, se = mean_stderr(mnist_bound[k_hi] - mnist_bound[k_lo])
    print(f"L_{k_hi} - L_{k_lo} = {m:.3f} ± {se:.3f} nats ({m / se:.1f} SE above 0)")
    assert m > 3 * se  # rises
pyro.set_rng_seed(6)
with torch.no_grad():
    lw_mnist = objectives.build("iwae", vae, 50).particles(x_test).log_weights()
print(f"Jensen per image, K = 50: log mean w - mean log w >= "
      f"{(log_mean_exp(lw_mnist) - lw_mnist.mean(0)).min().item():.3f} nats over {N_TEST} images")
assert (log_mean_exp(lw_mnist) >= lw_mnist.mean(0)).all()

# %% [markdown]
# `python -m pyrovae.evaluate` and `benchmarks/reproduce.py` report $\mathcal{L}_{5000}$ as the
# test log-likelihood, as Burda et al. do; [06](06_posterior_checks.ipynb) follows
# $\mathcal{L}_K$ up to $K = 5000$ and checks, with PSIS $\hat k$, how far such importance
# sampling estimates can be trusted.
#
# ## 4. The gradients: IWAE and DReG
#
# ### 4a. The IWAE gradient and its score-function term
#
# With $z_k = \mu_\phi(x) + \sigma_\phi(x)\odot\varepsilon_k$ (reparameterization,
# [03](03_reparameterization.ipynb)) and normalized weights $\tilde w_k = w_k/\sum_j w_j$,
# $$
# \nabla \log\frac1K\sum_k w_k = \sum_k \tilde w_k\,\nabla \log w_k .
# $$
# For the decoder's parameters $\theta$ this is $\sum_k \tilde w_k \nabla_\theta \log
# p_\theta(x, z_k)$. For the encoder's parameters $\phi$, $\log w_k = \log p(x, z_k) - \log
# q_\phi(z_k\mid x)$ depends on $\phi$ twice, through $z_k$ and through $q_\phi$'s own parameters:
# $$
# \nabla_\phi \log\frac1K\sum_k w_k = \sum_k \tilde w_k \Big(
#    \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial\phi}
#    - \frac{\partial \log q_\phi(z_k\mid x)}{\partial\phi}\Big|_{z_k \text{ fixed}}\Big).
# $$
# The second term is a score function: at $K = 1$ its expectation is 0 and it only adds noise.
#
# **The rates for large $K$** (Rainforth et al. 2018, their Theorem 1). Let $v =
# \operatorname{Var}_q[w/p(x)]$. Once $K \gg v$, the average weight $\hat Z = \frac1K\sum_k
# w_k$ is close to $p(x)$ and $\tilde w_k \approx w_k/(K\,p(x))$:
#
# * *the signal*: a second-order expansion of $\log\hat Z$ around $p(x)$ gives
#   $\mathcal{L}_K = \log p(x) - v/(2K) + O(1/K^2)$. $\log p(x)$ does not depend on $\phi$, so
#   the encoder's expected gradient $\nabla_\phi\mathcal{L}_K = -\nabla_\phi v/(2K) + O(1/K^2)$
#   shrinks like $1/K$;
# * *the noise*: the estimator is close to $\frac1K\sum_k (w_k/p(x))\,g_k$, with $g_k$ the
#   bracket above: an average of $K$ independent terms whose variance does not vanish (the
#   score term alone has some), so its standard deviation shrinks like $1/\sqrt K$;
# * the encoder's SNR, $|\mathbb{E}[g]|/\operatorname{sd}[g]$ per coordinate, thus falls like
#   $1/\sqrt K$. For the decoder, the same average $\frac1K\sum_k (w_k/p(x))\nabla_\theta\log
#   p_\theta(x, z_k)$ has the expectation $\nabla_\theta \log p(x) \ne 0$ and a standard
#   deviation $\propto 1/\sqrt K$: its SNR rises like $\sqrt K$.
#
# A tighter bound can thus train a worse encoder. "$K \gg v$" can be read off the particles:
# the effective sample size $\text{ESS} = 1/\sum_k \tilde w_k^2$ is close to $K/(1 + v)$ there,
# a fixed fraction of $K$; while a few weights dominate ($\text{ESS} \ll K$), the rates need
# not hold.
#
# ### 4b. DReG
#
# Tucker et al. (2018) rewrite the score term with the reparameterization identity
# $\mathbb{E}_{q}\big[f(z)\,\partial_\phi \log q_\phi(z)\big] =
# \mathbb{E}_{\varepsilon}\big[\partial_z f(z)\,\partial_\phi z\big]$ (for $f$ that depends on
# $\phi$ only through $z$), with $f = \tilde w_k$, which depends on $z_k$ through $w_k$. The
# result has the same expectation and no score function left (their eq. 5):
# $$
# \nabla_\phi \mathcal{L}_K = \mathbb{E}\Big[\sum_k \tilde w_k^{\,2}\,
#   \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial\phi}\Big].
# $$
# `IWAEDReG.bound` returns the IWAE value plus a surrogate whose gradient is exactly that:
# `log_q_stopped` is $\log q$ with the guide's `loc` and `scale` detached, so that $\log w_k$
# reaches $\phi$ only through $z_k$; the surrogate
# $\sum_k \tilde w_k \log w_k + \sum_k \big[\beta(\tilde w_k^2 - \tilde w_k)\,\partial\log
# w_k/\partial z_k\big]_{\text{detached}} \cdot z_k$ (with $\tilde w_k$ detached; $\beta$ is the
# KL weight of warm-up, 1 for the bound itself, see below) has at $\beta = 1$ the encoder
# gradient $\sum_k \tilde w_k \frac{\partial\log w_k}{\partial z_k}\frac{\partial
# z_k}{\partial\phi} + \sum_k (\tilde w_k^2 - \tilde w_k)\frac{\partial\log w_k}{\partial z_k}
# \frac{\partial z_k}{\partial\phi} = \sum_k \tilde w_k^2 \frac{\partial\log w_k}{\partial
# z_k}\frac{\partial z_k}{\partial\phi}$, and decoder gradient $\sum_k \tilde w_k
# \nabla_\theta \log w_k$, IWAE's ($z_k$ does not depend on $\theta$). At $K = 1$,
# $\tilde w_1 = 1$ and DReG is the reparameterized ELBO gradient without its score term (the
# "sticking the landing" estimator of Roeder et al. 2017).
#
# **Under a KL weight.** During warm-up (or in a $\beta$-VAE) the weights are
# $\log w_k = \log p(x|z_k) + \beta\,(\log p(z_k) - \log q_\phi(z_k|x))$: the direct
# dependence of $\log w_k$ on $\phi$ is $-\beta\,\partial_\phi \log q_\phi(z_k|x)$, so the IWAE
# gradient's score term is $\beta$ times the one above, and only that much is rewritten by the
# identity. The unbiased encoder weights are then $(1-\beta)\,\tilde w_k + \beta\,\tilde w_k^2$:
# $\tilde w_k^2$ at $\beta = 1$, and $\tilde w_k$ (the plain reparameterized gradient, no score term
# to remove) at $\beta = 0$. That is the $\beta$ in the surrogate's correction; the squared
# weights alone at $\beta = 0.2$ would be a biased encoder gradient: `tests/test_bounds.py` checks
# the mean encoder gradient against IWAE's at $\beta = 1$ and at $\beta = 0.2$, and that test fails
# for the squared weights alone (its test double).
#
# **DReG's rate for large $K$.** In the regime of 4a, $\tilde w_k^2 \approx (w_k/p(x))^2/K^2$,
# and the estimator is close to $\frac1K\cdot\frac1K\sum_k (w_k/p(x))^2 h_k$ with $h_k =
# \frac{\partial\log w_k}{\partial z_k}\frac{\partial z_k}{\partial\phi}$: its expectation is
# IWAE's ($\propto 1/K$), its standard deviation $1/K$ times that of an average of $K$
# independent terms, $\propto K^{-3/2}$. Its SNR thus *rises* like $\sqrt K$, where IWAE's
# falls like $1/\sqrt K$.

# %%
print(inspect.getsource(IWAEDReG.bound))
print(inspect.getsource(IWAEDReG.correction))

# %% [markdown]
# ### 4c. The rates where they apply: the linear-Gaussian VAE
#
# The rates of 4a and 4b hold once $K \gg v$. On the model of section 2, whose guide is far
# from the posterior ($\mathcal{L}_{500}$ was still 1.2 nats below $\log p(x)$), that takes a
# very large $K$; here the same model gets a guide closer to its posterior: the posterior mean
# times 0.9 and the marginal standard deviations times 1.5 (a guide wider than the posterior
# keeps the weights' variance $v$ finite; one much narrower can make it infinite), still
# diagonal. The ESS, and the gap to $\log p(x)$ against its large-$K$ value $v/(2K)$, show which
# $K$ are in the regime.
#
# The gradient of each example's bound is measured per example: each of the $B = 8$ examples
# is repeated $R$ times in a batch, and a backward pass of `objective.loss` (one per chunk of
# copies) gives, for every copy, the gradient with respect to the encoder's output
# $(\mu(x), \log\sigma^2(x))$ and the decoder's $W, b$ (read with forward hooks on the two
# linear layers). The encoder's output gradient of an example *is* its gradient with respect to
# the encoder's bias, and its weight gradient is that times $x$, coordinate by coordinate: the
# same SNR. The SNR per example and coordinate is $|\text{mean}|/\text{sd}$ over the $R$
# copies; the table gives medians over the examples and coordinates.

# %%
NEAR_SHRINK, NEAR_WIDEN = 0.9, 1.5
near = linear_vae(NEAR_SHRINK, NEAR_WIDEN)
KS_LIN_SNR = [1, 4, 16] if FAST else [1, 4, 16, 64]
R_LIN_SNR = 1000 if FAST else 4000


def per_copy_snr(vae, name, k, x, copies, seed, budget=200_000):
    """SNR = |mean| / sd over ``copies`` independent gradients of each example's -bound, per
    example and coordinate: (B, 2d) for the encoder's output (mu, log sigma^2), (B, D + D d)
    for the decoder's b and W. The copies run as one batch, ``budget`` particle rows a pass."""
    objective = objectives.build(name, vae, k)
    seen = {}
    hooks = [vae.encoder.net[0].register_forward_hook(lambda m, i, o: seen.update(enc=o)),
             vae.decoder.net[0].register_forward_hook(lambda m, i, o: seen.update(z=i[0], dec=o))]
    chunk = max(1, min(copies, budget // (k * len(x))))
    pyro.set_rng_seed(seed)
    total = total_sq = 0
    try:
        for start in range(0, copies, chunk):
            r = min(chunk, copies - start)
            loss = objective.loss(x.repeat(r, 1))
            # g_enc: (rB, 2d); g_dec: (K, rB, D), the gradient w.r.t. the decoder's output
            g_enc, g_dec = torch.autograd.grad(loss, [seen["enc"], seen["dec"]])
            g = torch.cat([g_enc, g_dec.sum(0),
                           torch.einsum("kbi,kbj->bij", g_dec, seen["z"]).flatten(1)], -1)
            g = g.view(r, len(x), -1)
            total, total_sq = total + g.sum(0), total_sq + (g * g).sum(0)
    finally:
        for hook in hooks:
            hook.remove()
    mean = total / copies
    sd = ((total_sq - copies * mean**2) / (copies - 1)).clamp_min(0).sqrt()
    ratio = mean.abs() / sd
    return ratio[:, :2 * d].median().item(), ratio[:, 2 * d:].median().item()


pyro.set_rng_seed(8)
DRAWS = 50 if FAST else 500  # draws of the bound per example, for the ESS and the gap
rows, lin_snr, ess_lin = [], {}, {}
for k in KS_LIN_SNR:
    with torch.no_grad():
        lw = objectives.build("iwae", near, k).particles(x_lin.repeat(DRAWS, 1)).log_weights()
    ess_lin[k] = (1 / torch.softmax(lw, 0).pow(2).sum(0)).mean().item()
    gap = (log_px.repeat(DRAWS) - log_mean_exp(lw)).mean().item()
    for name in ("iwae", "iwae_dreg"):
        lin_snr[name, k] = per_copy_snr(near, name, k, x_lin, R_LIN_SNR, seed=200 + k)
    v = k / ess_lin[k] - 1  # Var[w / p(x)], from ESS = K / (1 + v)
    rows.append([k, f"{ess_lin[k]:.1f}", f"{ess_lin[k] / k:.2f}", f"{gap:.3f}",
                 f"{v / (2 * k):.3f}",
                 f"{lin_snr['iwae', k][0]:.3f}", f"{lin_snr['iwae_dreg', k][0]:.3f}",
                 f"{lin_snr['iwae', k][1]:.3f}", f"{lin_snr['iwae_dreg', k][1]:.3f}"])
print(f"guide: mean x {NEAR_SHRINK}, sds x {NEAR_WIDEN}; SNR: {R_LIN_SNR} copies of each of the "
      f"{B} examples per objective and K; ESS and gap: means over {DRAWS} draws per example; "
      "v/(2K): the large-K gap of 4a, with v = K/ESS - 1")
print_table(["K", "ESS", "ESS/K", "log p(x) - L_K", "v/(2K)", "IWAE encoder SNR",
             "DReG encoder SNR", "IWAE decoder SNR", "DReG decoder SNR"], rows)
# DReG's decoder gradient is IWAE's, draw by draw (the same seeds): the same SNR
assert all(abs(lin_snr["iwae", k][1] / lin_snr["iwae_dreg", k][1] - 1) < 1e-9 for k in KS_LIN_SNR)


def lin_slope(name, part, lo, hi):
    """d log SNR / d log K between K = lo and K = hi, on the linear-Gaussian VAE."""
    return math.log(lin_snr[name, hi][part] / lin_snr[name, lo][part]) / math.log(hi / lo)


print("\nlog-log slopes of the median SNR between successive K (4a, 4b for large K: -0.5, "
      "+0.5, +0.5)")
print_table(["K", "IWAE encoder", "DReG encoder", "decoder"],
            [[f"{lo} -> {hi}", f"{lin_slope('iwae', 0, lo, hi):+.2f}",
              f"{lin_slope('iwae_dreg', 0, lo, hi):+.2f}", f"{lin_slope('iwae', 1, lo, hi):+.2f}"]
             for lo, hi in zip(KS_LIN_SNR, KS_LIN_SNR[1:])])
print(f"noise floor of a median SNR from {R_LIN_SNR} copies: {0.674 / math.sqrt(R_LIN_SNR):.3f}")
lo, hi = KS_LIN_SNR[-2], KS_LIN_SNR[-1]  # the largest K: closest to the regime of 4a, 4b
assert -0.8 < lin_slope("iwae", 0, lo, hi) < -0.3        # IWAE's encoder SNR falls ~ 1/sqrt(K)
assert 0.15 < lin_slope("iwae_dreg", 0, lo, hi) < 0.8    # DReG's rises
assert 0.3 < lin_slope("iwae", 1, lo, hi) < 0.7          # the decoder's rises ~ sqrt(K)
assert all(lin_snr["iwae", k][0] < lin_snr["iwae", j][0]  # IWAE's falls at every step
           for j, k in zip(KS_LIN_SNR, KS_LIN_SNR[1:]))

# %% [markdown]
# **What the table shows** (full run). ESS/$K$ settles near 0.42-0.44 from $K = 16$ on, and the
# gap to $\log p(x)$ falls from 1.39 nats at $K = 1$ to 0.010 at $K = 64$, where the large-$K$
# gap $v/(2K)$ of 4a, with $v = K/\text{ESS} - 1 \approx 1.4$, is 0.011: the regime of 4a. There the slopes are the
# derived rates: from $K = 16$ to 64, $-0.51$ for IWAE's encoder, $+0.54$ for DReG's, $+0.53$
# for the decoder. Before it they are not: from $K = 1$ to 4, DReG's encoder SNR falls (slope
# $-0.13$) before it rises. Over the whole range IWAE's encoder SNR falls by 90% (0.385 to
# 0.038) while DReG's rises by 177% (0.603 to 1.669). The two decoder columns are the same
# numbers: DReG's decoder gradient is IWAE's, draw by draw.

# %% [markdown]
# ### 4d. Checks on the trained MNIST model
#
# Gradients of `objective.loss(x)` on 16 test images, for `iwae` and `iwae_dreg`:
#
# * with the same noise (the same Pyro seed), the two losses have the same value and the same
#   decoder gradient, to float round-off;
# * over independent replicates, their encoder gradients have the same mean: per coordinate,
#   the difference of the two means divided by its SE should behave like a standard normal
#   (about 95% within $\pm 2$). As a control that the test can fail, IWAE's mean at $K$ against
#   IWAE's mean at $K = 1$ (a different expectation, $\nabla\mathcal{L}_K \ne
#   \nabla\mathcal{L}_1$) must not pass it;
# * DReG's encoder gradient has the smaller variance;
# * the SNR per coordinate, $|\text{mean}|/\text{sd}$ over the replicates, summarized by its
#   median over the encoder's and over the decoder's coordinates, against $K$, next to the ESS
#   of the weights. Coordinates whose gradient is 0 in every replicate (the first-layer weights
#   of pixels that are black in all 16 images) are left out (`benchmarks/gradient_snr.py` counts
#   them as SNR 0, which lowers its encoder medians).

# %%
x_grad = splits.test[:16]
enc_params = [p for n, p in vae.named_parameters() if n.startswith("encoder")]
dec_params = [p for n, p in vae.named_parameters() if n.startswith("decoder")]
n_enc = sum(p.numel() for p in enc_params)
print(f"encoder: {n_enc:,} parameters, decoder: {sum(p.numel() for p in dec_params):,}")

same = {}
for name in ("iwae", "iwae_dreg"):
    pyro.set_rng_seed(7)
    loss = objectives.build(name, vae, 10).loss(x_grad)
    same[name] = (loss.item(), torch.cat([g.reshape(-1)
                                          for g in torch.autograd.grad(loss, dec_params)]))
(loss_i, g_i), (loss_d, g_d) = same["iwae"], same["iwae_dreg"]
print(f"K = 10, same seed: loss iwae {loss_i:.4f}, iwae_dreg {loss_d:.4f}; decoder gradients: "
      f"max |difference| {(g_i - g_d).abs().max():.1e} (max |gradient| {g_i.abs().max():.1e})")
assert abs(loss_i - loss_d) < 1e-6 * abs(loss_i)
assert (g_i - g_d).abs().max() <= 1e-4 * g_i.abs().max()


def gradient_moments(name, k, replicates, seed):
    """Mean and sd over independent replicates of the loss's gradient, per coordinate (encoder
    coordinates first), accumulated in float64 without storing the replicates."""
    objective = objectives.build(name, vae, k)
    pyro.set_rng_seed(seed)
    total = total_sq = 0
    for _ in range(replicates):
        grads = torch.autograd.grad(objective.loss(x_grad), enc_params + dec_params)
        g = torch.cat([t.reshape(-1) for t in grads]).double()
        total, total_sq = total + g, total_sq + g * g
    mean = total / replicates
    var = ((total_sq - replicates * mean**2) / (replicates - 1)).clamp_min(0)
    return mean, var.sqrt()


KS_SNR = [1, 10] if FAST else [1, 10, 100]
R_SNR = 20 if FAST else 200
moments = {(name, k): gradient_moments(name, k, R_SNR, seed=100 + k)
           for k in KS_SNR for name in ("iwae", "iwae_dreg")}
live = torch.ones(n_enc + g_i.numel(), dtype=torch.bool)
for _, sd in moments.values():
    live &= sd > 0  # coordinates whose gradient is not always 0
enc_live, dec_live = live[:n_enc], live[n_enc:]
print(f"{R_SNR} replicates per objective and K; coordinates with a non-zero gradient: encoder "
      f"{int(enc_live.sum()):,}, decoder {int(dec_live.sum()):,}")

snr = {}
for (name, k), (mean, sd) in moments.items():
    ratio = mean.abs() / sd.clamp_min(1e-300)
    snr[name, k] = (ratio[:n_enc][enc_live].median().item(),
                    ratio[n_enc:][dec_live].median().item())
ess_mnist = {}
pyro.set_rng_seed(9)
for k in KS_SNR:  # the effective sample size of the weights, over 20 draws for each image
    with torch.no_grad():
        lw = objectives.build("iwae", vae, k).particles(
            x_grad.repeat(20, *[1] * (x_grad.dim() - 1))).log_weights()
    ess_mnist[k] = (1 / torch.softmax(lw, 0).pow(2).sum(0)).mean().item()
print_table(["K", "ESS", "IWAE encoder SNR", "DReG encoder SNR", "IWAE decoder SNR",
             "DReG decoder SNR"],
            [[k, f"{ess_mnist[k]:.2f}", f"{snr['iwae', k][0]:.4f}", f"{snr['iwae_dreg', k][0]:.4f}",
              f"{snr['iwae', k][1]:.3f}", f"{snr['iwae_dreg', k][1]:.3f}"] for k in KS_SNR])

# %% [markdown]
# **The same expectation, a smaller variance** ($K$ = 10, encoder coordinates):

# %%
K_CHECK = 10


def mean_z(a, b):
    """Per live encoder coordinate: (mean a - mean b) / SE of that difference."""
    (m_a, sd_a), (m_b, sd_b) = moments[a], moments[b]
    se = ((sd_a**2 + sd_b**2) / R_SNR).sqrt()
    return ((m_a - m_b) / se.clamp_min(1e-300))[:n_enc][enc_live]


z_same = mean_z(("iwae", K_CHECK), ("iwae_dreg", K_CHECK))
z_control = mean_z(("iwae", K_CHECK), ("iwae", 1))
(_, sd_i), (_, sd_d) = moments["iwae", K_CHECK], moments["iwae_dreg", K_CHECK]
var_ratio = (sd_d[:n_enc][enc_live] / sd_i[:n_enc][enc_live]) ** 2
print_table(["(mean a - mean b) / SE, per encoder coordinate", "within ±2", "sd"],
            [[f"a = iwae K={K_CHECK}, b = iwae_dreg K={K_CHECK} (same expectation)",
              f"{(z_same.abs() < 2).double().mean():.1%}", z_same.std().item()],
             [f"a = iwae K={K_CHECK}, b = iwae K=1 (control: different expectations)",
              f"{(z_control.abs() < 2).double().mean():.1%}", z_control.std().item()],
             ["a standard normal", "95.4%", 1.0]])
print(f"\nvariance of iwae_dreg / variance of iwae, per encoder coordinate: median "
      f"{var_ratio.median():.3f}; below 1 for {(var_ratio < 1).double().mean():.1%} of them")
assert (z_same.abs() < 2).double().mean() > 0.88 and z_same.std() < 1.25   # same mean
assert (z_control.abs() < 2).double().mean() < (z_same.abs() < 2).double().mean() - 0.05
assert var_ratio.median() < 1                                               # lower variance

(m_i, _), (m_d, _) = moments["iwae", K_CHECK], moments["iwae_dreg", K_CHECK]
fig, ax = plt.subplots(figsize=(4.6, 4.2))
top = torch.argsort(m_i[:n_enc].abs(), descending=True)[:2000]
ax.scatter(m_i[top].numpy(), m_d[top].numpy(), s=4, alpha=0.5)
lim = float(m_i[top].abs().max()) * 1.1
ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8, label="equal means")
ax.set_xlabel(f"mean IWAE encoder gradient (K = {K_CHECK})")
ax.set_ylabel(f"mean DReG encoder gradient (K = {K_CHECK})")
ax.set_title(f"the 2,000 largest encoder coordinates,\n{R_SNR} replicates each", fontsize=9)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# **The SNR against $K$.** The slope of $\log \text{SNR}$ against $\log K$ between the smallest
# and the largest $K$, to set against the large-$K$ rates of 4a and 4b: $-1/2$ for IWAE's
# encoder (a fall by a factor of 10 from $K = 1$ to $K = 100$), $+1/2$ for DReG's encoder and for
# the decoder. Those rates need $K \gg v$, and the ESS above says how far this model is from
# that: on the linear-Gaussian VAE of 4c, ESS/$K$ settled near 0.4-0.5; here a few weights
# dominate every average. One caveat of the measurement: with $R$ replicates,
# $|\text{mean}|/\text{sd}$ of a coordinate whose true mean is 0 is about $|N(0, 1)|/\sqrt R$,
# whose median is $0.674/\sqrt R$; medians close to that floor are inflated by the noise. The
# checks: IWAE's encoder SNR falls; DReG's is higher at every $K$ and falls less than IWAE's, so
# that its advantage grows with $K$; the decoder's rises (in full mode: after the 60 steps of
# fast mode it need not).

# %%
def slope(name, part):
    """d log SNR / d log K between the smallest and the largest K measured."""
    lo, hi = KS_SNR[0], KS_SNR[-1]
    return math.log(snr[name, hi][part] / snr[name, lo][part]) / math.log(hi / lo)


enc_i, enc_d = [snr["iwae", k][0] for k in KS_SNR], [snr["iwae_dreg", k][0] for k in KS_SNR]
advantage = [d / i for i, d in zip(enc_i, enc_d)]
print(f"log-log slope of the SNR from K = {KS_SNR[0]} to K = {KS_SNR[-1]}: IWAE encoder "
      f"{slope('iwae', 0):+.3f}, DReG encoder {slope('iwae_dreg', 0):+.3f}, decoder "
      f"{slope('iwae', 1):+.3f} (for large K, 4a and 4b: -0.5, +0.5, +0.5)")
print(f"encoder SNR at K = {KS_SNR[-1]} / at K = {KS_SNR[0]}: IWAE {enc_i[-1] / enc_i[0]:.2f}, "
      f"DReG {enc_d[-1] / enc_d[0]:.2f} (1/sqrt(K): {math.sqrt(KS_SNR[0] / KS_SNR[-1]):.2f})")
print("DReG / IWAE encoder SNR: " + ", ".join(f"{a:.1f} at K = {k}"
                                                for k, a in zip(KS_SNR, advantage)))
print("ESS / K: " + ", ".join(f"{ess_mnist[k] / k:.2f} at K = {k}" for k in KS_SNR))
print(f"noise floor of a median SNR from {R_SNR} replicates: {0.674 / math.sqrt(R_SNR):.3f}")
assert enc_i[-1] < enc_i[0]                            # IWAE's encoder SNR falls with K
assert all(d > i for i, d in zip(enc_i, enc_d))        # DReG's is higher at every K
assert advantage[-1] > advantage[0]                    # and falls less: its advantage grows
if not FAST:  # the decoder's rises (after the 60 steps of fast mode it need not)
    assert snr["iwae", KS_SNR[-1]][1] > snr["iwae", KS_SNR[0]][1]

# %% [markdown]
# **What this shows** (full run). From $K = 1$ to 100, IWAE's encoder SNR falls by 32% (slope
# $-0.08$), DReG's by 17% (slope $-0.04$), and the decoder's rises by 117% (slope $+0.17$).
# DReG's encoder SNR is 1.7 times IWAE's at $K = 1$ (where it is the sticking-the-landing
# estimator) and 2.1 times at $K = 10$ and at $K = 100$: from $K = 10$ to 100 the two fall by
# about the same fraction (0.80 to 0.68 and 0.38 to 0.32). None of the three follows its
# large-$K$ rate: at $K = 100$ the ESS is 7.7 (ESS/$K$ = 0.08, and still falling), so every
# average is dominated by a few weights and $K \gg v$ does not hold. On this model, then,
# DReG's gain over IWAE is a factor of 1.7-2.1 over this range of $K$, not a diverging one; the
# diverging rates of 4a-4b are what 4c measures, where $K \gg v$ is reached.

# %% [markdown]
# ### 4e. The benchmark: `benchmarks/gradient_snr.py`
#
# The same measurement with 200 replicates and $K = 1, 3, 10, 30, 100$ on the same network
# trained for 3 epochs (with the config's own schedule), from `BENCHMARKS.md`; it was produced
# by
#
# ```
# PYROVAE_DATA_MIRROR=../shared/data python benchmarks/gradient_snr.py \
#     --json benchmarks/results/gradient_snr_cpu.json --plot docs/figures/gradient_snr.png
# ```
#
# Its medians include the always-zero coordinates as SNR 0, so they are lower than the ones
# measured here; the trends are what to compare.

# %%
bench = json.loads((nb.REPO / "benchmarks/results/gradient_snr_cpu.json").read_text())
by = {(r["objective"], r["k"]): r for r in bench["rows"]}
bench_ks = sorted({r["k"] for r in bench["rows"]})
print(f"benchmark: {bench['replicates']} replicates, {bench['examples']} test images, "
      f"{bench['epochs']} epochs of training")
print_table(["K", "IWAE encoder", "DReG encoder", "DReG / IWAE", "decoder (both)"],
            [[k, f"{by['iwae', k]['encoder']:.4f}", f"{by['iwae_dreg', k]['encoder']:.4f}",
              by["iwae_dreg", k]["encoder"] / by["iwae", k]["encoder"],
              by["iwae", k]["decoder"]] for k in bench_ks])
k_lo, k_hi = bench_ks[0], bench_ks[-1]
bench_slopes = {key: math.log(by[name, k_hi][part] / by[name, k_lo][part]) / math.log(k_hi / k_lo)
                for key, name, part in (("iwae", "iwae", "encoder"),
                                        ("iwae_dreg", "iwae_dreg", "encoder"),
                                        ("decoder", "iwae", "decoder"))}
print("log-log slopes from K = {} to {}: IWAE encoder {:+.3f}, DReG encoder {:+.3f}, decoder "
      "{:+.3f}".format(k_lo, k_hi, *bench_slopes.values()))
assert all(by["iwae_dreg", k]["encoder"] > by["iwae", k]["encoder"] for k in bench_ks)
assert by["iwae", k_hi]["encoder"] < by["iwae", k_lo]["encoder"]
assert by["iwae", k_hi]["decoder"] > by["iwae", k_lo]["decoder"]

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, ks, get, title in (
        (axes[0], KS_LIN_SNR, lambda name, k, part: lin_snr[name, k][part],
         f"linear-Gaussian VAE, per example (4c, {R_LIN_SNR} copies)"),
        (axes[1], KS_SNR, lambda name, k, part: snr[name, k][part],
         f"MNIST model (4d, {R_SNR} replicates, zero coordinates left out)"),
        (axes[2], bench_ks, lambda name, k, part: by[name, k][["encoder", "decoder"][part]],
         f"benchmarks/gradient_snr.py ({bench['replicates']} replicates)")):
    ax.loglog(ks, [get("iwae", k, 0) for k in ks], "o-", label="iwae: encoder")
    ax.loglog(ks, [get("iwae_dreg", k, 0) for k in ks], "s-", label="iwae_dreg: encoder")
    ax.loglog(ks, [get("iwae", k, 1) for k in ks], "^--", label="iwae and iwae_dreg: decoder")
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("median gradient SNR, |mean| / sd")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
ks_ref = np.array(KS_LIN_SNR[-2:], dtype=float)  # the large-K rates, through the points at K_-2
for part, name, power in ((0, "iwae", -0.5), (0, "iwae_dreg", 0.5)):
    start = lin_snr[name, KS_LIN_SNR[-2]][part]
    axes[0].loglog(ks_ref, start * (ks_ref / ks_ref[0]) ** power, "k:", lw=1,
                   label=r"$K^{\pm 1/2}$ (4a, 4b)" if power < 0 else None)
for ax in axes:
    ax.legend(fontsize=7)
fig.suptitle("gradient signal-to-noise ratio against K (Rainforth et al. 2018)", fontsize=10)
fig.tight_layout()
plt.show()

# %%
def change(values):
    """How the last value compares with the first, in words."""
    r = values[-1] / values[0] - 1
    return f"{'rises' if r > 0 else 'falls'} by {abs(r):.0%}"


k_top = KS_LIN_SNR[-1]
lin_i, lin_d = ([lin_snr[name, k][0] for k in KS_LIN_SNR] for name in ("iwae", "iwae_dreg"))
k_prev = KS_LIN_SNR[-2]
print(f"Linear-Gaussian VAE, K = {KS_LIN_SNR[0]} to {k_top} (ESS/K = "
      f"{ess_lin[k_top] / k_top:.2f} at K = {k_top}): IWAE's encoder SNR {change(lin_i)}, DReG's "
      f"{change(lin_d)}; from K = {k_prev} to {k_top} the slopes are "
      f"{lin_slope('iwae', 0, k_prev, k_top):+.2f} and "
      f"{lin_slope('iwae_dreg', 0, k_prev, k_top):+.2f} (-0.5 and +0.5 for large K).")
k_hi_snr = KS_SNR[-1]
print(f"MNIST model here, K = {KS_SNR[0]} to {k_hi_snr} (ESS/K = "
      f"{ess_mnist[k_hi_snr] / k_hi_snr:.2f} at K = {k_hi_snr}): IWAE's encoder SNR "
      f"{change(enc_i)} (slope {slope('iwae', 0):+.2f}), "
      f"DReG's {change(enc_d)} (slope {slope('iwae_dreg', 0):+.2f}) and is "
      f"{min(advantage):.1f}-{max(advantage):.1f} times IWAE's; the decoder's "
      f"{change([snr['iwae', k][1] for k in KS_SNR])} (slope {slope('iwae', 1):+.2f}).")
bench_d = [by["iwae_dreg", k]["encoder"] for k in bench_ks]
ratio_bench = [by["iwae_dreg", k]["encoder"] / by["iwae", k]["encoder"] for k in bench_ks]
print(f"Benchmark, K = {k_lo} to {k_hi}: IWAE's encoder SNR "
      f"{change([by['iwae', k]['encoder'] for k in bench_ks])} (slope "
      f"{bench_slopes['iwae']:+.2f}), DReG's {change(bench_d)} (slope "
      f"{bench_slopes['iwae_dreg']:+.2f}; largest at K = {bench_ks[bench_d.index(max(bench_d))]}) "
      f"and is {min(ratio_bench):.1f}-{max(ratio_bench):.1f} times IWAE's; the decoder's "
      f"{change([by['iwae', k]['decoder'] for k in bench_ks])} (slope "
      f"{bench_slopes['decoder']:+.2f}).")

# %% [markdown]
# ## 5. Reproducing Burda et al. (2015), Table 1: test log-likelihood against training time
#
# `benchmarks/reproduce.py run` trains a config under a budget of training minutes (the
# process's CPU time on one core with `--clock cpu`) and, at marks along the way, measures the
# test log-likelihood as Burda et al. do: $\mathcal{L}_{5000}$ per test image (here on a fixed
# subset of the test images), with its SE over images. Burda et al. report $-86.76$ nats for
# the VAE ($K = 1$), $-85.54$ for the IWAE with $K = 5$ and $-84.78$ with $K = 50$ (Table 1,
# one stochastic layer), after 3,280 passes over the data. A run on both cores counts wall
# seconds of training instead (`--clock wall`). Every result file of `benchmarks/results/reproduce_*.json`
# present when this notebook runs is drawn (runs still in progress draw the marks they have
# reached); the training itself is not run here (hours of CPU). The command of such a run:
#
# ```
# PYROVAE_DATA_MIRROR=../shared/data python benchmarks/reproduce.py run \
#     --config configs/burda_vae.yaml --minutes 90 --eval-at 5 10 20 30 45 60 75 90 \
#     --clock cpu --images 1000 --set train.engine=compiled --set train.epochs=760 \
#     --run-dir runs/reproduce/burda_vae --json benchmarks/results/reproduce_burda_vae_cpu.json
# ```

# %%
# Burda et al. (2015), Table 1, MNIST, one stochastic layer: test -log p(x) (IWAE-5000), by
# the bound trained and K; burda_2015(loss, K) finds a run's row (iwae_dreg trains the IWAE
# bound, with another gradient)
print(inspect.getsource(burda_2015))
print_table(["bound trained", "K", "Burda et al.", "-log p(x)"],
            [[bound, k, row, nats] for (bound, k), (row, nats) in BURDA_2015.items()])
results = []
for path in sorted((nb.REPO / "benchmarks" / "results").glob("reproduce_*.json")):
    res = json.loads(path.read_text())
    if res.get("curve"):
        results.append((path.name, res))


def describe(res):
    """The objective, K, the overrides that set the schedule or the learning rate, the epochs
    the schedule was set for and the threads."""
    extra = [o for o in res["overrides"] if re.match(r"train\.(schedule|lr)=", o)]
    extra += [f"{res['epochs_scheduled']} epochs", f"{res['threads']} thread"
              + ("s" if res["threads"] > 1 else "")]
    return f"{res['loss']}, K = {res['num_particles']} ({', '.join(extra)})"


if not results:
    print("no reproduce_*.json with a measured point in benchmarks/results yet")
else:
    rows = []
    for name, res in results:
        last = res["curve"][-1]
        paper = burda_2015(res["loss"], res["num_particles"])
        gap = (f"{-last['log_likelihood'] - paper[1]:+.2f} nats "
               f"({(-last['log_likelihood'] - paper[1]) / last['stderr']:.1f} SE) vs "
               f"{paper[0]}" if paper else "no number of this bound and K quoted here")
        rows.append([name, describe(res), f"{last['train_minutes']:.1f}", last["epoch"],
                     f"{-last['log_likelihood']:.2f} ± {last['stderr']:.2f}",
                     f"{last['images']:,}", gap])
    print_table(["file", "objective", "minutes", "epoch", "test -log p(x)", "images",
                 "last point against the paper"], rows)

    fig, ax = plt.subplots(figsize=(9, 4.8))
    for i, (_, res) in enumerate(results):
        # the curve's points are on one number of test images; a run's last model may also have
        # been measured on more of them afterwards (drawn as a star at the same minute)
        sizes = [p["images"] for p in res["curve"]]
        main = max(set(sizes), key=sizes.count)
        pts = [p for p in res["curve"] if p["images"] == main]
        extra = [p for p in res["curve"] if p["images"] != main]
        clock = "CPU" if res["clock"] == "cpu" else "wall"
        ax.errorbar([p["train_minutes"] for p in pts], [-p["log_likelihood"] for p in pts],
                    yerr=[p["stderr"] for p in pts], marker="o", ms=4, capsize=3,
                    color=f"C{i}", label=f"{describe(res)} [{clock} minutes, {main:,} images]")
        if extra:
            ax.errorbar([p["train_minutes"] for p in extra],
                        [-p["log_likelihood"] for p in extra], yerr=[p["stderr"] for p in extra],
                        marker="*", ms=11, capsize=3, ls="", color=f"C{i}")
    if any(p["images"] == 10000 for _, res in results for p in res["curve"]):
        ax.plot([], [], "k*", ms=10, ls="", label="the last model on all 10,000 test images")
    for (label, nats), ls in zip(BURDA_2015.values(), ("--", "-.", ":"), strict=True):
        ax.axhline(nats, color="k", ls=ls, lw=1, label=f"Burda et al. 2015: {label}, {nats}")
    ax.set_xlabel("training minutes (CPU time of one core, or wall time: in each label)")
    ax.set_ylabel("test -log p(x), IWAE-5000 estimate (nats)")
    ax.set_title("time to nats: the one-stochastic-layer model on dynamically binarized MNIST",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    plt.show()
    longest = max(res["curve"][-1]["train_minutes"] for _, res in results)
    epochs = max(res["curve"][-1]["epoch"] for _, res in results)
    print(f"The runs trained for at most {longest:.0f} minutes and {epochs} epochs, Burda et al. "
          "for 3,280 passes. The SEs are over the test images measured (a subset where 'images' "
          "says so; Burda et al. used all 10,000).")

# %% [markdown]
# ## Summary
#
# * $\mathcal{L}_K = \mathbb{E}\log\frac1K\sum_k w_k$ (`IWAE.bound`: `log_mean_exp` of
#   `Particles.log_weights`) is Jensen's inequality applied to an average of $K$ importance
#   weights. At $K = 1$ it is the ELBO: the same numbers as `trace` and as Pyro's `Trace_ELBO`
#   with the same seed.
# * On a linear-Gaussian VAE with a known $\log p(x)$: Jensen held for every example,
#   $\mathcal{L}_1$ matched the exact ELBO within its SE (at most 1.2 SE per example), and
#   $\mathcal{L}_K$ rose at every step of $K = 1, 5, 50, 500$ by 45-60 SEs, no example falling,
#   while staying below $\log p(x)$: the gap shrank from 5.54 to 1.21 nats, 78% of it closed.
# * On MNIST (10 epochs of ELBO training), on the same 1,000 test images, $\mathcal{L}_5$ was
#   $2.11 \pm 0.07$ nats above $\mathcal{L}_1$ and $\mathcal{L}_{50}$ $1.25 \pm 0.04$ above
#   $\mathcal{L}_5$ (32 and 34 paired SEs).
# * The gradients. For large $K$ (ESS a fixed fraction of $K$), IWAE's encoder SNR falls like
#   $1/\sqrt K$, DReG's rises like $\sqrt K$ and the decoder's rises like $\sqrt K$ (4a, 4b). On
#   the linear-Gaussian VAE with a guide close to its posterior, the measured slopes from
#   $K = 16$ to 64 were $-0.51$, $+0.54$ and $+0.53$; from $K = 1$ to 64 IWAE's encoder SNR fell
#   by 90% and DReG's rose by 177%.
# * DReG (`IWAEDReG.bound`) keeps IWAE's value and decoder gradient (the same numbers with the
#   same seed) and replaces the encoder's score-function term by its reparameterization: on
#   the MNIST model, the same expected encoder gradient (97.6% of the coordinates' mean
#   differences within 2 SE, against 32.9% for the control) and a 3.8 times smaller variance
#   (median ratio 0.265). Its encoder SNR was 1.7-2.1 times IWAE's; from $K = 1$ to 100 IWAE's
#   fell by 32% and DReG's by 17%, the decoder's rose by 117%. This model is far from the
#   large-$K$ regime (ESS 7.7 at $K = 100$), and neither encoder SNR follows its rate there; in
#   `benchmarks/gradient_snr.py` (3 epochs, $K = 1$ to 100) IWAE's fell by 26%, DReG's ended 1%
#   below its $K = 1$ value and was 2.0-2.7 times IWAE's.
# * Section 5: after 55.7 CPU-minutes of one core (470 epochs, cosine schedule), the VAE trained
#   with the ELBO reached $-\log p(x) = 87.55 \pm 0.24$ nats on all 10,000 test images, 0.79
#   nats above Burda et al.'s 86.76 (3.4 times the standard error over images) after 3,280 passes; the IWAE with $K = 5$ reached
#   $86.83 \pm 0.23$ after 56.9 minutes (235 epochs). On both cores (wall clock), the ELBO
#   reached $86.73 \pm 0.23$ after 95.3 minutes (1,400 epochs) and the IWAE with $K = 5$
#   $85.52 \pm 0.23$ after 100 minutes (871 epochs): Burda et al.'s 86.76 and 85.54, each within
#   0.03 nats (far below the $\pm 0.23$, the spread over test images). The same bound trained with DReG (`iwae_dreg`, $K = 5$) reached
#   $85.35 \pm 0.22$ after 94.1 minutes (650 epochs: its epochs cost 26% more); paired on the
#   same 1,000 images (`reproduce.py compare`) it was ahead of IWAE by $0.49 \pm 0.12$,
#   $0.56 \pm 0.09$ and $0.26 \pm 0.08$ nats at 30, 60 and 90 minutes, and level at the end
#   ($0.11 \pm 0.08$).
#
# ## References
#
# * Y. Burda, R. Grosse, R. Salakhutdinov (2015). Importance weighted autoencoders.
#   [arXiv:1509.00519](https://arxiv.org/abs/1509.00519)
# * T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh (2018).
#   Tighter variational bounds are not necessarily better. ICML.
#   [arXiv:1802.04537](https://arxiv.org/abs/1802.04537)
# * G. Tucker, D. Lawson, S. Gu, C. J. Maddison (2018). Doubly reparameterized gradient
#   estimators for Monte Carlo objectives. [arXiv:1810.04152](https://arxiv.org/abs/1810.04152)
# * G. Roeder, Y. Wu, D. Duvenaud (2017). Sticking the landing: simple, lower-variance gradient
#   estimators for variational inference. [arXiv:1703.09194](https://arxiv.org/abs/1703.09194)
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes.
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
#
# The other notebooks: [01 The ELBO](01_elbo.ipynb) · [02 The Gaussian KL](02_gaussian_kl.ipynb)
# · [03 Reparameterization](03_reparameterization.ipynb) ·
# [04 Training on MNIST](04_train_mnist.ipynb) ·
# [05 Priors and likelihoods](05_priors_and_likelihoods.ipynb) ·
# [06 Posterior checks](06_posterior_checks.ipynb).
