# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Priors and likelihoods, swapped by config
#
# The VAE's two modelling choices are $p(z)$ and $p(x\mid z)$. In `pyrovae` each is a name
# in a registry (`pyrovae.priors.PRIORS`, `pyrovae.likelihoods.LIKELIHOODS`), chosen by a
# config key; nothing else changes. This notebook
#
# 1. shows the registries and the data each likelihood expects;
# 2. trains five models from `configs/mnist.yaml` by overrides only — three priors
#    (`normal`, `mog`, `vamp`) under the Bernoulli likelihood on binarized digits, and the
#    `gaussian` and `continuous_bernoulli` likelihoods on grey levels — and explains why
#    their ELBOs are **not** all comparable numbers;
# 3. checks the mixture and VampPrior densities and the Monte Carlo KL they need;
# 4. shows numerically that binary cross-entropy on grey pixels is not a log-likelihood,
#    and that the continuous Bernoulli adds exactly the missing log-normalizer;
# 5. shows that a Bernoulli likelihood on grey data is refused with a one-line error.
#
# **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images,
# 5,000 for validation, the 10,000 test images, 8 epochs per model, the 784-512-256-32
# MLP of `mnist.yaml`, one CPU thread. `PYROVAE_FAST=1` (CI): 2,000 training images,
# 500 for validation, 2 epochs, one hidden layer of 64 units, learning rate 3e-3.
# Short runs: the numbers rank the models only roughly.

# %%
import csv
import math
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pyro.distributions as dist
import torch
import torch.nn.functional as F

import pyrovae
from pyrovae import notebook as nb
from pyrovae import objectives
from pyrovae.config import load_config
from pyrovae.fit import fit, load_splits

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, tiny nets, 2 epochs
CPU = torch.device("cpu")
print_table = nb.print_table

# %%
# Every run below is configs/<name> + the size overrides of this mode + its own overrides.
SIZE = (["data.limit=2000", "data.valid_size=500", "train.epochs=2", "model.hidden=[64]",
         "train.lr=3e-3"] if FAST else
        ["data.limit=20000", "data.valid_size=5000", "train.epochs=8"])


def configure(config, *overrides):
    """load_config: defaults <- configs/<config> <- size <- overrides, in a fresh run folder."""
    return nb.config(config, *overrides, size=SIZE)


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def train(config, *overrides):
    """fit() a config; returns (cfg, run folder, metrics rows). fit's log lines name the run
    folder (a temporary path), so they are silenced; the metrics are printed instead."""
    cfg = configure(config, *overrides)
    run_dir = Path(fit(cfg, log=lambda *a: None))
    rows = read_metrics(run_dir)
    last = rows[-1]
    print(f"{config} {' '.join(overrides)}: {len(rows)} epochs; "
          f"test ELBO {last['test_elbo']:.2f} = recon {last['recon']:.2f} - KL {last['kl']:.2f}")
    return cfg, run_dir, rows


# %% [markdown]
# ## 1. The registries
#
# | key | name | $p(z)$ or $p(x\mid z)$ | class |
# |---|---|---|---|
# | `model.prior` | `normal` | $\mathcal{N}(0, I)$ | `priors.StandardNormal` |
# | | `diag_normal` | $\mathcal{N}(m, \mathrm{diag}\, s^2)$, learned | `priors.DiagNormal` |
# | | `mog` | $\sum_{k=1}^K \pi_k\, \mathcal{N}(m_k, \mathrm{diag}\, s_k^2)$, learned ($K$ = `model.components`, default 10) | `priors.MixtureOfGaussians` |
# | | `vamp` | $\frac1K\sum_{k=1}^K q(z\mid u_k)$, learned pseudo-inputs $u_k$ (Tomczak & Welling 2018) | `priors.VampPrior` |
# | `model.likelihood` | `bernoulli` | $\prod_i \lambda_i^{x_i}(1-\lambda_i)^{1-x_i}$, $x_i \in \{0, 1\}$ | `likelihoods.Bernoulli` |
# | | `gaussian` | $\prod_i \mathcal{N}(x_i;\, \mu_i, \sigma^2)$, $x_i \in \mathbb{R}$ | `likelihoods.Gaussian` |
# | | `continuous_bernoulli` | $\prod_i C(\lambda_i)\,\lambda_i^{x_i}(1-\lambda_i)^{1-x_i}$, $x_i \in [0, 1]$ (Loaiza-Ganem & Cunningham 2019) | `likelihoods.ContinuousBernoulli` |
# | | `laplace` | $\prod_i \mathrm{Laplace}(x_i;\, \mu_i, b)$ | `likelihoods.Laplace` |
# | `data.binarize` | `dynamic` / `static` / `none` | binary digits (resampled each batch / drawn once) or grey levels in $[0, 1]$ | `data.load_data` |
#
# The decoder always outputs one unconstrained number per pixel; the likelihood reads it
# as logits ($\lambda_i = \mathrm{sigmoid}(\ell_i)$) or as a location. An unknown name is one
# line:

# %%
from pyrovae.data import BINARIZE
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.priors import PRIORS

print("priors:     ", list(PRIORS))
print("likelihoods:", list(LIKELIHOODS))
print("binarize:   ", list(BINARIZE))
try:
    load_config("../configs/mnist.yaml", ["model.likelihood=poisson"])
except pyrovae.PyrovaeError as err:
    print("PyrovaeError:", err)

# %% [markdown]
# ## 2. Two kinds of data
#
# `data.binarize=dynamic` gives binary digits: each training batch is drawn as
# $x_i \sim \mathrm{Bernoulli}(g_i)$ from the grey levels $g_i$, and the validation and test
# sets are drawn once with fixed seeds, so every binarized run sees the same binary test
# images. `data.binarize=none` keeps the grey levels $g_i \in \{0, \tfrac1{255}, \dots, 1\}$.

# %%
bin_splits = load_splits(configure("mnist.yaml"), CPU)
grey_splits = load_splits(configure("mnist.yaml", "data.binarize=none"), CPU)
xb, xg = bin_splits.test, grey_splits.test
frac_grey = ((xg > 0) & (xg < 1)).float().mean().item()
frac_zero = (xg == 0).float().mean().item()
print(f"binarized test set: values {sorted(set(xb.unique().tolist()))}")
print(
    f"grey test set: {100 * frac_zero:.1f}% of pixels exactly 0, {100 * frac_grey:.1f}% strictly "
    "between 0 and 1"
)
print(
    "mean pixel value: binarized", round(xb.mean().item(), 4), " grey", round(xg.mean().item(), 4)
)
assert set(xb.unique().tolist()) == {0.0, 1.0} and frac_grey > 0.05
assert abs(xb.mean().item() - xg.mean().item()) < 0.005  # E[Bernoulli(g)] = g

fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
for i in range(10):
    for row, x in enumerate((xg, xb)):
        axes[row, i].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[row, i].axis("off")
axes[0, 0].text(-5, 14, "grey", ha="right", fontsize=8)
axes[1, 0].text(-5, 14, "binary", ha="right", fontsize=8)
plt.show()

# %% [markdown]
# ## 3. Five models, by overrides only
#
# Every model is `configs/mnist.yaml` plus the overrides in the table (and this mode's
# size settings). `mog` and `vamp` have no closed-form $\mathrm{KL}(q\,\Vert\,p)$, so their test KL
# is the Monte Carlo estimate $\mathbb{E}_{q}[\log q(z\mid x) - \log p(z)]$ (`objectives.dataset_elbo`)
# and they need `train.loss=trace` (the default; `analytic` is refused for them). The
# VampPrior uses 100 pseudo-inputs here (fast mode: 20; the paper: 500) to keep the CPU time down:
# every step also encodes the pseudo-inputs.

# %%
MODELS = {
    "bernoulli + normal": ["model.prior=normal"],
    "bernoulli + mog": ["model.prior=mog", "model.components=10"],
    "bernoulli + vamp": ["model.prior=vamp", f"model.components={20 if FAST else 100}"],
    "gaussian + normal": ["data.binarize=none", "model.likelihood=gaussian",
                          "model.likelihood_scale=0.1"],
    "continuous_bernoulli + normal": ["data.binarize=none",
                                      "model.likelihood=continuous_bernoulli"],
}
results = {}
for name, overrides in MODELS.items():
    results[name] = train("mnist.yaml", *overrides)
print()
print_table(["model", "data", "test ELBO", "recon E_q[log p(x|z)]", "KL", "KL kind"],
            [[name, "binary" if cfg.data.binarize != "none" else "grey", rows[-1]["test_elbo"],
              rows[-1]["recon"], rows[-1]["kl"],
              "closed form" if cfg.model.prior == "normal" else "Monte Carlo"]
             for name, (cfg, _, rows) in results.items()])
for cfg, _, rows in results.values():
    assert abs(rows[-1]["test_elbo"] - (rows[-1]["recon"] - rows[-1]["kl"])) < 1e-3
    if cfg.model.likelihood == "bernoulli":
        assert rows[-1]["test_elbo"] < 0  # a bound on the log of a probability
try:
    objectives.build("analytic", pyrovae.load(results["bernoulli + vamp"][1]))
except pyrovae.PyrovaeError as err:
    print("\nPyrovaeError:", err)

# %% [markdown]
# **Which of these numbers can be compared?** Each test ELBO is a lower bound on
# $\log p(x)$ of *its* test data under *its* model, so two ELBOs compare two models only
# when they are bounds on the same quantity: the same data, measured the same way.
#
# * **The three Bernoulli rows are comparable** with each other: the same binary test
#   images (fixed binarization seed), and $p(x)$ is a *probability* of a point in
#   $\{0, 1\}^{784}$: $\sum_x p(x) = 1$, so $\log p(x) \le 0$ and the ELBO is negative. The
#   differences between them are the priors' doing (and, in short runs, the training's).
# * **A Bernoulli row against a grey row is not**: different data (a binary image drawn
#   from the grey one vs the grey one itself), and the grey likelihoods are *densities*
#   on $\mathbb{R}^{784}$ or $[0, 1]^{784}$. A density can exceed 1 — the ELBO can be positive — and
#   its value depends on the units of $x$: rescaling the pixels by $c$ (0–255 instead of
#   0–1) changes every log-density by $-D\log c = -784\log 255 \approx -4344$ nats per
#   image without changing the model at all (checked below on the Gaussian run).
# * **The two grey rows** are densities of the same data, but MNIST grey levels are
#   8-bit numbers (most of them exactly 0), and a continuous density may put arbitrarily
#   tall spikes on such points: the continuous Bernoulli's log-density at $x = 0$ grows
#   without bound as $\lambda \to 0$ (below; in float32, torch's clamp of $\lambda$ stops it at
#   2.77 nats per pixel, which is then what bounds the continuous Bernoulli's ELBO), while
#   the fixed-scale Gaussian's per-pixel log-density can never exceed
#   $-\log(\sigma\sqrt{2\pi}) = 1.38$ nats. Meaningful density
#   comparisons on 8-bit data need dequantization (uniform noise in each $\tfrac1{256}$ bin),
#   reported as bits per dimension.

# %%
g_cfg, g_dir, g_rows = results["gaussian + normal"]
vae_g = pyrovae.load(g_dir)
with torch.no_grad():
    x = xg[:100]
    p = vae_g.decode(vae_g.encoder(x)[0])          # Normal(mu(z), 0.1) per pixel
    loc, sd, x = p.base_dist.loc.double(), p.base_dist.scale.double(), x.double()
    lp = dist.Normal(loc, sd).to_event(3).log_prob(x)
    assert torch.allclose(lp.float(), p.log_prob(x.float()), rtol=1e-4)
    lp255 = dist.Normal(255 * loc, 255 * sd).to_event(3).log_prob(255 * x)
shift = (lp255 - lp).mean().item()
print(f"log p(x|z), pixels in [0, 1]: {lp.mean():.1f};  pixels in [0, 255]: {lp255.mean():.1f};  "
      f"difference {shift:.2f} = -784 log 255 = {-784 * math.log(255):.2f}")
assert abs(shift + 784 * math.log(255)) < 1e-6

lam = torch.tensor([0.1, 1e-2, 1e-4, 1e-8, 1e-16], dtype=torch.float64)
cb0 = torch.distributions.ContinuousBernoulli(probs=lam).log_prob(
    torch.zeros(5, dtype=torch.float64)
)
print(
    "continuous Bernoulli log-density at x = 0 for lambda =",
    lam.tolist(),
    ":",
    np.round(cb0.numpy(), 3),
)
print(
    "Gaussian(sigma = 0.1) log-density, its maximum (x = mu): "
    f"{-math.log(0.1 * math.sqrt(2 * math.pi)):.3f}"
)
eps32 = torch.finfo(torch.float32).eps
cap32 = (
    torch.distributions.ContinuousBernoulli(logits=torch.tensor(-50.0))
    .log_prob(torch.tensor(0.0))
    .item()
)
print(
    f"in float32 (training and metrics.csv) torch clamps lambda to [{eps32:.2e}, 1 - "
    f"{eps32:.2e}], so the "
    f"continuous Bernoulli log-density of a 0 pixel stops at {cap32:.3f}: a cap of the "
    "arithmetic, not of the model"
)
assert (cb0.diff() > 0).all() and cb0[-1] > 3

# %% [markdown]
# ## 4. The priors, by hand
#
# **Mixture of Gaussians.**
# $\log p(z) = \log\sum_k \pi_k\, \mathcal{N}(z; m_k, \mathrm{diag}\,s_k^2) = \operatorname{logsumexp}_k\big(\log\pi_k + \log\mathcal{N}(z; m_k, \mathrm{diag}\,s_k^2)\big)$,
# $\pi = \mathrm{softmax}(\text{logits})$: `priors.MixtureOfGaussians` holds `logits`, `loc`,
# `scale` and returns `MixtureSameFamily`.
#
# **VampPrior.** The prior that maximizes the ELBO for a fixed encoder is the aggregate
# posterior $\frac1N\sum_n q(z\mid x_n)$; the VampPrior approximates it with $K$ learned
# pseudo-inputs pushed through the *same* encoder:
# $\log p(z) = \operatorname{logsumexp}_k \log q(z\mid u_k) - \log K$.
#
# Neither has a closed-form KL against a Gaussian $q$; the ELBO uses
# $\mathrm{KL}(q\,\Vert\,p) = \mathbb{E}_q[\log q(z\mid x) - \log p(z)]$, estimated with draws from $q$.
# Checked: both densities against these formulas at 1,000 draws of $z$, and the Monte
# Carlo KL against the closed form where one exists (the normal-prior model), within
# 4 standard errors.

# %%
vae_mog = pyrovae.load(results["bernoulli + mog"][1])
vae_vamp = pyrovae.load(results["bernoulli + vamp"][1])
torch.manual_seed(0)
with torch.no_grad():
    pm = vae_mog.prior_net
    z = vae_mog.prior().sample((1000,))
    comp = dist.Normal(pm.loc, pm.scale).to_event(1).log_prob(z[:, None, :])     # (1000, K)
    by_hand = torch.logsumexp(torch.log_softmax(pm.logits, -1) + comp, -1)
    mog_err = (by_hand - vae_mog.prior().log_prob(z)).abs().max().item()

    u = vae_vamp.prior_net.pseudo_inputs                                           # (K, 1, 28, 28)
    z = vae_vamp.prior().sample((1000,))
    q_u = vae_vamp.encode(u)  # q(z|u_k), batch (K,)
    by_hand = torch.logsumexp(q_u.log_prob(z[:, None, :]), -1) - math.log(u.shape[0])
    vamp_err = (by_hand - vae_vamp.prior().log_prob(z)).abs().max().item()
print(
    f"mog  ({pm.logits.numel()} components): max |log p(z) by hand - prior().log_prob(z)| = "
    f"{mog_err:.2e}"
)
print(
    f"vamp ({u.shape[0]} pseudo-inputs): max |log p(z) by hand - prior().log_prob(z)| = "
    f"{vamp_err:.2e}"
)
assert mog_err < 1e-4 and vamp_err < 1e-4

vae_n = pyrovae.load(results["bernoulli + normal"][1])
with torch.no_grad():
    q = vae_n.encode(xb[:1000])
    zs = q.sample((200,))
    terms = q.log_prob(zs) - vae_n.prior().log_prob(zs)          # (200, 1000)
    closed = objectives.closed_form_kl(vae_n, q.base_dist.loc, q.base_dist.scale)
mc = terms.mean().item()
se = math.sqrt((terms.var(0) / 200).sum().item()) / 1000
print(
    f"normal prior, 1000 test images: MC KL {mc:.3f} +- {se:.3f}, closed form {closed.mean():.3f}"
)
assert abs(mc - closed.mean().item()) < 4 * se

# %% [markdown]
# Samples $\mathbb{E}[x\mid z]$, $z \sim p(z)$, of each model (`samples.png`). The grey-level
# models show their decoded means: the Gaussian's $\mu(z)$ and the continuous Bernoulli's
# mean $\mathbb{E}[x] = \frac{\lambda}{2\lambda - 1} + \frac{1}{2\operatorname{artanh}(1 - 2\lambda)}$ (not $\lambda$; see §5).

# %%
fig, axes = plt.subplots(1, len(results), figsize=(13, 3.2))
for ax, (name, (_, run_dir, rows)) in zip(axes, results.items()):
    ax.imshow(mpimg.imread(run_dir / "samples.png"))
    ax.set_title(f"{name}\nELBO {rows[-1]['test_elbo']:.1f}", fontsize=8)
    ax.axis("off")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 5. Binary cross-entropy on grey pixels is not a likelihood
#
# Many VAE implementations train on grey-level MNIST with
# $\mathrm{BCE}(x, \lambda) = -[x\log\lambda + (1-x)\log(1-\lambda)]$, treating it as
# $-\log p(x\mid z)$. For binary $x$ it is: $e^{-\mathrm{BCE}(0, \lambda)} + e^{-\mathrm{BCE}(1, \lambda)} = (1 - \lambda) + \lambda = 1$.
# For $x \in [0, 1]$ the candidate density $e^{-\mathrm{BCE}(x,\lambda)} = \lambda^x(1-\lambda)^{1-x}$
# integrates to
# $$
# \int_0^1 \lambda^x (1-\lambda)^{1-x}\,dx = \frac{2\lambda - 1}{\log\lambda - \log(1 - \lambda)} = \frac{1}{C(\lambda)},
# \qquad C(\lambda) = \frac{2\operatorname{artanh}(1 - 2\lambda)}{1 - 2\lambda}\ (\lambda \ne \tfrac12),\quad C(\tfrac12) = 2,
# $$
# which is never 1 (it is $\tfrac12$ at $\lambda = \tfrac12$ and falls to 0 at the ends).
# So $-\mathrm{BCE}$ is not the log of a normalized density over $[0, 1]$, and the missing
# normalizer depends on $\lambda$ — on the decoder's output — so it cannot be dropped as a
# constant. The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) is the normalized
# version: $p(x\mid\lambda) = C(\lambda)\,\lambda^x(1-\lambda)^{1-x}$, i.e.
# $$
# \log p_{\mathcal{CB}}(x\mid\lambda) = -\mathrm{BCE}(x, \lambda) + \log C(\lambda).
# $$
# Numerically: the integral by the trapezoid rule on 200,001 points (float64), then the
# difference between the continuous Bernoulli's `log_prob` (torch's, and `pyrovae`'s
# likelihood on decoder logits) and $-\mathrm{BCE}$, which must be $\log C(\lambda)$ at every $x$.

# %%
def log_C(lam):
    """log of the continuous Bernoulli normalizer C(lambda), float64 (C(1/2) = 2)."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    t = 1 - 2 * lam
    safe = torch.where(t.abs() < 1e-6, torch.full_like(t, 0.5), t)
    return torch.where(t.abs() < 1e-6, torch.full_like(t, math.log(2)),
                       torch.log(2 * torch.atanh(safe) / safe))

xs = torch.linspace(0, 1, 200_001, dtype=torch.float64)
lams = torch.tensor([0.5, 0.3, 0.1, 0.9, 0.01, 0.999], dtype=torch.float64)
rows = []
for lam in lams:
    bce = -(xs * lam.log() + (1 - xs) * torch.log1p(-lam))      # BCE(x, lambda) on [0, 1]
    integral = torch.trapezoid(torch.exp(-bce), xs).item()
    cb = torch.distributions.ContinuousBernoulli(probs=lam).log_prob(xs)
    diff = cb - (-bce)                                          # must be log C(lambda), for every x
    cb_integral = torch.trapezoid(cb.exp(), xs).item()
    rows.append([f"{lam.item():g}", f"{integral:.6f}", f"{1 / log_C(lam).exp().item():.6f}",
                 f"{diff.mean().item():.6f}", f"{log_C(lam).item():.6f}",
                 f"{(diff - log_C(lam)).abs().max().item():.1e}", f"{cb_integral:.6f}"])
    assert abs(integral - 1 / log_C(lam).exp().item()) < 1e-8 and integral < 0.51
    assert (
        diff - log_C(lam)
    ).abs().max() < 1e-6  # torch approximates C near 1/2 by a Taylor series
    assert abs(cb_integral - 1) < 1e-6
print_table(["lambda", "int exp(-BCE) dx", "1/C(lambda)", "CB log_prob + BCE", "log C(lambda)",
             "max |diff - log C|", "int p_CB dx"], rows)

# %% [markdown]
# `pyrovae`'s `continuous_bernoulli` likelihood takes the decoder's logits $\ell$,
# $\lambda = \mathrm{sigmoid}(\ell)$, and sums over the 784 pixels. In terms of $\ell$, since
# $1 - 2\,\mathrm{sigmoid}(\ell) = -\tanh(\ell/2)$ and so $2\operatorname{artanh}(1 - 2\lambda) = -\ell$,
# $$
# C = \frac{\ell}{\tanh(\ell/2)}, \qquad
# \mathbb{E}[x] = \frac{\lambda}{2\lambda - 1} + \frac{1}{2\operatorname{artanh}(1-2\lambda)} = \frac{\mathrm{sigmoid}(\ell)}{\tanh(\ell/2)} - \frac{1}{\ell},
# $$
# which stay accurate for the extreme logits a trained model produces on the many exact
# zeros of MNIST ($\lambda \approx 10^{-7}$ and below, where $1 - 2\lambda$ rounds badly). On grey test
# images and the trained model's logits, per pixel, `log_prob` must equal
# $-\mathrm{BCE}(x_i, \lambda_i) + \log C(\lambda_i)$, and `mean` (what the figures show) the continuous
# Bernoulli's mean, not $\lambda$. (torch clamps $\lambda$ to $[\epsilon, 1 - \epsilon]$, $\epsilon$ the float
# precision: pixels with $|\ell|$ beyond the clamp are left out.) Last, optimizing $-\mathrm{BCE}$ alone pulls
# $\lambda$ to the pixel value $x$ (its maximizer), whereas the continuous Bernoulli's
# maximum-likelihood $\lambda$ for a single value $x$ is the one whose *mean* is $x$ — a more
# extreme $\lambda$, as the mean is pulled towards $\tfrac12$.

# %%
from pyrovae.likelihoods import ContinuousBernoulli


def log_C_logits(ell):
    """log C(lambda) for lambda = sigmoid(ell): log(ell / tanh(ell / 2));
    log 2 + ell^2/12 near 0."""
    small = ell.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(ell), ell)
    return torch.where(small, math.log(2) + ell**2 / 12, torch.log(safe / torch.tanh(safe / 2)))

lam_check = torch.tensor([0.3, 0.01, 0.999], dtype=torch.float64)
assert torch.allclose(log_C_logits(torch.logit(lam_check)), log_C(lam_check), rtol=1e-10)

cb_cfg, cb_dir, cb_rows = results["continuous_bernoulli + normal"]
vae_cb = pyrovae.load(cb_dir)
assert isinstance(vae_cb.likelihood, ContinuousBernoulli)
with torch.no_grad():
    x = xg[:16].double()
    logits = vae_cb.decoder(vae_cb.encoder(xg[:16])[0]).double()
    p = ContinuousBernoulli((1, 28, 28))(logits)                   # pyrovae's likelihood
    per_pixel = p.base_dist.log_prob(x)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    by_hand = -bce + log_C_logits(logits)
    cb_mean = torch.sigmoid(logits) / torch.tanh(logits / 2) - 1 / logits
eps64 = torch.finfo(torch.float64).eps
inside = logits.abs() < math.log((1 - eps64) / eps64)            # torch's clamp of lambda
stable = inside & ((torch.sigmoid(logits) - 0.5).abs() > 1e-3)   # torch: a Taylor series near 1/2
err = (per_pixel - by_hand)[inside].abs().max().item()
mean_err = (p.mean - cb_mean)[stable].abs().max().item()
with torch.no_grad():
    lp32 = vae_cb.decode(vae_cb.encoder(xg[:16])[0]).log_prob(xg[:16])  # float32, as in training
print(f"decoder logits on 16 grey test images: from {logits.min():.1f} to {logits.max():.1f} "
      f"({100 * inside.double().mean():.1f}% of pixels inside torch's float64 clamp)")
print(
    f"log p(x|z) per image by pyrovae: {p.log_prob(x).mean():.2f} in float64 (of which sum of log "
    "C "
    f"{log_C_logits(logits).sum((1, 2, 3)).mean():.2f}), {lp32.mean():.2f} in float32"
)
print(f"per pixel, max |pyrovae log_prob - (-BCE + log C)| = {err:.1e}; "
      f"max |mean - (sigmoid(l)/tanh(l/2) - 1/l)| = {mean_err:.1e}")
# torch computes C from lambda = sigmoid(l): for large positive l, 1 - lambda keeps only
# ~eps * e^l relative precision, hence differences far above 1e-16 (but small) there.
assert err < 1e-5 and mean_err < 1e-6

for target in (0.2, 0.8):  # one pixel value x: the best lambda of each objective
    grid = torch.linspace(1e-4, 1 - 1e-4, 99_999, dtype=torch.float64)
    bce = -(target * grid.log() + (1 - target) * torch.log1p(-grid))
    lam_bce = grid[bce.argmin()].item()
    lam_cb = grid[(bce - log_C(grid)).argmin()].item()
    mean_cb = torch.distributions.ContinuousBernoulli(
        probs=torch.tensor(lam_cb, dtype=torch.float64)
    ).mean.item()
    mean_bce = torch.distributions.ContinuousBernoulli(
        probs=torch.tensor(lam_bce, dtype=torch.float64)
    ).mean.item()
    print(f"x = {target}: argmax -BCE is lambda = {lam_bce:.4f} (CB mean there {mean_bce:.4f}); "
          f"argmax CB likelihood is lambda = {lam_cb:.4f} (CB mean there {mean_cb:.4f})")
    assert abs(lam_bce - target) < 1e-3 and abs(mean_cb - target) < 1e-3

# %% [markdown]
# ## 6. A Bernoulli likelihood on grey data is refused
#
# `torch.distributions.Bernoulli` computes $x\log\lambda + (1-x)\log(1-\lambda)$ for any $x$
# when argument validation is off (as it is inside most training loops), so nothing in
# torch stops a Bernoulli "likelihood" on grey pixels. `pyrovae` checks the data against
# the likelihood's support once, before training (`fit.check_data` → `VAE.check`), and
# refuses with one line that says what to do instead; likewise a continuous Bernoulli on
# data outside $[0, 1]$.

# %%
grey_pixel = torch.tensor(0.3)
print(
    "torch Bernoulli(probs=0.6).log_prob(0.3), validation off:",
    round(
        dist.Bernoulli(probs=torch.tensor(0.6), validate_args=False).log_prob(grey_pixel).item(), 4
    ),
    "= -BCE(0.3, 0.6) =",
    round(-F.binary_cross_entropy(torch.tensor(0.6), grey_pixel).item(), 4),
)

try:
    fit(
        configure("mnist.yaml", "data.binarize=none", "model.likelihood=bernoulli"),
        log=lambda *a: None,
    )
    raise AssertionError("a Bernoulli likelihood on grey data was accepted")
except pyrovae.PyrovaeError as err:
    message = str(err)
    print("fit -> PyrovaeError:", message)
assert "\n" not in message and "binar" in message

try:
    vae_cb.check(255 * xg[:4])  # grey levels 0..255 given to a [0, 1] likelihood
    raise AssertionError("data outside [0, 1] was accepted")
except pyrovae.PyrovaeError as err:
    print("VAE.check -> PyrovaeError:", err)

# %% [markdown]
# ## Summary
#
# * Priors and likelihoods are config names (`model.prior`, `model.likelihood`,
#   `data.binarize`): five models came from one YAML file and overrides.
# * ELBOs compare models only on the same data measured the same way: the Bernoulli rows
#   (log-probabilities of binary images, $\le 0$) with each other; not with the grey-level
#   rows, which are log-densities (unit-dependent: $-784\log 255$ nats for pixels in 0–255)
#   and, on 8-bit data, unbounded without dequantization.
# * The mixture and VampPrior densities equal their logsumexp formulas; their KL is a Monte
#   Carlo estimate, which agrees with the closed form where one exists.
# * $\int_0^1 e^{-\mathrm{BCE}(x,\lambda)}dx = 1/C(\lambda) \ne 1$: BCE on grey pixels is not a negative
#   log-likelihood; the continuous Bernoulli's `log_prob` is $-\mathrm{BCE} + \log C(\lambda)$ to float
#   precision and integrates to 1.
# * A Bernoulli likelihood on grey data is refused by `fit` with a one-line `PyrovaeError`.
