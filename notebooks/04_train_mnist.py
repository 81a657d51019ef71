# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Training a VAE on MNIST with `pyrovae`
#
# Notebooks 01–03 derived the ELBO, its Gaussian KL and the reparameterization gradient.
# This one trains real models on real MNIST with the library's own entry points, and
# checks what they write against the mathematics:
#
# 1. a run is a config: `load_config(path, overrides)`;
# 2. `fit` trains it with `pyro.infer.SVI`; `metrics.csv` and the ELBO curve, and the
#    test ELBO recomputed by hand from the saved model;
# 3. the $\beta$ trade-off: reconstruction against KL for $\beta = 0.25, 1, 4$;
# 4. samples from the prior, reproduced pixel for pixel from $z \sim p(z)$;
# 5. the 2-d latent manifold (`z_dim = 2`), reproduced from the inverse normal CDF;
# 6. decoding a given 8-d $z$ with `generate.parse_z` and `generate.decode_to_png`;
# 7. a common mistake: a softmax output layer for pixel probabilities.
#
# **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images,
# 5,000 further ones held out for validation, the official 10,000 test images,
# 12 epochs per run and the configs' own networks, on one CPU thread (a few minutes in
# all). The configs' own settings (50,000 images, 20–30 epochs) give better numbers
# and take a few minutes *per run* on a 2-core CPU. `PYROVAE_FAST=1` (CI): 2,000 training
# images, 500 for validation, 2 epochs, one hidden layer of 64 units, learning rate
# 3e-3. Numbers are nats per example; asserts with tolerances make a broken library fail
# the notebook.

# %%
import csv
import math
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from IPython.display import Image, display

import pyrovae
from pyrovae import notebook as nb
from pyrovae import objectives
from pyrovae.config import load_config, to_dict
from pyrovae.fit import fit, load_splits

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, tiny nets, 2 epochs
CPU = torch.device("cpu")
print_table = nb.print_table

# %%
# Every run below is configs/<name> + the size overrides of this mode + its own overrides.
SIZE = (["data.limit=2000", "data.valid_size=500", "train.epochs=2", "model.hidden=[64]",
         "train.lr=3e-3"] if FAST else
        ["data.limit=20000", "data.valid_size=5000", "train.epochs=12"])


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
# ## 1. A run is a config
#
# `load_config(path, overrides)` merges, in this order, the defaults of the typed schema
# (`pyrovae.config.Config`), the YAML file and dotted `key=value` overrides, then
# validates every value. `configs/mnist.yaml` is the default model: a 784-512-256-32
# MLP encoder (mirrored decoder), $p(z) = \mathcal{N}(0, I_{32})$, a Bernoulli likelihood
# on dynamically binarized MNIST (each training batch is re-binarized,
# $x \sim \mathrm{Bernoulli}(\text{grey level})$; the test set is binarized once, with a
# fixed seed), Adam at $10^{-3}$, batches of 128. Below: the effective config of this
# notebook's main run (data paths left out), and a bad override, refused in one line.

# %%
from omegaconf import OmegaConf

cfg = configure("mnist.yaml")
shown = to_dict(cfg)
for key in ("root", "mirror", "path"):
    shown["data"].pop(key)  # machine paths: not shown
shown.pop("run_dir")
print(OmegaConf.to_yaml(shown))

try:
    load_config("../configs/mnist.yaml", ["train.beta=-1"])
except pyrovae.PyrovaeError as err:
    print("PyrovaeError:", err)
try:
    load_config("../configs/mnist.yaml", ["model.prior=gaussian"])
except pyrovae.PyrovaeError as err:
    print("PyrovaeError:", err)

# %% [markdown]
# ## 2. Training: `fit`
#
# `fit(cfg)` builds `VAE(**vae_kwargs(cfg, x_shape))` and runs
# `SVI(vae.model, vae.guide, Adam, Trace_ELBO())`. Each step draws a minibatch $x_{1:B}$
# of the $N$ training images and one $z_b \sim q(z\mid x_b)$ per image, and ascends the
# unbiased estimate of the dataset's ELBO
# $$
# \frac{N}{B}\sum_{b=1}^{B} \Big[\log p(x_b\mid z_b) + \beta\big(\log p(z_b) - \log q(z_b\mid x_b)\big)\Big],
# \qquad z_b = \mu(x_b) + \sigma(x_b)\odot\varepsilon_b
# $$
# (`objectives.build("trace", vae).loss(x, num_data=N, beta=beta)`: $N/B$ applied once, $\beta$
# an argument of the loss; $\beta = 1$ here).
# After every epoch, `metrics.csv` gets one row:
#
# | column | meaning | computed by |
# |---|---|---|
# | `train_objective` | mean of $-\text{loss}/N$ over the epoch's steps (the training objective: here the $\beta$-weighted ELBO, on re-binarized batches, while the weights move) | `fit.train_epoch` |
# | `valid_elbo`, `test_elbo` | $\frac1n\sum_i \big(\mathbb{E}_q[\log p(x_i\mid z)] - \mathrm{KL}(q(z\mid x_i)\,\Vert\,p(z))\big)$, $\beta = 1$, one $z$ per image | `objectives.dataset_elbo` |
# | `recon`, `kl` | the two terms of `test_elbo`; the KL in closed form for $\mathcal{N}(0, I)$ | `objectives.dataset_elbo`, `objectives.closed_form_kl` |
# | `beta`, `lr`, `seconds` | KL weight, learning rate, training seconds of the epoch (not shown: they change from run to run) | `fit.train` |
#
# `best.pt` keeps the model of the best `valid_elbo`, which is what `pyrovae.load`
# returns; the figures are drawn from it.

# %%
main_cfg, main_dir, main_rows = train("mnist.yaml")
print()
print_table(["epoch", "train_objective", "valid_elbo", "test_elbo", "recon", "kl"],
            [[int(r["epoch"]), r["train_objective"], r["valid_elbo"], r["test_elbo"], r["recon"],
              r["kl"]] for r in main_rows])
for r in main_rows:  # the columns obey ELBO = recon - KL, KL >= 0, log-probabilities <= 0
    assert abs(r["test_elbo"] - (r["recon"] - r["kl"])) < 1e-3
    assert r["kl"] > 0 and r["recon"] < 0 and r["test_elbo"] < 0 and r["beta"] == 1.0
assert main_rows[-1]["test_elbo"] > main_rows[0]["test_elbo"]  # training helped
display(Image(filename=str(main_dir / "elbo.png")))

# %% [markdown]
# **The test ELBO by hand.** Load the saved model (`pyrovae.load(run_dir)`: `best.pt`, in
# eval mode) and the same binarized test set (`load_splits(cfg)`), and compute the two
# terms from the model's own distributions:
# $\mathrm{KL}(q\,\Vert\,p) = \tfrac12\sum_j(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)$
# is deterministic, so it must equal the saved `kl` of the best epoch to float round-off;
# $\mathbb{E}_q[\log p(x\mid z)]$ is estimated with fresh $z$ draws (8 per image), so it must agree
# with the saved `recon` within its Monte Carlo error (4 standard errors of the difference).

# %%
vae = pyrovae.load(main_dir)
splits = load_splits(main_cfg, CPU)
x_test = splits.test
best = max(main_rows, key=lambda r: r["valid_elbo"])
torch.manual_seed(1)
with torch.no_grad():
    loc, scale = vae.encoder(x_test)                          # q(z|x) = N(loc, diag scale^2)
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    z = loc + scale * torch.randn(8, *loc.shape)              # 8 reparameterized draws
    recon_draws = vae.decode(z).log_prob(x_test)              # log p(x|z), shape (8, n)
recon = recon_draws.mean(0)
# SE of the saved one-draw estimate (variance over z, per image) plus ours (8 draws)
var_z = recon_draws.var(0)
se = math.sqrt((var_z.sum() / len(x_test) ** 2 * (1 + 1 / 8)).item())
print(
    f"best epoch {int(best['epoch'])}:  KL  by hand {kl.mean():.4f}   metrics.csv {best['kl']:.4f}"
)
print(f"               recon by hand {recon.mean():.3f}  metrics.csv {best['recon']:.3f}  "
      f"(standard error of the difference {se:.3f})")
print(
    f"               ELBO  by hand {(recon - kl).mean():.3f}  metrics.csv {best['test_elbo']:.3f}"
)
assert torch.allclose(kl, objectives.closed_form_kl(vae, loc, scale), rtol=1e-5, atol=1e-5)
assert abs(kl.mean().item() - best["kl"]) < 1e-3
assert abs(recon.mean().item() - best["recon"]) < 4 * se

# %% [markdown]
# ## 3. Reconstruction against KL: the $\beta$ trade-off
#
# The $\beta$-VAE objective (Higgins et al. 2017) weights the KL term:
# $$
# \mathcal{L}_\beta(x) = \mathbb{E}_{q(z\mid x)}[\log p(x\mid z)] - \beta\,\mathrm{KL}\big(q(z\mid x)\,\Vert\,p(z)\big),
# $$
# $\beta = 1$ being the ELBO. In `pyrovae`, $\beta$ is an argument of the objective's loss,
# not a state of the model: `objectives.build("trace", vae).loss(x, num_data, beta)` (and
# `SVI.step(x, num_data, beta=beta)`, which passes it on), fed by `train.beta` and the warm-up
# schedule. Its loss is $-\log p(x\mid z) + \beta\,(\log q(z\mid x) - \log p(z))$ per example,
# from the traces of the plain `model` and `guide`. With the *same* noise,
# the loss is therefore an exact straight line in $\beta$ whose slope is the one-sample
# KL estimate. Checked first, on the trained model and 500 test images:

# %%
objective = objectives.build("trace", vae)
x500 = x_test[:500]


def loss_at(beta):
    pyro.set_rng_seed(3)  # the same z draws at every beta
    with torch.no_grad():
        return objective.loss(x500, beta=beta).item()


losses = {b: loss_at(b) for b in (0.25, 1.0, 4.0)}
slope_hi = (losses[4.0] - losses[1.0]) / 3.0
slope_lo = (losses[1.0] - losses[0.25]) / 0.75
with torch.no_grad():
    kl500 = objectives.closed_form_kl(vae, *vae.encoder(x500)).sum().item()
print("loss(beta) for beta = 0.25, 1, 4:", [round(v, 1) for v in losses.values()])
print(f"slope on [1, 4]: {slope_hi:.2f}   on [0.25, 1]: {slope_lo:.2f}   "
      f"closed-form KL summed over the 500 images: {kl500:.2f}")
assert abs(slope_hi - slope_lo) < 1e-3 * abs(slope_hi)  # linear in beta
assert abs(slope_hi - kl500) < 0.1 * kl500              # slope = a one-draw KL estimate

# %% [markdown]
# **Training at three values of $\beta$.** A larger $\beta$ makes information about $x$ in
# $z$ more expensive: the optimum moves to a smaller $\mathrm{KL}(q\,\Vert\,p)$ (posteriors closer to
# the prior, fewer nats per image through the code) and so to a worse reconstruction term.
# We train `mnist.yaml` at $\beta = 0.25$ and $4$ (the main run above is $\beta = 1$, same
# settings and seed) and evaluate all three at $\beta = 1$; the assert is the monotone
# trend in both columns. (With a fixed-scale Gaussian likelihood, as in
# `configs/mnist_gaussian.yaml`, $\beta$ and the scale are interchangeable:
# $-\lVert x - \mu\rVert^2 / (2\sigma^2) - \beta\,\mathrm{KL} = \beta\,\big[-\lVert x - \mu\rVert^2 / (2\beta\sigma^2) - \mathrm{KL}\big]$,
# i.e. $\beta$ acts like $\sigma^2 \to \beta\sigma^2$. The Bernoulli likelihood has no scale to trade.)

# %%
sweep = {1.0: (main_cfg, main_dir, main_rows)}
for beta in (0.25, 4.0):
    sweep[beta] = train("mnist.yaml", f"train.beta={beta}")
betas = sorted(sweep)
final = {b: sweep[b][2][-1] for b in betas}
print()
print_table(
    ["beta", "train objective L_beta", "test ELBO (beta=1)", "test recon", "test KL"],
    [
        [b, final[b]["train_objective"], final[b]["test_elbo"], final[b]["recon"], final[b]["kl"]]
        for b in betas
    ],
)
kls = [final[b]["kl"] for b in betas]
recons = [final[b]["recon"] for b in betas]
assert all(a > b for a, b in zip(kls, kls[1:])), "KL must fall as beta rises"
assert all(a > b for a, b in zip(recons, recons[1:])), "reconstruction must worsen as beta rises"

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.3))
ax1.plot(betas, kls, "o-", color="C1")
ax1.set_ylabel("test KL(q(z|x) || p(z))  [nats]")
ax2.plot(betas, recons, "o-", color="C0")
ax2.set_ylabel("test E_q[log p(x|z)]  [nats]")
for ax in (ax1, ax2):
    ax.set_xscale("log")
    ax.set_xticks(betas, [str(b) for b in betas])
    ax.minorticks_off()
    ax.set_xlabel("beta")
    ax.grid(alpha=0.3)
fig.suptitle("the beta trade-off (evaluated at beta = 1)", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# Each run's `reconstructions.png`: 16 test images (top) above the pixel probabilities
# $\mathbb{E}[x\mid z] = \mathrm{sigmoid}(\text{decoder}(\mu(x)))$ at the posterior mean (bottom).

# %%
fig, axes = plt.subplots(len(betas), 1, figsize=(9, 1.45 * len(betas)))
for ax, b in zip(axes, betas):
    ax.imshow(mpimg.imread(sweep[b][1] / "reconstructions.png"))
    ax.set_title(
        f"beta = {b}: test recon {final[b]['recon']:.1f}, KL {final[b]['kl']:.1f}", fontsize=9
    )
    ax.axis("off")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## 4. Samples from the prior
#
# The generative model is ancestral sampling: $z \sim p(z) = \mathcal{N}(0, I)$, then
# $x \sim p(x\mid z) = \prod_i \mathrm{Bernoulli}(x_i;\, \mathrm{sigmoid}(f_\theta(z))_i)$. `samples.png`
# shows the pixel probabilities $\mathbb{E}[x\mid z]$ of 64 draws (`plots.samples`:
# `torch.manual_seed(train.seed)`, `vae.prior().sample((64,))`, `vae.decode(z).mean`), the
# usual way to display a Bernoulli VAE's samples. Below it, the same 64 $z$ redrawn by
# hand: their decoded means must equal the PNG's tiles up to its 8-bit quantization, and
# a binary draw $x \sim p(x\mid z)$ for each.

# %%
def png_tiles(path, rows, cols, size=28, pad=2):
    """The (rows, cols) grid of size x size tiles of a torchvision save_image PNG, in [0, 1]."""
    img = mpimg.imread(path)[..., 0]  # grey images are saved as RGB: take one channel
    return np.stack([np.stack([img[pad + r * (size + pad): pad + r * (size + pad) + size,
                                   pad + c * (size + pad): pad + c * (size + pad) + size]
                               for c in range(cols)]) for r in range(rows)])

display(Image(filename=str(main_dir / "samples.png")))
torch.manual_seed(main_cfg.train.seed)
with torch.no_grad():
    z = vae.prior().sample((64,))
    p_x = vae.decode(z)
    means = p_x.mean.reshape(8, 8, 28, 28).numpy()
    binary = p_x.sample().reshape(8, 8, 28, 28).numpy()
err = np.abs(png_tiles(main_dir / "samples.png", 8, 8) - means).max()
print(
    f"max |samples.png tile - E[x|z] of the redrawn z| = {err:.5f}  (8-bit step 1/255 = "
    f"{1 / 255:.5f})"
)
assert err <= 1 / 255 + 1e-6
assert torch.allclose(p_x.mean, torch.sigmoid(vae.decoder(z)).detach())

fig, axes = plt.subplots(1, 2, figsize=(9, 4.7))
for ax, imgs, title in ((axes[0], means, "E[x|z] (as in samples.png)"),
                        (axes[1], binary, "x ~ p(x|z): a binary draw per z")):
    ax.imshow(
        np.block([[imgs[r, c] for c in range(8)] for r in range(8)]), cmap="gray", vmin=0, vmax=1
    )
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 5. The 2-d latent manifold
#
# With `z_dim = 2` (`configs/mnist_z2_manifold.yaml`: one hidden layer of 128 units)
# the whole latent space can be drawn. `manifold.png` (Kingma & Welling 2013, Fig. 4)
# decodes a $20\times 20$ grid: linearly spaced probabilities $u \in \{0.05, \dots, 0.95\}$
# mapped through the inverse CDF of $\mathcal{N}(0, 1)$, $z_j = \Phi^{-1}(u_j)$, so that equal
# areas of the picture carry equal prior mass. Tile $(r, c)$ (row $r$ from the top) is
# $\mathbb{E}[x\mid z]$ at $z = (\Phi^{-1}(u_c),\, \Phi^{-1}(u_{19-r}))$: checked below against the
# PNG, and next to it the posterior means $\mu(x)$ of the first 5,000 test images, coloured
# by their digit label.

# %%
from torchvision.datasets import MNIST

z2_cfg, z2_dir, z2_rows = train("mnist_z2_manifold.yaml")
vae2 = pyrovae.load(z2_dir)
assert vae2.z_dim == 2
u = torch.linspace(0.05, 0.95, 20)
phi_inv = torch.distributions.Normal(0.0, 1.0).icdf(u)
tiles = png_tiles(z2_dir / "manifold.png", 20, 20)
worst = 0.0
with torch.no_grad():
    for r, c in [(0, 0), (0, 19), (19, 0), (7, 12), (10, 10), (19, 19)]:
        zz = torch.stack([phi_inv[c], phi_inv[19 - r]])[None]
        worst = max(worst, np.abs(tiles[r, c] - vae2.decode(zz).mean[0, 0].numpy()).max())
print(
    f"z grid from {phi_inv[0]:.3f} to {phi_inv[-1]:.3f}; max |tile - E[x|z]| over 6 tiles = "
    f"{worst:.5f}"
)
assert worst <= 1 / 255 + 1e-6

# the test labels, in the same order
labels = MNIST(nb.data_root(), train=False, download=False).targets.numpy()
with torch.no_grad():
    mu2 = vae2.encoder(x_test)[0].numpy()
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.2))
ax1.imshow(mpimg.imread(z2_dir / "manifold.png"))
ax1.set_title("manifold.png: E[x|z] on the Phi^-1 grid", fontsize=9)
ax1.axis("off")
sc = ax2.scatter(mu2[:5000, 0], mu2[:5000, 1], c=labels[:5000], cmap="tab10", s=2, alpha=0.6)
ax2.add_patch(plt.Rectangle((phi_inv[0], phi_inv[0]), phi_inv[-1] - phi_inv[0],
                            phi_inv[-1] - phi_inv[0], fill=False, ls="--", color="k"))
ax2.set_aspect("equal", adjustable="datalim")
ax2.set_xlabel("z1")
ax2.set_ylabel("z2")
ax2.set_title("posterior means of 5,000 test images (dashed: the grid)", fontsize=9)
fig.colorbar(sc, ax=ax2, ticks=range(10), label="digit")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Decoding a given $z$ (8-d latent)
#
# `configs/mnist_z8.yaml` has an 8-d latent space. `python -m pyrovae.generate RUN --z
# "0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505"` is `generate.parse_z` (exactly
# `z_dim` finite numbers, as a batch of one) followed by `generate.decode_to_png`, which
# saves $\mathbb{E}[x\mid z] = \mathrm{sigmoid}(f_\theta(z))$. How typical is this $z$ under
# the prior? $\lVert z\rVert^2 \sim \chi^2_8$ when $z \sim \mathcal{N}(0, I_8)$.

# %%
from pyrovae.generate import decode_to_png, parse_z

z8_cfg, z8_dir, z8_rows = train("mnist_z8.yaml")
vae8 = pyrovae.load(z8_dir)
z_given = parse_z("0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505", vae8.z_dim)
png = decode_to_png(vae8, z_given, nb.runs_dir() / "z_given.png")
with torch.no_grad():
    mean = torch.sigmoid(vae8.decoder(z_given))[0, 0]
    log_pz = vae8.prior().log_prob(z_given).item()
tile = mpimg.imread(png)[..., 0]  # one image: torchvision saves it without a border
sq = z_given.pow(2).sum().item()
# P(chi2_8 <= |z|^2)
chi2_cdf = torch.special.gammainc(torch.tensor(4.0), torch.tensor(sq / 2)).item()
print(f"z = {[round(v, 3) for v in z_given[0].tolist()]}, shape {tuple(z_given.shape)}")
print(
    f"|z|^2 = {sq:.3f}: the {100 * chi2_cdf:.0f}th percentile of chi2_8 (a typical draw); log "
    f"p(z) = {log_pz:.3f}"
)
print(f"max |PNG - sigmoid(decoder(z))| = {np.abs(tile - mean.numpy()).max():.5f}")
assert np.abs(tile - mean.numpy()).max() <= 1 / 255 + 1e-6
assert abs(log_pz - (-4 * math.log(2 * math.pi) - sq / 2)) < 1e-4

fig, ax = plt.subplots(figsize=(2.6, 2.6))
ax.imshow(mean.numpy(), cmap="gray", vmin=0, vmax=1)
ax.set_title("E[x | z given]", fontsize=9)
ax.axis("off")
plt.show()
for text in ("0.279,1.219,-0.458", "0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,nan"):
    try:
        parse_z(text, vae8.z_dim)
    except pyrovae.PyrovaeError as err:
        print("PyrovaeError:", err)

# %% [markdown]
# ## 7. A common mistake: a softmax output layer for pixel probabilities
#
# The Bernoulli decoder needs one probability *per pixel*, $p_i = P(x_i = 1\mid z)$, each
# in $(0, 1)$ and otherwise unconstrained:
# $\log p(x\mid z) = \sum_{i=1}^{D} \big[x_i \log p_i + (1 - x_i)\log(1 - p_i)\big]$.
# `pyrovae` puts no squashing layer in the decoder: `VAE.decode(z)` is
# `Bernoulli(logits=decoder(z)).to_event(3)`, i.e. $p_i = \mathrm{sigmoid}(\ell_i)$,
# independently per pixel (and `log_prob` is minus binary cross-entropy with logits).
#
# A softmax output $p_i = e^{\ell_i} / \sum_j e^{\ell_j}$ instead forces $\sum_i p_i = 1$:
# one unit of "ink" spread over 784 pixels. An image with $k$ on-pixels then has, by
# Jensen's inequality on the concave $\log$ and $\log(1 - p_j) \le 0$,
# $$
# \log p(x\mid z) \le \sum_{i:\,x_i = 1} \log p_i \le k \log\frac{\sum_{i:\,x_i=1} p_i}{k} \le -k\log k ,
# $$
# for *every* decoder, with equality only in the limit $p_i = 1/k$ on the on-pixels and $0$
# elsewhere. A binarized MNIST digit has $k \approx 100$ on-pixels: at best $-460$ nats,
# while independent sigmoids can reach $0$. Below: the library's decoder is the sigmoid one;
# then the best possible output of each kind, fitted by Adam as 784 free logits to one
# test image (no network at all: the most flexible decoder there is).

# %%
with torch.no_grad():
    z = vae.prior().sample((4,))
    logits = vae.decoder(z)
    p_x = vae.decode(z)
    x_draw = p_x.sample()
assert isinstance(p_x.base_dist, dist.Bernoulli) and p_x.event_shape == (1, 28, 28)
assert torch.allclose(p_x.mean, torch.sigmoid(logits))
bce = F.binary_cross_entropy_with_logits(logits, x_draw, reduction="none").sum((1, 2, 3))
assert torch.allclose(p_x.log_prob(x_draw), -bce, rtol=1e-5)
print(
    "VAE.decode(z):",
    type(p_x.base_dist).__name__,
    "(logits) per pixel, event shape",
    tuple(p_x.event_shape),
)
print(
    "sum of the 784 pixel probabilities, 4 prior draws:",
    np.round(p_x.mean.sum((1, 2, 3)).numpy(), 1),
)
print("the same logits through a softmax sum to:        ",
      np.round(torch.softmax(logits.flatten(1), -1).sum(-1).numpy(), 6))

x1 = x_test[0].flatten()
k = int(x1.sum())
bound = -k * math.log(k)

def best_output(kind, steps=3000):
    ell = torch.zeros(784, requires_grad=True)
    opt = torch.optim.Adam([ell], lr=0.1)
    for _ in range(steps):
        if kind == "softmax":
            log_p = torch.log_softmax(ell, -1)
            ll = (x1 * log_p + (1 - x1) * torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))).sum()
        else:
            ll = dist.Bernoulli(logits=ell).log_prob(x1).sum()
        opt.zero_grad()
        (-ll).backward()
        opt.step()
    probs = torch.softmax(ell, -1) if kind == "softmax" else torch.sigmoid(ell)
    return ll.item(), probs.detach()

ll_soft, p_soft = best_output("softmax")
ll_sig, p_sig = best_output("sigmoid")
with torch.no_grad():
    ll_vae = vae.decode(vae.encoder(x_test[:1])[0]).log_prob(x_test[:1]).item()
print(f"\ntest image 0: k = {k} on-pixels of 784; bound -k log k = {bound:.1f} nats")
print(
    f"  best softmax output (fitted):    log p(x|z) = {ll_soft:8.2f}   max p_i = "
    f"{p_soft.max():.4f}, sum p_i = {p_soft.sum():.4f}"
)
print(
    f"  best sigmoid output (fitted):    log p(x|z) = {ll_sig:8.2f}   max p_i = "
    f"{p_sig.max():.4f}, sum p_i = {p_sig.sum():.1f}"
)
print(f"  the trained VAE at z = mu(x):    log p(x|z) = {ll_vae:8.2f}")
assert ll_soft <= bound + 1e-3 and ll_soft > bound - 1.0   # the bound, and the fit reaches it
assert ll_sig > -1.0 and ll_vae > bound  # even the trained VAE beats every softmax decoder

# %% [markdown]
# Over the whole test set: the softmax's best case $-k\log k$ per image, against what the
# trained (sigmoid) VAE actually achieves; and the sums of the VAE's pixel probabilities,
# which on average match the number of on-pixels instead of being pinned at 1.

# %%
ks = x_test.flatten(1).sum(-1)
bounds = -ks * ks.log()
with torch.no_grad():
    ink = vae.decode(vae.encoder(x_test)[0]).mean.flatten(1).sum(-1)
print(f"on-pixels per test image: mean {ks.mean():.1f}, range {int(ks.min())}-{int(ks.max())}")
print(f"softmax output, best possible mean log p(x|z): {bounds.mean():8.1f} nats")
print(f"trained sigmoid VAE, test recon (metrics.csv): {main_rows[-1]['recon']:8.1f} nats")
print(
    f"sum of the VAE's pixel probabilities at mu(x): mean {ink.mean():.1f} (on-pixels: "
    f"{ks.mean():.1f}); "
    f"correlation with k: {np.corrcoef(ink.numpy(), ks.numpy())[0, 1]:.2f}"
)
assert main_rows[-1]["recon"] > bounds.mean().item() + 100
assert abs(ink.mean().item() - ks.mean().item()) < 0.2 * ks.mean().item()

fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
with torch.no_grad():
    recon_img = vae.decode(vae.encoder(x_test[:1])[0]).mean[0, 0]
for ax, img, title in (
    (axes[0], x1.reshape(28, 28), f"test image ({k} on-pixels)"),
    (axes[1], p_soft.reshape(28, 28), f"best softmax output\n{ll_soft:.0f} nats"),
    (axes[2], p_sig.reshape(28, 28), f"best sigmoid output\n{ll_sig:.2f} nats"),
    (axes[3], recon_img, f"trained VAE, E[x|mu(x)]\n{ll_vae:.0f} nats"),
):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# * `load_config` + overrides → `fit` → a run folder; `metrics.csv` satisfies
#   ELBO = recon − KL, and the saved model reproduces the best epoch's KL exactly and its
#   reconstruction term within Monte Carlo error.
# * `train.beta` enters the loss linearly through `poutine.scale`; raising $\beta$ lowered
#   the test KL and worsened the reconstruction term, monotonically over $0.25, 1, 4$.
# * `samples.png`, `manifold.png` and `decode_to_png` are $\mathbb{E}[x\mid z]$ at
#   $z \sim p(z)$, at $\Phi^{-1}$ of a uniform grid, and at a given $z$: all reproduced from
#   the model to the PNG's 8-bit precision.
# * A softmax output layer caps $\log p(x\mid z)$ at $-k\log k$ (about $-460$ nats for
#   $k = 100$ on-pixels); the independent sigmoids of `Bernoulli(logits=...)` do not.
