"""Estimates over a whole dataset or many particles: the dataset ELBO, particles in chunks,
the log-densities of Pyro's own ``Trace_ELBO`` traces, and a mean with its standard error."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from pyrovae.errors import choice_error
from pyrovae.objectives.kl import closed_form_kl

#: Numbers in one decoder output per chunk of particles (about 80 MB in float32).
CHUNK_BUDGET = 2 * 10**7


def pyro_elbo(name: str, num_particles: int = 1, vectorize: bool = True) -> ELBO:
    """Pyro's own ``Trace_ELBO`` (KL sampled) or ``TraceMeanField_ELBO`` (KL analytic) of the
    model and guide, as references for the checks (``pyrovae.check``)."""
    classes = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
    if name not in classes:
        raise choice_error("Pyro ELBO", name, list(classes))
    return classes[name](
        num_particles=num_particles,
        vectorize_particles=vectorize and num_particles > 1,
        max_plate_nesting=1,
    )


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
    dicts of site name -> tensor of shape ``(k, B)``. ``scaled`` includes the sites' scales (none
    here: the model is run without ``num_data``); else the plain log-densities."""
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
