"""Figures of a trained VAE: samples, reconstructions, ELBO curves, the 2-d manifold,
interpolations, and evaluate's PSIS k-hat histogram and NUTS-against-q(z|x) marginals. Image
grids come from ``torchvision.utils``; every file is written atomically. Figures are
``matplotlib.figure.Figure`` objects drawn without pyplot: importing this module changes no
matplotlib state (no backend is set). matplotlib, torchvision and the diagnostics (ArviZ) are
imported by the functions that draw, so that importing this module (``pyrovae.fit`` does) costs
no more than torch: a process that never draws (a rank other than 0, a run stopped by bad input)
never imports them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyrovae.files import atomic_write
from pyrovae.model import VAE

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(**kwargs) -> Figure:
    """A matplotlib Figure without pyplot state."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """A matplotlib Figure (no pyplot state) written atomically as PNG."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                      bbox_inches="tight"))


def _as_images(x: torch.Tensor, x_shape: Sequence[int]) -> torch.Tensor:
    """Examples as (B, C, H, W) images: flat vectors and sequences become one-pixel-high strips."""
    x = x.detach().float().cpu().clamp(0, 1)
    if len(x_shape) == 3:
        return x
    if len(x_shape) == 1:
        return x.reshape(x.shape[0], 1, 1, -1)
    return x.reshape(x.shape[0], x_shape[0], 1, -1)


def save_grid(x: torch.Tensor, x_shape: Sequence[int], path: str | Path, nrow: int) -> Path:
    """Save a grid of examples (values clamped to [0, 1]) as a PNG, atomically."""
    from torchvision.utils import save_image

    images = _as_images(x, x_shape)
    return atomic_write(path, lambda tmp: save_image(images, tmp, nrow=nrow, padding=2,
                                                     pad_value=1.0, format="png"))


def image_grid(x: torch.Tensor, x_shape: Sequence[int], nrow: int | None = None) -> torch.Tensor:
    """A grid of examples as one (3, H, W) image tensor (``torchvision.utils.make_grid``)."""
    from torchvision.utils import make_grid

    nrow = nrow or int(math.sqrt(x.shape[0])) or 1
    return make_grid(_as_images(x, x_shape), nrow=nrow, padding=2, pad_value=1.0)


def decoded_mean(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """E[x|z] under the likelihood (pixel probabilities for Bernoulli, the location otherwise)."""
    return vae.decode(z).mean


@torch.no_grad()
def prior_samples(vae: VAE, n: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` draws z ~ p(z) after ``torch.manual_seed(seed)``, decoded to E[x|z]. The global
    random state is restored afterwards: drawn between epochs (TensorBoard's sample grids), the
    grid leaves the training noise, and a resumed run's, as they were."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        z = vae.prior().sample((n,))
    return decoded_mean(vae, z)


@torch.no_grad()
def samples(vae: VAE, path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """``n`` draws z ~ p(z), decoded to E[x|z]."""
    return save_grid(prior_samples(vae, n, seed), vae.x_shape, path, nrow=int(math.sqrt(n)) or 1)


@torch.no_grad()
def reconstructions(vae: VAE, x: torch.Tensor, path: str | Path, n: int = 16) -> Path:
    """Test examples (top row) above E[x|z] at the posterior mean z = loc(x) (bottom row)."""
    x = x[:n]
    loc, _ = vae.encoder(x)
    both = torch.cat([x.to(loc.dtype), decoded_mean(vae, loc)])
    return save_grid(both, vae.x_shape, path, nrow=x.shape[0])


@torch.no_grad()
def prior_quantiles(vae: VAE, q: torch.Tensor, draws: int = 20000, seed: int = 0
                    ) -> torch.Tensor:
    """The quantiles ``q`` of each dimension of the prior, shape (len(q), z_dim): exact for a
    prior of independent normals (``normal``, ``diag_normal``: their inverse CDF), else those
    of ``draws`` draws after ``torch.manual_seed(seed)`` (the global random state restored)."""
    prior = vae.prior()
    param = next(vae.parameters())
    q = q.to(param)
    base = getattr(prior, "base_dist", None)
    if isinstance(base, torch.distributions.Normal):
        return base.icdf(q[:, None])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sample = prior.sample((draws,))
    return torch.quantile(sample, q, dim=0)


@torch.no_grad()
def manifold(vae: VAE, path: str | Path, steps: int = 20) -> Path:
    """For z_dim = 2: E[x|z] over a grid of z at the quantiles 0.05..0.95 of each dimension of
    the prior (for N(0, I), Kingma & Welling 2013, Fig. 4; a learned prior's own quantiles, so
    that the grid covers where its mass is)."""
    if vae.z_dim != 2:
        raise ValueError("the manifold figure needs z_dim = 2")
    grid = prior_quantiles(vae, torch.linspace(0.05, 0.95, steps))
    z = torch.cartesian_prod(grid[:, 1].flip(0), grid[:, 0])[:, [1, 0]]
    return save_grid(decoded_mean(vae, z), vae.x_shape, path, nrow=steps)


@torch.no_grad()
def interpolation(vae: VAE, x: torch.Tensor, path: str | Path, pairs: int = 8,
                  steps: int = 10) -> Path:
    """Decoded straight lines z = (1 - t) loc(x_a) + t loc(x_b), one row per pair of examples
    (two at least)."""
    if x.shape[0] < 2:
        raise ValueError("an interpolation needs two examples or more")
    pairs = max(1, min(pairs, x.shape[0] // 2))
    loc, _ = vae.encoder(x[: 2 * pairs])
    a, b = loc[:pairs], loc[pairs: 2 * pairs]
    t = torch.linspace(0, 1, steps, dtype=loc.dtype, device=loc.device)[None, :, None]
    z = ((1 - t) * a[:, None] + t * b[:, None]).reshape(-1, vae.z_dim)
    return save_grid(decoded_mean(vae, z), vae.x_shape, path, nrow=steps)


def elbo_curves(rows: Sequence[dict], path: str | Path) -> Path:
    """The training objective (as optimized: beta-weighted during warm-up, or the IWAE bound)
    and the validation and test ELBO (beta = 1), nats per example, against the epoch."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in rows]
    for key, label in (("train_objective", "training objective (as optimized)"),
                       ("valid_elbo", "validation ELBO"), ("test_elbo", "test ELBO")):
        if rows and key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: whole numbers
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def khat_histogram(khat: np.ndarray, path: str | Path, num_samples: int) -> Path:
    """Histogram of the per-example Pareto k-hats, with the 0.5 and 0.7 lines of Yao et al."""
    from pyrovae.diagnostics import PARETO_K_THRESHOLD, pareto_k_frac_bad

    k = np.asarray(khat, dtype=np.float64)
    finite = k[np.isfinite(k)]
    fig = _figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    ax.hist(finite, bins=40, color="tab:blue", alpha=0.8)
    for value, style in ((0.5, ":"), (PARETO_K_THRESHOLD, "--")):
        ax.axvline(value, color="k", linestyle=style, label=f"k = {value}")
    bad = pareto_k_frac_bad(k)  # as evaluation.json counts it (NaN: bad)
    hidden = int(np.sum(~np.isfinite(k)))
    ax.set_title(
        f"PSIS Pareto k-hat, {k.size} test examples, K = {num_samples}: {100 * bad:.1f}% > 0.7"
        + (f" ({hidden} not finite, not drawn)" if hidden else ""),
        fontsize=9,
    )
    ax.set_xlabel("k-hat")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    return _save(fig, path, dpi=110)


def posterior_marginals(
    draws: list[np.ndarray], nuts_rows: list[dict], dims: list[int], path: str | Path
) -> Path:
    """Per example (rows) and latent dim (columns): the NUTS marginal (histogram) against the
    amortized q(z|x) (curve)."""
    rows, cols = len(draws), len(dims)
    fig = _figure(figsize=(2.3 * cols, 2.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, (samples, row) in enumerate(zip(draws, nuts_rows)):
        for c, d in enumerate(dims):
            ax = axes[r][c]
            ax.hist(samples[:, d], bins=30, density=True, color="tab:blue", alpha=0.5, label="NUTS")
            mu, sd = row["q_mean"][d], row["q_std"][d]
            lo = min(samples[:, d].min(), mu - 4 * sd)
            hi = max(samples[:, d].max(), mu + 4 * sd)
            grid = np.linspace(lo, hi, 200)
            pdf = np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
            ax.plot(grid, pdf, color="tab:red", label="q(z|x)")
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            ax.set_xlabel(f"z{d}", fontsize=7)
            if c == 0:
                ax.set_ylabel("density", fontsize=7)
            ax.set_title(f"example {row['index']}, z{d} (r-hat {row['r_hat'][d]:.3f})", fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi=110)
