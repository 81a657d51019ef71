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
# Notebooks [01](01_elbo.ipynb), [02](02_gaussian_kl.ipynb) and [03](03_reparameterization.ipynb)
# derived the ELBO, its Gaussian KL and the reparameterization gradient (and
# [00](00_first_steps.ipynb) the Pyro that the library uses). This one trains real models on real
# MNIST with the library's own entry points, and checks what they write against the mathematics:
#
# 1. a run is a config: `load_config(path, overrides)`;
# 2. `fit` trains it (the loss `pyro.infer.SVI` with `Trace_ELBO` would minimize; section 2
#    says which engine steps it); `metrics.csv` and the ELBO curve, and the
#    test ELBO recomputed by hand from the saved model;
# 3. the $\beta$ trade-off: reconstruction against KL for $\beta = 0.25, 1, 4$;
# 4. samples from the prior, reproduced pixel for pixel from $z \sim p(z)$;
# 5. the 2-d latent manifold (`z_dim = 2`), reproduced from the inverse normal CDF;
# 6. decoding a given 8-d $z$ with `generate.parse_z` and `generate.decode_to_png`;
# 7. a common mistake: a softmax output layer for pixel probabilities;
# 8. loading weights before training: what the loaded model is, and what training then does;
# 9. the conv net of the TensorFlow write-up and the fc1/fc21/fc22 net of the PyTorch example
#    (`configs/mnist_conv.yaml`, `configs/mnist_fc400_z20.yaml`), trained and compared.
#
# **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images, the
# last 5,000 of the official training set held out for validation, the official 10,000 test
# images, 12 epochs per run and the configs' own networks, on one CPU thread. The configs' own
# settings (50,000 training images, 10–30 epochs) give better numbers and take minutes *per run*
# on a 2-core CPU. `PYROVAE_FAST=1` (CI): 2,000 training images, 500 for validation, 2 epochs,
# one hidden layer of 64 units, learning rate 3e-3, the `torch` engine (no `torch.compile`); the
# runs of sections 5 and 6, which are only decoded, 1 epoch on 500 images. Sections 8 and 9 add
# 2 and 3 epochs (fast mode: 1). Numbers are nats per example; asserts with tolerances make a
# broken library fail the notebook.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, tiny nets, 2 epochs

# %%
import math

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from IPython.display import Image, display

import pyrovae
from pyrovae import objectives
from pyrovae.config import load_config, to_dict

runs = nb.Runs(full_epochs=12)  # each run: configs/<name> + this mode's size + its overrides
# sections 5 and 6 only decode from a trained model: in fast mode 1 epoch on 500 images
decoder_runs = (nb.Runs(full_epochs=12, size_overrides=[*nb.FAST_SIZE, "data.limit=500",
                                                        "train.epochs=1"]) if FAST else runs)

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

cfg = runs.config("mnist.yaml")
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
# `fit(cfg)` builds `VAE(**vae_kwargs(cfg, x_shape))` and minimizes the loss of
# `objectives.build(train.loss, vae)` (here `trace`, the ELBO from the traces of `vae.model` and
# `vae.guide`, the loss that `pyro.infer.SVI` would take) with Adam
# ([Kingma & Ba 2015](https://arxiv.org/abs/1412.6980)); `train.engine` only chooses how the step
# runs (`svi`: `SVI.step`; `torch`, `traced`, `compiled`: the same loss and one `torch.optim.Adam`,
# see `pyrovae.optim`). Each step draws a minibatch $x_{1:B}$
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
# | `beta`, `lr`, `seconds` | KL weight, learning rate, training seconds of the epoch (not shown: they change from run to run) | `fit.train_epoch`, `fit.run_epoch` |
#
# `best.pt` keeps the model of the best `valid_elbo`, which is what `pyrovae.load`
# returns; the figures are drawn from it.

# %%
main_cfg, main_dir, main_rows = runs.train("mnist.yaml")
print()
nb.print_table(["epoch", "train_objective", "valid_elbo", "test_elbo", "recon", "kl"],
               [[int(r["epoch"]), r["train_objective"], r["valid_elbo"], r["test_elbo"],
                 r["recon"], r["kl"]] for r in main_rows])
for r in main_rows:  # the columns obey ELBO = recon - KL, KL >= 0, log-probabilities <= 0
    assert abs(r["test_elbo"] - (r["recon"] - r["kl"])) < 1e-3
    assert r["kl"] > 0 and r["recon"] < 0 and r["test_elbo"] < 0 and r["beta"] == 1.0
assert main_rows[-1]["test_elbo"] > main_rows[0]["test_elbo"]  # training helped
display(Image(filename=str(main_dir / "elbo.png")))

# %% [markdown]
# **The test ELBO by hand.** Load the saved model (`pyrovae.load(run_dir)`: `best.pt`, in
# eval mode) and the same binarized test set (`fit.load_splits(cfg)`), and compute the two
# terms from the model's own distributions:
# $\mathrm{KL}(q\,\Vert\,p) = \tfrac12\sum_j(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)$
# is deterministic, so it must equal the saved `kl` of the best epoch to float round-off;
# $\mathbb{E}_q[\log p(x\mid z)]$ is estimated with fresh $z$ draws (8 per image), so it must agree
# with the saved `recon` within its Monte Carlo error (4 standard errors of the difference).

# %%
vae = pyrovae.load(main_dir)
splits = runs.splits(main_cfg)  # fit.load_splits on the CPU
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
# The $\beta$-VAE objective ([Higgins et al. 2017](https://openreview.net/forum?id=Sy2fzU9gl))
# weights the KL term:
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
# i.e. $\beta$ acts like $\sigma^2 \to \beta\sigma^2$, checked with numbers in
# [05, section 7](05_priors_and_likelihoods.ipynb). The Bernoulli likelihood has no scale to trade.)

# %%
sweep = {1.0: (main_cfg, main_dir, main_rows)}
for beta in (0.25, 4.0):
    sweep[beta] = runs.train("mnist.yaml", f"train.beta={beta}")
betas = sorted(sweep)
final = {b: sweep[b][2][-1] for b in betas}
print()
nb.print_table(
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
    ax.set_xticks([])
    ax.set_yticks([2 + 13.5, 32 + 13.5], ["x", "E[x|mu(x)]"], fontsize=8)  # the two rows
axes[-1].set_xlabel("the first 16 test images")
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
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("64 draws z ~ p(z), 8 per row", fontsize=8)
plt.show()

# %% [markdown]
# ## 5. The 2-d latent manifold
#
# With `z_dim = 2` (`configs/mnist_z2_manifold.yaml`: one hidden layer of 128 units)
# the whole latent space can be drawn. `manifold.png`
# ([Kingma & Welling 2013](https://arxiv.org/abs/1312.6114), Fig. 4)
# decodes a $20\times 20$ grid: linearly spaced probabilities $u \in \{0.05, \dots, 0.95\}$
# mapped through the inverse CDF of $\mathcal{N}(0, 1)$, $z_j = \Phi^{-1}(u_j)$, so that equal
# areas of the picture carry equal prior mass (this config's prior is $\mathcal{N}(0, I)$; for a
# learned prior the grid takes that prior's own quantiles, `plots.prior_quantiles`). Tile $(r, c)$ (row $r$ from the top) is
# $\mathbb{E}[x\mid z]$ at $z = (\Phi^{-1}(u_c),\, \Phi^{-1}(u_{19-r}))$: checked below against the
# PNG, and next to it the posterior means $\mu(x)$ of the first 5,000 test images, coloured
# by their digit label.

# %%
from torchvision.datasets import MNIST

z2_cfg, z2_dir, z2_rows = decoder_runs.train("mnist_z2_manifold.yaml")
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
centres = 2 + 30 * np.arange(20) + 13.5  # tile centres: 28-pixel tiles, 2-pixel padding
shown = [0, 5, 10, 14, 19]
ax1.set_xticks(centres[shown], [f"{phi_inv[c]:.2f}" for c in shown])
ax1.set_yticks(centres[shown], [f"{phi_inv[19 - r]:.2f}" for r in shown])
ax1.set_xlabel("z1 (tile centres)")
ax1.set_ylabel("z2 (tile centres)")
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
# saves $\mathbb{E}[x\mid z] = \mathrm{sigmoid}(f_\theta(z))$, enlarged for people to look at: each
# pixel becomes a $k\times k$ block (nearest neighbour, the smallest whole $k$ that makes the
# short side at least `generate.MIN_SIDE` = 256 pixels: $k = \lceil 256/28\rceil = 10$ for a
# digit). So the PNG is read back by taking every $k$-th pixel, with $k$ from its size, after
# checking that it consists of constant $k\times k$ blocks. How typical is this $z$ under the
# prior? $\lVert z\rVert^2 \sim \chi^2_8$ when $z \sim \mathcal{N}(0, I_8)$.

# %%
from pyrovae.generate import MIN_SIDE, decode_to_png, parse_z

z8_cfg, z8_dir, z8_rows = decoder_runs.train("mnist_z8.yaml")
vae8 = pyrovae.load(z8_dir)
z_given = parse_z("0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505", vae8.z_dim)
png = decode_to_png(vae8, z_given, nb.runs_dir() / "z_given.png")
with torch.no_grad():
    mean = torch.sigmoid(vae8.decoder(z_given))[0, 0]
    log_pz = vae8.prior().log_prob(z_given).item()
enlarged = mpimg.imread(png)[..., 0]  # one image: torchvision saves it without a border
step = enlarged.shape[0] // vae8.x_shape[-2]  # the enlargement factor k, from the size
tile = enlarged[::step, ::step]  # one pixel of each k x k block
print(f"PNG {enlarged.shape[1]} x {enlarged.shape[0]} pixels: the 28 x 28 image enlarged "
      f"{step} times")
assert enlarged.shape == (28 * step, 28 * step) and step == math.ceil(MIN_SIDE / 28)
assert np.array_equal(np.repeat(np.repeat(tile, step, 0), step, 1), enlarged)  # whole blocks
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
ax.set_xticks([0, 27])
ax.set_yticks([0, 27])
ax.set_xlabel("pixel column", fontsize=8)
ax.set_ylabel("pixel row", fontsize=8)
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

def best_output(kind, steps=200 if FAST else 2000):
    ell = torch.zeros(784, requires_grad=True)
    opt = torch.optim.Adam([ell], lr=0.5)
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
    ax.set_xticks([0, 27])
    ax.set_yticks([0, 27])
    ax.set_xlabel("pixel column", fontsize=8)
axes[0].set_ylabel("pixel row", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. Loading weights before training
#
# A Keras VAE tutorial calls `vae.load_weights(path)`
# ([Keras: weights saving and loading](https://keras.io/api/models/model_saving_apis/weights_saving_and_loading/))
# and then `vae.fit(...)`. What is the model after loading, and what does training then do?
#
# * **The loaded model is the saved model.** A checkpoint holds the decoder's $\theta$ and the
#   encoder's $\phi$; loading them gives back the same $p_\theta(x\mid z)$ and $q_\phi(z\mid x)$ for every
#   $x$, hence the same ELBO $\mathcal{L}(\theta, \phi)$, before any training step. Checked on
#   `checkpoint.pt` of the main run (its state after the last epoch $E$): every tensor equal bit
#   for bit, the test KL equal to the last row of `metrics.csv` to float round-off, the test ELBO
#   within its Monte Carlo error (`metrics.csv` drew one $z$ per image; here two fresh ones).
# * **Training then continues from it.** Each step is a step of the same stochastic gradient
#   ascent on $\mathcal{L}(\theta, \phi)$, started from the loaded $(\theta, \phi)$ instead of from a random
#   initialization: nothing learned is reset, only the optimizer may be. `python -m pyrovae.fit
#   --resume RUN` (`fit(resume_dir=...)`, `fit.resume`) restores the whole state (weights, Adam's
#   moment estimates and step count, the random number generators, the epoch), so the run goes on
#   as if it had never stopped, and its `metrics.csv` keeps the earlier rows. Loading only the
#   weights, as `load_weights` does, starts Adam afresh. Adam
#   ([Kingma & Ba 2015](https://arxiv.org/abs/1412.6980)) moves each parameter by
#   $\eta\,\hat m/(\sqrt{\hat v} + \epsilon)$ with bias-corrected moving averages $\hat m$ of the gradient
#   $g$ and $\hat v$ of $g^2$; at its first step $\hat m = g$ and $\hat v = g^2$, so *every* parameter with
#   a non-zero gradient moves by $\eta$ (the learning rate) whatever its gradient (a zero gradient,
#   such as that of a weight from a pixel that is 0 in every image of the batch, moves nothing).
#   With the restored averages the step is $\eta$ only where the gradient has kept its sign and
#   size; where it is noisy, $|\hat m|$ is smaller than $\sqrt{\hat v}$ and so is the step. Measured below
#   on one minibatch: $|\Delta\theta|/\eta$ per parameter.
# * **A fresh initialization** (the model `fit.start` builds after `pyro.set_rng_seed(train.seed)`,
#   checked below to be the one rebuilt here) starts from the ELBO of random weights: logits near 0,
#   pixel probabilities near $\tfrac12$, about $784 \log\tfrac12 = -543$ nats, and needs the epochs the
#   loaded model already had.
#
# Then `EXTRA` more epochs (fast mode: 1, full mode: 2) for each: resumed, weights only with a
# fresh Adam, and a fresh initialization, on the same data; the resumed one on a copy of the
# main run folder, so that the figures above stay as they are. (A fresh initialization trained
# for `EXTRA` epochs is the main run's own first `EXTRA` epochs: the same config, seed and data
# order.)

# %%
import shutil

from pyrovae import checkpoint, fit
from pyrovae.optim import make_stepper

EXTRA = 1 if FAST else 2
E = len(main_rows)
run_copy = nb.runs_dir() / "main_copy"
shutil.copytree(main_dir, run_copy)
state = checkpoint.read(run_copy / "checkpoint.pt")         # the state after epoch E
loaded = pyrovae.load(run_copy / "checkpoint.pt")           # build VAE(config), load weights
assert all(torch.equal(t, state["model"][k]) for k, t in loaded.state_dict().items())
steps_per_epoch = math.ceil(len(splits.train) / main_cfg.train.batch_size)
adam_steps = {int(s["step"]) for s in state["optim"]["state"].values()}
print(f"checkpoint.pt: epoch {state['epoch']}, {state['step']} steps; Adam's step count "
      f"{adam_steps} = {E} epochs x {steps_per_epoch} minibatches; "
      f"{len(state['metrics'])} rows of metrics")
assert state["epoch"] == E and len(state["metrics"]) == E
assert adam_steps == {state["step"]} and state["step"] == E * steps_per_epoch


def test_elbo(model, draws=2):
    """The test ELBO by hand: closed-form KL, `draws` z per image; and the standard error of
    its difference from a one-draw estimate such as metrics.csv's."""
    with torch.no_grad():
        loc, scale = model.encoder(x_test)
        kl = objectives.closed_form_kl(model, loc, scale)
        z = loc + scale * torch.randn(draws, *loc.shape)
        rec = model.decode(z).log_prob(x_test)                     # (draws, n)
    n = len(x_test)
    se = math.sqrt((rec.var(0).sum() / n**2 * (1 + 1 / draws)).item())
    return (rec.mean(0) - kl).mean().item(), kl.mean().item(), se


torch.manual_seed(1)
elbo_now, kl_now, se_now = test_elbo(loaded)
pyro.set_rng_seed(main_cfg.train.seed)
random_init = checkpoint.build(main_cfg, loaded.x_shape).eval()  # what training starts from
elbo_init, _, _ = test_elbo(random_init)
last = main_rows[-1]
print(f"loaded checkpoint.pt (epoch {E}), before any step: test ELBO {elbo_now:.2f}, KL "
      f"{kl_now:.4f}")
print(f"metrics.csv, epoch {E}:                         test ELBO {last['test_elbo']:.2f}, "
      f"KL {last['kl']:.4f}   (SE of the ELBO difference {se_now:.2f})")
print(f"a fresh initialization, before any step:       test ELBO {elbo_init:.2f} "
      f"(784 log 1/2 = {784 * math.log(0.5):.1f})")
assert abs(kl_now - last["kl"]) < 1e-3
assert abs(elbo_now - last["test_elbo"]) < 4 * se_now
assert abs(elbo_init - 784 * math.log(0.5)) < 10 and elbo_init < elbo_now - 50

# one Adam step on the same minibatch, from the loaded weights: restored vs fresh moments
batch = x_test[:main_cfg.train.batch_size]


def first_step(optim_state):
    model = pyrovae.load(run_copy / "checkpoint.pt").train()
    stepper = make_stepper("torch", model, main_cfg.train.loss, lr=main_cfg.train.lr)
    if optim_state is not None:
        stepper.load_state_dict(optim_state)
    before = torch.cat([p.detach().flatten() for p in stepper.params])
    torch.manual_seed(2)
    stepper.step(batch, len(splits.train))
    after = torch.cat([p.detach().flatten() for p in stepper.params])
    return ((after - before).abs() / main_cfg.train.lr).numpy()


moves = {"restored Adam state (resume)": first_step(state["optim"]),
         "fresh Adam (weights only)": first_step(None)}
print(f"\n{'first step, |change| / learning rate':>36} {'unmoved':>8} {'median of moved':>16} "
      f"{'90th pct':>9} {'moved by 1 +- 0.01':>19}")
for name, m in moves.items():
    moved = m[m > 0]  # a zero gradient (a weight from a pixel that is 0 in the whole batch)
    print(f"{name:>36} {np.mean(m == 0):8.3f} {np.median(moved):16.3f} "
          f"{np.percentile(moved, 90):9.3f} {np.mean(np.abs(moved - 1) < 0.01):19.3f}")
fresh_moves, kept_moves = moves["fresh Adam (weights only)"], moves["restored Adam state (resume)"]
assert np.mean(np.abs(fresh_moves[fresh_moves > 0] - 1) < 0.01) > 0.9
assert np.median(kept_moves[kept_moves > 0]) < 0.9

# %% [markdown]
# Now the `EXTRA` epochs. The fresh initialization's row is the main run's own first epochs; the
# resumed run's `metrics.csv` must hold the main run's $E$ rows unchanged, then the new ones.

# %%
silent = lambda *a: None  # noqa: E731  (fit's log lines name temporary folders)
threads = torch.get_num_threads()

# resumed: the whole state, the same run folder (a copy), EXTRA more epochs
fit.fit(resume_dir=run_copy, overrides=[f"train.epochs={E + EXTRA}"], log=silent)
resumed = nb.read_metrics(run_copy)
# weights only: a new run of the same config, its fresh model overwritten before any step
run_w = fit.start(runs.config("mnist.yaml", f"train.epochs={EXTRA}"), log=silent)
assert all(torch.equal(t, random_init.state_dict()[k])  # fit.start's model: the fresh init above
           for k, t in run_w.vae.state_dict().items())
run_w.vae.load_state_dict(state["model"])
fit.train(run_w, log=silent)
torch.set_num_threads(threads)  # fit.start may choose the threads; fit.fit restores them itself
weights_only = run_w.metrics
# a fresh initialization trained EXTRA epochs: the main run's own first EXTRA epochs (the same
# config, seed and data order)
fresh_rows = main_rows[:EXTRA]

nb.print_table(["extra epoch", "resumed: epoch", "test ELBO", "weights only: test ELBO",
                "fresh init: test ELBO"],
               [[j + 1, int(resumed[E + j]["epoch"]), resumed[E + j]["test_elbo"],
                 weights_only[j]["test_elbo"], fresh_rows[j]["test_elbo"]]
                for j in range(EXTRA)])
keep = ("epoch", "train_objective", "valid_elbo", "test_elbo", "kl", "recon")
assert [{k: r[k] for k in keep} for r in resumed[:E]] == \
       [{k: r[k] for k in keep} for r in main_rows]  # the resumed run keeps its history
assert [int(r["epoch"]) for r in resumed] == list(range(1, E + EXTRA + 1))
assert fresh_rows[-1]["test_elbo"] < elbo_now  # EXTRA epochs from scratch: not yet there
gain_r = resumed[-1]["test_elbo"] - last["test_elbo"]
gain_w = weights_only[-1]["test_elbo"] - last["test_elbo"]
behind = elbo_now - fresh_rows[-1]["test_elbo"]
print(f"\nafter {EXTRA} more epoch(s), test ELBO gained over the loaded model's "
      f"{last['test_elbo']:.2f}: resumed {gain_r:+.2f}, weights only {gain_w:+.2f} nats;\nthe "
      f"fresh initialization after as many epochs is {behind:.1f} nats below the loaded model "
      f"before any step")
if not FAST:  # a well-trained model, two epochs on 20,000 images
    assert gain_r > 0 and gain_w > 0 and abs(gain_r - gain_w) < 0.1 * behind

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for ax in (ax1, ax2):
    ax.plot([r["epoch"] for r in main_rows], [r["test_elbo"] for r in main_rows], "o-",
            color="C0", label=f"main run (its epochs 1-{EXTRA}: the fresh initialization)")
    ax.plot([r["epoch"] for r in resumed[E - 1:]], [r["test_elbo"] for r in resumed[E - 1:]],
            "s-", color="C1", label="resumed (weights + Adam state + history)")
    ax.plot(range(E, E + EXTRA + 1), [last["test_elbo"]] + [r["test_elbo"] for r in weights_only],
            "^--", color="C2", label="weights only, fresh Adam")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test ELBO [nats per image]")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
ax1.set_title("the whole history", fontsize=9)
ax1.legend(fontsize=8, loc="lower right")
ax2.set_xlim(E - 1.5, E + EXTRA + 0.5)
tail = [r["test_elbo"] for r in main_rows[-2:] + resumed[E:] + weights_only]
ax2.set_ylim(min(tail) - 0.5, max(tail) + 0.5)
ax2.set_title(f"the last epochs and the {EXTRA} extra one(s)", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 9. Two architectures from two write-ups: `mnist_conv` and `mnist_fc400_z20`
#
# Two configs reproduce networks of well-known write-ups:
#
# * `configs/mnist_conv.yaml`, a convolutional VAE after the
#   [TensorFlow CVAE tutorial](https://www.tensorflow.org/tutorials/generative/cvae) (its two
#   strided convolutions of 32 and 64 channels; here with padding 1, batch norm, a dense layer, a
#   softplus scale and a 32-d latent, where the tutorial has none of these and a 2-d one): an encoder
#   of two strided $3\times 3$ convolutions (32 and 64 channels, stride 2 and padding 1, each halving
#   the image: $28 \to 14 \to 7$), each followed by **batch norm**
#   ([Ioffe & Szegedy 2015](https://arxiv.org/abs/1502.03167)) and ReLU, then a dense layer of 256
#   units to $(\mu, \text{raw})$ of a 32-d $q(z\mid x)$, with
#   $\sigma = \mathrm{softplus}(\text{raw}) = \log(1 + e^{\text{raw}})$ (`model.scale_fn=softplus`) instead of
#   $\exp(\tfrac12 \log\sigma^2)$: it grows only linearly for large raw values instead of exponentially.
#   The decoder mirrors it: dense layers $32 \to 256 \to 64\cdot 7\cdot 7$, then transposed convolutions
#   $7 \to 14$ (32 channels, batch norm, ReLU) $\to 28$ (one channel of logits).
# * `configs/mnist_fc400_z20.yaml`, the network of the
#   [PyTorch example](https://github.com/pytorch/examples/blob/main/vae/main.py) (`fc1`, `fc21`,
#   `fc22`, `fc3`, `fc4`): $784 \to 400$ (ReLU) $\to$ two heads of 20 for $\mu$ and $\log\sigma^2$, and
#   $20 \to 400$ (ReLU) $\to 784$ then a sigmoid; its loss is the summed binary cross-entropy plus
#   $-\tfrac12\sum_j(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2)$. In `pyrovae` the two heads are one
#   `Linear(400, 40)` whose output is split in half, which is the same function; checked below by
#   writing the example's `encode`, `decode` and `loss_function` with the trained weights
#   (`fc21` = the first 20 rows of the head, `fc22` the last 20) and comparing with the library's
#   `encoder`, `decode` and `objectives.analytic_loss` on the same noise. (The example trains on
#   grey levels; the config, like every MNIST config here, on binarized images, where the
#   cross-entropy is a likelihood: see [05, section 5](05_priors_and_likelihoods.ipynb).)
#
# Batch norm normalizes each channel with the statistics of the *minibatch* while training and
# with running averages in eval mode (`pyrovae.load` returns eval mode), so that at test time
# $q(z\mid x)$ of an image does not depend on the other images of its batch (checked below). Both
# are trained here for `ARCH_EPOCHS` epochs (full mode: 3 on the 20,000 images; fast mode: 1
# epoch on 2,000 images, with 8 and 16 channels and 64 hidden units in both nets): **far from
# converged** (the configs' own settings are 10 epochs on 50,000 images), so the comparison is of
# short runs, next to the first `ARCH_EPOCHS` epochs of the main run (`mnist.yaml`, section 2).
# All ELBOs are on the same binarized test images, so they are comparable.

# %%
ARCH_EPOCHS = 1 if FAST else 3
arch = {
    "mnist_conv": runs.train("mnist_conv.yaml", f"train.epochs={ARCH_EPOCHS}",
                             *(["model.channels=[8,16]"] if FAST else [])),
    "mnist_fc400_z20": runs.train("mnist_fc400_z20.yaml", f"train.epochs={ARCH_EPOCHS}"),
}
models = {name: pyrovae.load(run_dir) for name, (_, run_dir, _) in arch.items()}
for name, model in models.items():
    print(f"\n{name}: encoder", model.encoder, f"scale_fn: {model.encoder.scale_fn}", sep="\n")
table = []
for name, (cfg_a, _, rows_a) in [*arch.items(), ("mnist (section 2)", (main_cfg, None,
                                                                         main_rows[:ARCH_EPOCHS]))]:
    model = models.get(name, vae)
    r = rows_a[-1]
    table.append([name, cfg_a.model.net, cfg_a.model.z_dim,
                  sum(p.numel() for p in model.parameters()), len(rows_a),
                  r["test_elbo"], r["recon"], r["kl"]])
    assert abs(r["test_elbo"] - (r["recon"] - r["kl"])) < 1e-3 and r["test_elbo"] < 0
print()
nb.print_table(["config", "net", "z_dim", "parameters", "epochs", "test ELBO", "recon", "KL"],
               table)
better = max(arch, key=lambda k: arch[k].rows[-1]["test_elbo"])
worse = min(arch, key=lambda k: arch[k].rows[-1]["test_elbo"])
print(f"after {ARCH_EPOCHS} epoch(s), {better} has the higher test ELBO, by "
      f"{arch[better].rows[-1]['test_elbo'] - arch[worse].rows[-1]['test_elbo']:.1f} nats")

# %% [markdown]
# **The conv net.** The feature maps after each strided convolution; $\sigma$ = softplus of the raw
# half of the encoder's output (+ the library's floor of $10^{-6}$); and batch norm in eval mode:
# $\mu(x)$ of an image alone equals its $\mu(x)$ in a batch of 256, while in train mode (a batch of
# one: the statistics of that image alone) it does not.

# %%
conv = models["mnist_conv"]
x4 = x_test[:4]
with torch.no_grad():
    h = x4
    sizes = [tuple(h.shape[1:])]
    for layer in conv.encoder.conv:
        h = layer(h)
        if isinstance(layer, torch.nn.Conv2d):
            sizes.append(tuple(h.shape[1:]))
    feats = conv.encoder.features(x4)
    loc_c, scale_c = conv.encoder(x4)
print("encoder feature maps (channels, height, width):", " -> ".join(map(str, sizes)))
assert [s[1:] for s in sizes] == [(28, 28), (14, 14), (7, 7)]
assert torch.allclose(scale_c, F.softplus(feats[:, conv.z_dim:]) + 1e-6)
assert torch.equal(loc_c, feats[:, :conv.z_dim])
assert any(isinstance(m, torch.nn.BatchNorm2d) for m in conv.encoder.modules())
assert conv.encoder.scale_fn == "softplus"
with torch.no_grad():
    alone = conv.encoder(x_test[:1])[0]
    in_batch = conv.encoder(x_test[:256])[0][:1]
    conv_train = pyrovae.load(arch["mnist_conv"].run_dir).train()  # a copy: train mode moves
    alone_train = conv_train.encoder(x_test[:1])[0]  # the running averages; a batch of one
print("sigma = softplus(raw) + 1e-6: max |difference| =",
      f"{(scale_c - F.softplus(feats[:, conv.z_dim:]) - 1e-6).abs().max():.1e}")
print("eval mode: max |mu(x) alone - mu(x) in a batch of 256| =",
      f"{(alone - in_batch).abs().max():.1e}; in train mode (batch statistics) alone: "
      f"{(alone - alone_train).abs().max():.2f}")
assert (alone - in_batch).abs().max() < 1e-4 and (alone - alone_train).abs().max() > 0.1

# %% [markdown]
# **The PyTorch example's network and loss, with the library's trained weights.** With $H$ hidden
# units (400; fast mode 64) the parameters are $784H + H$ (`fc1`) $+\ 2(20H + 20)$ (`fc21`, `fc22`)
# $+\ 20H + H$ (`fc3`) $+\ 784H + 784$ (`fc4`): $652{,}824$ for $H = 400$.

# %%
fc = models["mnist_fc400_z20"]
H = fc.encoder.net[0].out_features
fc1, head = fc.encoder.net[0], fc.encoder.net[2]
fc3, fc4 = fc.decoder.net[0], fc.decoder.net[2]
zd = fc.z_dim


def example_encode(x):  # the PyTorch example's VAE.encode
    h1 = F.relu(fc1(x.view(-1, 784)))
    fc21 = F.linear(h1, head.weight[:zd], head.bias[:zd])
    fc22 = F.linear(h1, head.weight[zd:], head.bias[zd:])
    return fc21, fc22                                    # mu, logvar


def example_decode(z):  # the PyTorch example's VAE.decode
    return torch.sigmoid(fc4(F.relu(fc3(z))))


def example_loss(x):  # the PyTorch example's forward and loss_function
    mu, logvar = example_encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)    # reparameterize
    bce = F.binary_cross_entropy(example_decode(z), x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


xb = x_test[:128]
with torch.no_grad():
    mu_ex, logvar_ex = example_encode(xb)
    loc_f, scale_f = fc.encoder(xb)
    zb = torch.randn(128, zd)
    torch.manual_seed(5)
    loss_ex = example_loss(xb).item()
    torch.manual_seed(5)  # the same eps
    loss_lib = objectives.analytic_loss(fc, xb).item()
n_params = sum(p.numel() for p in fc.parameters())
print(f"H = {H}: parameters {n_params} = 784H + H + 2(20H + 20) + 20H + H + 784H + 784 = "
      f"{784 * H + H + 2 * (20 * H + 20) + 20 * H + H + 784 * H + 784}")
print(f"max |mu - fc21(h1)| = {(loc_f - mu_ex).abs().max():.1e}, max |sigma - exp(fc22(h1) / 2)|"
      f" = {(scale_f - torch.exp(0.5 * logvar_ex)).abs().max():.1e} (the library's floor on sigma: "
      f"1e-6)")
print(f"128 test images, the same noise: the example's BCE + KLD {loss_ex:.2f}, "
      f"objectives.analytic_loss {loss_lib:.2f} (relative difference "
      f"{abs(loss_ex - loss_lib) / loss_lib:.1e})")
assert n_params == 784 * H + H + 2 * (20 * H + 20) + 20 * H + H + 784 * H + 784
assert torch.equal(loc_f, mu_ex)
assert torch.allclose(scale_f, torch.exp(0.5 * logvar_ex) + 1e-6)
assert torch.allclose(fc.decode(zb).mean.flatten(1), example_decode(zb))
assert abs(loss_ex - loss_lib) < 1e-4 * loss_lib

# %% [markdown]
# **Compared**: the test ELBO after each epoch, and samples $\mathbb{E}[x\mid z]$, $z \sim p(z)$
# (`samples.png`) of the two configs.

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.6))
for (name, rows_a), marker in zip([*((k, v.rows) for k, v in arch.items()),
                                   ("mnist (section 2)", main_rows[:ARCH_EPOCHS])], "os^"):
    ax.plot([r["epoch"] for r in rows_a], [r["test_elbo"] for r in rows_a], marker + "-",
            label=name)
ax.set_xlabel("epoch")
ax.set_ylabel("test ELBO [nats per image]")
ax.set_xticks(range(1, ARCH_EPOCHS + 1))
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
ax.set_title("the same test images, the same training images", fontsize=9)
plt.tight_layout()
plt.show()

fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
for ax, (name, (_, run_dir, rows_a)) in zip(axes, arch.items()):
    ax.imshow(mpimg.imread(run_dir / "samples.png"))
    ax.set_title(f"{name}: samples E[x|z], z ~ p(z)\n{len(rows_a)} epoch(s), test ELBO "
                 f"{rows_a[-1]['test_elbo']:.1f}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("64 draws z ~ p(z), 8 per row", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# * `load_config` + overrides → `fit` → a run folder; `metrics.csv` satisfies
#   ELBO = recon − KL, and the saved model reproduces the best epoch's KL exactly and its
#   reconstruction term within Monte Carlo error.
# * `train.beta` is an argument of the objective's loss, which is linear in it (its slope the
#   one-draw KL estimate); raising $\beta$ lowered the test KL and worsened the reconstruction
#   term, monotonically over $0.25, 1, 4$.
# * `samples.png`, `manifold.png` and `decode_to_png` are $\mathbb{E}[x\mid z]$ at
#   $z \sim p(z)$, at $\Phi^{-1}$ of a uniform grid, and at a given $z$: all reproduced from
#   the model to the PNG's 8-bit precision.
# * A softmax output layer caps $\log p(x\mid z)$ at $-k\log k$ (about $-460$ nats for
#   $k = 100$ on-pixels); the independent sigmoids of `Bernoulli(logits=...)` do not.
# * A model loaded from a checkpoint is the saved model: the same weights, the same test ELBO
#   before any step. Training continues from it; `--resume` also restores Adam's state (its
#   step count is $E$ times the minibatches per epoch) and the run's history, while loading only
#   the weights restarts Adam, whose first step moves every parameter with a gradient by the
#   learning rate. A fresh initialization starts near $784\log\tfrac12$ nats and is tens of nats
#   behind after as many extra epochs (section 8's numbers).
# * The conv net (batch norm, softplus scale) and the 784-400-20 MLP train from configs alone;
#   the latter is the PyTorch example's network and loss exactly; their test ELBOs after the
#   same short training are in section 9's table and figure.
#
# ## References
#
# * D. P. Kingma, M. Welling (2013). Auto-encoding variational Bayes.
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# * I. Higgins, L. Matthey, A. Pal, C. Burgess, X. Glorot, M. Botvinick, S. Mohamed, A. Lerchner
#   (2017). beta-VAE: learning basic visual concepts with a constrained variational framework.
#   ICLR. [openreview.net/forum?id=Sy2fzU9gl](https://openreview.net/forum?id=Sy2fzU9gl)
# * D. P. Kingma, J. Ba (2015). Adam: a method for stochastic optimization. ICLR.
#   [arXiv:1412.6980](https://arxiv.org/abs/1412.6980)
# * S. Ioffe, C. Szegedy (2015). Batch normalization: accelerating deep network training by
#   reducing internal covariate shift. ICML. [arXiv:1502.03167](https://arxiv.org/abs/1502.03167)
# * TensorFlow tutorial: [Convolutional Variational Autoencoder](https://www.tensorflow.org/tutorials/generative/cvae).
# * PyTorch examples: [vae/main.py](https://github.com/pytorch/examples/blob/main/vae/main.py).
# * Keras: [weights saving and loading](https://keras.io/api/models/model_saving_apis/weights_saving_and_loading/)
#   and the [VAE example](https://keras.io/examples/generative/vae/).
# * The Pyro [VAE tutorial](https://pyro.ai/examples/vae.html).
#
# The other notebooks: [00 First steps](00_first_steps.ipynb) · [01 The ELBO](01_elbo.ipynb) ·
# [02 The Gaussian KL](02_gaussian_kl.ipynb) · [03 Reparameterization](03_reparameterization.ipynb) ·
# [05 Priors and likelihoods](05_priors_and_likelihoods.ipynb) ·
# [06 Posterior checks](06_posterior_checks.ipynb) · [07 Tighter bounds](07_tighter_bounds.ipynb).
