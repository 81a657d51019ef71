"""How good are the bound and the guide: importance-weighted likelihoods, PSIS, a NUTS reference
posterior, the amortization gap and active units. Pure functions of a trained VAE and data.

* Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders" (IWAE): the bound
  L_K(x) = E[log 1/K sum_k w_k], w_k = p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (eq. 8), which rises
  with K (Theorem 1), equals the ELBO at K = 1 and tends to log p(x) as K -> infinity; and the
  active units A_u = Cov_x(E_q[z_u]) > 0.01 (Sec. 5.2).
* Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?: Evaluating variational
  inference": the Pareto shape k-hat of the importance weights' right tail (PSIS, Vehtari et
  al. 2024) says whether q(z|x) is close enough to p(z|x) for importance sampling to be
  reliable: k-hat < 0.5 good, 0.5-0.7 usable, > 0.7 not (Sec. 3).
* Cremer, Li & Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders": the
  inference gap log p(x) - ELBO[q_amortized] is the approximation gap log p(x) - ELBO[q*] plus
  the amortization gap ELBO[q*] - ELBO[q_amortized], with q* the best Gaussian of the family for
  each x, found by optimizing it locally (Sec. 3, eqs. 5-6).
* Hoffman & Gelman (2014), NUTS, as ``pyro.infer.NUTS``, for a reference posterior p(z|x),
  checked with rank-normalized split r-hat and ESS (Vehtari et al. 2021) through ArviZ.

All log-densities are in nats per example; every function works on batches of examples with
tensor operations and keeps memory bounded by chunking over importance samples.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

from pyrovae.errors import PyrovaeError
from pyrovae.model import VAE
from pyrovae.objectives import mean_stderr as mean_stderr  # re-exported: the public helper
from pyrovae.objectives import particle_chunks, trace_elbo_log_probs

if TYPE_CHECKING:
    import arviz as az

#: Yao et al. (2018): importance sampling from q is unreliable above this Pareto k-hat.
PARETO_K_THRESHOLD = 0.7
#: The fewest importance samples from which a Pareto tail is fitted.
PSIS_MIN_SAMPLES = 25
#: PSIS treats an example's log weights as equal (k-hat -inf, no tail fit) when their spread is
#: at most this times max(1, max |log w|): far above float64 rounding of sums of up to 10^6
#: terms (<= 10^6 * 1.1e-16 relative), far below any spread that changes log p(x) (1e-7 nats at
#: |log w| = 1000).
EQUAL_WEIGHTS_RTOL = 1e-10
#: Vehtari et al. (2021): chains have not mixed above this rank-normalized split r-hat.
RHAT_THRESHOLD = 1.01
#: Vehtari et al. (2021): at least this bulk ESS per chain.
ESS_PER_CHAIN = 100
#: Burda et al. (2015), Sec. 5.2: a latent unit is active when Cov_x(E_q[z_u]) exceeds this.
ACTIVE_THRESHOLD = 0.01


# ---- helpers ---------------------------------------------------------------------------------


def _positive_int(value: object, name: str, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PyrovaeError(f"{name} must be a positive integer, got {value!r}{hint}")
    return value


@contextlib.contextmanager
def frozen(vae: VAE) -> Iterator[VAE]:
    """The VAE's networks as fixed functions: no parameter requires a gradient (restored after),
    so that gradients flow to latent values or local variational parameters only."""
    flags = [(p, p.requires_grad) for p in vae.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield vae
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread (restored after), for the loops of many small tensor operations (NUTS,
    the local optimization of q): on a busy CPU, waiting for the other threads of each small
    operation costs far more than they save (ten times more on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---- importance weights, IWAE and the sampled ELBO --------------------------------------------


@torch.no_grad()
def log_importance_weights(
    vae: VAE, x: torch.Tensor, num_samples: int, chunk_size: int | None = None
) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) with z_k ~ q(z|x), shape ``(K, B)``, float64.

    Burda et al. (2015), eq. (8): the terms of every importance-weighted estimate (IWAE, PSIS).
    The K samples are drawn in chunks of ``chunk_size`` (default: decoder outputs of about
    :data:`CHUNK_BUDGET` numbers), in the order ``q.rsample((K,))`` draws them, so that K = 1
    uses the very noise that ``Trace_ELBO`` draws for the guide's ``z`` site.
    """
    num_samples = _positive_int(num_samples, "the number of importance samples K")
    q, p = vae.encode(x), vae.prior()
    out = []
    for k in particle_chunks(vae, x.shape[0], num_samples, chunk_size):
        z = q.rsample((k,))
        log_px = vae.decode(z).log_prob(x).double()
        out.append(log_px + p.log_prob(z).double() - q.log_prob(z).double())
    return torch.cat(out)


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """L_K = log (1/K) sum_k w_k per example (Burda et al. 2015, eq. 8), from ``(K, B)`` log
    weights, by log-sum-exp in float64: the importance-weighted estimate of log p(x)."""
    lw = log_weights.double()
    return torch.logsumexp(lw, dim=0) - math.log(lw.shape[0])


@torch.no_grad()
def sampled_elbo(
    vae: VAE, x: torch.Tensor, num_particles: int = 1, chunk_size: int | None = None
) -> torch.Tensor:
    """The ELBO per example (beta = 1), sampled from the Pyro program itself: log p(x, z) -
    log q(z|x) from ``Trace_ELBO``'s own vectorized traces (the guide traced, the model replayed
    on it), averaged over particles (Kingma & Welling 2013, eq. 3). Shape ``(B,)``, float64.

    With the same seed and one particle this is exactly the K = 1 term of
    :func:`log_importance_weights`: the IWAE bound at K = 1 is the one-sample ELBO.
    """
    num_particles = _positive_int(num_particles, "num_particles")
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    # unscaled log-densities: the ELBO itself, whatever KL weight the VAE trains with
    for model, guide in trace_elbo_log_probs(vae, x, num_particles, chunk_size, scaled=False):
        log_p = sum(v.double() for v in model.values())
        total += (log_p - sum(v.double() for v in guide.values())).sum(0)
    return total / num_particles


# ---- PSIS ----------------------------------------------------------------------------------


def psis(log_weights: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance sampling of each example's ``(K, B)`` log weights.

    Returns the Pareto shape k-hat of each example's weight tail (Yao et al. 2018, Sec. 3;
    ``arviz.psislw``, which fits every example, sample axis last) and the PSIS estimate of
    log p(x): log (1/K) sum_k w~_k with the tail weights w~ replaced by the fitted Pareto's
    quantiles and truncated at the largest raw weight (Vehtari et al. 2024, Sec. 3). Both have
    shape ``(B,)``. k-hat is ``inf`` where the tail could not be fitted, and ``-inf`` where the
    K weights are equal up to rounding (q is the posterior): their spread max - min is at most
    :data:`EQUAL_WEIGHTS_RTOL` times max(1, max |log w|); no tail is fitted to that noise (it
    gives k-hats of noise, inf, or NaN estimates) and the estimate is the plain IWAE one.
    """
    import arviz as az

    lw = np.asarray(torch.as_tensor(log_weights).detach().cpu().double(), dtype=np.float64)
    if lw.ndim != 2:
        raise PyrovaeError(f"log weights must have shape (K, B), got {lw.shape}")
    k = lw.shape[0]
    if k < PSIS_MIN_SAMPLES:
        raise PyrovaeError(
            f"PSIS fits a Pareto tail to the largest weights and needs K >= {PSIS_MIN_SAMPLES} "
            f"importance samples per example, got K = {k}: draw more samples"
        )
    top = lw.max(axis=0)
    log_mean = np.log(np.exp(lw - top).sum(axis=0)) + top - math.log(k)  # IWAE
    khat = np.full(lw.shape[1], -math.inf)
    # equal weights (q proportional to p(z|x)) have no tail to fit: the best case, not inf
    equal = np.ptp(lw, axis=0) <= EQUAL_WEIGHTS_RTOL * np.maximum(1.0, np.abs(lw).max(axis=0))
    fit = ~equal
    if fit.any():
        smoothed, fitted = az.psislw(np.ascontiguousarray(lw[:, fit].T), reff=1.0, normalize=False)
        smoothed = np.asarray(smoothed, dtype=np.float64).reshape(-1, k)
        top = smoothed.max(axis=-1, keepdims=True)
        log_mean[fit] = np.log(np.exp(smoothed - top).sum(axis=-1)) + top[:, 0] - math.log(k)
        khat[fit] = np.asarray(fitted, dtype=np.float64).reshape(-1)
    return khat, log_mean


def pareto_k_bad(khat: np.ndarray, threshold: float = PARETO_K_THRESHOLD) -> np.ndarray:
    """Which k-hats are above ``threshold``; a NaN k-hat (not shown reliable) counts as above,
    -inf (equal weights) as below. The one rule of the JSON, the figure and the gap flags."""
    return ~(np.asarray(khat, dtype=np.float64) <= threshold)


def pareto_k_frac_bad(khat: np.ndarray, threshold: float = PARETO_K_THRESHOLD) -> float:
    """The fraction of k-hats above ``threshold`` (:func:`pareto_k_bad`)."""
    return float(np.mean(pareto_k_bad(khat, threshold)))


def pareto_k_summary(khat: np.ndarray, threshold: float = PARETO_K_THRESHOLD) -> dict:
    """Mean, quantiles and maximum of the k-hats, and the fraction above ``threshold`` (an
    unfitted tail, k-hat = inf, counts as above, and so does a NaN k-hat, as in
    :func:`pyrovae.evaluate.gap_flags`; equal weights, k-hat = -inf, as below)."""
    k = np.asarray(khat, dtype=np.float64)
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    with np.errstate(invalid="ignore"):
        quantiles = np.quantile(k, qs)
    # interpolating between infinite k-hats (-inf: equal weights) gives NaN: the lower one then
    quantiles = np.where(np.isnan(quantiles), np.quantile(k, qs, method="lower"), quantiles)
    return {
        "pareto_k_mean": float(np.mean(k)),
        "pareto_k_quantiles": {str(q): float(v) for q, v in zip(qs, quantiles)},
        "pareto_k_max": float(np.max(k)),
        "pareto_k_frac_bad": pareto_k_frac_bad(k, threshold),
        "pareto_k_threshold": threshold,
    }


def pareto_k_sample_threshold(num_samples: int) -> float:
    """min(1 - 1 / log10(S), 0.7): the k-hat above which S importance samples cannot give a
    reliable estimate (Vehtari et al. 2024, Sec. 3.2.2)."""
    if num_samples <= 10:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(num_samples), PARETO_K_THRESHOLD)


@dataclass
class ImportanceSampling:
    """Per-example results of :func:`importance_sampling`, in nats (float64)."""

    log_likelihood: torch.Tensor  # (N,) IWAE estimate of log p(x) with K samples
    pareto_k: np.ndarray | None  # (N,) PSIS k-hat, None when K < PSIS_MIN_SAMPLES
    psis_log_likelihood: np.ndarray | None  # (N,) PSIS-smoothed estimate of log p(x)
    num_samples: int


def importance_sampling(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int,
    batch_size: int = 100,
    progress: Callable[[int], None] | None = None,
    psis_fit: bool = True,
) -> ImportanceSampling:
    """IWAE and PSIS for every example of ``x``, ``batch_size`` examples at a time (each batch's
    K x B log weights are made by :func:`log_importance_weights` and dropped after use).
    ``progress(n)`` is called after each batch with the number of examples done;
    ``psis_fit=False`` leaves PSIS out (a CPU fit per batch: the IWAE estimate alone is then
    much faster on a GPU)."""
    num_samples = _positive_int(num_samples, "the number of importance samples K")
    batch_size = _positive_int(batch_size, "batch_size")
    iwae, khat, smoothed = [], [], []
    with_psis = psis_fit and num_samples >= PSIS_MIN_SAMPLES
    for start in range(0, x.shape[0], batch_size):
        lw = log_importance_weights(vae, x[start : start + batch_size], num_samples)
        iwae.append(iwae_bound(lw).cpu())
        if with_psis:
            k, ll = psis(lw)
            khat.append(k)
            smoothed.append(ll)
        if progress is not None:
            progress(min(start + batch_size, x.shape[0]))
    return ImportanceSampling(
        log_likelihood=torch.cat(iwae),
        pareto_k=np.concatenate(khat) if with_psis else None,
        psis_log_likelihood=np.concatenate(smoothed) if with_psis else None,
        num_samples=num_samples,
    )


# ---- a NUTS reference posterior ---------------------------------------------------------------


def _hmc_prior(prior: dist.Distribution) -> tuple[dist.Distribution, Callable | None]:
    """The distribution for the ``z`` site that HMC can work with, and the log-density
    correction to add with ``pyro.factor`` (None when the prior itself will do).

    HMC moves in an unconstrained space, found through ``transform_to(prior.support)``; the
    mixture priors (``mog``, ``vamp``) have a support torch cannot transform, so z is drawn
    from N(0, I) and the factor log p(z) - log N(z; 0, I) turns that back into the prior.
    """
    try:
        torch.distributions.transform_to(prior.support)
        return prior, None
    except NotImplementedError:
        zeros = torch.zeros(prior.event_shape, dtype=prior.mean.dtype, device=prior.mean.device)
        base = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        return base, lambda z: prior.log_prob(z) - base.log_prob(z)


def posterior_model(vae: VAE, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A Pyro model of p(z, x) for a few examples ``x`` (shape ``(n, *x_shape)``) with the
    trained prior and decoder: in a plate over the examples, ``z ~ p(z)`` and ``x ~ p(x|z)``
    observed (for a mixture prior, z ~ N(0, I) plus a ``pyro.factor`` that makes it p(z)). Its
    posterior is the product of the examples' p(z|x), which NUTS samples jointly. Call it
    inside :func:`frozen` so that only ``z`` carries gradients."""
    if x.dim() != len(vae.x_shape) + 1 or tuple(x.shape[1:]) != vae.x_shape:
        raise PyrovaeError(
            f"posterior_model takes examples of shape (n, {vae.x_shape}), got {tuple(x.shape)}"
        )
    with torch.no_grad():
        # evaluated once: a VampPrior runs its encoder on the pseudo-inputs
        z_dist, correction = _hmc_prior(vae.prior())

    def model() -> torch.Tensor:
        with pyro.plate("examples", x.shape[0]):
            z = pyro.sample("z", z_dist)
            if correction is not None:
                pyro.factor("prior", correction(z))
            pyro.sample("x", vae.decode(z), obs=x)
        return z

    return model


def nuts_posterior(
    vae: VAE,
    x: torch.Tensor,
    num_warmup: int = 300,
    num_samples: int = 300,
    num_chains: int = 2,
    seed: int = 0,
    init_scale: float = 2.0,
) -> az.InferenceData:
    """NUTS (``pyro.infer.MCMC(NUTS(...))``; Hoffman & Gelman 2014) on p(z|x) for each example of
    ``x`` (shape ``(n, *x_shape)``, or one example of shape ``x_shape``), as ArviZ InferenceData:
    ``z`` with dims ``(chain, draw, example, latent)``.

    Each chain is its own MCMC run (its own seed, step size and mass matrix) from overdispersed
    starts z_0 = mu(x) + init_scale * sigma(x) * eps, converted with ``arviz.from_pyro`` and
    joined along ``chain``, so that r-hat compares independent chains (Vehtari et al. 2021).
    The chains run one after the other in this process (Pyro would fork one per chain), on one
    thread; the examples of a chain share one run (their posteriors are independent factors of
    the joint), which saves Pyro's per-step overhead.
    """
    import arviz as az

    _positive_int(num_samples, "num_samples")
    _positive_int(num_chains, "num_chains")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise PyrovaeError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    if tuple(x.shape) == vae.x_shape:
        x = x.unsqueeze(0)
    dims = {"z": ["example", "latent"]}
    coords = {"example": np.arange(x.shape[0]), "latent": np.arange(vae.z_dim)}
    chains = []
    with frozen(vae), single_thread():
        model = posterior_model(vae, x)
        with torch.no_grad():
            loc, scale = vae.encoder(x)
        for chain in range(num_chains):
            pyro.set_rng_seed(seed + chain)
            start = loc + init_scale * scale * torch.randn_like(loc)
            mcmc = MCMC(
                NUTS(model),
                num_samples=num_samples,
                warmup_steps=num_warmup,
                initial_params={"z": start},
                disable_progbar=True,
            )
            mcmc.run()
            chains.append(az.from_pyro(mcmc, log_likelihood=False, coords=coords, dims=dims))
    return chains[0] if num_chains == 1 else az.concat(*chains, dim="chain")


def _values(dataset, n: int, z_dim: int) -> np.ndarray:
    return np.asarray(dataset["z"].values, dtype=np.float64).reshape(n, z_dim)


def posterior_comparison(
    idata: az.InferenceData,
    q_loc: torch.Tensor | np.ndarray,
    q_scale: torch.Tensor | np.ndarray,
    rhat_threshold: float = RHAT_THRESHOLD,
    labels: list[str] | None = None,
) -> list[dict]:
    """Per example of a :func:`nuts_posterior`: NUTS's posterior means and standard deviations
    of ``z`` beside q(z|x)'s (``q_loc``, ``q_scale`` of shape ``(n, z_dim)``), per latent dim,
    with the sampler checks: rank-normalized split r-hat, bulk and tail ESS, the Monte Carlo
    standard errors of the mean and sd (``arviz.rhat``/``ess``/``mcse``; Vehtari et al. 2021)
    and the divergent transitions (counted over all examples: they share trajectories).

    ``rhat_flag`` is set (with a ``warnings.warn``) when some r-hat exceeds ``rhat_threshold``,
    ``ess_flag`` when some bulk ESS is below 100 per chain: the reference is then unreliable.
    ``mean_z`` = (q mean - NUTS mean) / NUTS sd and ``std_ratio`` = q sd / NUTS sd.
    """
    import arviz as az

    post = idata.posterior["z"]
    n, z_dim = int(post.sizes["example"]), int(post.sizes["latent"])
    num_chains = int(post.sizes["chain"])
    q_mean = np.asarray(torch.as_tensor(q_loc).detach().cpu().double()).reshape(n, z_dim)
    q_std = np.asarray(torch.as_tensor(q_scale).detach().cpu().double()).reshape(n, z_dim)
    mean = post.mean(("chain", "draw")).values.astype(np.float64)
    std = post.std(("chain", "draw"), ddof=1).values.astype(np.float64)
    stats = {
        "mcse_mean": _values(az.mcse(idata, var_names=["z"], method="mean"), n, z_dim),
        "mcse_sd": _values(az.mcse(idata, var_names=["z"], method="sd"), n, z_dim),
        "r_hat": _values(az.rhat(idata, var_names=["z"]), n, z_dim),
        "ess_bulk": _values(az.ess(idata, var_names=["z"], method="bulk"), n, z_dim),
        "ess_tail": _values(az.ess(idata, var_names=["z"], method="tail"), n, z_dim),
    }
    diverging = (
        int(np.sum(idata.sample_stats["diverging"].values)) if "sample_stats" in idata else 0
    )
    rows = []
    for i in range(n):
        row = {
            "nuts_mean": mean[i].tolist(),
            "nuts_std": std[i].tolist(),
            "q_mean": q_mean[i].tolist(),
            "q_std": q_std[i].tolist(),
            "mean_z": ((q_mean[i] - mean[i]) / std[i]).tolist(),
            "std_ratio": (q_std[i] / std[i]).tolist(),
            **{key: value[i].tolist() for key, value in stats.items()},
            "num_chains": num_chains,
            "num_draws": int(post.sizes["draw"]),
            "divergences": diverging,
        }
        row["max_r_hat"] = float(np.max(stats["r_hat"][i]))
        row["min_ess_bulk"] = float(np.min(stats["ess_bulk"][i]))
        row["rhat_flag"] = bool(not row["max_r_hat"] <= rhat_threshold)
        row["ess_flag"] = bool(row["min_ess_bulk"] < ESS_PER_CHAIN * num_chains)
        _warn(row, rhat_threshold, labels[i] if labels else f"example {i}")
        rows.append(row)
    return rows


def _warn(row: dict, rhat_threshold: float, label: str) -> None:
    if row["rhat_flag"]:
        warnings.warn(
            f"NUTS r-hat {row['max_r_hat']:.3f} > {rhat_threshold} for {label}: the chains "
            "have not mixed, so the reference posterior is unreliable; run more warmup and draws",
            stacklevel=3,
        )
    if row["ess_flag"]:
        warnings.warn(
            f"NUTS bulk ESS {row['min_ess_bulk']:.0f} < {ESS_PER_CHAIN} per chain for {label}: "
            "the posterior means and sds are noisy; run more draws",
            stacklevel=3,
        )


# ---- the amortization gap --------------------------------------------------------------------


def _gaussian_elbo(
    vae: VAE,
    x: torch.Tensor,
    prior: dist.Distribution,
    loc: torch.Tensor,
    scale: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """Per example: mean_k [log p(x|z_k) + log p(z_k)] + H[q], z_k = loc + scale * eps_k, for
    q = N(loc, diag(scale^2)) (reparameterized, entropy in closed form). Shape ``(B,)``."""
    z = loc + scale * eps
    log_joint = vae.decode(z).log_prob(x) + prior.log_prob(z)
    entropy = dist.Normal(loc, scale).to_event(1).entropy()
    return log_joint.mean(0) + entropy


@torch.no_grad()
def gaussian_elbo(
    vae: VAE,
    x: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    num_particles: int = 1000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The ELBO per example (float64) of a free diagonal Gaussian q = N(loc, diag(scale^2)),
    estimated with ``num_particles`` reparameterized draws from a generator seeded with
    ``seed``: two calls with the same seed use the same noise (common random numbers), so that
    their difference is not swamped by Monte Carlo error."""
    num_particles = _positive_int(num_particles, "num_particles")
    gen = torch.Generator(device=loc.device).manual_seed(seed)
    prior = vae.prior()
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for k in particle_chunks(vae, x.shape[0], num_particles, chunk_size):
        eps = torch.randn((k,) + loc.shape, generator=gen, dtype=loc.dtype, device=loc.device)
        total += k * _gaussian_elbo(vae, x, prior, loc, scale, eps).double()
    return total / num_particles


def optimize_gaussian(
    vae: VAE,
    x: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    steps: int = 300,
    num_particles: int = 10,
    lr: float = 5e-2,
    final_lr: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the diagonal Gaussian (loc, log scale) that maximizes that example's ELBO,
    by ``steps`` Adam steps (step size decaying geometrically from ``lr`` to ``lr * final_lr``)
    on a ``num_particles``-sample reparameterized estimate, started from
    ``(loc, scale)`` (the encoder's output): the locally optimal q* of Cremer et al. (2018),
    Sec. 3. All examples are optimized at once; their ELBOs are separate terms of one sum, so
    each example's parameters see only their own gradient."""
    steps = _positive_int(steps, "steps")
    num_particles = _positive_int(num_particles, "num_particles")
    loc = loc.detach().clone().requires_grad_(True)
    log_scale = scale.detach().log().clone().requires_grad_(True)
    optim = torch.optim.Adam([loc, log_scale], lr=lr)
    # the step size decays geometrically to lr * final_lr over the run
    decay = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=final_lr ** (1.0 / steps))
    with frozen(vae), single_thread():
        with torch.no_grad():
            prior = vae.prior()
        for _ in range(steps):
            optim.zero_grad()
            eps = torch.randn((num_particles,) + loc.shape, dtype=loc.dtype, device=loc.device)
            loss = -_gaussian_elbo(vae, x, prior, loc, log_scale.exp(), eps).sum()
            loss.backward()
            optim.step()
            decay.step()
    return loc.detach(), log_scale.detach().exp()


def inference_gaps(
    vae: VAE,
    x: torch.Tensor,
    log_likelihood: torch.Tensor,
    steps: int = 300,
    num_particles: int = 10,
    lr: float = 5e-2,
    eval_particles: int = 1000,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Cremer et al. (2018), eqs. (5)-(6), per example (float64, nats):

    inference gap   = log p(x) - ELBO[q_amortized]
                    = (log p(x) - ELBO[q*])              approximation gap
                    + (ELBO[q*] - ELBO[q_amortized])     amortization gap,

    with ``log_likelihood`` an estimate of log p(x) (the IWAE bound with many samples), q* from
    :func:`optimize_gaussian`, and both ELBOs evaluated with ``eval_particles`` draws of the
    same noise. Returns those five per-example tensors.
    """
    with torch.no_grad():
        loc, scale = vae.encoder(x)
    best_loc, best_scale = optimize_gaussian(vae, x, loc, scale, steps, num_particles, lr)
    amortized = gaussian_elbo(vae, x, loc, scale, eval_particles, seed)
    optimized = gaussian_elbo(vae, x, best_loc, best_scale, eval_particles, seed)
    log_px = log_likelihood.double().to(amortized.device)
    return {
        "elbo_amortized": amortized,
        "elbo_optimized": optimized,
        "inference_gap": log_px - amortized,
        "approximation_gap": log_px - optimized,
        "amortization_gap": optimized - amortized,
    }


# ---- active units ----------------------------------------------------------------------------


@torch.no_grad()
def active_units(
    vae: VAE, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000
) -> tuple[int, torch.Tensor]:
    """The number of active latent units and every unit's activity A_u = Cov_x(E_q[z_u|x])
    (the variance over examples of the encoder's mean; Burda et al. 2015, Sec. 5.2): a unit is
    active when A_u > ``threshold``. Returns ``(count, A)`` with A of shape ``(z_dim,)``."""
    batch_size = _positive_int(batch_size, "batch_size")
    means = torch.cat(
        [vae.encoder(x[i : i + batch_size])[0].double() for i in range(0, x.shape[0], batch_size)]
    )
    activity = means.var(dim=0, correction=0)
    return int((activity > threshold).sum()), activity
