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
# config key; nothing else changes. It builds on [04 Training on MNIST](04_train_mnist.ipynb)
# (a run is a config; the $\beta$ trade-off) and uses the ELBO of [01](01_elbo.ipynb) and the
# closed-form Gaussian KL of [02](02_gaussian_kl.ipynb). This notebook
#
# 1. shows the registries and the data each likelihood expects (sections 1–2);
# 2. trains five models from `configs/mnist.yaml` by overrides only — three priors
#    (`normal`, `mog`, `vamp`) under the Bernoulli likelihood on binarized digits, and the
#    `gaussian` and `continuous_bernoulli` likelihoods on grey levels — and explains why
#    their ELBOs are **not** all comparable numbers (section 3);
# 3. checks the mixture and VampPrior densities and the Monte Carlo KL they need (section 4);
# 4. shows numerically that binary cross-entropy on grey pixels is not a log-likelihood,
#    and that the continuous Bernoulli adds exactly the missing log-normalizer (section 5);
# 5. shows that a Bernoulli likelihood on grey data is refused with a one-line error (section 6);
# 6. shows that a squared error is a Gaussian log-likelihood with a fixed $\sigma$, up to a
#    constant, that $\beta$ multiplies $\sigma^2$, and why the samples of the $\sigma = 0.1$ model
#    are poor (against $\sigma = 0.3$ and 1) (section 7);
# 7. shows that a per-pixel mean of the cross-entropy is a hidden $\beta$: the $\beta = 784$
#    objective, and what that does to the KL and the samples (section 8).
#
# **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images,
# 5,000 for validation, the 10,000 test images, 8 epochs per model, the 784-512-256-32
# MLP of `mnist.yaml`, one CPU thread; section 8's tutorial loop: 784-400-20, 5 epochs.
# `PYROVAE_FAST=1` (CI, only to check that the code runs and the identities hold): 1,000
# training images, 200 for validation, 1 epoch, one hidden layer of 64 units, learning rate
# 3e-3, the `torch` engine (no `torch.compile`), $\sigma = 0.1$ and 1 only in section 7; section 8:
# 2 epochs of 784-64-20. Its numbers are those of barely trained models.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, tiny nets, 2 epochs

# %%
import math

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pyro.distributions as dist
import torch
import torch.nn.functional as F

import pyrovae
from pyrovae import objectives
from pyrovae.config import load_config
from pyrovae.fit import fit

# each run: configs/<name> + this mode's size + its overrides; fast mode: smaller than nb.FAST_SIZE
FAST_SIZE = ["data.limit=1000", "data.valid_size=200", "train.epochs=1", "model.hidden=[64]",
             "train.lr=3e-3", "train.engine=torch"]
runs = nb.Runs(full_epochs=8, size_overrides=FAST_SIZE if FAST else None)

# %% [markdown]
# ## 1. The registries
#
# | key | name | $p(z)$ or $p(x\mid z)$ | class |
# |---|---|---|---|
# | `model.prior` | `normal` | $\mathcal{N}(0, I)$ | `priors.StandardNormal` |
# | | `diag_normal` | $\mathcal{N}(m, \mathrm{diag}\, s^2)$, learned | `priors.DiagNormal` |
# | | `mog` | $\sum_{k=1}^K \pi_k\, \mathcal{N}(m_k, \mathrm{diag}\, s_k^2)$, learned ($K$ = `model.components`, default 10) | `priors.MixtureOfGaussians` |
# | | `vamp` | $\frac1K\sum_{k=1}^K q(z\mid u_k)$, learned pseudo-inputs $u_k$ (Tomczak & Welling 2018) | `priors.VampPrior` |
# | `model.likelihood` | `bernoulli` | $\prod_i \lambda_i^{x_i}(1-\lambda_i)^{1-x_i}$, $x_i \in \{0, 1\}$ (Kingma & Welling 2013, App. C.1) | `likelihoods.Bernoulli` |
# | | `gaussian` | $\prod_i \mathcal{N}(x_i;\, \mu_i, \sigma^2)$, $x_i \in \mathbb{R}$; $\sigma$ = `model.likelihood_scale` (default 1), fixed or learned (`model.learn_scale`); in App. C.2 the decoder outputs $\sigma(z)$ too | `likelihoods.Gaussian` |
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
bin_splits = runs.splits(runs.config("mnist.yaml"))  # fit.load_splits on the CPU
grey_splits = runs.splits(runs.config("mnist.yaml", "data.binarize=none"))
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
# and they cannot use `train.loss=analytic` (it is refused for them; `trace`, the default,
# `meanfield` with its Monte Carlo KL, `iwae` and `iwae_dreg` work). The
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
    results[name] = runs.train("mnist.yaml", *overrides)
print()
nb.print_table(["model", "data", "test ELBO", "recon E_q[log p(x|z)]", "KL", "KL kind"],
               [[name, "binary" if cfg.data.binarize != "none" else "grey",
                 rows[-1]["test_elbo"], rows[-1]["recon"], rows[-1]["kl"],
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
#   without bound as $\lambda \to 0$, like $\log|\ell|$ in the logit $\ell$ (below: 6.9 nats per pixel
#   at $\ell = -1000$). torch's own `ContinuousBernoulli` clamps $\lambda$ to $[\epsilon, 1 - \epsilon]$
#   in its normalizer and so stops at 2.77 nats per pixel in float32, where its density no
#   longer integrates to 1; `pyrovae`'s likelihood is computed from the logit, is normalized
#   for every logit, and has no such cap. The fixed-scale Gaussian's per-pixel log-density, by
#   contrast, can never exceed $-\log(\sigma\sqrt{2\pi}) = 1.38$ nats. Meaningful density
#   comparisons on 8-bit data need dequantization (uniform noise in each $\tfrac1{256}$ bin;
#   Theis et al. 2016), reported as bits per dimension.

# %%
from pyrovae.likelihoods import ContinuousBernoulli

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

ell = torch.tensor([-2.0, -5.0, -10.0, -50.0, -1000.0], dtype=torch.float64)  # lambda = sigmoid
cb0 = ContinuousBernoulli((1,))(ell[:, None]).log_prob(torch.zeros(5, 1, dtype=torch.float64))
print(f"continuous Bernoulli (pyrovae) log-density at x = 0 for the logits {ell.tolist()}: "
      f"{np.round(cb0.numpy(), 3)}; log|logit|: {np.round(ell.abs().log().numpy(), 3)}")
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
ours32 = ContinuousBernoulli((1,))(torch.tensor([[-50.0]])).log_prob(torch.tensor([[0.0]])).item()
print(f"float32, logit -50: torch's ContinuousBernoulli clamps lambda to [{eps32:.2e}, 1 - "
      f"{eps32:.2e}] and gives {cap32:.3f} for a 0 pixel (a cap of the arithmetic, not of the "
      f"model); pyrovae's likelihood, from the logit, gives {ours32:.3f} = log 50")
assert (cb0.diff() > 0).all() and torch.allclose(cb0[2:], ell[2:].abs().log(), atol=1e-3)
assert abs(ours32 - math.log(50)) < 1e-4 and ours32 > cap32 + 1

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
# Carlo KL against the closed form where one exists (the normal-prior model; the closed form is
# derived in [02](02_gaussian_kl.ipynb)), within
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
nb.print_table(["lambda", "int exp(-BCE) dx", "1/C(lambda)", "CB log_prob + BCE",
                "log C(lambda)", "max |diff - log C|", "int p_CB dx"], rows)

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
# Bernoulli's mean, not $\lambda$, at every pixel however extreme its logit. (The closed form of the
# mean above cancels badly near $\ell = 0$: pixels with $|\lambda - \tfrac12| < 10^{-3}$ are left out of
# that comparison.) Last, optimizing $-\mathrm{BCE}$ alone pulls
# $\lambda$ to the pixel value $x$ (its maximizer), whereas the continuous Bernoulli's
# maximum-likelihood $\lambda$ for a single value $x$ is the one whose *mean* is $x$ — a more
# extreme $\lambda$, as the mean is pulled towards $\tfrac12$.

# %%
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
inside = logits.abs() < math.log((1 - eps64) / eps64)            # where torch's clamp would not act
stable = (torch.sigmoid(logits) - 0.5).abs() > 1e-3              # cb_mean cancels near 1/2
err = (per_pixel - by_hand).abs().max().item()                   # every pixel
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
        runs.config("mnist.yaml", "data.binarize=none", "model.likelihood=bernoulli"),
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
# ## 7. Squared error is a Gaussian log-likelihood, and $\sigma^2$ is a $\beta$
#
# With a fixed scale $\sigma$, the `gaussian` likelihood of an image of $D = 784$ pixels is
# $$
# \log p(x\mid z) = \sum_{i=1}^D \log\mathcal{N}\big(x_i;\,\mu_i(z), \sigma^2\big)
#   = -\frac{\lVert x - \mu(z)\rVert^2}{2\sigma^2} - \frac D2\log(2\pi\sigma^2),
# $$
# so $-\log p(x\mid z)$ is the summed squared error (`F.mse_loss(mu, x, reduction="sum")`) divided by
# $2\sigma^2$, plus a number that depends on $\sigma$ alone: minimizing a squared error *is*
# maximizing a Gaussian likelihood with a fixed $\sigma$, which the loss leaves implicit in the weight
# it gives the squared error against the KL. In the $\beta$-weighted objective of
# [04](04_train_mnist.ipynb) (Higgins et al. 2017),
# $$
# -\mathcal{L}_{\sigma,\beta}(x) = \frac{\mathbb{E}_q\lVert x - \mu(z)\rVert^2}{2\sigma^2} + \beta\,\mathrm{KL} + \frac D2\log(2\pi\sigma^2)
#   = \beta\Big[\frac{\mathbb{E}_q\lVert x - \mu(z)\rVert^2}{2\beta\sigma^2} + \mathrm{KL}\Big] + \frac D2\log(2\pi\sigma^2),
# $$
# that is $-\mathcal{L}_{\sigma,\beta} = \beta\,\big(-\mathcal{L}_{\sigma\sqrt\beta,\,1}\big) + c$ with the constant
# $c = \tfrac D2\big[\log(2\pi\sigma^2) - \beta\log(2\pi\beta\sigma^2)\big]$: the same minimizers, gradients in the
# ratio $\beta$. **$\beta$ multiplies $\sigma^2$.** The tutorials' "sum of squared errors + KL" is
# $\sigma^2 = \tfrac12$; the $\sigma = 0.1$ model of section 3 is "squared error + $0.02\cdot$KL"
# ($2\sigma^2 = 0.02$), and a model with $\sigma = 1$ has 100 times its KL weight. A per-pixel *mean*,
# `F.mse_loss(mu, x)` (the default reduction, over all $B\cdot D$ numbers of the batch), plus the
# batch-averaged KL is $\frac1B\sum_b\big[\lVert x_b - \mu(z_b)\rVert^2/D + \mathrm{KL}_b\big]$: $2\sigma^2 = D$,
# $\sigma = \sqrt{392} \approx 19.8$ on pixels in $[0, 1]$, a likelihood so broad that the KL wins and
# the code carries next to nothing (section 8 shows this for the cross-entropy's mean).
#
# **Check**, on the $\sigma = 0.1$ model of section 3 and 100 grey test images: `log_prob` against the
# squared-error formula, per image; then the library's loss
# (`objectives.build("trace", vae).loss(x, beta=beta)`, the same noise) at $(\sigma, \beta) = (0.1, 4)$
# against $4\times$ the loss at $(0.2, 1)$ with the same weights, plus $B c$; last, `F.mse_loss(mu, x)`
# against $-\log p(x\mid z)$ at $\sigma^2 = D/2$ without its constant, averaged over the images.

# %%
import pyro

from pyrovae import checkpoint

g_model = MODELS["gaussian + normal"]
D = 784
x100 = xg[:100]
with torch.no_grad():
    mu_x = vae_g.decoder(vae_g.encoder(x100)[0])                  # mu(z) at z = mu(x)
    log_lik = vae_g.decode(vae_g.encoder(x100)[0]).log_prob(x100)
    sq_err = F.mse_loss(mu_x, x100, reduction="none").sum((1, 2, 3))
by_mse = -sq_err / (2 * 0.1**2) - D / 2 * math.log(2 * math.pi * 0.1**2)
print(f"log p(x|z) of 100 images: max |log_prob - (-SSE / (2 sigma^2) - D/2 log(2 pi sigma^2))| "
      f"= {(log_lik - by_mse).abs().max():.1e} (log p about {log_lik.mean():.0f})")
assert (log_lik - by_mse).abs().max() < 1e-5 * (sq_err.max() / (2 * 0.1**2)  # float32 round-off
                                              + D / 2 * abs(math.log(2 * math.pi * 0.1**2)))

vae_02 = checkpoint.build(runs.config("mnist.yaml", *g_model, "model.likelihood_scale=0.2"),
                          vae_g.x_shape).eval()
vae_02.encoder.load_state_dict(vae_g.encoder.state_dict())  # the same weights, sigma = 0.2
vae_02.decoder.load_state_dict(vae_g.decoder.state_dict())

def trace_loss(model, beta):
    pyro.set_rng_seed(4)  # the same z draws for both models
    with torch.no_grad():
        return objectives.build("trace", model).loss(x100, beta=beta).item()

beta, B = 4.0, x100.shape[0]
c = D / 2 * (math.log(2 * math.pi * 0.1**2) - beta * math.log(2 * math.pi * beta * 0.1**2))
lhs, rhs = trace_loss(vae_g, beta), beta * trace_loss(vae_02, 1.0) + B * c
print(f"loss(sigma=0.1, beta=4) = {lhs:.2f};  4 * loss(sigma=0.2, beta=1) + B c = {rhs:.2f};  "
      f"relative difference {abs(lhs - rhs) / abs(lhs):.1e}")
assert abs(lhs - rhs) < 1e-5 * abs(lhs)

sigma_mean = math.sqrt(D / 2)  # the sigma of F.mse_loss's default mean (float64: no cancellation)
nll = -(dist.Normal(mu_x.double(), sigma_mean).to_event(3).log_prob(x100.double())
        + D / 2 * math.log(2 * math.pi * sigma_mean**2))
mse_mean = F.mse_loss(mu_x.double(), x100.double()).item()
print(f"F.mse_loss(mu, x) = {mse_mean:.6f};  mean of -log p(x|z) - const at sigma = sqrt(D/2) = "
      f"{sigma_mean:.2f}: {nll.mean():.6f}")
assert abs(nll.mean().item() - mse_mean) < 1e-9 * mse_mean

# %% [markdown]
# ### The samples of the $\sigma = 0.1$ model, and the trade-off
#
# The $\sigma = 0.1$ model's samples in section 4 are scribbles rather than digits. Its objective
# charges $1/(2\sigma^2) = 50$ nats per unit of squared error, against 1 per nat of KL, so it buys
# sharp reconstructions with many nats of code (its test KL is the largest in the table below):
# narrow posteriors $q(z\mid x)$ spread out over $\mathbb{R}^{32}$, whose average over the data, the
# *aggregate posterior* $q(z) = \frac1N\sum_n q(z\mid x_n)$, is far from $p(z) = \mathcal{N}(0, I)$. A draw
# $z\sim p(z)$ then lands where no training image was encoded, and the decoder, never trained there,
# produces a scribble. A larger $\sigma$ is a larger $\beta$ (above): fewer nats of code, blurrier
# reconstructions, posteriors that overlap and fill the prior, and, as $\beta$ grows further (the
# KL costing more than most reconstruction gains), a code of a few nats and blurred samples that
# vary less and less; in the limit a decoder that ignores $z$ and draws the same average digit
# every time. This is the trade-off that lecture slides on VAEs draw with such pictures: the
# likelihood's $\sigma$ (or $\beta$) sets how much the code carries, and good reconstructions and
# good samples pull in opposite directions (Alemi et al. 2018 state it as rate, the KL, against
# distortion, the reconstruction term; Hoffman & Johnson 2016 split the KL averaged over the
# data into the information the code carries and $\mathrm{KL}(q(z)\,\Vert\,p(z))$, the mismatch that
# spoils the samples).
#
# Measured for $\sigma = 0.1, 0.3, 1$ (the same config otherwise; $\sigma = 0.3$ and 1 are the
# $\sigma = 0.1$ objective with $\beta = 9$ and 100): the test KL; the squared error per pixel of the
# reconstruction at $z = \mu(x)$; how far the prior is from the aggregate posterior,
# $\mathrm{KL}(p(z)\,\Vert\,q(z)) = \mathbb{E}_{p(z)}[\log p(z) - \log q(z)]$, estimated with `N_AGG` = 2,000 test images
# (fast mode: 500) standing in for the data (the same images for the three models; in expectation an
# overestimate, by Jensen's inequality on the $\log$ of an average, that shrinks as the images
# grow in number): the nats by which a prior draw is less likely under the encoded images than
# under the prior; and the spread of the samples, the standard deviation of each pixel of
# $\mathbb{E}[x\mid z]$ over 64 draws $z \sim p(z)$, averaged over the pixels. What the figures show is
# the mean $\mu(z)$; a draw $x \sim p(x\mid z)$ adds independent noise of standard deviation $\sigma$ to
# every pixel (the last row), which no MNIST digit has, and leaves $[0, 1]$.

# %%
SIGMAS = (0.1, 1.0) if FAST else (0.1, 0.3, 1.0)
N_AGG = 500 if FAST else 2000
g_runs = {0.1: results["gaussian + normal"]}
for s in SIGMAS[1:]:
    g_runs[s] = runs.train("mnist.yaml", *g_model[:-1], f"model.likelihood_scale={s}")
g_vaes = {s: pyrovae.load(g_runs[s].run_dir) for s in SIGMAS}

def prior_vs_aggregate(model, x, n_draws, seed=0):
    """E_p[log p(z) - log q(z)], q(z) = mean over the rows of x of q(z|x), by n_draws z ~ p."""
    torch.manual_seed(seed)
    with torch.no_grad():
        z, q = model.prior().sample((n_draws,)), model.encode(x)
        log_agg = torch.cat([torch.logsumexp(q.log_prob(zc[:, None, :]), 1)  # (chunk, N) -> chunk
                             for zc in z.split(250)]) - math.log(x.shape[0])
        return (model.prior().log_prob(z) - log_agg).mean().item()

table, samples, draws = [], {}, {}
for s, model in g_vaes.items():
    torch.manual_seed(0)
    with torch.no_grad():
        mse = (model.decoder(model.encoder(xg)[0]) - xg).pow(2).mean().item()
        p_x = model.decode(model.prior().sample((64,)))
        samples[s], draws[s] = p_x.mean, p_x.sample()
    spread = samples[s].std(0).mean().item()
    outside = ((draws[s] < 0) | (draws[s] > 1)).float().mean().item()
    row = g_runs[s].rows[-1]
    table.append([s, (s / 0.1) ** 2, row["kl"], mse, prior_vs_aggregate(model, xg[:N_AGG], N_AGG),
                  spread, outside])
nb.print_table(["sigma", "beta (vs sigma 0.1)", "test KL", "squared error / pixel",
                "KL(p || q_agg)", "sample spread", "draws outside [0,1]"],
               [[f"{v:.4f}" if isinstance(v, float) and i in (3, 5, 6) else v
                 for i, v in enumerate(r)] for r in table])
kl_s, mse_s, agg_s, spread_s = ([r[i] for r in table] for i in (2, 3, 4, 5))
assert all(a > b for a, b in zip(kl_s, kl_s[1:]))    # a larger sigma: fewer nats of code
assert mse_s[0] < mse_s[-1]                          # ... blurrier reconstructions
assert all(a > b for a, b in zip(agg_s, agg_s[1:]))  # ... prior draws nearer the encoded images
if not FAST:  # a trained model's samples (fast mode: one short epoch)
    assert spread_s[-1] < spread_s[0]                # ... and, at the far end, samples alike

fig, axes = plt.subplots(2, len(SIGMAS), figsize=(4 * len(SIGMAS), 5.4),
                         gridspec_kw={"height_ratios": [8, 1]})
for j, s in enumerate(SIGMAS):
    axes[0, j].imshow(nb.tile(samples[s].clamp(0, 1), 8), cmap="gray", vmin=0, vmax=1)
    axes[0, j].set_title(f"sigma = {s}: E[x|z] = mu(z), z ~ p(z)\nKL {kl_s[j]:.1f}, "
                         f"KL(p || q_agg) {agg_s[j]:.1f}", fontsize=9)
    axes[1, j].imshow(nb.tile(draws[s][:8].clamp(0, 1), 8), cmap="gray", vmin=0, vmax=1)
    axes[1, j].set_title(f"x ~ p(x|z) = N(mu(z), {s}^2) (clipped to [0, 1])", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. A per-pixel mean of the cross-entropy is a hidden $\beta$
#
# Many tutorials write the reconstruction term as `F.binary_cross_entropy(x_hat, x)`, whose
# default reduction is the **mean** over all $B\cdot D$ numbers of the batch, and add the KL of each
# image averaged over the batch. With $\mathrm{BCE}_b = -\log p(x_b\mid z_b)$ the cross-entropy of image
# $b$ summed over its $D = 784$ pixels (binary $x$: section 5),
# $$
# \text{loss}_\text{mean} = \frac{1}{BD}\sum_{b=1}^B\sum_{i=1}^D \mathrm{BCE}(x_{bi}, \lambda_{bi}) + \frac1B\sum_b \mathrm{KL}_b
#   = \frac1D\cdot\frac1B\sum_b\big[\mathrm{BCE}_b + D\,\mathrm{KL}_b\big]
#   = \frac1D\cdot\frac1B\sum_b -\mathcal{L}_{\beta = D}(x_b).
# $$
# Up to the factor $1/D$ this is the $\beta$-VAE objective with $\beta = D = 784$: the
# reconstruction term weighs $1/784$ against the KL, which is the "hidden $\beta = 1/784$" read as the
# weight of the reconstruction; in the convention of [04](04_train_mnist.ipynb), where $\beta$
# multiplies the KL, it is $\beta = 784$. Each nat of code costs as much as 784 nats of
# reconstruction. The factor $1/D$ itself changes nothing but the size of the gradient, and
# Adam's steps do not depend on a constant factor of the loss (but for its $\epsilon$). (Averaging the KL over its $k$ latent
# dimensions as well makes it $\beta = D/k$; summing both terms, as the
# [PyTorch example](https://github.com/pytorch/examples/tree/main/vae) does, $\beta = 1$. A squared
# error's default mean hides the same weight: $2\sigma^2 = D$, section 7.)
#
# **Check**, with the same noise on 256 binarized test images and any weights (an untrained
# 784-`HIDDEN`-20 VAE): $D\cdot\text{loss}_\text{mean}$ equals the library's $\beta = 784$ loss per image
# (`objectives.build("analytic", vae).loss(x, beta=784) / B`), the summed reduction equals the
# $\beta = 1$ loss, and the gradient of $\text{loss}_\text{mean}$ is exactly $1/D$ times that of the
# $\beta = 784$ loss, and not parallel to the $\beta = 1$ loss's. Then two small models trained with
# a tutorial's plain PyTorch loop, one per reduction, on the binarized training images of this
# notebook (`TUT_EPOCHS` = 5 epochs of the PyTorch example's 784-400-20 network; fast mode: 2
# epochs of 784-64-20): their test ELBO at $\beta = 1$, KL, active units (latent
# dimensions whose posterior mean varies over the test images, variance > 0.01; Burda et al.
# 2015) and samples.

# %%
from pyrovae.diagnostics import active_units
from pyrovae.model import VAE

HIDDEN = [64] if FAST else [400]
x256 = xb[:256]

def tutorial_loss(model, x, eps, reduction):
    """BCE on the decoder's logits, reduced as in a tutorial, + the KL averaged over the batch."""
    loc, scale = model.encoder(x)
    logits = model.decoder(loc + scale * eps)
    if reduction == "mean":  # F.binary_cross_entropy's default: the mean over all B * D numbers
        rec = F.binary_cross_entropy_with_logits(logits, x)
    else:                    # summed over the pixels, averaged over the batch
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    return rec + objectives.kl_standard_normal(loc, 2 * scale.log()).mean()

torch.manual_seed(0)
untrained = VAE(z_dim=20, hidden=HIDDEN)
params = list(untrained.parameters())
torch.manual_seed(5)
eps = torch.randn(1, 256, 20)  # the draw objectives.build("analytic") makes after this seed
losses = {"mean": tutorial_loss(untrained, x256, eps[0], "mean"),
          "sum": tutorial_loss(untrained, x256, eps[0], "sum")}
analytic = objectives.build("analytic", untrained)

def library_loss(beta):
    torch.manual_seed(5)
    return analytic.loss(x256, beta=beta) / x256.shape[0]

lib = {1.0: library_loss(1.0), 784.0: library_loss(784.0)}
grads = {k: torch.cat([g_.flatten() for g_ in torch.autograd.grad(v, params)]).double()
         for k, v in [("mean", losses["mean"]), ("beta 784", lib[784.0]), ("beta 1", lib[1.0])]}
cos = torch.nn.functional.cosine_similarity
print(f"D * loss_mean = {D * losses['mean'].item():.4f}   library loss, beta = 784: "
      f"{lib[784.0].item():.4f}")
print(f"loss_sum      = {losses['sum'].item():.4f}   library loss, beta = 1:   "
      f"{lib[1.0].item():.4f}")
print(f"gradient of loss_mean: max |D * grad - grad(beta = 784)| = "
      f"{(D * grads['mean'] - grads['beta 784']).abs().max():.1e}; cosine with grad(beta = 784) "
      f"{cos(grads['mean'], grads['beta 784'], 0):.6f}, with grad(beta = 1) "
      f"{cos(grads['mean'], grads['beta 1'], 0):.3f}")
assert abs(D * losses["mean"].item() - lib[784.0].item()) < 1e-5 * lib[784.0].item()
assert abs(losses["sum"].item() - lib[1.0].item()) < 1e-5 * lib[1.0].item()
assert torch.allclose(D * grads["mean"], grads["beta 784"], rtol=1e-3, atol=1e-4)
assert cos(grads["mean"], grads["beta 1"], 0) < 0.99

# %%
TUT_EPOCHS = 2 if FAST else 5
TUT_LR = 3e-3 if FAST else 1e-3

def train_tutorial(reduction, seed=0):
    """A tutorial's loop: Adam on tutorial_loss over the dynamically binarized minibatches."""
    torch.manual_seed(seed)
    model = VAE(z_dim=20, hidden=HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=TUT_LR)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(TUT_EPOCHS):
        for x in bin_splits.train_batches(128, gen):
            loss = tutorial_loss(model, x, torch.randn(x.shape[0], 20), reduction)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()

tut, rows = {}, []
for reduction, beta_hidden in (("sum", 1), ("mean", D)):
    tut[reduction] = model = train_tutorial(reduction)
    torch.manual_seed(1)
    ev = objectives.dataset_elbo(model, xb)
    with torch.no_grad():
        tut_samples = model.decode(torch.randn(64, 20)).mean
    tut[reduction, "samples"] = tut_samples
    rows.append([reduction, beta_hidden, ev["elbo"], ev["recon"], ev["kl"],
                 active_units(model, xb)[0], tut_samples.std(0).mean().item()])
nb.print_table(["reduction", "hidden beta", "test ELBO (beta = 1)", "recon", "KL",
                "active units of 20", "sample spread"],
               [[*r[:4], f"{r[4]:.3f}", r[5], f"{r[6]:.4f}"] for r in rows])
(_, _, _, _, kl_sum, au_sum, spread_sum), (_, _, _, _, kl_mean, au_mean, spread_mean) = rows
assert kl_mean < 0.2 * kl_sum and au_mean < au_sum
if not FAST:  # trained models' samples (fast mode: two short epochs)
    assert spread_mean < spread_sum

fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
for ax, row in zip(axes, rows):
    ax.imshow(nb.tile(tut[row[0], "samples"], 8), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"reduction={row[0]!r} (beta = {row[1]}): samples E[x|z]\n"
                 f"test KL {row[4]:.2f} nats, {row[5]} active units", fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

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
#   precision and integrates to 1 (`pyrovae`'s, computed from the logit, at every pixel however
#   extreme its logit).
# * A Bernoulli likelihood on grey data is refused by `fit` with a one-line `PyrovaeError`.
# * A fixed-$\sigma$ Gaussian log-likelihood is $-\lVert x - \mu\rVert^2/(2\sigma^2)$ plus a constant, and the
#   loss at $(\sigma, \beta)$ is $\beta$ times the loss at $(\sigma\sqrt\beta, 1)$ plus a constant, to float
#   precision. Of $\sigma = 0.1, 0.3, 1$, the $\sigma = 0.1$ model spends the most nats on its code and
#   has the aggregate posterior farthest from the prior, hence scribbled samples; $\sigma = 1$
#   reconstructs worse and its blurred samples vary less. `F.mse_loss`'s default mean is a Gaussian
#   with $2\sigma^2 = 784$.
# * `F.binary_cross_entropy`'s default mean over the pixels makes the loss $1/784$ of the
#   $\beta = 784$ loss, gradient included; trained that way, the model's KL and active units
#   collapsed and its samples became alike, next to the summed reduction's.
#
# ## References
#
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes.
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# * J. M. Tomczak, M. Welling (2018). VAE with a VampPrior. AISTATS.
#   [arXiv:1705.07120](https://arxiv.org/abs/1705.07120)
# * G. Loaiza-Ganem, J. P. Cunningham (2019). The continuous Bernoulli: fixing a pervasive error
#   in variational autoencoders. NeurIPS. [arXiv:1907.06845](https://arxiv.org/abs/1907.06845)
# * L. Theis, A. van den Oord, M. Bethge (2016). A note on the evaluation of generative models.
#   ICLR. [arXiv:1511.01844](https://arxiv.org/abs/1511.01844)
# * I. Higgins, L. Matthey, A. Pal, C. Burgess, X. Glorot, M. Botvinick, S. Mohamed,
#   A. Lerchner (2017). beta-VAE: learning basic visual concepts with a constrained variational
#   framework. ICLR. [OpenReview](https://openreview.net/forum?id=Sy2fzU9gl)
# * A. A. Alemi, B. Poole, I. Fischer, J. V. Dillon, R. A. Saurous, K. Murphy (2018). Fixing a
#   broken ELBO. ICML. [arXiv:1711.00464](https://arxiv.org/abs/1711.00464)
# * M. D. Hoffman, M. J. Johnson (2016). ELBO surgery: yet another way to carve up the
#   variational evidence lower bound. NIPS Workshop in Advances in Approximate Bayesian
#   Inference. [PDF](http://approximateinference.org/accepted/HoffmanJohnson2016.pdf)
# * Y. Burda, R. Grosse, R. Salakhutdinov (2015). Importance weighted autoencoders.
#   [arXiv:1509.00519](https://arxiv.org/abs/1509.00519)
# * The PyTorch VAE example (fc1/fc21/fc22, summed BCE + KL):
#   [pytorch/examples/vae](https://github.com/pytorch/examples/tree/main/vae)
#
# The other notebooks: [00 First steps](00_first_steps.ipynb) · [01 The ELBO](01_elbo.ipynb) ·
# [02 The Gaussian KL](02_gaussian_kl.ipynb) · [03 Reparameterization](03_reparameterization.ipynb)
# · [04 Training on MNIST](04_train_mnist.ipynb) · [06 Posterior checks](06_posterior_checks.ipynb)
# · [07 Tighter bounds](07_tighter_bounds.ipynb).
