"""Closed-form KL divergences between Gaussians, and the KL of a VAE's q(z|x) to its prior."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.errors import PyrovaeError
from pyrovae.priors import PRIORS, DiagNormal, StandardNormal


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
    """KL(q(z|x) || p(z)) per example for q = N(loc, diag(scale^2)), when the prior has one:
    written out above for ``normal`` and ``diag_normal`` (the independent check of Pyro's
    sampled ELBO), else the rule ``torch.distributions`` registers for the pair (a prior that
    declares ``closed_form_kl = True`` needs nothing more)."""
    prior = vae.prior_net
    log_var = 2.0 * scale.log()
    if isinstance(prior, StandardNormal):
        return kl_standard_normal(loc, log_var)
    if isinstance(prior, DiagNormal):
        return kl_diag_normals(loc, log_var, prior.loc, 2.0 * prior.scale.log())
    if prior.closed_form_kl:
        q = dist.Normal(loc, scale).to_event(1)
        try:
            return torch.distributions.kl_divergence(q, vae.prior())
        except NotImplementedError:
            raise PyrovaeError(
                f"the {type(prior).__name__} prior declares closed_form_kl = True, but "
                f"torch.distributions registers no KL from a diagonal Normal to it: register "
                f"one (torch.distributions.register_kl) or set closed_form_kl = False"
            ) from None
    raise PyrovaeError(
        f"the {type(prior).__name__} prior has no closed-form KL: use train.loss=trace "
        "(the KL is then estimated by Monte Carlo)"
    )


def closed_form_kl_available(vae) -> bool:
    """True when the prior has a closed-form KL; a one-line error otherwise."""
    if not vae.prior_net.closed_form_kl:
        names = ", ".join(name for name, cls in PRIORS.items() if cls.closed_form_kl)
        raise PyrovaeError(
            f"the analytic loss needs a prior with a closed-form KL ({names}), not "
            f"{type(vae.prior_net).__name__}: use train.loss=trace"
        )
    return True
