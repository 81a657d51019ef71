# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Posterior checks: IWAE, PSIS $\hat k$, the amortization gap, NUTS against the guide
#
# The ELBO is a lower bound on $\log p(x)$, and the amortized guide $q_\phi(z\mid x)$ is an
# approximation of the posterior $p_\theta(z\mid x)$. How loose is the bound, and how good is
# the guide? This notebook answers with `pyrovae.diagnostics`, one piece of mathematics
# next to the function that implements it, on a VAE trained on MNIST:
#
# 1. training a VAE with an 8-d latent space (`fit`, as in [04](04_train_mnist.ipynb));
# 2. the importance-weighted bound $\log p(x) \ge \mathcal{L}_K \ge \mathcal{L}_1 = \text{ELBO}$
#    ([Burda et al. 2015](https://arxiv.org/abs/1509.00519)): `log_importance_weights`,
#    `iwae_bound`, `sampled_elbo` ([07](07_tighter_bounds.ipynb) trains with this bound);
# 3. Pareto-smoothed importance sampling and its $\hat k$ diagnostic
#    ([Yao et al. 2018](https://arxiv.org/abs/1802.02538)): `psis` (ArviZ's `psislw`),
#    `pareto_k_summary`;
# 4. the inference gap split into the approximation and the amortization gap
#    ([Cremer et al. 2018](https://arxiv.org/abs/1801.03558)), with the best Gaussian $q^*$ for
#    each image: `optimize_gaussian`, `inference_gaps`;
# 5. a reference posterior by NUTS ([Hoffman & Gelman 2014](https://arxiv.org/abs/1111.4246))
#    against the amortized $q(z\mid x)$ and against $q^*$, checked with ArviZ:
#    `nuts_posterior`, `posterior_comparison`;
# 6. active units (Burda et al. 2015): `active_units`;
# 7. everything in one call: `pyrovae.evaluate.evaluate(run_dir, Options(...))`.
#
# **Settings.** Full mode (the saved outputs): `configs/mnist_z8.yaml` (784-512-256-8 MLP
# encoder, mirrored decoder, $p(z) = \mathcal{N}(0, I_8)$, Bernoulli likelihood on dynamically
# binarized MNIST) trained on the first 20,000 training images (5,000 further ones for
# validation) for 10 epochs; importance sampling with up to $K$ = 5,000 samples on
# 1,000 test images; the gaps on 100 test images; NUTS on four test images with 4 chains of
# 1,000 draws after 500 warmup steps. `PYROVAE_FAST=1` (CI): 2,000 training images, 2 epochs,
# one hidden layer of 64 units (`nb.FAST_SIZE`), $K \le 200$ on 100 images, the gaps on 10
# images with 30 steps, NUTS on two test images with 2 chains of 10 draws after 10 warmup
# steps, `evaluate` without NUTS (the numbers of a barely trained model and of chains far too
# short to be trusted, so the sampler's warnings are expected there: only the asserts matter). Numbers are nats per example;
# asserts with tolerances from standard errors make a broken library fail the notebook.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, tiny net, few samples

# %%
import json
import math
import warnings
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch
from IPython.display import display
from matplotlib.lines import Line2D
from pyro.infer import Trace_ELBO

import pyrovae
from pyrovae import diagnostics, objectives
from pyrovae.diagnostics import mean_stderr
from pyrovae.fit import fit, load_splits

CPU = torch.device("cpu")
print_table = nb.print_table

# %%
# The sizes of this mode: training, importance samples, NUTS, the local optimization of q.
# Training: nb.size, the shared sizes of the notebooks' config runs (fast mode: nb.FAST_SIZE).
SIZE = nb.size(full_epochs=10)
if FAST:
    N_IW, K_MAX = 100, 200                  # test examples x importance samples per example
    KS = [1, 2, 5, 10, 50, 100, 200]        # IWAE bounds, each from K_MAX / K disjoint groups
    NUTS_WARMUP, NUTS_DRAWS, NUTS_CHAINS = 10, 10, 2  # only that the code runs: r-hat far off
    NUTS_TYPICAL = 0                        # NUTS on the low and high k-hat images only
    GAP_N, GAP_STEPS, GAP_EVAL = 10, 30, 200
else:
    N_IW, K_MAX = 1000, 5000
    KS = [1, 2, 5, 10, 50, 100, 500, 1000, 5000]
    NUTS_WARMUP, NUTS_DRAWS, NUTS_CHAINS = 500, 1000, 4
    NUTS_TYPICAL = 2                        # and on the first two test images
    GAP_N, GAP_STEPS, GAP_EVAL = 100, 300, 1000


def train(config, *overrides):
    """fit() configs/<config> with this mode's sizes and the overrides, in a fresh run folder;
    fit's log lines name that (temporary) folder, so they are silenced."""
    cfg = nb.config(config, *overrides, size=SIZE)
    run_dir = Path(fit(cfg, log=lambda *a: None))
    print(f"{' '.join([config, *overrides])}: trained")
    return cfg, run_dir


def pm(values):
    """'mean ± standard error' of per-example values."""
    mean, se = mean_stderr(values)
    return f"{mean:8.3f} ± {se:.3f}"


# %% [markdown]
# ## 1. A VAE with an 8-d latent space
#
# `fit(cfg)` trains `VAE.model` and `VAE.guide` on the `Trace_ELBO` loss (on a CPU with the
# `traced` engine: the loss `SVI` would minimize, recorded once; notebook 04); `pyrovae.load(run_dir)` returns the model of the best validation ELBO, in
# eval mode. An 8-d latent space keeps NUTS affordable (section 5) while the model is good
# enough for its posteriors to be interesting. The test set is binarized once, with a fixed
# seed, so every number below is on the same binary images.

# %%
cfg, run_dir = train("mnist_z8.yaml")
vae = pyrovae.load(run_dir)
x_test = load_splits(cfg, CPU).test
x = x_test[:N_IW]                  # the images of sections 2-5
with torch.no_grad():
    elbo_ref = objectives.dataset_elbo(vae, x, num_particles=100)
print(f"z_dim {vae.z_dim}, {x_test.shape[0]} binary test images; on the first {N_IW}: ELBO "
      f"{elbo_ref['elbo']:.2f} = recon {elbo_ref['recon']:.2f} - KL {elbo_ref['kl']:.2f} nats")
assert vae.z_dim == 8 and elbo_ref["kl"] > 0 and elbo_ref["elbo"] < 0

# %% [markdown]
# ## 2. The importance-weighted bound
#
# For any proposal $q(z\mid x)$ that covers the posterior, the importance weight
# $w = p(x, z) / q(z\mid x)$ with $z \sim q(z\mid x)$ is an unbiased estimate of the likelihood:
# $$
# \mathbb{E}_{q}[w] = \int q(z\mid x)\,\frac{p(x, z)}{q(z\mid x)}\,dz = p(x).
# $$
# So is the mean of $K$ independent weights, and since $\log$ is concave, Jensen's inequality
# gives the bound of [Burda et al. (2015)](https://arxiv.org/abs/1509.00519), eq. 8:
# $$
# \log p(x) = \log \mathbb{E}\Big[\frac1K\sum_{k=1}^K w_k\Big] \;\ge\; \mathbb{E}\Big[\log \frac1K \sum_{k=1}^K w_k\Big] =: \mathcal{L}_K(x).
# $$
# At $K = 1$ it is the ELBO of [01](01_elbo.ipynb), $\mathcal{L}_1 = \mathbb{E}_q[\log p(x, z) - \log q(z\mid x)]$. It rises with $K$
# (their Theorem 1): the mean of $K$ weights is the average, over the $K$ subsets of size
# $K - 1$ drawn uniformly, of those subsets' means, so by Jensen again
# $$
# \mathcal{L}_K = \mathbb{E}\Big[\log \mathbb{E}_{I}\Big[\tfrac{1}{K-1}\textstyle\sum_{k \in I} w_k\Big]\Big]
# \;\ge\; \mathbb{E}\Big[\mathbb{E}_I\Big[\log \tfrac{1}{K-1}\textstyle\sum_{k\in I} w_k\Big]\Big] = \mathcal{L}_{K-1},
# $$
# and $\mathcal{L}_K \to \log p(x)$ as $K \to \infty$ when the weights are bounded (the law of large
# numbers inside the $\log$). `diagnostics.log_importance_weights(vae, x, K)` returns the
# $(K, B)$ matrix of $\log w_k = \log p(x\mid z_k) + \log p(z_k) - \log q(z_k\mid x)$ from the model's own
# distributions (`vae.decode`, `vae.prior`, `vae.encode`), in float64, and
# `diagnostics.iwae_bound(lw)` is $\log \frac1K \sum_k w_k$ = `logsumexp(lw, 0) - log K`.
#
# **$\mathcal{L}_1$ is the ELBO, with the same noise.** `diagnostics.sampled_elbo` computes the ELBO
# from the Pyro program itself: the guide's trace, the model replayed on it, $\log p(x, z) - \log q(z\mid x)$
# from the traces' log-densities. With the same seed it draws the very $z$ that
# `log_importance_weights(vae, x, 1)` draws, and so does `Trace_ELBO` for the guide's `z`
# site: the three agree to float round-off, example by example (the first two) and in sum.
# With different noise, the average of the weights' logs over all $K_{\max}$ samples (the ELBO with
# $K_{\max}$ particles) must match `objectives.dataset_elbo` (closed-form KL) within Monte Carlo error.

# %%
pyro.set_rng_seed(7)
lw1 = diagnostics.log_importance_weights(vae, x, 1)
pyro.set_rng_seed(7)
elbo_traces = diagnostics.sampled_elbo(vae, x, 1)
pyro.set_rng_seed(7)
with torch.no_grad():
    trace_elbo = -Trace_ELBO().loss(vae.model, vae.guide, x)
diff = (diagnostics.iwae_bound(lw1) - elbo_traces).abs().max().item()
print(f"max |IWAE_1 - sampled_elbo| over {N_IW} examples, same seed: {diff:.1e}")
print(f"sum of IWAE_1 {diagnostics.iwae_bound(lw1).sum().item():.3f}, "
      f"-Trace_ELBO loss {trace_elbo:.3f}")
assert diff < 1e-6
assert abs(diagnostics.iwae_bound(lw1).sum().item() - trace_elbo) < 1e-6 * abs(trace_elbo)

# K_MAX importance samples for each of the N_IW examples: the raw material of sections 2-3
pyro.set_rng_seed(0)
lw = torch.cat([diagnostics.log_importance_weights(vae, x[i:i + 100], K_MAX)
                for i in range(0, N_IW, 100)], dim=1)                     # (K_MAX, N_IW)
print(f"log weights {tuple(lw.shape)}")
elbo_mc = lw.mean(0)                       # the ELBO with K_MAX particles, per example
mc_var = lw.var(0) / K_MAX                 # its Monte Carlo variance, per example
# dataset_elbo: one estimate per example with 100 particles (KL in closed form); its
# variance is at most that of 100 weights' mean (the closed-form KL has none)
se = math.sqrt((mc_var.sum() * (1 + K_MAX / 100)).item()) / N_IW
gap = elbo_mc.mean().item() - elbo_ref["elbo"]
print(f"ELBO: mean log weight {elbo_mc.mean():.3f}, dataset_elbo {elbo_ref['elbo']:.3f}, "
      f"difference {gap:+.3f} (Monte Carlo standard error {se:.3f})")
assert abs(gap) < 4 * se


# %% [markdown]
# **$\mathcal{L}_K$ against $K$.** From the $K_{\max}$ samples of each example, $\mathcal{L}_K$ is estimated
# without bias by splitting them into $K_{\max}/K$ disjoint groups of $K$ and averaging the groups'
# `iwae_bound`s. The means over examples (left) carry standard errors dominated by how much
# the examples differ; the rise with $K$ is measured best paired, example by example, as
# $\mathcal{L}_K - \mathcal{L}_1$ (right). The asserts: no step up in $K$ lowers the bound (the paired
# difference is above $-3$ of its standard errors), and $\mathcal{L}_{K_{\max}} - \mathcal{L}_1$ is more than
# 10 standard errors and more than 0.5 nats above 0 (printed under the table); per example and
# with the same samples, log-mean-exp is above the mean (Jensen) with no exception.

# %%
def iwae_k(lw, k):
    """L_K per example: the mean of iwae_bound over K_MAX / K disjoint groups of K samples."""
    groups = lw.shape[0] // k
    blocks = lw[: groups * k].reshape(groups, k, -1).transpose(0, 1).reshape(k, -1)
    return diagnostics.iwae_bound(blocks).reshape(groups, -1).mean(0)

bound = {k: iwae_k(lw, k) for k in KS}
rows = []
for k in KS:
    m, s = mean_stderr(bound[k])
    dm, ds = mean_stderr(bound[k] - bound[1])
    rows.append([k, m, s, dm, ds if k > 1 else 0.0])
print_table(["K", "L_K", "std. error", "L_K - L_1 (paired)", "std. error"], rows)
steps = []                               # each step up in K: paired mean / its standard error
for a, b in zip(KS, KS[1:]):
    m, s = mean_stderr(bound[b] - bound[a])
    steps.append(m / s)
    assert m > -3 * s, f"L_{b} < L_{a}: {m:.3f} ± {s:.3f}"
m, s = mean_stderr(bound[KS[-1]] - bound[1])
print(f"\nL_{KS[-1]} - L_1 = {m:.2f} ± {s:.2f} nats ({m / s:.0f} standard errors of the paired "
      f"difference over {N_IW} images); the steps K -> next K: {min(steps):+.1f} to "
      f"{max(steps):+.1f} standard errors")
assert m > 10 * s and m > 0.5
assert bool((diagnostics.iwae_bound(lw) >= lw.mean(0) - 1e-9).all())
log_px = bound[KS[-1]]                  # the best estimate of log p(x) here: L_{K_MAX}

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
means, ses = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
ax1.errorbar(KS, means, yerr=ses, fmt="o-", capsize=3, label="L_K (iwae_bound)")
ax1.axhline(elbo_ref["elbo"], color="k", ls=":", label="ELBO (dataset_elbo)")
ax1.set_ylabel("L_K  [nats, mean over examples]")
ax2.errorbar(KS, [r[3] for r in rows], yerr=[r[4] for r in rows], fmt="o-", capsize=3, color="C1")
ax2.set_ylabel("L_K - L_1  [nats, paired]")
for ax in (ax1, ax2):
    ax.set_xscale("log")
    ax.set_xlabel("K (importance samples)")
    ax.grid(alpha=0.3)
ax1.legend(fontsize=8)
fig.suptitle(
    f"the importance-weighted bound rises with K ({N_IW} test images, ± 1 standard error)",
    fontsize=10,
)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Pareto-smoothed importance sampling: $\hat k$
#
# How far can $\mathcal{L}_K$ be trusted? Importance sampling is only as good as the tail of the
# weights' distribution: a $q$ that is too narrow, or misplaced, rarely draws $z$ where
# $p(z\mid x)$ still has mass, and those rare draws carry enormous weights. Following
# [Yao et al. (2018)](https://arxiv.org/abs/1802.02538), "Yes, but did it work?", fit a
# generalized Pareto distribution to the largest weights (the tail;
# [Vehtari et al. 2024](https://arxiv.org/abs/1507.02646)),
# $$
# P(w > t \mid w > u) = \Big(1 + \frac{k\,(t - u)}{\sigma}\Big)^{-1/k},
# $$
# whose shape $k$ says how many moments the weights have: $\mathbb{E}[w^r] < \infty$ only for $r < 1/k$.
# With $k < 1/2$ the weights have a finite variance and the central limit theorem applies;
# with $1/2 \le k < 1$ the estimate still converges, slowly and erratically; above $k = 0.7$
# it is unreliable at any practical $K$; with $k \ge 1$ the mean itself does not exist for
# the fitted tail. The estimated $\hat k$ of each example is thus a diagnostic of $q(z\mid x)$ as a
# proposal for $p(z\mid x)$ (Yao et al.: $\hat k < 0.5$ good, $0.5$–$0.7$ usable, $> 0.7$ not).
# PSIS also *smooths*: it replaces the largest weights by the fitted tail's quantiles, which
# lowers the variance of the estimate.
#
# `diagnostics.psis(lw)` returns each example's $\hat k$ and the PSIS estimate of $\log p(x)$ from the
# $(K, B)$ log weights, via `arviz.psislw` (one fit per example). First, a calibration: weights
# drawn from generalized Pareto distributions of known shape $k$ (by the inverse CDF,
# $w = \sigma\,(U^{-k} - 1)/k$), for which $\hat k$ must recover $k$ (ArviZ shrinks $\hat k$ slightly
# towards $0.5$, a weak prior for short tails).

# %%
rng = np.random.default_rng(0)
S, B = 1000, 200                         # 200 examples of 1,000 weights each
rows = []
for k_true in (0.2, 0.5, 0.9):
    log_w = np.log((rng.uniform(size=(S, B)) ** -k_true - 1) / k_true)   # GPD(k, sigma = 1)
    kh, _ = diagnostics.psis(log_w)
    rows.append([k_true, *mean_stderr(kh), float(np.mean(kh > 0.7))])
    assert abs(kh.mean() - k_true) < 0.1, (k_true, kh.mean())
print_table(["true k", "mean k-hat", "std. error", "fraction > 0.7"], rows)

# %% [markdown]
# **$\hat k$ of the VAE's guide.** From the $K_{\max}$ log weights of each of the test images: $\hat k$ per
# example, checked against `arviz.psislw` called directly (sample axis last), their summary
# (`pareto_k_summary`), and the histogram. The sample-size threshold
# $\min(1 - 1/\log_{10} S,\ 0.7)$ (`pareto_k_sample_threshold`; Vehtari et al. 2024) is the $\hat k$ above
# which even smoothing cannot make $S$ samples reliable.

# %%
khat, psis_ll = diagnostics.psis(lw)
smoothed, khat_az = az.psislw(lw.numpy().T.copy(), reff=1.0, normalize=False)
assert np.allclose(khat, khat_az) and np.all(np.isfinite(khat))
summary = diagnostics.pareto_k_summary(khat)
threshold_s = diagnostics.pareto_k_sample_threshold(K_MAX)
q = summary["pareto_k_quantiles"]
print(
    f"k-hat over {N_IW} test images with K = {K_MAX}: mean {summary['pareto_k_mean']:.2f}, "
    f"5% {q['0.05']:.2f}, median {q['0.5']:.2f}, 95% {q['0.95']:.2f}, max "
    f"{summary['pareto_k_max']:.2f}"
)
print(
    f"fraction above 0.7: {summary['pareto_k_frac_bad']:.3f};  below 0.5: "
    f"{np.mean(khat < 0.5):.3f};  "
    f"sample-size threshold for K = {K_MAX}: {threshold_s:.2f}"
)
assert summary["pareto_k_frac_bad"] == np.mean(khat > 0.7)
good = khat < 0.5
print(f"log p(x): IWAE {pm(log_px)}   PSIS {pm(psis_ll)}   "
      f"(where k-hat < 0.5, PSIS - IWAE = {np.mean(psis_ll[good] - log_px.numpy()[good]):+.4f})")
# where the weights have a finite variance, smoothing changes (almost) nothing
assert np.abs(psis_ll[good] - log_px.numpy()[good]).mean() < 0.05

bound_gain = (log_px - elbo_mc).numpy()      # L_K_MAX - ELBO, per example
rho = np.corrcoef(khat, bound_gain)[0, 1]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
ax1.hist(khat, bins=40, color="C0", alpha=0.8)
for v, ls in ((0.5, ":"), (0.7, "--")):
    ax1.axvline(v, color="k", ls=ls, label=f"k = {v}")
ax1.set_xlabel("Pareto k-hat")
ax1.set_ylabel("test images")
ax1.set_title(
    f"{100 * summary['pareto_k_frac_bad']:.0f}% of the images above 0.7 (K = {K_MAX})", fontsize=9
)
ax1.legend(fontsize=8)
ax2.scatter(khat, bound_gain, s=5, alpha=0.5)
ax2.set_xlabel("Pareto k-hat")
ax2.set_ylabel("L_K - ELBO  [nats]")
ax2.set_title(f"a poor proposal leaves more for K to gain (correlation {rho:.2f})", fontsize=9)
for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# **A good and a bad proposal.** The image with the lowest $\hat k$ and the one with the highest:
# the running estimate $\log \frac1k\sum_{j \le k} w_j$ as the samples come in, and the share of
# the largest weight in their sum, with the effective sample size
# $\mathrm{ESS} = (\sum_k w_k)^2 / \sum_k w_k^2$. With a low $\hat k$ the estimate settles quickly and
# no single draw matters; with a high $\hat k$ it climbs in jumps, each made by one draw from
# the tail of $q(z\mid x)$ that lands where the posterior has much more mass than $q$ allows:
# $q$ is too narrow (or misplaced) there, and a larger $K$ is not a cure, since the estimate's
# variance is infinite and the next jump can come at any $K$.

# %%
low, high = int(np.argmin(khat)), int(np.argmax(khat))
fig = plt.figure(figsize=(13, 3.4))
grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 2.2, 2.2])
ax_run, ax_top = fig.add_subplot(grid[2]), fig.add_subplot(grid[3])
rows = []
for j, (i, name) in enumerate(((low, "low"), (high, "high"))):
    w = lw[:, i]
    running = torch.logcumsumexp(w, 0) - torch.log(torch.arange(1, K_MAX + 1, dtype=w.dtype))
    norm = torch.softmax(w, 0)
    ess = (1 / (norm**2).sum()).item()
    rows.append([f"{name} (test image {i})", float(khat[i]), float(running[-1]),
                 float(psis_ll[i]), float(elbo_mc[i]), f"{norm.max().item():.3f}", f"{ess:.0f}"])
    ax = fig.add_subplot(grid[j])
    ax.imshow(x[i, 0].numpy(), cmap="gray")
    ax.set_title(f"k-hat {khat[i]:.2f}", fontsize=9)
    ax.axis("off")
    ax_run.plot(np.arange(1, K_MAX + 1), (running - running[-1]).numpy(), color=f"C{j}",
                label=f"{name} k-hat (image {i})")
    ax_top.plot(np.arange(1, 51), torch.sort(norm, descending=True).values[:50].numpy(),
                "o-", ms=3, color=f"C{j}", label=name)
ax_run.set_xscale("log")
ax_run.set_xlabel("k (samples so far)")
ax_run.set_ylabel("log mean of the first k weights\n minus its final value [nats]", fontsize=8)
ax_run.legend(fontsize=8)
ax_top.set_yscale("log")
ax_top.set_xlabel("rank of the weight")
ax_top.set_ylabel("normalized weight")
ax_top.legend(fontsize=8)
for ax in (ax_run, ax_top):
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
print_table(["example", "k-hat", "IWAE", "PSIS", "ELBO", "largest weight share", "ESS"], rows)
assert khat[low] < 0.7 < khat[high]

# %% [markdown]
# ## 4. The amortization gap
#
# [Cremer, Li & Duvenaud (2018)](https://arxiv.org/abs/1801.03558) split what the guide costs. Let $q_\phi(z\mid x)$ be the amortized
# guide (the encoder's output) and $q^*(z\mid x)$ the best member of the same family (a diagonal
# Gaussian) for this one $x$. Since $\text{ELBO}[q] = \log p(x) - \mathrm{KL}(q\,\Vert\,p(z\mid x))$ for every $q$,
# $$
# \underbrace{\log p(x) - \text{ELBO}[q_\phi]}_{\text{inference gap}}
# = \underbrace{\log p(x) - \text{ELBO}[q^*]}_{\text{approximation gap}\ =\ \mathrm{KL}(q^*\Vert\, p(z\mid x))\ \ge\ 0}
# + \underbrace{\text{ELBO}[q^*] - \text{ELBO}[q_\phi]}_{\text{amortization gap}\ \ge\ 0},
# $$
# the first from the family being too simple for the posterior, the second from one
# encoder serving every $x$ (the amortization gap is $\ge 0$ because $q^*$ is the best of a family
# that contains $q_\phi(\cdot\mid x)$). `diagnostics.optimize_gaussian(vae, x, loc, scale)` finds $q^*$
# for each image alone: Adam on its $(\mu, \log s)$, started from the encoder's output, on a
# reparameterized estimate of that image's ELBO ([03](03_reparameterization.ipynb));
# `diagnostics.inference_gaps(vae, x, log_px)` calls it, evaluates both ELBOs with the same noise
# (common random numbers, `gaussian_elbo`), and takes $\log p(x)$ as given: here
# $\mathcal{L}_{K_{\max}}$ from section 2. That is
# a *lower* bound whose slack is largest where $q$ is a poor proposal (high $\hat k$), so the
# approximation gap is underestimated, and can even come out negative for single images.
# The decomposition must add up exactly and both gaps must be $\ge 0$ within their standard
# errors.

# %%
pyro.set_rng_seed(0)
gaps = diagnostics.inference_gaps(vae, x[:GAP_N], log_px[:GAP_N], steps=GAP_STEPS,
                                  eval_particles=GAP_EVAL)
print(f"{GAP_N} test images, {GAP_STEPS} Adam steps per image, {GAP_EVAL} particles per "
      "ELBO\n")
print_table(["nats per example", "mean", "std. error"],
            [[f"log p(x) (L_K, K = {K_MAX})", *mean_stderr(log_px[:GAP_N])],
             *[[key, *mean_stderr(value)] for key, value in gaps.items()]])
g = gaps
assert torch.allclose(
    g["inference_gap"], g["approximation_gap"] + g["amortization_gap"], rtol=0, atol=1e-9
)
assert torch.allclose(g["inference_gap"], log_px[:GAP_N] - g["elbo_amortized"], rtol=0, atol=1e-9)
assert torch.allclose(
    g["amortization_gap"], g["elbo_optimized"] - g["elbo_amortized"], rtol=0, atol=1e-9
)
for key in ("approximation_gap", "amortization_gap"):
    m, s = mean_stderr(g[key])
    assert m > -3 * s, f"{key} {m:.3f} ± {s:.3f} < 0"
print(
    f"\namortization gap > 0 in {np.mean(g['amortization_gap'].numpy() > 0):.0%} of the images; "
    "its share of the inference gap: "
    f"{g['amortization_gap'].mean() / g['inference_gap'].mean():.0%}"
)
negative = g["approximation_gap"].numpy() < 0
if negative.any():
    print(
        f"approximation gap < 0 (L_K below ELBO[q*]) in {negative.sum()} images, median k-hat "
        f"{np.median(khat[:GAP_N][negative]):.2f}; the others' median k-hat "
        f"{np.median(khat[:GAP_N][~negative]):.2f}"
    )
# the amortized ELBO by inference_gaps (GAP_EVAL particles) against the log weights' mean
m2, s2 = mean_stderr(g["elbo_amortized"] - elbo_mc[:GAP_N])
assert abs(m2) < 4 * s2 + 1e-3

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 3]})
mean = {k: v.mean().item() for k, v in g.items()}
se = {k: mean_stderr(v)[1] for k, v in g.items()}
ax1.bar(
    [0],
    [mean["approximation_gap"]],
    yerr=[se["approximation_gap"]],
    color="C0",
    label="approximation",
)
ax1.bar([0], [mean["amortization_gap"]], bottom=[mean["approximation_gap"]],
        yerr=[se["amortization_gap"]], color="C1", label="amortization")
ax1.set_xticks([0], [f"mean over {GAP_N} images"])
ax1.set_ylabel("gap (nats)")
ax1.set_title(
    f"inference gap {mean['inference_gap']:.2f} ± {se['inference_gap']:.2f} nats", fontsize=9
)
ax1.legend(fontsize=8)
n_show = min(GAP_N, 40)
idx = np.arange(n_show)
ax2.bar(idx - 0.2, g["approximation_gap"][:n_show].numpy(), width=0.4, color="C0",
        label="approximation gap")
ax2.bar(idx + 0.2, g["amortization_gap"][:n_show].numpy(), width=0.4, color="C1",
        label="amortization gap")
ax2.plot(
    idx, g["inference_gap"][:n_show].numpy(), "_", ms=10, mew=2, color="k", label="inference gap"
)
ax2.axhline(0, color="k", lw=0.6)
ax2.set_xlabel("test image")
ax2.set_ylabel("gap (nats)")
ax2.set_title(f"the first {n_show} images, one by one", fontsize=9)
ax2.legend(fontsize=8)
for ax in (ax1, ax2):
    ax.grid(alpha=0.3, axis="y")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 5. A reference posterior by NUTS, against $q$ and $q^*$
#
# Importance sampling judges $q$ only through its weights. A Markov chain sees the posterior
# itself: $p(z\mid x) \propto p(z)\,p(x\mid z)$ is known up to its normalizer $p(x)$, which is all that
# Hamiltonian Monte Carlo, and its adaptive form NUTS
# ([Hoffman & Gelman 2014](https://arxiv.org/abs/1111.4246)), needs. `diagnostics.posterior_model(vae, x)` is the Pyro model of
# $p(z, x)$ with the trained prior and decoder (`z ~ p(z)` and `x ~ p(x|z)` observed, in a plate
# over a few examples, whose posteriors are independent factors), and
# `diagnostics.nuts_posterior` runs `pyro.infer.MCMC(NUTS(...))` on it with the networks
# frozen, one run per chain from overdispersed starts $z_0 = \mu(x) + 2\,\sigma(x)\odot\varepsilon$, and
# returns ArviZ `InferenceData` with `z` of dims (chain, draw, example, latent). The draws
# are trusted when the chains agree: rank-normalized split $\hat R \le 1.01$ and a bulk
# effective sample size of at least 100 per chain
# ([Vehtari et al. 2021](https://arxiv.org/abs/1903.08008); `diagnostics.RHAT_THRESHOLD`,
# `diagnostics.ESS_PER_CHAIN`), which `posterior_comparison` checks and flags.
#
# **Why variational posteriors tend to be too narrow.** The ELBO is
# $\log p(x) - \mathrm{KL}(q(z\mid x)\,\Vert\,p(z\mid x))$, so fitting $q$ minimizes the *reverse* KL,
# $\mathbb{E}_q[\log q - \log p(z\mid x)]$: it pays heavily for mass where the posterior has none
# ($q > 0$, $p \approx 0$) and nothing for posterior mass it misses. It is mode-seeking and
# under-disperses. Exactly so for a Gaussian posterior $\mathcal{N}(m, \Sigma)$ with precision $\Lambda = \Sigma^{-1}$
# and a factorized Gaussian $q = \prod_j \mathcal{N}(\mu_j, s_j^2)$ (the guide's family):
# $$
# \mathrm{KL}(q\,\Vert\,p) = \tfrac12\Big[\textstyle\sum_j \Lambda_{jj}s_j^2 + (\mu - m)^\top\Lambda(\mu - m) - \sum_j \log s_j^2\Big] + \text{const},
# $$
# so the optimum is $\mu = m$ and $s_j^2 = 1/\Lambda_{jj}$, and $1/\Lambda_{jj} \le \Sigma_{jj}$ always (Cauchy–Schwarz:
# $1 = (e_j^\top e_j)^2 = (e_j^\top\Sigma^{1/2}\,\Sigma^{-1/2}e_j)^2 \le \Sigma_{jj}\Lambda_{jj}$), with equality only when $z_j$
# is uncorrelated with the rest. Checked on random covariance matrices:

# %%
rng = np.random.default_rng(1)
ratios = []
for _ in range(1000):
    a = rng.normal(size=(8, 8))
    sigma = a @ a.T + 0.1 * np.eye(8)                   # a random posterior covariance
    ratios.append(np.sqrt(1 / np.diag(np.linalg.inv(sigma)) / np.diag(sigma)))
ratios = np.concatenate(ratios)
print(f"optimal factorized sd / true marginal sd over 8,000 dims: max {ratios.max():.4f}, "
      f"median {np.median(ratios):.3f}")
assert ratios.max() <= 1 + 1e-12

# %% [markdown]
# **NUTS on four test images** (two in fast mode): the first two test images (no selection:
# typical ones) and the images of lowest and highest $\hat k$ from section 3, in one joint run
# per chain. The ArviZ summary (`az.summary`) gives, per image and latent dim, the posterior mean and sd, their
# Monte Carlo standard errors, the bulk and tail ESS and $\hat R$. Then
# `diagnostics.posterior_comparison` applies the rule above to every image and, where it
# fails, says so with a `UserWarning` (not silenced: printed under the table, one line per
# image and check). The asserts: the images it flags are exactly those whose rows of the ArviZ
# table break the rule ($\hat R > 1.01$ or a bulk ESS below 100 per chain), and, in full mode,
# no image is flagged, so that the draws below are a trusted reference. In fast mode, chains of
# 10 draws cannot be held to the rule: the warnings are expected there, and show what an
# untrusted reference looks like.

# %%
typical = [i for i in range(N_IW) if i not in (low, high)][:NUTS_TYPICAL]
chosen = [*typical, low, high]
roles = ["typical"] * len(typical) + ["low k-hat", "high k-hat"]
x_nuts = x[chosen]
idata = diagnostics.nuts_posterior(vae, x_nuts, num_warmup=NUTS_WARMUP, num_samples=NUTS_DRAWS,
                                   num_chains=NUTS_CHAINS, seed=0)
print(f"NUTS: {NUTS_CHAINS} chains x ({NUTS_WARMUP} warmup + {NUTS_DRAWS} draws); "
      f"z has dims {dict(idata.posterior['z'].sizes)}")
table = az.summary(idata, var_names=["z"], kind="all", round_to=3)
table.index = [f"image {chosen[int(s.split('[')[1].split(',')[0])]}, z{s.split(',')[1].strip(' ]')}"
               for s in table.index]
display(table[["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]])

with torch.no_grad():
    q_loc, q_scale = vae.encoder(x_nuts)
# the library's checks of the sampler: a UserWarning per image that breaks the rule (not silenced)
rows = diagnostics.posterior_comparison(idata, q_loc, q_scale,
                                        labels=[f"test image {i}" for i in chosen])
divergent = int(idata.sample_stats["diverging"].values.sum())
flagged = [i for i, row in zip(chosen, rows) if row["rhat_flag"] or row["ess_flag"]]
ess_min = diagnostics.ESS_PER_CHAIN * NUTS_CHAINS
print(f"rule: r-hat <= {diagnostics.RHAT_THRESHOLD} and bulk ESS >= {ess_min} "
      f"({diagnostics.ESS_PER_CHAIN} per chain); measured: max r-hat "
      f"{max(r['max_r_hat'] for r in rows):.3f}, min bulk ESS "
      f"{min(r['min_ess_bulk'] for r in rows):.0f}, divergent transitions {divergent}; "
      f"images that break the rule: {flagged if flagged else 'none'}")
# the flags against ArviZ's own diagnostics (unrounded), image by image
exact = az.summary(idata, var_names=["z"], kind="diagnostics", round_to="none")
r_hat = exact["r_hat"].to_numpy().reshape(len(chosen), vae.z_dim)
ess_bulk = exact["ess_bulk"].to_numpy().reshape(len(chosen), vae.z_dim)
assert np.allclose([r["max_r_hat"] for r in rows], r_hat.max(1))
assert np.allclose([r["min_ess_bulk"] for r in rows], ess_bulk.min(1))
breaks = (r_hat.max(1) > diagnostics.RHAT_THRESHOLD) | (ess_bulk.min(1) < ess_min)
assert flagged == [i for i, b in zip(chosen, breaks) if b]
if not FAST:  # the rule of the text: a trusted reference
    assert not flagged, f"NUTS chains not trusted for test images {flagged}"

# %% [markdown]
# **NUTS draws against draws from $q(z\mid x)$.** The guide's draws go into `InferenceData` of the
# same shape (`az.from_dict`), so ArviZ can draw both: the marginal densities of every latent
# dim (`az.plot_density`, the central 99% of each), and, for the high-$\hat k$ image, the pairs
# of the three dims where $q$ is narrowest relative to NUTS (`az.plot_pair`, the guide's draws
# over the NUTS draws on the same axes).

# %%
# matplotlib notes that the legend arviz places with loc="best" is slow to place; it is replaced
warnings.filterwarnings("ignore", message="Creating legend with loc")
LEGEND = [Line2D([], [], color="C0", lw=2, label="NUTS: p(z|x)"),
          Line2D([], [], color="C1", lw=2, label="guide: q(z|x)")]
torch.manual_seed(0)
q_draws = (q_loc + q_scale * torch.randn(NUTS_CHAINS, NUTS_DRAWS, *q_loc.shape)).numpy()
coords = {"example": np.arange(len(chosen)), "latent": np.arange(vae.z_dim)}
idata_q = az.from_dict(posterior={"z": q_draws}, coords=coords, dims={"z": ["example", "latent"]})

for j, (i, role) in enumerate(zip(chosen, roles)):
    axes = az.plot_density(
        [idata.posterior.sel(example=j), idata_q.posterior.sel(example=j)],
        data_labels=["NUTS: p(z|x)", "guide: q(z|x)"],
        var_names=["z"],
        shade=0.15,
        hdi_prob=0.99,
        grid=(2, vae.z_dim // 2),
        figsize=(11, 4.6),
        textsize=10,
    )
    for d, ax in enumerate(np.ravel(axes)):
        ax.set_title("")
        ax.set_xlabel(f"z{d}", fontsize=10)
        ax.set_ylabel("density" if d % (vae.z_dim // 2) == 0 else "", fontsize=10)
        ax.tick_params(labelsize=8)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig = np.ravel(axes)[0].figure
    fig.legend(handles=LEGEND, loc="upper right", fontsize=9)
    fig.suptitle(f"test image {i} ({role}, k-hat {khat[i]:.2f}): marginals of p(z|x) by NUTS "
                 "and of q(z|x)", fontsize=11, x=0.4)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    plt.show()

dims = [int(d) for d in np.argsort(rows[-1]["std_ratio"])[:3]]
select = {"example": [len(chosen) - 1], "latent": dims}
axes = az.plot_pair(idata, var_names=["z"], coords=select, marginals=True, figsize=(6.5, 6.5),
                    textsize=9, scatter_kwargs={"alpha": 0.3, "color": "C0"},
                    marginal_kwargs={"color": "C0"})
az.plot_pair(idata_q, var_names=["z"], coords=select, marginals=True, ax=axes, textsize=9,
             scatter_kwargs={"alpha": 0.3, "color": "C1"}, marginal_kwargs={"color": "C1"})
for r in range(len(dims)):
    axes[r, 0].set_ylabel("density" if r == 0 else f"z{dims[r]}", fontsize=9)
    axes[-1, r].set_xlabel(f"z{dims[r]}", fontsize=9)
    axes[r, r].set_title(f"density of z{dims[r]}", fontsize=8)  # the marginals' y axis
axes[0, 0].figure.legend(handles=LEGEND, loc="upper right", bbox_to_anchor=(0.9, 0.85),
                         fontsize=10)
plt.suptitle(f"test image {high} (high k-hat): the dims {dims}, where q is narrowest "
             "relative to NUTS", fontsize=10)
plt.show()


# %% [markdown]
# **`posterior_comparison`** puts, per latent dim, the NUTS mean and sd beside the guide's,
# with $(\mu_q - \bar z_{\text{NUTS}})/\mathrm{sd}_{\text{NUTS}}$ (how far off the guide's mean is) and
# $\mathrm{sd}_q/\mathrm{sd}_{\text{NUTS}}$ (below 1: too narrow), next to the sampler's $\hat R$ and bulk ESS. A ratio
# is called narrower or wider only beyond 3 Monte Carlo standard errors of the NUTS sd.

# %%
def sd_ratio_counts(rows, key="q_std"):
    """Dims where q is narrower / wider than NUTS beyond 3 MCSE of the NUTS sd."""
    narrower = wider = 0
    for row in rows:
        diff = np.array(row[key]) - np.array(row["nuts_std"])
        noise = 3 * np.array(row["mcse_sd"])
        narrower += int(np.sum(diff < -noise))
        wider += int(np.sum(diff > noise))
    return narrower, wider

table_rows = []
for i, row in zip(chosen, rows):
    for d in range(vae.z_dim):
        table_rows.append([i, d, row["nuts_mean"][d], row["nuts_std"][d], row["q_mean"][d],
                           row["q_std"][d], row["mean_z"][d], row["std_ratio"][d],
                           f"{row['r_hat'][d]:.3f}", f"{row['ess_bulk'][d]:.0f}"])
print_table(["image", "dim", "NUTS mean", "NUTS sd", "q mean", "q sd", "(q-NUTS)/sd", "sd ratio",
             "r-hat", "ESS bulk"], table_rows)
print()
print_table(["image", "role", "k-hat", "mean |(q-NUTS)/sd|", "geo. mean sd ratio", "q narrower",
             "max r-hat", "min ESS"],
            [[i, role, float(khat[i]), float(np.mean(np.abs(row["mean_z"]))),
              float(np.exp(np.mean(np.log(row["std_ratio"])))),
              f"{np.sum(np.array(row['std_ratio']) < 1)} of {vae.z_dim}",
              f"{row['max_r_hat']:.3f}", f"{row['min_ess_bulk']:.0f}"]
             for i, role, row in zip(chosen, roles, rows)])
ratios_q = np.array([r["std_ratio"] for r in rows])
narrower, wider = sd_ratio_counts(rows)
typical_share = (f" ({np.mean(ratios_q[:NUTS_TYPICAL] < 1):.0%} on the typical images)"
                 if NUTS_TYPICAL else "")
print(f"\nthe amortized q is narrower than NUTS in {np.mean(ratios_q < 1):.0%} of the "
      f"{ratios_q.size} dims{typical_share}; beyond 3 MCSE: {narrower} narrower, {wider} wider")
for row in rows:
    assert row["num_chains"] == NUTS_CHAINS and row["num_draws"] == NUTS_DRAWS

# %% [markdown]
# **The guide's two errors, separated.** The amortized $q_\phi(z\mid x)$ is not the best Gaussian for
# each image: one encoder serves all of them. The $q^*$ of section 4 (`optimize_gaussian`, the
# best diagonal Gaussian for each image alone, here for the NUTS images with the same number
# of Adam steps) removes that amortization error and leaves only
# the family's: by the derivation above (exact for a Gaussian posterior), $q^*$ should put its
# means at the posterior means and be *narrower* than the NUTS marginals in every dim, however
# wide or narrow the encoder's $q$ was (asserted in full mode: narrower on average, no dim wider
# beyond 3 Monte Carlo standard errors of the NUTS sd, and every mean within 0.5 NUTS sd). This is the robust form of "variational inference under-disperses"; the amortized $q$
# can add an error of either sign on top. A proposal wider than the posterior gives bounded
# importance weights (a low $\hat k$), a narrower one heavy-tailed weights (a high $\hat k$):
# which of the images' amortized $q$ is wider or narrower than $q^*$ is printed below.
# `posterior_comparison` of $q^*$ uses the same chains, so it repeats the sampler's warnings of
# the NUTS cell (if any) word for word; they are recorded, checked to be those (one per flag of
# the NUTS cell, each a NUTS warning), and not printed twice.

# %%
pyro.set_rng_seed(0)
best_loc, best_scale = diagnostics.optimize_gaussian(vae, x_nuts, q_loc, q_scale, steps=GAP_STEPS)
with warnings.catch_warnings(record=True) as repeated:
    warnings.simplefilter("always")
    rows_opt = diagnostics.posterior_comparison(idata, best_loc, best_scale,
                                                labels=[f"test image {i}" for i in chosen])
flags = [(row["rhat_flag"], row["ess_flag"]) for row in rows]
assert [(row["rhat_flag"], row["ess_flag"]) for row in rows_opt] == flags
# only the sampler's warnings, one per flag, as in the NUTS cell
assert len(repeated) == sum(a + b for a, b in flags)
assert all(str(w.message).startswith("NUTS") for w in repeated)
ratios_opt = np.array([r["std_ratio"] for r in rows_opt])
mean_z_opt = np.array([r["mean_z"] for r in rows_opt])
print_table(["image", "role", "geo. mean sd ratio q", "geo. mean sd ratio q*", "max |(q-NUTS)/sd|",
             "max |(q*-NUTS)/sd|"],
            [[i, role, float(np.exp(np.mean(np.log(ratios_q[j])))),
              float(np.exp(np.mean(np.log(ratios_opt[j])))),
              float(np.max(np.abs(rows[j]["mean_z"]))), float(np.max(np.abs(mean_z_opt[j])))]
             for j, (i, role) in enumerate(zip(chosen, roles))])
narrower_opt, wider_opt = sd_ratio_counts(rows_opt)
print(f"\nq* narrower than NUTS in {np.mean(ratios_opt < 1):.0%} of the {ratios_opt.size} dims "
      f"(beyond 3 MCSE: {narrower_opt} narrower, {wider_opt} wider); the amortized q in "
      f"{np.mean(ratios_q < 1):.0%}")
geo_q = np.exp(np.mean(np.log(ratios_q), axis=1))
geo_opt = np.exp(np.mean(np.log(ratios_opt), axis=1))
for j, (i, role) in enumerate(zip(chosen, roles)):
    side = "wider" if geo_q[j] > geo_opt[j] else "narrower"
    print(f"test image {i} ({role}, k-hat {khat[i]:.2f}): the amortized q is {side} than q* "
          f"(geometric mean sd ratio to NUTS {geo_q[j]:.2f} against {geo_opt[j]:.2f})")
if not FAST:  # a trained model, a trusted reference of 4,000 NUTS draws
    assert np.exp(np.mean(np.log(ratios_opt))) < 1      # q* under-disperses, on average,
    assert wider_opt == 0                               # in no dim wider beyond 3 MCSE,
    assert np.abs(mean_z_opt).max() < 0.5               # and at the posterior means

fig, ax = plt.subplots(figsize=(5.2, 4.2))
for j, (i, role) in enumerate(zip(chosen, roles)):
    ax.scatter(ratios_q[j], ratios_opt[j], s=18, color=f"C{j}", label=f"image {i} ({role})")
lim = [0.9 * min(ratios_q.min(), ratios_opt.min()), 1.1 * max(ratios_q.max(), ratios_opt.max())]
ax.plot(lim, lim, color="grey", lw=0.8)
ax.axhline(1, color="k", ls="--", lw=0.8)
ax.axvline(1, color="k", ls="--", lw=0.8)
ax.set_xlabel("amortized q sd / NUTS sd")
ax.set_ylabel("optimized q* sd / NUTS sd")
ax.set_title("per latent dim: the sd of q and of q* relative to NUTS", fontsize=9)
ax.legend(fontsize=7)
ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 6. Active units
#
# A latent unit that the encoder does not use carries no information about $x$: its posterior
# mean is the same for every $x$ and, to keep the KL small, $q(z_u\mid x) \approx p(z_u)$. Burda et al.
# ([2015](https://arxiv.org/abs/1509.00519), Sec. 5.2) call unit $u$ *active* when $A_u = \mathrm{Cov}_x\big(\mathbb{E}_{q(z\mid x)}[z_u]\big) > 10^{-2}$.
# `diagnostics.active_units(vae, x)` returns the count and $A$ over the examples given;
# below, on the whole test set, checked against the variance of the encoder means by hand,
# next to each unit's share of the KL, $\frac12(\sigma_u^2 + \mu_u^2 - 1 - \log\sigma_u^2)$ averaged over the
# images ([02](02_gaussian_kl.ipynb)). For contrast, the same training with the 32-d latent
# space of `configs/mnist.yaml`.
#
# The KL term pulls every $q(z_u\mid x)$ towards the prior, and every unit pays its KL; a unit is
# worth it only if the decoder uses what it carries about $x$. A unit the decoder does not need
# can therefore collapse onto the prior: $q(z_u\mid x) \approx p(z_u)$ for every $x$, so $A_u \approx 0$ and
# its KL $\approx 0$ (posterior collapse of that unit). Whether the KL does switch units off in these
# short trainings is an empirical question, and the answer is in the numbers printed below:
# in the full run, all 8 units of the 8-d model are active, and 31 of the 32 of the 32-d model,
# whose one inactive unit carries 0.005 nats of KL (of 16.1). The asserts: an inactive
# unit has a KL below 0.1 nats, and (full mode) the 32-d model leaves at least one unit
# inactive. Burda et al. found that the VAE leaves more units inactive than the IWAE, after
# training for 3,280 epochs.

# %%
def unit_report(vae, name):
    count, activity = diagnostics.active_units(vae, x_test)
    with torch.no_grad():
        loc, scale = vae.encoder(x_test)
    by_hand = loc.double().var(0, correction=0)
    assert torch.allclose(activity, by_hand, rtol=1e-6, atol=1e-9)
    assert count == int((by_hand > diagnostics.ACTIVE_THRESHOLD).sum())
    kl_unit = (0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log())).mean(0).double()
    print(f"{name}: {count} active units of {vae.z_dim}; KL {kl_unit.sum():.2f} nats, of which "
          f"{kl_unit[activity <= diagnostics.ACTIVE_THRESHOLD].sum():.2f} in the inactive units")
    return count, activity, kl_unit

count8, act8, kl8 = unit_report(vae, "z_dim 8")
cfg32, run32 = train("mnist.yaml")
vae32 = pyrovae.load(run32)
count32, act32, kl32 = unit_report(vae32, "z_dim 32")
assert 1 <= count8 <= 8 and 1 <= count32 <= 32
# an inactive unit has (almost) no KL: its q(z_u|x) is (almost) the prior
assert (kl8[act8 <= diagnostics.ACTIVE_THRESHOLD] < 0.1).all()
assert (kl32[act32 <= diagnostics.ACTIVE_THRESHOLD] < 0.1).all()
if not FAST:  # trained for 10 epochs: the 32-d model does not need all its units
    assert count32 < 32
for count, act, kl in ((count8, act8, kl8), (count32, act32, kl32)):
    off = act <= diagnostics.ACTIVE_THRESHOLD
    if off.any():
        print(f"z_dim {len(act)}: the KL switched off {int(off.sum())} of the {len(act)} units "
              f"(their KL, {kl[off].sum():.3f} nats in all, is almost that of q(z_u|x) = p(z_u), "
              f"0); the other {count} carry {kl[~off].sum():.2f} nats of KL")
    else:
        print(f"z_dim {len(act)}: all {len(act)} units are active; the KL switched none off in "
              "this training")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 3]})
for ax, act, kl, name in ((axes[0], act8, kl8, "z_dim 8"), (axes[1], act32, kl32, "z_dim 32")):
    order = torch.argsort(act, descending=True)
    ax.bar(np.arange(len(act)), act[order].numpy(), color="C0", label="A_u = Cov_x(E_q[z_u])")
    ax.plot(
        np.arange(len(act)),
        kl[order].numpy(),
        "o",
        ms=4,
        color="C3",
        label="mean KL of unit u [nats]",
    )
    ax.axhline(diagnostics.ACTIVE_THRESHOLD, color="k", ls="--", lw=1, label="threshold 0.01")
    ax.set_yscale("log")
    ax.set_xlabel("latent units, most active first")
    ax.set_ylabel("A_u (bars); KL of the unit, nats (dots)", fontsize=8)
    ax.set_title(f"{name}: {int((act > diagnostics.ACTIVE_THRESHOLD).sum())} active", fontsize=9)
    ax.grid(alpha=0.3)
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. The whole report in one call: `pyrovae.evaluate`
#
# `pyrovae.evaluate.evaluate(run_dir, Options(...))` does all of the above on a run folder's
# best model and the first `limit` images of its test split: the ELBO (closed-form KL, and
# sampled from the traces), IWAE and PSIS with `iwae_samples` samples, the active units, the
# gaps on `gap_examples` images and NUTS on `nuts_examples` images; it writes
# `evaluation.json`, `khat.png` and, with NUTS, `posterior.png` into the run folder and returns the same
# numbers. (The command line is `python -m pyrovae.evaluate RUN_DIR --limit N ...`.) Its
# numbers must agree with the ones computed step by step above, within standard errors;
# the run folder (a path) is left out of what is printed. Its NUTS (full mode only: 2 chains of
# 500 draws, fewer than section 5's) goes through the same `posterior_comparison` and the same
# rule, $\hat R \le 1.01$ and a bulk ESS of 100 per chain; `evaluate` records the sampler's
# warnings in its report, and the table prints them at its top (under "warnings") and marks the
# images that break the rule in its NUTS lines; none of them is silenced.

# %%
from pyrovae.evaluate import Options, evaluate, format_table

opts = (Options(iwae_samples=100, limit=50, nuts_examples=0, gap_examples=5, gap_steps=20,
                gap_eval_particles=200) if FAST else
        Options(iwae_samples=1000, limit=500, nuts_examples=2, nuts_warmup=500, nuts_samples=500,
                gap_examples=20, gap_steps=300))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", UserWarning)
    report = evaluate(run_dir, opts)
for w in caught:
    print("warning:", " ".join(str(w.message).split()))
table = format_table({**report, "run_dir": "RUN"})
# its last line (the files written, the seconds taken) changes from run to run
print("\n".join(line for line in table.splitlines() if not line.startswith("wrote ")).rstrip())

# %%
saved = json.loads((run_dir / "evaluation.json").read_text())
assert saved["log_likelihood"] == report["log_likelihood"] and saved["num_examples"] == opts.limit
figures = ["khat.png", *(["posterior.png"] if opts.nuts_examples else [])]
assert sorted(report["figures"]) == figures

shown = {k: v for k, v in saved.items() if k not in ("run_dir", "nuts")}
if saved.get("nuts"):
    shown["nuts"] = {k: v for k, v in saved["nuts"].items() if k != "examples"}
    shown["nuts"]["examples"] = (
        f"{len(saved['nuts']['examples'])} per-example comparisons (the table above)"
    )
print(json.dumps(shown, indent=1))

# against the step-by-step numbers on the same images
n = opts.limit
k = opts.iwae_samples
same_k = iwae_k(lw[:, :n], k) if n <= N_IW and K_MAX % k == 0 and K_MAX // k > 1 else None
if same_k is not None:
    # both are means over the same n images of L_K estimates with independent noise: the
    # difference's standard error from the spread of L_K over the K_MAX / K groups
    groups = K_MAX // k
    blocks = lw[: groups * k, :n].reshape(groups, k, n).transpose(0, 1).reshape(k, -1)
    per_group = diagnostics.iwae_bound(blocks).reshape(groups, n)
    var = per_group.var(0)
    se_diff = math.sqrt((var * (1 + 1 / groups)).sum().item()) / n
    diff = report["log_likelihood"] - same_k.mean().item()
    print(
        f"\nIWAE K = {k} on the first {n} images: evaluate {report['log_likelihood']:.3f}, "
        f"step by step {same_k.mean():.3f} (difference {diff:+.3f}, standard error {se_diff:.3f})"
    )
    assert abs(diff) < 4 * se_diff + 0.05
elbo_n = elbo_mc[:n].mean().item()
# evaluate's ELBOs use elbo_particles draws per image; their Monte Carlo variance is at
# most that of as many log weights' mean (the closed-form KL has none)
se_elbo = math.sqrt((lw[:, :n].var(0) * (1 / opts.elbo_particles + 1 / K_MAX)).sum().item()) / n
print(f"ELBO on the first {n} images: evaluate {report['elbo']:.3f} (closed-form KL), "
      f"{report['elbo_sampled']:.3f} (sampled from the traces); step by step {elbo_n:.3f} "
      f"(Monte Carlo standard error of a difference {se_elbo:.3f})")
assert abs(report["elbo"] - elbo_n) < 4 * se_elbo
assert abs(report["elbo_sampled"] - elbo_n) < 4 * se_elbo
assert report["active_units"] == count8
if report["nuts"]:  # one recorded warning per broken rule, and the rule of section 5
    nuts_report = report["nuts"]
    broken = sum(e["rhat_flag"] + e["ess_flag"] for e in nuts_report["examples"])
    assert len(nuts_report["warnings"]) == broken
    assert nuts_report["rhat_flag"] == (nuts_report["max_r_hat"] > diagnostics.RHAT_THRESHOLD)
    print(f"evaluate's NUTS: max r-hat {nuts_report['max_r_hat']:.3f} (rule <= "
          f"{nuts_report['rhat_threshold']}), min bulk ESS {nuts_report['min_ess_bulk']:.0f} "
          f"(rule >= {diagnostics.ESS_PER_CHAIN * nuts_report['num_chains']}); "
          f"{len(nuts_report['warnings'])} warnings")
assert (
    abs(report["inference_gap"] - (report["approximation_gap"] + report["amortization_gap"])) < 1e-9
)
assert report["elbo"] < report["log_likelihood"]

fig, axes = plt.subplots(1, len(figures), figsize=(6 * len(figures), 4), squeeze=False,
                         gridspec_kw={"width_ratios": [1, 1.6][: len(figures)]})
for ax, name in zip(axes[0], figures):
    ax.imshow(plt.imread(run_dir / name))
    ax.set_title(name, fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# * $\log p(x) \ge \mathcal{L}_K \ge \mathcal{L}_{K-1} \ge \mathcal{L}_1 = \text{ELBO}$: `iwae_bound` on
#   `log_importance_weights` rises with $K$; at $K = 1$, with the same seed, it *is* the ELBO of
#   `sampled_elbo` and of Pyro's `Trace_ELBO`.
# * PSIS's $\hat k$ (`psis`, via `arviz.psislw`) says per image whether $q(z\mid x)$ is a usable
#   proposal; where it is not, $\mathcal{L}_K$ rises in jumps at large $K$ and underestimates
#   $\log p(x)$.
# * The inference gap is the approximation gap plus the amortization gap (`inference_gaps`),
#   exactly; both are non-negative within their standard errors.
# * NUTS (`nuts_posterior`, checked by `posterior_comparison` with $\hat R \le 1.01$ and a bulk
#   ESS of 100 per chain, which warns where a chain breaks the rule) gives a reference
#   posterior. The best Gaussian for one image under the reverse KL, $q^*$, is narrower than it
#   on average, as the mode-seeking KL predicts (asserted in full mode: no dim wider beyond 3
#   Monte Carlo standard errors, and its means within 0.5 NUTS sd of the posterior's).
#   The amortized $q$ adds an error of either sign on top.
# * `active_units` counts the latent dims the encoder uses; an inactive unit's $q(z_u\mid x)$ is
#   the prior, with (almost) no KL. `evaluate` writes all of it into one JSON file, with the
#   sampler's warnings in its report.
#
# What the numbers of this run say:

# %%
amortized_share = (g["amortization_gap"].mean() / g["inference_gap"].mean()).item()
wider_q = [i for j, i in enumerate(chosen) if geo_q[j] > geo_opt[j]]
narrower_q = [i for j, i in enumerate(chosen) if geo_q[j] <= geo_opt[j]]
print(f"* k-hat > 0.7 for {summary['pareto_k_frac_bad']:.0%} of the {N_IW} test images "
      f"(K = {K_MAX}); log p(x) - ELBO = {np.mean(bound_gain):.2f} nats on average")
print(f"* the amortization gap is {amortized_share:.0%} of the inference gap "
      f"({mean['amortization_gap']:.2f} of {mean['inference_gap']:.2f} nats): "
      + ("most of it is the encoder's, not the Gaussian family's" if amortized_share > 0.5
         else "most of it is the Gaussian family's, not the encoder's"))
print(f"* NUTS: max r-hat {max(r['max_r_hat'] for r in rows):.3f}, min bulk ESS "
      f"{min(r['min_ess_bulk'] for r in rows):.0f}; images that break the rule: "
      f"{flagged if flagged else 'none'}")
print(f"* q* is narrower than NUTS in {np.mean(ratios_opt < 1):.0%} of the {ratios_opt.size} dims; "
      f"the amortized q is wider than q* on test images {wider_q or 'none'} and narrower on "
      f"{narrower_q or 'none'}")
print(f"* active units: {count8} of 8 (z_dim 8), {count32} of 32 (z_dim 32)")

# %% [markdown]
# ## References
#
# * Y. Burda, R. Grosse, R. Salakhutdinov (2015). Importance weighted autoencoders.
#   [arXiv:1509.00519](https://arxiv.org/abs/1509.00519)
# * Y. Yao, A. Vehtari, D. Simpson, A. Gelman (2018). Yes, but did it work?: Evaluating
#   variational inference. ICML. [arXiv:1802.02538](https://arxiv.org/abs/1802.02538)
# * A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry (2024). Pareto smoothed importance
#   sampling. JMLR 25. [arXiv:1507.02646](https://arxiv.org/abs/1507.02646)
# * C. Cremer, X. Li, D. Duvenaud (2018). Inference suboptimality in variational autoencoders.
#   ICML. [arXiv:1801.03558](https://arxiv.org/abs/1801.03558)
# * M. D. Hoffman, A. Gelman (2014). The No-U-Turn sampler. JMLR 15.
#   [arXiv:1111.4246](https://arxiv.org/abs/1111.4246)
# * A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner (2021). Rank-normalization,
#   folding, and localization: an improved $\hat R$ for assessing convergence of MCMC. Bayesian
#   Analysis 16. [arXiv:1903.08008](https://arxiv.org/abs/1903.08008)
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes.
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
#
# The other notebooks: [01 The ELBO](01_elbo.ipynb) · [02 The Gaussian KL](02_gaussian_kl.ipynb)
# · [03 Reparameterization](03_reparameterization.ipynb) ·
# [04 Training on MNIST](04_train_mnist.ipynb) ·
# [05 Priors and likelihoods](05_priors_and_likelihoods.ipynb) ·
# [07 Tighter bounds](07_tighter_bounds.ipynb).
