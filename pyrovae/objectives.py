"""Objectives: closed-form KL divergences, the analytic-KL loss in plain PyTorch, and Pyro's ELBOs.

All losses follow Pyro's convention: a loss is the negative ELBO of the minibatch, scaled by
``num_data / B`` (so that it estimates the negative ELBO of the whole dataset), summed over
examples, and averaged over particles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.priors import DiagNormal, StandardNormal

LOSSES = ("trace", "meanfield", "analytic")
#: Numbers in one decoder output per chunk of particles (about 80 MB in float32).
CHUNK_BUDGET = 2 * 10**7


# ---- closed-form KL divergences -----------------------------------------------------------


def kl_standard_normal(loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(sigma^2)) || N(0, I)) = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2).

    Kingma & Welling (2013), Appendix B, in the log-variance form; sums over the last dim.
    """
    return 0.5 * (log_var.exp() + loc.pow(2) - 1.0 - log_var).sum(-1)


def kl_diag_normals(
    loc_q: torch.Tensor, log_var_q: torch.Tensor, loc_p: torch.Tensor, log_var_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, diag s_q^2) || N(mu_p, diag s_p^2)), the diagonal case of :func:`kl_mvn`:

    1/2 sum_j (s_qj^2 / s_pj^2 + (mu_pj - mu_qj)^2 / s_pj^2 - 1 + log s_pj^2 - log s_qj^2).
    """
    ratio = (log_var_q - log_var_p).exp()
    mahalanobis = (loc_p - loc_q).pow(2) / log_var_p.exp()
    return 0.5 * (ratio + mahalanobis - 1.0 - (log_var_q - log_var_p)).sum(-1)


def kl_mvn(
    loc_q: torch.Tensor, cov_q: torch.Tensor, loc_p: torch.Tensor, cov_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, S_q) || N(mu_p, S_p)) for full covariances (batched over leading dims):

    1/2 [ tr(S_p^-1 S_q) + (mu_p - mu_q)^T S_p^-1 (mu_p - mu_q) - k + log det S_p - log det S_q ],

    the trace, Mahalanobis and log-determinant terms, computed through Cholesky factors.
    """
    k = loc_q.shape[-1]
    chol_p = torch.linalg.cholesky(cov_p)
    chol_q = torch.linalg.cholesky(cov_q)
    # tr(S_p^-1 S_q) = ||L_p^-1 L_q||_F^2
    trace = torch.linalg.solve_triangular(chol_p, chol_q, upper=False).pow(2).sum((-2, -1))
    diff = (loc_p - loc_q).unsqueeze(-1)
    mahalanobis = torch.linalg.solve_triangular(chol_p, diff, upper=False).pow(2).sum((-2, -1))
    logdet_p = 2.0 * chol_p.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_q = 2.0 * chol_q.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + mahalanobis - k + logdet_p - logdet_q)


def closed_form_kl(vae, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example for q = N(loc, diag(scale^2)), when the prior has one."""
    prior = vae.prior_net
    log_var = 2.0 * scale.log()
    if isinstance(prior, StandardNormal):
        return kl_standard_normal(loc, log_var)
    if isinstance(prior, DiagNormal):
        return kl_diag_normals(loc, log_var, prior.loc, 2.0 * prior.scale.log())
    raise PyrovaeError(
        f"the {type(prior).__name__} prior has no closed-form KL: use train.loss=trace "
        "(the KL is then estimated by Monte Carlo)"
    )


# ---- the analytic-KL loss, in plain PyTorch ---------------------------------------------


def analytic_elbo_terms(
    vae, x: torch.Tensor, num_particles: int = 1, kl_fn: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the reconstruction term E_q[log p(x|z)] (Monte Carlo, reparameterized,
    averaged over ``num_particles``) and the closed-form KL(q(z|x) || p(z)).

    z = mu + sigma * eps with eps ~ N(0, I) (K&W 2013, eq. 10); no Pyro inference code.
    ``kl_fn(vae, loc, scale)`` replaces :func:`closed_form_kl` (tests pass a wrong one).
    """
    loc, scale = vae.encoder(x)
    eps = torch.randn((num_particles,) + loc.shape, dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps
    recon = vae.decode(z).log_prob(x).mean(0)
    return recon, (kl_fn or closed_form_kl)(vae, loc, scale)


def analytic_loss(
    vae, x: torch.Tensor, num_data: int | None = None, num_particles: int = 1
) -> torch.Tensor:
    """-ELBO with the KL in closed form: (N / B) sum_b [ -E_q[log p(x_b|z)] + beta KL_b ]."""
    vae.check(x)
    recon, kl = analytic_elbo_terms(vae, x, num_particles)
    scale = 1.0 if num_data is None else num_data / x.shape[0]
    return scale * (vae.beta * kl - recon).sum()


# ---- Pyro's ELBOs and the loss registry --------------------------------------------------


def pyro_elbo(name: str, num_particles: int = 1, vectorize: bool = True) -> ELBO:
    """Pyro's ``Trace_ELBO`` (KL sampled) or ``TraceMeanField_ELBO`` (KL analytic)."""
    classes = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
    if name not in classes:
        raise choice_error("Pyro ELBO", name, list(classes))
    return classes[name](
        num_particles=num_particles,
        vectorize_particles=vectorize and num_particles > 1,
        max_plate_nesting=1,
    )


def svi_loss(name: str, vae, num_particles: int = 1) -> ELBO | Callable[..., torch.Tensor]:
    """The ``loss`` argument for ``pyro.infer.SVI``: a Pyro ELBO, or the analytic loss as a
    callable ``loss(model, guide, x, num_data)`` (SVI accepts either)."""
    if name not in LOSSES:
        raise choice_error("loss", name, LOSSES)
    if name == "analytic":
        closed_form_kl_available(vae)

        def loss(model, guide, x, num_data=None):
            return analytic_loss(vae, x, num_data, num_particles)

        return loss
    return pyro_elbo(name, num_particles)


def differentiable_loss(name: str, vae, num_particles: int = 1) -> Callable[..., torch.Tensor]:
    """``loss(x, num_data) -> tensor``: the same objective as :func:`svi_loss`, to call directly."""
    loss = svi_loss(name, vae, num_particles)
    if isinstance(loss, ELBO):
        return lambda x, num_data=None: loss.differentiable_loss(vae.model, vae.guide, x, num_data)
    return lambda x, num_data=None: loss(vae.model, vae.guide, x, num_data)


def closed_form_kl_available(vae) -> bool:
    """True when the prior has a closed-form KL; a one-line error otherwise."""
    if not vae.prior_net.closed_form_kl:
        raise PyrovaeError(
            f"the analytic loss needs a prior with a closed-form KL (normal, diag_normal), not "
            f"{type(vae.prior_net).__name__}: use train.loss=trace"
        )
    return True



# ---- the ELBO of a whole dataset -------------------------------------------------------------


@torch.no_grad()
def dataset_elbo(
    vae, x: torch.Tensor, batch_size: int = 1000, num_particles: int = 1
) -> dict[str, float]:
    """The ELBO (beta = 1) of ``x`` in nats per example, with its two terms ``recon`` =
    E_q[log p(x|z)] and ``kl`` = KL(q(z|x) || p(z)).

    The KL is in closed form where the prior allows it, else the Monte Carlo estimate
    E_q[log q(z|x) - log p(z)] with the same ``num_particles`` samples as the reconstruction.
    """
    recon_sum = kl_sum = 0.0
    p = vae.prior()
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        q = vae.encode(xb)
        z = q.rsample((num_particles,))
        recon_sum += vae.decode(z).log_prob(xb).mean(0).sum().item()
        if vae.prior_net.closed_form_kl:
            kl = closed_form_kl(vae, q.base_dist.loc, q.base_dist.scale)
        else:
            kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
        kl_sum += kl.sum().item()
    n = x.shape[0]
    return {"elbo": (recon_sum - kl_sum) / n, "recon": recon_sum / n, "kl": kl_sum / n}


# ---- Monte Carlo over many particles, in chunks ------------------------------------------------


def particle_chunks(vae, batch: int, total: int, chunk: int | None = None) -> Iterator[int]:
    """Split ``total`` particles into chunks of at most ``chunk`` (default: so that one decoder
    output for ``batch`` examples holds about ``CHUNK_BUDGET`` numbers): memory stays bounded."""
    size = chunk or max(1, CHUNK_BUDGET // (max(batch, 1) * math.prod(vae.x_shape)))
    while total > 0:
        yield min(size, total)
        total -= size


def trace_elbo_log_probs(
    vae, x: torch.Tensor, num_particles: int, chunk: int | None = None, scaled: bool = True
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """The log-densities that ``Trace_ELBO(vectorize_particles=True)`` computes, from its own
    vectorized model and guide traces, in chunks of particles: per chunk, ``(model, guide)``
    dicts of site name -> tensor of shape ``(k, B)``. ``scaled`` includes the sites' scales (the
    KL weight beta, the plate's N / B), as the loss does; else the plain log-densities."""
    key = "log_prob" if scaled else "unscaled_log_prob"
    batch = x.shape[0]
    for k in particle_chunks(vae, batch, num_particles, chunk):
        elbo = Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1)
        traces = elbo._get_vectorized_trace(vae.model, vae.guide, (x,), {})
        yield tuple(
            {name: site[key].reshape(k, batch) for name, site in trace.nodes.items()
             if site["type"] == "sample" and key in site}
            for trace in traces
        )


def mean_stderr(values: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """The mean of independent values and the standard error of that mean, s / sqrt(n)
    (NaN standard error for one value)."""
    v = np.asarray(torch.as_tensor(values).detach().cpu().double(), dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se
