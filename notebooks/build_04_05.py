# ruff: noqa: E501  (the cells below are markdown with LaTeX and notebook code)
"""Write notebooks 04-05 from the Python source below, execute them with nbclient, save them.

The cells train real models with the library's entry points; ``EPOCHS`` and ``VAMP_K`` in them
are the full-mode settings of ``FULL_SETTINGS`` (fast mode has its own). ``nbbuild.py`` writes,
runs, checks and saves the notebooks; ``--help`` gives the options and examples.
"""

from __future__ import annotations

import sys

from nbbuild import FOOTER_RUNS, PRINT_TABLE, SETUP_PATHS, cli, code, md

# ------------------------------------------------------------------------------------------
# cells shared by the two notebooks

# The setup cell ends with nbbuild.SETUP_PATHS (data, run folders, clock), shared with 06.
SETUP = r'''
import csv
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

# pyro imports tqdm.auto, which warns (with a file path) in a kernel without ipywidgets
warnings.filterwarnings("ignore", message="IProgress not found")

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
from pyrovae.fit import fit, load_splits

%matplotlib inline
plt.rcParams["figure.dpi"] = 80
plt.rcParams["image.interpolation"] = "nearest"  # images of pixels: crisp, and small PNGs
# Small MLPs on minibatches of 128: one CPU thread is about as fast as several on an idle
# machine and many times faster on a shared one (no thread oversubscription).
torch.set_num_threads(int(os.environ.get("PYROVAE_THREADS", "1")))

FAST = os.environ.get("PYROVAE_FAST") == "1"  # CI: small data, tiny nets, 2 epochs''' + SETUP_PATHS

# The helper cell; print_table is nbbuild.PRINT_TABLE, shared with 06.
HELPERS = r'''
# Every run below is configs/<name> + the size overrides of this mode + its own overrides.
SIZE = (["data.limit=2000", "data.valid_size=500", "train.epochs=2", "model.hidden=[64]",
         "train.lr=3e-3"] if FAST else
        ["data.limit=20000", "data.valid_size=5000", "train.epochs=EPOCHS"])
COMMON = [f"data.mirror={MIRROR}", f"data.root={DATA_ROOT}", "train.progress=false",
          "train.device=cpu"]


def configure(config, *overrides):
    """load_config: defaults <- configs/<config> <- size <- overrides, in a fresh run folder."""
    return load_config(os.path.join("..", "configs", config),
                       [*COMMON, *SIZE, *overrides, f"run_dir={tempfile.mkdtemp(dir=RUNS)}"])


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def train(config, *overrides):
    """fit() a config; returns (cfg, run folder, metrics rows). fit's log lines name the run
    folder (a temporary path), so they are silenced; the metrics are printed instead."""
    cfg = configure(config, *overrides)
    began = time.time()
    run_dir = Path(fit(cfg, log=lambda *a: None))
    rows = read_metrics(run_dir)
    last = rows[-1]
    print(f"{config} {' '.join(overrides)}: {len(rows)} epochs in {time.time() - began:.0f} s; "
          f"test ELBO {last['test_elbo']:.2f} = recon {last['recon']:.2f} - KL {last['kl']:.2f}")
    return cfg, run_dir, rows

''' + PRINT_TABLE


# ------------------------------------------------------------------------------------------
# 04: training on MNIST


def notebook_04() -> list:
    return [
        md(r'''
        # 04 · Training a VAE on MNIST with `pyrovae`

        Notebooks 01–03 derived the ELBO, its Gaussian KL and the reparameterization gradient.
        This one trains real models on real MNIST with the library's own entry points, and
        checks what they write against the mathematics:

        1. a run is a config: `load_config(path, overrides)`;
        2. `fit` trains it with `pyro.infer.SVI`; `metrics.csv` and the ELBO curve, and the
           test ELBO recomputed by hand from the saved model;
        3. the $\beta$ trade-off: reconstruction against KL for $\beta = 0.25, 1, 4$;
        4. samples from the prior, reproduced pixel for pixel from $z \sim p(z)$;
        5. the 2-d latent manifold (`z_dim = 2`), reproduced from the inverse normal CDF;
        6. decoding a given 8-d $z$ with `generate.parse_z` and `generate.decode_to_png`;
        7. a common mistake: a softmax output layer for pixel probabilities.

        **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images,
        5,000 further ones held out for validation, the official 10,000 test images,
        EPOCHS epochs per run and the configs' own networks, on one CPU thread (a few minutes in
        all). The configs' own settings (50,000 images, 20–30 epochs) give better numbers
        and take a few minutes *per run* on a 2-core CPU. `PYROVAE_FAST=1` (CI): 2,000 training
        images, 500 for validation, 2 epochs, one hidden layer of 64 units, learning rate
        3e-3. Numbers are nats per example; asserts with tolerances make a broken library fail
        the notebook.
        '''),
        code(SETUP),
        code(HELPERS),
        md(r'''
        ## 1. A run is a config

        `load_config(path, overrides)` merges, in this order, the defaults of the typed schema
        (`pyrovae.config.Config`), the YAML file and dotted `key=value` overrides, then
        validates every value. `configs/mnist.yaml` is the default model: a 784-512-256-32
        MLP encoder (mirrored decoder), $p(z) = \mathcal{N}(0, I_{32})$, a Bernoulli likelihood
        on dynamically binarized MNIST (each training batch is re-binarized,
        $x \sim \mathrm{Bernoulli}(\text{grey level})$; the test set is binarized once, with a
        fixed seed), Adam at $10^{-3}$, batches of 128. Below: the effective config of this
        notebook's main run (data paths left out), and a bad override, refused in one line.
        '''),
        code(r'''
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
        '''),
        md(r'''
        ## 2. Training: `fit`

        `fit(cfg)` builds `VAE(**vae_kwargs(cfg, x_shape))` and runs
        `SVI(vae.model, vae.guide, Adam, Trace_ELBO())`. Each step draws a minibatch $x_{1:B}$
        of the $N$ training images and one $z_b \sim q(z\mid x_b)$ per image, and ascends the
        unbiased estimate of the dataset's ELBO
        $$
        \frac{N}{B}\sum_{b=1}^{B} \Big[\log p(x_b\mid z_b) + \beta\big(\log p(z_b) - \log q(z_b\mid x_b)\big)\Big],
        \qquad z_b = \mu(x_b) + \sigma(x_b)\odot\varepsilon_b
        $$
        (the `data` plate scales by $N/B$, `poutine.scale` by $\beta$; $\beta = 1$ here).
        After every epoch, `metrics.csv` gets one row:

        | column | meaning | computed by |
        |---|---|---|
        | `train_elbo` | mean of $-\text{loss}/N$ over the epoch's steps (the $\beta$-objective, on re-binarized batches, while the weights move) | `fit.train_epoch` |
        | `valid_elbo`, `test_elbo` | $\frac1n\sum_i \big(\mathbb{E}_q[\log p(x_i\mid z)] - \mathrm{KL}(q(z\mid x_i)\,\Vert\,p(z))\big)$, $\beta = 1$, one $z$ per image | `objectives.dataset_elbo` |
        | `recon`, `kl` | the two terms of `test_elbo`; the KL in closed form for $\mathcal{N}(0, I)$ | `objectives.dataset_elbo`, `objectives.closed_form_kl` |
        | `beta`, `lr`, `seconds` | KL weight, learning rate, training seconds of the epoch | `fit.train` |

        `best.pt` keeps the model of the best `valid_elbo`, which is what `pyrovae.load`
        returns; the figures are drawn from it.
        '''),
        code(r'''
        main_cfg, main_dir, main_rows = train("mnist.yaml")
        print()
        print_table(["epoch", "train_elbo", "valid_elbo", "test_elbo", "recon", "kl", "seconds"],
                    [[int(r["epoch"]), r["train_elbo"], r["valid_elbo"], r["test_elbo"], r["recon"],
                      r["kl"], r["seconds"]] for r in main_rows])
        for r in main_rows:  # the columns obey ELBO = recon - KL, KL >= 0, log-probabilities <= 0
            assert abs(r["test_elbo"] - (r["recon"] - r["kl"])) < 1e-3
            assert r["kl"] > 0 and r["recon"] < 0 and r["test_elbo"] < 0 and r["beta"] == 1.0
        assert main_rows[-1]["test_elbo"] > main_rows[0]["test_elbo"]  # training helped
        display(Image(filename=str(main_dir / "elbo.png")))
        '''),
        md(r'''
        **The test ELBO by hand.** Load the saved model (`pyrovae.load(run_dir)`: `best.pt`, in
        eval mode) and the same binarized test set (`load_splits(cfg)`), and compute the two
        terms from the model's own distributions:
        $\mathrm{KL}(q\,\Vert\,p) = \tfrac12\sum_j(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)$
        is deterministic, so it must equal the saved `kl` of the best epoch to float round-off;
        $\mathbb{E}_q[\log p(x\mid z)]$ is estimated with fresh $z$ draws (8 per image), so it must agree
        with the saved `recon` within its Monte Carlo error (4 standard errors of the difference).
        '''),
        code(r'''
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
        print(f"best epoch {int(best['epoch'])}:  KL  by hand {kl.mean():.4f}   metrics.csv {best['kl']:.4f}")
        print(f"               recon by hand {recon.mean():.3f}  metrics.csv {best['recon']:.3f}  "
              f"(standard error of the difference {se:.3f})")
        print(f"               ELBO  by hand {(recon - kl).mean():.3f}  metrics.csv {best['test_elbo']:.3f}")
        assert torch.allclose(kl, objectives.closed_form_kl(vae, loc, scale), rtol=1e-5, atol=1e-5)
        assert abs(kl.mean().item() - best["kl"]) < 1e-3
        assert abs(recon.mean().item() - best["recon"]) < 4 * se
        '''),
        md(r'''
        ## 3. Reconstruction against KL: the $\beta$ trade-off

        The $\beta$-VAE objective (Higgins et al. 2017) weights the KL term:
        $$
        \mathcal{L}_\beta(x) = \mathbb{E}_{q(z\mid x)}[\log p(x\mid z)] - \beta\,\mathrm{KL}\big(q(z\mid x)\,\Vert\,p(z)\big),
        $$
        $\beta = 1$ being the ELBO. In `pyrovae`, `train.beta` sets `VAE.beta`, and `model` and
        `guide` sample their `z` sites inside `poutine.scale(scale=beta)`, so `Trace_ELBO`'s
        loss is $-\log p(x\mid z) + \beta\,(\log q(z\mid x) - \log p(z))$. With the *same* noise,
        the loss is therefore an exact straight line in $\beta$ whose slope is the one-sample
        KL estimate. Checked first, on the trained model and 500 test images:
        '''),
        code(r'''
        elbo_fn = objectives.pyro_elbo("trace")
        x500 = x_test[:500]

        def loss_at(beta):
            vae.beta = beta
            pyro.set_rng_seed(3)  # the same z draws at every beta
            with torch.no_grad():
                return elbo_fn.differentiable_loss(vae.model, vae.guide, x500).item()

        losses = {b: loss_at(b) for b in (0.25, 1.0, 4.0)}
        vae.beta = 1.0
        slope_hi = (losses[4.0] - losses[1.0]) / 3.0
        slope_lo = (losses[1.0] - losses[0.25]) / 0.75
        with torch.no_grad():
            kl500 = objectives.closed_form_kl(vae, *vae.encoder(x500)).sum().item()
        print("loss(beta) for beta = 0.25, 1, 4:", [round(v, 1) for v in losses.values()])
        print(f"slope on [1, 4]: {slope_hi:.2f}   on [0.25, 1]: {slope_lo:.2f}   "
              f"closed-form KL summed over the 500 images: {kl500:.2f}")
        assert abs(slope_hi - slope_lo) < 1e-3 * abs(slope_hi)  # linear in beta
        assert abs(slope_hi - kl500) < 0.1 * kl500              # slope = a one-draw KL estimate
        '''),
        md(r'''
        **Training at three values of $\beta$.** A larger $\beta$ makes information about $x$ in
        $z$ more expensive: the optimum moves to a smaller $\mathrm{KL}(q\,\Vert\,p)$ (posteriors closer to
        the prior, fewer nats per image through the code) and so to a worse reconstruction term.
        We train `mnist.yaml` at $\beta = 0.25$ and $4$ (the main run above is $\beta = 1$, same
        settings and seed) and evaluate all three at $\beta = 1$; the assert is the monotone
        trend in both columns. (With a fixed-scale Gaussian likelihood, as in
        `configs/mnist_gaussian.yaml`, $\beta$ and the scale are interchangeable:
        $-\lVert x - \mu\rVert^2 / (2\sigma^2) - \beta\,\mathrm{KL} = \beta\,\big[-\lVert x - \mu\rVert^2 / (2\beta\sigma^2) - \mathrm{KL}\big]$,
        i.e. $\beta$ acts like $\sigma^2 \to \beta\sigma^2$. The Bernoulli likelihood has no scale to trade.)
        '''),
        code(r'''
        sweep = {1.0: (main_cfg, main_dir, main_rows)}
        for beta in (0.25, 4.0):
            sweep[beta] = train("mnist.yaml", f"train.beta={beta}")
        betas = sorted(sweep)
        final = {b: sweep[b][2][-1] for b in betas}
        print()
        print_table(["beta", "train objective L_beta", "test ELBO (beta=1)", "test recon", "test KL"],
                    [[b, final[b]["train_elbo"], final[b]["test_elbo"], final[b]["recon"], final[b]["kl"]]
                     for b in betas])
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
        '''),
        md(r'''
        Each run's `reconstructions.png`: 16 test images (top) above the pixel probabilities
        $\mathbb{E}[x\mid z] = \mathrm{sigmoid}(\text{decoder}(\mu(x)))$ at the posterior mean (bottom).
        '''),
        code(r'''
        fig, axes = plt.subplots(len(betas), 1, figsize=(9, 1.45 * len(betas)))
        for ax, b in zip(axes, betas):
            ax.imshow(mpimg.imread(sweep[b][1] / "reconstructions.png"))
            ax.set_title(f"beta = {b}: test recon {final[b]['recon']:.1f}, KL {final[b]['kl']:.1f}", fontsize=9)
            ax.axis("off")
        plt.tight_layout()
        plt.show()
        '''),
        md(r'''
        ## 4. Samples from the prior

        The generative model is ancestral sampling: $z \sim p(z) = \mathcal{N}(0, I)$, then
        $x \sim p(x\mid z) = \prod_i \mathrm{Bernoulli}(x_i;\, \mathrm{sigmoid}(f_\theta(z))_i)$. `samples.png`
        shows the pixel probabilities $\mathbb{E}[x\mid z]$ of 64 draws (`plots.samples`:
        `torch.manual_seed(train.seed)`, `vae.prior().sample((64,))`, `vae.decode(z).mean`), the
        usual way to display a Bernoulli VAE's samples. Below it, the same 64 $z$ redrawn by
        hand: their decoded means must equal the PNG's tiles up to its 8-bit quantization, and
        a binary draw $x \sim p(x\mid z)$ for each.
        '''),
        code(r'''
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
        print(f"max |samples.png tile - E[x|z] of the redrawn z| = {err:.5f}  (8-bit step 1/255 = {1 / 255:.5f})")
        assert err <= 1 / 255 + 1e-6
        assert torch.allclose(p_x.mean, torch.sigmoid(vae.decoder(z)).detach())

        fig, axes = plt.subplots(1, 2, figsize=(9, 4.7))
        for ax, imgs, title in ((axes[0], means, "E[x|z] (as in samples.png)"),
                                (axes[1], binary, "x ~ p(x|z): a binary draw per z")):
            ax.imshow(np.block([[imgs[r, c] for c in range(8)] for r in range(8)]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        plt.show()
        '''),
        md(r'''
        ## 5. The 2-d latent manifold

        With `z_dim = 2` (`configs/mnist_z2_manifold.yaml`: one hidden layer of 128 units)
        the whole latent space can be drawn. `manifold.png` (Kingma & Welling 2013, Fig. 4)
        decodes a $20\times 20$ grid: linearly spaced probabilities $u \in \{0.05, \dots, 0.95\}$
        mapped through the inverse CDF of $\mathcal{N}(0, 1)$, $z_j = \Phi^{-1}(u_j)$, so that equal
        areas of the picture carry equal prior mass. Tile $(r, c)$ (row $r$ from the top) is
        $\mathbb{E}[x\mid z]$ at $z = (\Phi^{-1}(u_c),\, \Phi^{-1}(u_{19-r}))$: checked below against the
        PNG, and next to it the posterior means $\mu(x)$ of the first 5,000 test images, coloured
        by their digit label.
        '''),
        code(r'''
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
        print(f"z grid from {phi_inv[0]:.3f} to {phi_inv[-1]:.3f}; max |tile - E[x|z]| over 6 tiles = {worst:.5f}")
        assert worst <= 1 / 255 + 1e-6

        from torchvision.datasets import MNIST
        labels = MNIST(DATA_ROOT, train=False, download=False).targets.numpy()  # test labels, same order
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
        '''),
        md(r'''
        ## 6. Decoding a given $z$ (8-d latent)

        `configs/mnist_z8.yaml` has an 8-d latent space. `python -m pyrovae.generate RUN --z
        "0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505"` is `generate.parse_z` (exactly
        `z_dim` finite numbers, as a batch of one) followed by `generate.decode_to_png`, which
        saves $\mathbb{E}[x\mid z] = \mathrm{sigmoid}(f_\theta(z))$. How typical is this $z$ under
        the prior? $\lVert z\rVert^2 \sim \chi^2_8$ when $z \sim \mathcal{N}(0, I_8)$.
        '''),
        code(r'''
        from pyrovae.generate import decode_to_png, parse_z

        z8_cfg, z8_dir, z8_rows = train("mnist_z8.yaml")
        vae8 = pyrovae.load(z8_dir)
        z_given = parse_z("0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505", vae8.z_dim)
        png = decode_to_png(vae8, z_given, Path(RUNS) / "z_given.png")
        with torch.no_grad():
            mean = torch.sigmoid(vae8.decoder(z_given))[0, 0]
            log_pz = vae8.prior().log_prob(z_given).item()
        tile = mpimg.imread(png)[..., 0]  # one image: torchvision saves it without a border
        sq = z_given.pow(2).sum().item()
        chi2_cdf = torch.special.gammainc(torch.tensor(4.0), torch.tensor(sq / 2)).item()  # P(chi2_8 <= |z|^2)
        print(f"z = {[round(v, 3) for v in z_given[0].tolist()]}, shape {tuple(z_given.shape)}")
        print(f"|z|^2 = {sq:.3f}: the {100 * chi2_cdf:.0f}th percentile of chi2_8 (a typical draw); log p(z) = {log_pz:.3f}")
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
        '''),
        md(r'''
        ## 7. A common mistake: a softmax output layer for pixel probabilities

        The Bernoulli decoder needs one probability *per pixel*, $p_i = P(x_i = 1\mid z)$, each
        in $(0, 1)$ and otherwise unconstrained:
        $\log p(x\mid z) = \sum_{i=1}^{D} \big[x_i \log p_i + (1 - x_i)\log(1 - p_i)\big]$.
        `pyrovae` puts no squashing layer in the decoder: `VAE.decode(z)` is
        `Bernoulli(logits=decoder(z)).to_event(3)`, i.e. $p_i = \mathrm{sigmoid}(\ell_i)$,
        independently per pixel (and `log_prob` is minus binary cross-entropy with logits).

        A softmax output $p_i = e^{\ell_i} / \sum_j e^{\ell_j}$ instead forces $\sum_i p_i = 1$:
        one unit of "ink" spread over 784 pixels. An image with $k$ on-pixels then has, by
        Jensen's inequality on the concave $\log$ and $\log(1 - p_j) \le 0$,
        $$
        \log p(x\mid z) \le \sum_{i:\,x_i = 1} \log p_i \le k \log\frac{\sum_{i:\,x_i=1} p_i}{k} \le -k\log k ,
        $$
        for *every* decoder, with equality only in the limit $p_i = 1/k$ on the on-pixels and $0$
        elsewhere. A binarized MNIST digit has $k \approx 100$ on-pixels: at best $-460$ nats,
        while independent sigmoids can reach $0$. Below: the library's decoder is the sigmoid one;
        then the best possible output of each kind, fitted by Adam as 784 free logits to one
        test image (no network at all: the most flexible decoder there is).
        '''),
        code(r'''
        with torch.no_grad():
            z = vae.prior().sample((4,))
            logits = vae.decoder(z)
            p_x = vae.decode(z)
            x_draw = p_x.sample()
        assert isinstance(p_x.base_dist, dist.Bernoulli) and p_x.event_shape == (1, 28, 28)
        assert torch.allclose(p_x.mean, torch.sigmoid(logits))
        bce = F.binary_cross_entropy_with_logits(logits, x_draw, reduction="none").sum((1, 2, 3))
        assert torch.allclose(p_x.log_prob(x_draw), -bce, rtol=1e-5)
        print("VAE.decode(z):", type(p_x.base_dist).__name__, "(logits) per pixel, event shape", tuple(p_x.event_shape))
        print("sum of the 784 pixel probabilities, 4 prior draws:", np.round(p_x.mean.sum((1, 2, 3)).numpy(), 1))
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
        print(f"  best softmax output (fitted):    log p(x|z) = {ll_soft:8.2f}   max p_i = {p_soft.max():.4f}, sum p_i = {p_soft.sum():.4f}")
        print(f"  best sigmoid output (fitted):    log p(x|z) = {ll_sig:8.2f}   max p_i = {p_sig.max():.4f}, sum p_i = {p_sig.sum():.1f}")
        print(f"  the trained VAE at z = mu(x):    log p(x|z) = {ll_vae:8.2f}")
        assert ll_soft <= bound + 1e-3 and ll_soft > bound - 1.0   # the bound, and the fit reaches it
        assert ll_sig > -1.0 and ll_vae > bound  # even the trained VAE beats every softmax decoder
        '''),
        md(r'''
        Over the whole test set: the softmax's best case $-k\log k$ per image, against what the
        trained (sigmoid) VAE actually achieves; and the sums of the VAE's pixel probabilities,
        which on average match the number of on-pixels instead of being pinned at 1.
        '''),
        code(r'''
        ks = x_test.flatten(1).sum(-1)
        bounds = -ks * ks.log()
        with torch.no_grad():
            ink = vae.decode(vae.encoder(x_test)[0]).mean.flatten(1).sum(-1)
        print(f"on-pixels per test image: mean {ks.mean():.1f}, range {int(ks.min())}-{int(ks.max())}")
        print(f"softmax output, best possible mean log p(x|z): {bounds.mean():8.1f} nats")
        print(f"trained sigmoid VAE, test recon (metrics.csv): {main_rows[-1]['recon']:8.1f} nats")
        print(f"sum of the VAE's pixel probabilities at mu(x): mean {ink.mean():.1f} (on-pixels: {ks.mean():.1f}); "
              f"correlation with k: {np.corrcoef(ink.numpy(), ks.numpy())[0, 1]:.2f}")
        assert main_rows[-1]["recon"] > bounds.mean().item() + 100
        assert abs(ink.mean().item() - ks.mean().item()) < 0.2 * ks.mean().item()

        fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
        with torch.no_grad():
            recon_img = vae.decode(vae.encoder(x_test[:1])[0]).mean[0, 0]
        for ax, img, title in ((axes[0], x1.reshape(28, 28), f"test image ({k} on-pixels)"),
                               (axes[1], p_soft.reshape(28, 28), f"best softmax output\n{ll_soft:.0f} nats"),
                               (axes[2], p_sig.reshape(28, 28), f"best sigmoid output\n{ll_sig:.2f} nats"),
                               (axes[3], recon_img, f"trained VAE, E[x|mu(x)]\n{ll_vae:.0f} nats")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        plt.tight_layout()
        plt.show()
        '''),
        md(r'''
        ## Summary

        * `load_config` + overrides → `fit` → a run folder; `metrics.csv` satisfies
          ELBO = recon − KL, and the saved model reproduces the best epoch's KL exactly and its
          reconstruction term within Monte Carlo error.
        * `train.beta` enters the loss linearly through `poutine.scale`; raising $\beta$ lowered
          the test KL and worsened the reconstruction term, monotonically over $0.25, 1, 4$.
        * `samples.png`, `manifold.png` and `decode_to_png` are $\mathbb{E}[x\mid z]$ at
          $z \sim p(z)$, at $\Phi^{-1}$ of a uniform grid, and at a given $z$: all reproduced from
          the model to the PNG's 8-bit precision.
        * A softmax output layer caps $\log p(x\mid z)$ at $-k\log k$ (about $-460$ nats for
          $k = 100$ on-pixels); the independent sigmoids of `Bernoulli(logits=...)` do not.
        '''),
        code(FOOTER_RUNS),
    ]


# ------------------------------------------------------------------------------------------
# 05: priors and likelihoods


def notebook_05() -> list:
    return [
        md(r'''
        # 05 · Priors and likelihoods, swapped by config

        The VAE's two modelling choices are $p(z)$ and $p(x\mid z)$. In `pyrovae` each is a name
        in a registry (`pyrovae.priors.PRIORS`, `pyrovae.likelihoods.LIKELIHOODS`), chosen by a
        config key; nothing else changes. This notebook

        1. shows the registries and the data each likelihood expects;
        2. trains five models from `configs/mnist.yaml` by overrides only — three priors
           (`normal`, `mog`, `vamp`) under the Bernoulli likelihood on binarized digits, and the
           `gaussian` and `continuous_bernoulli` likelihoods on grey levels — and explains why
           their ELBOs are **not** all comparable numbers;
        3. checks the mixture and VampPrior densities and the Monte Carlo KL they need;
        4. shows numerically that binary cross-entropy on grey pixels is not a log-likelihood,
           and that the continuous Bernoulli adds exactly the missing log-normalizer;
        5. shows that a Bernoulli likelihood on grey data is refused with a one-line error.

        **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images,
        5,000 for validation, the 10,000 test images, EPOCHS epochs per model, the 784-512-256-32
        MLP of `mnist.yaml`, one CPU thread. `PYROVAE_FAST=1` (CI): 2,000 training images,
        500 for validation, 2 epochs, one hidden layer of 64 units, learning rate 3e-3.
        Short runs: the numbers rank the models only roughly.
        '''),
        code(SETUP),
        code(HELPERS),
        md(r'''
        ## 1. The registries

        | key | name | $p(z)$ or $p(x\mid z)$ | class |
        |---|---|---|---|
        | `model.prior` | `normal` | $\mathcal{N}(0, I)$ | `priors.StandardNormal` |
        | | `diag_normal` | $\mathcal{N}(m, \mathrm{diag}\, s^2)$, learned | `priors.DiagNormal` |
        | | `mog` | $\sum_{k=1}^K \pi_k\, \mathcal{N}(m_k, \mathrm{diag}\, s_k^2)$, learned ($K$ = `model.components`, default 10) | `priors.MixtureOfGaussians` |
        | | `vamp` | $\frac1K\sum_{k=1}^K q(z\mid u_k)$, learned pseudo-inputs $u_k$ (Tomczak & Welling 2018) | `priors.VampPrior` |
        | `model.likelihood` | `bernoulli` | $\prod_i \lambda_i^{x_i}(1-\lambda_i)^{1-x_i}$, $x_i \in \{0, 1\}$ | `likelihoods.Bernoulli` |
        | | `gaussian` | $\prod_i \mathcal{N}(x_i;\, \mu_i, \sigma^2)$, $x_i \in \mathbb{R}$ | `likelihoods.Gaussian` |
        | | `continuous_bernoulli` | $\prod_i C(\lambda_i)\,\lambda_i^{x_i}(1-\lambda_i)^{1-x_i}$, $x_i \in [0, 1]$ (Loaiza-Ganem & Cunningham 2019) | `likelihoods.ContinuousBernoulli` |
        | | `laplace` | $\prod_i \mathrm{Laplace}(x_i;\, \mu_i, b)$ | `likelihoods.Laplace` |
        | `data.binarize` | `dynamic` / `static` / `none` | binary digits (resampled each batch / drawn once) or grey levels in $[0, 1]$ | `data.load_data` |

        The decoder always outputs one unconstrained number per pixel; the likelihood reads it
        as logits ($\lambda_i = \mathrm{sigmoid}(\ell_i)$) or as a location. An unknown name is one
        line:
        '''),
        code(r'''
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
        '''),
        md(r'''
        ## 2. Two kinds of data

        `data.binarize=dynamic` gives binary digits: each training batch is drawn as
        $x_i \sim \mathrm{Bernoulli}(g_i)$ from the grey levels $g_i$, and the validation and test
        sets are drawn once with fixed seeds, so every binarized run sees the same binary test
        images. `data.binarize=none` keeps the grey levels $g_i \in \{0, \tfrac1{255}, \dots, 1\}$.
        '''),
        code(r'''
        bin_splits = load_splits(configure("mnist.yaml"), CPU)
        grey_splits = load_splits(configure("mnist.yaml", "data.binarize=none"), CPU)
        xb, xg = bin_splits.test, grey_splits.test
        frac_grey = ((xg > 0) & (xg < 1)).float().mean().item()
        frac_zero = (xg == 0).float().mean().item()
        print(f"binarized test set: values {sorted(set(xb.unique().tolist()))}")
        print(f"grey test set: {100 * frac_zero:.1f}% of pixels exactly 0, {100 * frac_grey:.1f}% strictly between 0 and 1")
        print("mean pixel value: binarized", round(xb.mean().item(), 4), " grey", round(xg.mean().item(), 4))
        assert set(xb.unique().tolist()) == {0.0, 1.0} and frac_grey > 0.05
        assert abs(xb.mean().item() - xg.mean().item()) < 0.005  # E[Bernoulli(g)] = g

        fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
        for i in range(10):
            for row, (x, name) in enumerate(((xg, "grey"), (xb, "binarized"))):
                axes[row, i].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
                axes[row, i].axis("off")
        axes[0, 0].text(-5, 14, "grey", ha="right", fontsize=8)
        axes[1, 0].text(-5, 14, "binary", ha="right", fontsize=8)
        plt.show()
        '''),
        md(r'''
        ## 3. Five models, by overrides only

        Every model is `configs/mnist.yaml` plus the overrides in the table (and this mode's
        size settings). `mog` and `vamp` have no closed-form $\mathrm{KL}(q\,\Vert\,p)$, so their test KL
        is the Monte Carlo estimate $\mathbb{E}_{q}[\log q(z\mid x) - \log p(z)]$ (`objectives.dataset_elbo`)
        and they need `train.loss=trace` (the default; `analytic` is refused for them). The
        VampPrior uses VAMP_K pseudo-inputs here (fast mode: 20; the paper: 500) to keep the CPU time down:
        every step also encodes the pseudo-inputs.
        '''),
        code(r'''
        MODELS = {
            "bernoulli + normal": ["model.prior=normal"],
            "bernoulli + mog": ["model.prior=mog", "model.components=10"],
            "bernoulli + vamp": ["model.prior=vamp", f"model.components={20 if FAST else VAMP_K}"],
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
        for name, (cfg, _, rows) in results.items():
            assert abs(rows[-1]["test_elbo"] - (rows[-1]["recon"] - rows[-1]["kl"])) < 1e-3
            if cfg.model.likelihood == "bernoulli":
                assert rows[-1]["test_elbo"] < 0  # a bound on the log of a probability
        try:
            objectives.svi_loss("analytic", pyrovae.load(results["bernoulli + vamp"][1]))
        except pyrovae.PyrovaeError as err:
            print("\nPyrovaeError:", err)
        '''),
        md(r'''
        **Which of these numbers can be compared?** Each test ELBO is a lower bound on
        $\log p(x)$ of *its* test data under *its* model, so two ELBOs compare two models only
        when they are bounds on the same quantity: the same data, measured the same way.

        * **The three Bernoulli rows are comparable** with each other: the same binary test
          images (fixed binarization seed), and $p(x)$ is a *probability* of a point in
          $\{0, 1\}^{784}$: $\sum_x p(x) = 1$, so $\log p(x) \le 0$ and the ELBO is negative. The
          differences between them are the priors' doing (and, in short runs, the training's).
        * **A Bernoulli row against a grey row is not**: different data (a binary image drawn
          from the grey one vs the grey one itself), and the grey likelihoods are *densities*
          on $\mathbb{R}^{784}$ or $[0, 1]^{784}$. A density can exceed 1 — the ELBO can be positive — and
          its value depends on the units of $x$: rescaling the pixels by $c$ (0–255 instead of
          0–1) changes every log-density by $-D\log c = -784\log 255 \approx -4344$ nats per
          image without changing the model at all (checked below on the Gaussian run).
        * **The two grey rows** are densities of the same data, but MNIST grey levels are
          8-bit numbers (most of them exactly 0), and a continuous density may put arbitrarily
          tall spikes on such points: the continuous Bernoulli's log-density at $x = 0$ grows
          without bound as $\lambda \to 0$ (below; in float32, torch's clamp of $\lambda$ stops it at
          2.77 nats per pixel, which is then what bounds the continuous Bernoulli's ELBO), while
          the fixed-scale Gaussian's per-pixel log-density can never exceed
          $-\log(\sigma\sqrt{2\pi}) = 1.38$ nats. Meaningful density
          comparisons on 8-bit data need dequantization (uniform noise in each $\tfrac1{256}$ bin),
          reported as bits per dimension.
        '''),
        code(r'''
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
        cb0 = torch.distributions.ContinuousBernoulli(probs=lam).log_prob(torch.zeros(5, dtype=torch.float64))
        print("continuous Bernoulli log-density at x = 0 for lambda =", lam.tolist(), ":", np.round(cb0.numpy(), 3))
        print(f"Gaussian(sigma = 0.1) log-density, its maximum (x = mu): {-math.log(0.1 * math.sqrt(2 * math.pi)):.3f}")
        eps32 = torch.finfo(torch.float32).eps
        cap32 = torch.distributions.ContinuousBernoulli(logits=torch.tensor(-50.0)).log_prob(torch.tensor(0.0)).item()
        print(f"in float32 (training and metrics.csv) torch clamps lambda to [{eps32:.2e}, 1 - {eps32:.2e}], so the "
              f"continuous Bernoulli log-density of a 0 pixel stops at {cap32:.3f}: a cap of the arithmetic, not of the model")
        assert (cb0.diff() > 0).all() and cb0[-1] > 3
        '''),
        md(r'''
        ## 4. The priors, by hand

        **Mixture of Gaussians.**
        $\log p(z) = \log\sum_k \pi_k\, \mathcal{N}(z; m_k, \mathrm{diag}\,s_k^2) = \operatorname{logsumexp}_k\big(\log\pi_k + \log\mathcal{N}(z; m_k, \mathrm{diag}\,s_k^2)\big)$,
        $\pi = \mathrm{softmax}(\text{logits})$: `priors.MixtureOfGaussians` holds `logits`, `loc`,
        `scale` and returns `MixtureSameFamily`.

        **VampPrior.** The prior that maximizes the ELBO for a fixed encoder is the aggregate
        posterior $\frac1N\sum_n q(z\mid x_n)$; the VampPrior approximates it with $K$ learned
        pseudo-inputs pushed through the *same* encoder:
        $\log p(z) = \operatorname{logsumexp}_k \log q(z\mid u_k) - \log K$.

        Neither has a closed-form KL against a Gaussian $q$; the ELBO uses
        $\mathrm{KL}(q\,\Vert\,p) = \mathbb{E}_q[\log q(z\mid x) - \log p(z)]$, estimated with draws from $q$.
        Checked: both densities against these formulas at 1,000 draws of $z$, and the Monte
        Carlo KL against the closed form where one exists (the normal-prior model), within
        4 standard errors.
        '''),
        code(r'''
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
            q_u = vae_vamp.encode(u)                                                       # q(z|u_k), batch (K,)
            by_hand = torch.logsumexp(q_u.log_prob(z[:, None, :]), -1) - math.log(u.shape[0])
            vamp_err = (by_hand - vae_vamp.prior().log_prob(z)).abs().max().item()
        print(f"mog  ({pm.logits.numel()} components): max |log p(z) by hand - prior().log_prob(z)| = {mog_err:.2e}")
        print(f"vamp ({u.shape[0]} pseudo-inputs): max |log p(z) by hand - prior().log_prob(z)| = {vamp_err:.2e}")
        assert mog_err < 1e-4 and vamp_err < 1e-4

        vae_n = pyrovae.load(results["bernoulli + normal"][1])
        with torch.no_grad():
            q = vae_n.encode(xb[:1000])
            zs = q.sample((200,))
            terms = q.log_prob(zs) - vae_n.prior().log_prob(zs)          # (200, 1000)
            closed = objectives.closed_form_kl(vae_n, q.base_dist.loc, q.base_dist.scale)
        mc = terms.mean().item()
        se = math.sqrt((terms.var(0) / 200).sum().item()) / 1000
        print(f"normal prior, 1000 test images: MC KL {mc:.3f} +- {se:.3f}, closed form {closed.mean():.3f}")
        assert abs(mc - closed.mean().item()) < 4 * se
        '''),
        md(r'''
        Samples $\mathbb{E}[x\mid z]$, $z \sim p(z)$, of each model (`samples.png`). The grey-level
        models show their decoded means: the Gaussian's $\mu(z)$ and the continuous Bernoulli's
        mean $\mathbb{E}[x] = \frac{\lambda}{2\lambda - 1} + \frac{1}{2\operatorname{artanh}(1 - 2\lambda)}$ (not $\lambda$; see §5).
        '''),
        code(r'''
        fig, axes = plt.subplots(1, len(results), figsize=(13, 3.2))
        for ax, (name, (_, run_dir, rows)) in zip(axes, results.items()):
            ax.imshow(mpimg.imread(run_dir / "samples.png"))
            ax.set_title(f"{name}\nELBO {rows[-1]['test_elbo']:.1f}", fontsize=8)
            ax.axis("off")
        plt.tight_layout()
        plt.show()
        '''),
        md(r'''
        ## 5. Binary cross-entropy on grey pixels is not a likelihood

        Many VAE implementations train on grey-level MNIST with
        $\mathrm{BCE}(x, \lambda) = -[x\log\lambda + (1-x)\log(1-\lambda)]$, treating it as
        $-\log p(x\mid z)$. For binary $x$ it is: $e^{-\mathrm{BCE}(0, \lambda)} + e^{-\mathrm{BCE}(1, \lambda)} = (1 - \lambda) + \lambda = 1$.
        For $x \in [0, 1]$ the candidate density $e^{-\mathrm{BCE}(x,\lambda)} = \lambda^x(1-\lambda)^{1-x}$
        integrates to
        $$
        \int_0^1 \lambda^x (1-\lambda)^{1-x}\,dx = \frac{2\lambda - 1}{\log\lambda - \log(1 - \lambda)} = \frac{1}{C(\lambda)},
        \qquad C(\lambda) = \frac{2\operatorname{artanh}(1 - 2\lambda)}{1 - 2\lambda}\ (\lambda \ne \tfrac12),\quad C(\tfrac12) = 2,
        $$
        which is never 1 (it is $\tfrac12$ at $\lambda = \tfrac12$ and falls to 0 at the ends).
        So $-\mathrm{BCE}$ is not the log of a normalized density over $[0, 1]$, and the missing
        normalizer depends on $\lambda$ — on the decoder's output — so it cannot be dropped as a
        constant. The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) is the normalized
        version: $p(x\mid\lambda) = C(\lambda)\,\lambda^x(1-\lambda)^{1-x}$, i.e.
        $$
        \log p_{\mathcal{CB}}(x\mid\lambda) = -\mathrm{BCE}(x, \lambda) + \log C(\lambda).
        $$
        Numerically: the integral by the trapezoid rule on 200,001 points (float64), then the
        difference between the continuous Bernoulli's `log_prob` (torch's, and `pyrovae`'s
        likelihood on decoder logits) and $-\mathrm{BCE}$, which must be $\log C(\lambda)$ at every $x$.
        '''),
        code(r'''
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
            assert (diff - log_C(lam)).abs().max() < 1e-6   # torch approximates C near 1/2 by a Taylor series
            assert abs(cb_integral - 1) < 1e-6
        print_table(["lambda", "int exp(-BCE) dx", "1/C(lambda)", "CB log_prob + BCE", "log C(lambda)",
                     "max |diff - log C|", "int p_CB dx"], rows)
        '''),
        md(r'''
        `pyrovae`'s `continuous_bernoulli` likelihood takes the decoder's logits $\ell$,
        $\lambda = \mathrm{sigmoid}(\ell)$, and sums over the 784 pixels. In terms of $\ell$, since
        $1 - 2\,\mathrm{sigmoid}(\ell) = -\tanh(\ell/2)$ and so $2\operatorname{artanh}(1 - 2\lambda) = -\ell$,
        $$
        C = \frac{\ell}{\tanh(\ell/2)}, \qquad
        \mathbb{E}[x] = \frac{\lambda}{2\lambda - 1} + \frac{1}{2\operatorname{artanh}(1-2\lambda)} = \frac{\mathrm{sigmoid}(\ell)}{\tanh(\ell/2)} - \frac{1}{\ell},
        $$
        which stay accurate for the extreme logits a trained model produces on the many exact
        zeros of MNIST ($\lambda \approx 10^{-7}$ and below, where $1 - 2\lambda$ rounds badly). On grey test
        images and the trained model's logits, per pixel, `log_prob` must equal
        $-\mathrm{BCE}(x_i, \lambda_i) + \log C(\lambda_i)$, and `mean` (what the figures show) the continuous
        Bernoulli's mean, not $\lambda$. (torch clamps $\lambda$ to $[\epsilon, 1 - \epsilon]$, $\epsilon$ the float
        precision: pixels with $|\ell|$ beyond the clamp are left out.) Last, optimizing $-\mathrm{BCE}$ alone pulls
        $\lambda$ to the pixel value $x$ (its maximizer), whereas the continuous Bernoulli's
        maximum-likelihood $\lambda$ for a single value $x$ is the one whose *mean* is $x$ — a more
        extreme $\lambda$, as the mean is pulled towards $\tfrac12$.
        '''),
        code(r'''
        from pyrovae.likelihoods import ContinuousBernoulli

        def log_C_logits(ell):
            """log C(lambda) for lambda = sigmoid(ell): log(ell / tanh(ell / 2)); log 2 + ell^2/12 near 0."""
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
        print(f"log p(x|z) per image by pyrovae: {p.log_prob(x).mean():.2f} in float64 (of which sum of log C "
              f"{log_C_logits(logits).sum((1, 2, 3)).mean():.2f}), {lp32.mean():.2f} in float32")
        print(f"per pixel, max |pyrovae log_prob - (-BCE + log C)| = {err:.1e}; "
              f"max |mean - (sigmoid(l)/tanh(l/2) - 1/l)| = {mean_err:.1e}")
        # torch computes C from lambda = sigmoid(l): for large positive l, 1 - lambda keeps only
        # ~eps * e^l relative precision, hence differences far above 1e-16 (but small) there.
        assert err < 1e-5 and mean_err < 1e-6

        for target in (0.2, 0.8):                      # one pixel value x: the best lambda of each objective
            grid = torch.linspace(1e-4, 1 - 1e-4, 99_999, dtype=torch.float64)
            bce = -(target * grid.log() + (1 - target) * torch.log1p(-grid))
            lam_bce = grid[bce.argmin()].item()
            lam_cb = grid[(bce - log_C(grid)).argmin()].item()
            mean_cb = torch.distributions.ContinuousBernoulli(probs=torch.tensor(lam_cb, dtype=torch.float64)).mean.item()
            mean_bce = torch.distributions.ContinuousBernoulli(probs=torch.tensor(lam_bce, dtype=torch.float64)).mean.item()
            print(f"x = {target}: argmax -BCE is lambda = {lam_bce:.4f} (CB mean there {mean_bce:.4f}); "
                  f"argmax CB likelihood is lambda = {lam_cb:.4f} (CB mean there {mean_cb:.4f})")
            assert abs(lam_bce - target) < 1e-3 and abs(mean_cb - target) < 1e-3
        '''),
        md(r'''
        ## 6. A Bernoulli likelihood on grey data is refused

        `torch.distributions.Bernoulli` computes $x\log\lambda + (1-x)\log(1-\lambda)$ for any $x$
        when argument validation is off (as it is inside most training loops), so nothing in
        torch stops a Bernoulli "likelihood" on grey pixels. `pyrovae` checks the data against
        the likelihood's support once, before training (`fit.check_data` → `VAE.check`), and
        refuses with one line that says what to do instead; likewise a continuous Bernoulli on
        data outside $[0, 1]$.
        '''),
        code(r'''
        grey_pixel = torch.tensor(0.3)
        print("torch Bernoulli(probs=0.6).log_prob(0.3), validation off:",
              round(dist.Bernoulli(probs=torch.tensor(0.6), validate_args=False).log_prob(grey_pixel).item(), 4),
              "= -BCE(0.3, 0.6) =", round(-F.binary_cross_entropy(torch.tensor(0.6), grey_pixel).item(), 4))

        try:
            fit(configure("mnist.yaml", "data.binarize=none", "model.likelihood=bernoulli"), log=lambda *a: None)
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
        '''),
        md(r'''
        ## Summary

        * Priors and likelihoods are config names (`model.prior`, `model.likelihood`,
          `data.binarize`): five models came from one YAML file and overrides.
        * ELBOs compare models only on the same data measured the same way: the Bernoulli rows
          (log-probabilities of binary images, $\le 0$) with each other; not with the grey-level
          rows, which are log-densities (unit-dependent: $-784\log 255$ nats for pixels in 0–255)
          and, on 8-bit data, unbounded without dequantization.
        * The mixture and VampPrior densities equal their logsumexp formulas; their KL is a Monte
          Carlo estimate, which agrees with the closed form where one exists.
        * $\int_0^1 e^{-\mathrm{BCE}(x,\lambda)}dx = 1/C(\lambda) \ne 1$: BCE on grey pixels is not a negative
          log-likelihood; the continuous Bernoulli's `log_prob` is $-\mathrm{BCE} + \log C(\lambda)$ to float
          precision and integrates to 1.
        * A Bernoulli likelihood on grey data is refused by `fit` with a one-line `PyrovaeError`.
        '''),
        code(FOOTER_RUNS),
    ]


# Run settings of full mode, substituted into the cells above (FAST mode has its own).
FULL_SETTINGS = {"04": {"EPOCHS": "12"}, "05": {"EPOCHS": "8", "VAMP_K": "100"}}

NOTEBOOKS = {
    "04": ("04_train_mnist.ipynb", notebook_04),
    "05": ("05_priors_and_likelihoods.ipynb", notebook_05),
}


def main(argv: list[str] | None = None) -> int:
    return cli(NOTEBOOKS, __doc__, argv, settings=FULL_SETTINGS, timeout=1800)


if __name__ == "__main__":
    sys.exit(main())
