"""Training objectives of a VAE, by name (``train.loss``), and the mathematics they share.

=============  =======================================================================
``trace``      the ELBO, both terms by Monte Carlo (:class:`~pyrovae.objectives.elbo.TraceELBO`)
``meanfield``  the ELBO, the KL in closed form (:class:`~pyrovae.objectives.elbo.MeanFieldELBO`)
``analytic``   the ELBO in plain PyTorch (:class:`~pyrovae.objectives.analytic.AnalyticELBO`)
``iwae``       the importance-weighted bound (:class:`~pyrovae.objectives.iwae.IWAE`)
``iwae_dreg``  the same, doubly reparameterized (:class:`~pyrovae.objectives.dreg.IWAEDReG`)
=============  =======================================================================

Every objective computes per-example, unscaled log-densities and applies N / B once
(:mod:`pyrovae.objectives.base`); beta is an argument of its loss.

Objectives declare no options (unlike priors, likelihoods and nets, :mod:`pyrovae.options`):
their one setting, K = ``train.num_particles``, is taken by all of them.
"""

from __future__ import annotations

from pyrovae.errors import choice_error
from pyrovae.objectives.analytic import AnalyticELBO, analytic_elbo_terms, analytic_loss
from pyrovae.objectives.base import Objective, Particles, log_mean_exp
from pyrovae.objectives.dreg import IWAEDReG
from pyrovae.objectives.elbo import MeanFieldELBO, TraceELBO
from pyrovae.objectives.estimates import (
    CHUNK_BUDGET,
    dataset_elbo,
    mean_stderr,
    particle_chunks,
    pyro_elbo,
    trace_elbo_log_probs,
)
from pyrovae.objectives.iwae import IWAE
from pyrovae.objectives.kl import (
    closed_form_kl,
    closed_form_kl_available,
    kl_diag_normals,
    kl_mvn,
    kl_standard_normal,
)

#: The registry: ``train.loss`` name -> objective class.
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (TraceELBO, MeanFieldELBO, AnalyticELBO, IWAE, IWAEDReG)
}
LOSSES = tuple(OBJECTIVES)


def build(name: str, vae, num_particles: int = 1) -> Objective:
    """The objective registered under ``name`` for ``vae``, with K = ``num_particles``. It is
    the ``loss`` of ``pyro.infer.SVI(vae.model, vae.guide, optim, loss)`` as it is, and
    ``objective.loss(x, num_data, beta)`` computes the same loss directly."""
    if name not in OBJECTIVES:
        raise choice_error("loss", name, LOSSES)
    return OBJECTIVES[name](vae, num_particles)


__all__ = [
    "CHUNK_BUDGET", "LOSSES", "OBJECTIVES", "IWAE", "AnalyticELBO", "IWAEDReG", "MeanFieldELBO",
    "Objective", "Particles", "TraceELBO", "analytic_elbo_terms", "analytic_loss", "build",
    "closed_form_kl", "closed_form_kl_available", "dataset_elbo", "kl_diag_normals", "kl_mvn",
    "kl_standard_normal", "log_mean_exp", "mean_stderr", "particle_chunks", "pyro_elbo",
    "trace_elbo_log_probs",
]
