"""The agreement checks: Pyro's sampled ELBO against the closed-form ELBO, shown statistically.

Every check returns :class:`Check` rows (numbers in nats per example):

a. ``loss_equality``: same noise, the plain-PyTorch analytic loss equals ``TraceMeanField_ELBO``
   (float64, 1e-5 relative; exact arithmetic, not a statistical test);
b. ``elbo_agreement``: ``Trace_ELBO`` with N vectorized particles agrees with the closed-form ELBO
   (Welch t-test), for each N; and its reported standard error is its real one: R independent
   replicate estimates at each N spread as much as the standard error they report (F-test);
c. ``kl_agreement``: per data point, the Monte Carlo KL E_q[log q - log p] agrees with the closed
   form (t-tests, Bonferroni over the data points);
d. ``gradient_agreement``: the mean of many sampled-ELBO gradients agrees with the analytic-KL
   gradient (projected on random directions; Welch t-tests, Bonferroni over the directions);
e. ``independent_agreement``: ``Trace_ELBO`` against a Monte Carlo ELBO written from ``prior()``,
   ``encode()`` and ``decode()`` alone (Welch t-test; the check for priors with no closed-form
   KL).

Each statistical row has a p-value and a level and passes when p >= level. The levels split the
family-wise error rate ``alpha`` (default 1%) among all statistical tests of a run (Bonferroni):
a correct implementation fails a whole ``python -m pyrovae.check`` run with probability at most
``alpha``. ``python -m pyrovae.check`` runs them for every prior x likelihood pair: see
:func:`main`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyro
import torch

from pyrovae import cli, objectives
from pyrovae.errors import PyrovaeError
from pyrovae.model import VAE
from pyrovae.optim import make_stepper

KLFn = Callable[[VAE, torch.Tensor, torch.Tensor], torch.Tensor]
ParticlesFn = Callable[[VAE, torch.Tensor, int], torch.Tensor]
ALPHA = 0.01  # family-wise error rate of a whole run (all its statistical tests)
REL_TOLERANCE = 1e-5  # check (a), float64
REPLICATES = 10  # check (b): independent replicate estimates at each N
MAX_DOF = 1e10  # a Student t / F with more degrees of freedom is taken as this many
Z_THRESHOLD = 3.0  # standard errors, for family_threshold
SLOPE_TOLERANCE = 0.15  # |d log SE / d log N + 1/2|: the notebooks' slope plot (not a check)


@dataclass
class Check:
    """One row of the report. ``z`` is the difference in standard errors (a t statistic), where
    there is one; a statistical row passes when its p-value ``p`` is at least its ``level``, which
    is the same as |z| <= ``threshold``."""

    model: str
    check: str
    passed: bool
    estimate: float
    reference: float
    stderr: float | None = None
    z: float | None = None
    threshold: float | None = None
    detail: str = ""
    extra: dict = field(default_factory=dict)
    p: float | None = None
    level: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def count_tests(closed_form_kl: bool, num_particle_counts: int, replicates: int = REPLICATES
                ) -> int:
    """The statistical tests :func:`run_checks` makes for one model: b at each N, b's standard
    error calibration, c, d and e with a closed-form KL; e alone without one."""
    if not closed_form_kl:
        return 1
    return num_particle_counts + (replicates >= 2) + 3


def family_threshold(count: int, z: float = Z_THRESHOLD) -> float:
    """The |z| threshold that keeps a family of ``count`` two-sided normal tests at the error
    rate of a single ``z``-standard-error test (Bonferroni): 3.0 for one test, ~3.6 for eight.
    (The notebooks use it; the checks themselves use levels, see :func:`run_checks`.)"""
    alpha = math.erfc(z / math.sqrt(2)) / max(count, 1)
    quantile = torch.special.erfinv(torch.tensor(1 - alpha, dtype=torch.float64)).item()
    return max(z, math.sqrt(2) * quantile)


# ---- the statistics: Welch t-tests and the standard-error F-test ----------------------------


def _summary(values: torch.Tensor) -> tuple[float, float, int]:
    """Mean, variance (n - 1 denominator) and count of independent values, in float64."""
    v = values.detach().double().reshape(-1)
    n = v.numel()
    return v.mean().item(), (v.var().item() if n > 1 else math.nan), n


def welch_test(a, b, level: float) -> tuple[np.ndarray, ...]:
    """Two-sided Welch t-tests of equal means from ``(mean, variance, count)`` summaries of two
    independent samples (numbers or arrays, broadcast); ``b = (reference, 0, 1)`` or None tests
    against a known value.

    Returns arrays ``(t, standard error, degrees of freedom, p, threshold)``: the difference in
    standard errors, its Welch-Satterthwaite degrees of freedom (n - 1 against a known value),
    the two-sided p-value from Student's t, and the |t| that a test at ``level`` tolerates.
    """
    from scipy import stats

    m1, v1, n1 = (np.asarray(v, dtype=np.float64) for v in a)
    m2, v2, n2 = (np.asarray(v, dtype=np.float64) for v in (b or (0.0, 0.0, 1)))
    w1, w2 = v1 / n1, v2 / n2
    var, diff = w1 + w2, m1 - m2
    with np.errstate(divide="ignore", invalid="ignore"):
        den = (np.where(w1 > 0, w1 ** 2 / np.maximum(n1 - 1, 1), 0.0)
               + np.where(w2 > 0, w2 ** 2 / np.maximum(n2 - 1, 1), 0.0))
        dof = np.minimum(np.where(den > 0, var ** 2 / den, MAX_DOF), MAX_DOF)
        se = np.sqrt(var)
        t = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.inf))
    p = np.minimum(1.0, 2 * stats.t.sf(np.abs(t), dof))
    return t, se, dof, p, stats.t.isf(level / 2, dof)


def stderr_ftest(replicates: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Whether the standard error s / sqrt(N) that each of R replicate estimates reports is the
    real spread of such estimates: ``replicates`` is ``(..., R, N)``, R independent runs of N
    particles each (leading dimensions: independent tests).

    F = (variance of the R replicate means) / (mean of their squared reported standard errors)
    is F(R - 1, R (N - 1)) distributed for independent normal particles; the degrees of freedom
    are lowered for the particles' estimated excess kurtosis k (Satterthwaite: a sample variance
    of n values with excess kurtosis k has about 2 / (2 / (n - 1) + k / n) degrees of freedom).
    Particles that are not independent (repeated, or sharing noise) spread more than they report:
    F grows like N. Returns arrays ``(F, numerator dof, denominator dof, two-sided p)``.
    """
    from scipy import stats

    x = replicates.detach().double().cpu()
    r, n = x.shape[-2:]
    means, reported = x.mean(-1), x.var(-1) / n
    numer, denom = means.var(-1).numpy(), reported.mean(-1).numpy()
    centred = x - x.mean(-1, keepdim=True)
    m2, m4 = centred.pow(2).mean((-2, -1)).numpy(), centred.pow(4).mean((-2, -1)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.maximum(0.0, np.nan_to_num(m4 / m2 ** 2 - 3.0))  # pooled excess kurtosis
        f = np.where(denom > 0, numer / denom, np.where(numer == 0, 1.0, np.inf))
    dof_num = np.minimum(2 / (2 / (r - 1) + kurt / (n * r)), MAX_DOF)
    dof_den = np.minimum(2 * r / (2 / (n - 1) + kurt / n), MAX_DOF)
    tails = np.minimum(stats.f.cdf(f, dof_num, dof_den), stats.f.sf(f, dof_num, dof_den))
    return f, dof_num, dof_den, np.minimum(1.0, 2 * tails)


def _bonferroni(ps: Sequence[float]) -> float:
    return min(1.0, len(ps) * min(ps)) if len(ps) else 1.0


# ---- per-particle estimates ---------------------------------------------------------------


def trace_elbo_particles(vae: VAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """The ELBO of the batch for each of ``num_particles`` particles, as ``Trace_ELBO`` sums it.

    Runs ``Trace_ELBO(vectorize_particles=True)``'s own vectorized model and guide traces (in
    chunks, to bound memory) and keeps the per-particle sum of log p(x, z) - log q(z|x) over the
    batch; its mean is exactly minus ``Trace_ELBO.loss``.
    """
    out = []
    with torch.no_grad():
        for model, guide in objectives.trace_elbo_log_probs(vae, x, num_particles):
            out.append((sum(model.values()) - sum(guide.values())).sum(-1))
    return torch.cat(out)


def closed_form_elbo_particles(
    vae: VAE, x: torch.Tensor, num_particles: int, kl_fn: KLFn | None = None
) -> torch.Tensor:
    """Per particle: sum_b [log p(x_b|z_b) - KL_b] with the KL in closed form (reconstruction by
    reparameterized sampling, in plain PyTorch as in :func:`objectives.analytic_elbo_terms`)."""
    kl_fn = kl_fn or objectives.closed_form_kl
    out = []
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        kl = kl_fn(vae, loc, scale).sum()
        for k in objectives.particle_chunks(vae, x.shape[0], num_particles):
            z = loc + scale * torch.randn((k,) + loc.shape, dtype=loc.dtype, device=loc.device)
            out.append(vae.decode(z).log_prob(x).sum(-1) - kl)
    return torch.cat(out)


def accessor_elbo_particles(vae: VAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Per particle: sum_b [log p(x_b|z_b) + log p(z_b) - log q(z_b|x_b)], z ~ q(z|x), written
    from ``prior()``, ``encode()`` and ``decode()`` alone: no Pyro inference code."""
    out = []
    with torch.no_grad():
        q, p = vae.encode(x), vae.prior()
        for k in objectives.particle_chunks(vae, x.shape[0], num_particles):
            z = q.sample((k,))
            out.append((vae.decode(z).log_prob(x) + p.log_prob(z) - q.log_prob(z)).sum(-1))
    return torch.cat(out)


# ---- the checks -----------------------------------------------------------------------------


def _label(vae: VAE) -> str:
    return f"{vae.prior_net.__class__.__name__} x {vae.likelihood.__class__.__name__}"


def _no_closed_form(vae: VAE, name: str) -> Check:
    return Check(
        _label(vae), name, True, math.nan, math.nan,
        detail="skipped: this prior has no closed-form KL; see check e",
    )


def _agreement_row(vae: VAE, name: str, a: torch.Tensor, b: torch.Tensor, level: float,
                   detail: str = "", **extra) -> Check:
    """A Welch t-test row: the means of the independent values ``a`` and ``b``."""
    sa, sb = _summary(a), _summary(b)
    t, se, dof, p, threshold = (float(v) for v in welch_test(sa, sb, level))
    return Check(
        _label(vae), name, bool(p >= level), sa[0], sb[0], se, t, threshold,
        detail=detail, p=p, level=level,
        extra={"dof": dof, "stderr_estimate": math.sqrt(sa[1] / sa[2]),
               "stderr_reference": math.sqrt(sb[1] / sb[2]), **extra},
    )


def loss_equality(vae: VAE, x: torch.Tensor, seed: int = 0, kl_fn: KLFn | None = None) -> Check:
    """(a) With the same noise, the analytic loss equals ``TraceMeanField_ELBO`` (float64).
    Exact arithmetic, not a statistical test: no level."""
    name = "a. analytic loss = TraceMeanField_ELBO (same noise, float64)"
    if not vae.prior_net.closed_form_kl:
        return _no_closed_form(vae, name)
    dtype = next(vae.parameters()).dtype
    vae64, x64 = vae.double(), x.double()
    try:
        with torch.no_grad():
            pyro.set_rng_seed(seed)
            meanfield = objectives.pyro_elbo("meanfield").loss(vae64.model, vae64.guide, x64)
            pyro.set_rng_seed(seed)
            recon, kl = objectives.analytic_elbo_terms(vae64, x64, kl_fn=kl_fn)
            analytic = (kl - recon).sum().item()
    finally:
        vae.to(dtype)
    rel = abs(analytic - meanfield) / max(abs(meanfield), 1e-300)
    b = x.shape[0]
    return Check(
        _label(vae), name, rel <= REL_TOLERANCE, -analytic / b, -meanfield / b,
        threshold=REL_TOLERANCE, detail=f"relative difference {rel:.2e}",
    )


def elbo_agreement(
    vae: VAE, x: torch.Tensor, particles: Sequence[int] = (10, 100, 1000, 10000),
    kl_fn: KLFn | None = None, replicates: int = REPLICATES, level: float = ALPHA / 5,
    trace_fn: ParticlesFn | None = None,
) -> list[Check]:
    """(b) For each N: ``Trace_ELBO`` with N particles against the closed-form ELBO with N
    independent particles (Welch t-test at ``level``); then, from ``replicates`` independent
    N-particle ``Trace_ELBO`` estimates at each N, whether their reported standard error is
    their real spread (:func:`stderr_ftest`, Bonferroni over the N; one test at ``level``).
    ``trace_fn`` replaces :func:`trace_elbo_particles` (tests pass broken streams)."""
    name = "b. Trace_ELBO = closed-form ELBO"
    if not vae.prior_net.closed_form_kl:
        return [_no_closed_form(vae, name)]
    trace_fn = trace_fn or trace_elbo_particles
    b, rows, reps = x.shape[0], [], {}
    for n in particles:
        runs = [trace_fn(vae, x, n).double() / b for _ in range(max(replicates, 1))]
        closed = closed_form_elbo_particles(vae, x, n, kl_fn).double() / b
        rows.append(_agreement_row(vae, f"{name} (N={n})", runs[0], closed, level,
                                   num_particles=n))
        reps[n] = torch.stack(runs)
    if replicates >= 2:
        rows.append(stderr_calibration(vae, reps, level))
    return rows


def stderr_calibration(vae: VAE, reps: dict[int, torch.Tensor], level: float) -> Check:
    """(b) The F-test of :func:`stderr_ftest` at each N (``reps[N]``: ``(R, N)`` particles), the
    family over the N at ``level`` (Bonferroni). The estimate is the worst N's ratio spread /
    reported standard error (1 when the standard error is right), which must lie in the
    acceptance interval given in the detail (``threshold`` is its upper end)."""
    from scipy import stats

    tests = {n: tuple(float(v) for v in stderr_ftest(r)) for n, r in reps.items()}
    p = _bonferroni([t[3] for t in tests.values()])
    worst = min(tests, key=lambda n: tests[n][3])
    f, d1, d2, _ = tests[worst]
    each = level / (2 * len(tests))
    lo, hi = (math.sqrt(float(q)) for q in (stats.f.ppf(each, d1, d2), stats.f.isf(each, d1, d2)))
    r = next(iter(reps.values())).shape[0]
    return Check(
        _label(vae), f"b. Trace_ELBO standard error = spread of {r} replicates",
        bool(p >= level), math.sqrt(f), 1.0, threshold=hi, p=p, level=level,
        detail=f"worst N={worst}: must lie in [{lo:.3g}, {hi:.3g}]; spread / SE = "
        + ", ".join(f"{math.sqrt(t[0]):.3g}" for t in tests.values())
        + " at N = " + ", ".join(str(n) for n in tests),
        extra={"num_particles": list(tests), "ratio": [math.sqrt(t[0]) for t in tests.values()],
               "p_each": [t[3] for t in tests.values()], "replicates": r},
    )


def kl_agreement(
    vae: VAE, x: torch.Tensor, num_particles: int = 10000, kl_fn: KLFn | None = None,
    level: float = ALPHA / 5,
) -> Check:
    """(c) Per data point, the Monte Carlo KL E_q[log q(z|x) - log p(z)] (from ``Trace_ELBO``'s
    traces, unscaled) against the closed form: a one-sample t-test (n - 1 degrees of freedom)
    per point, Bonferroni over the points, the family at ``level``."""

    name = "c. Monte Carlo KL = closed-form KL, per data point"
    if not vae.prior_net.closed_form_kl:
        return _no_closed_form(vae, name)
    kl_fn = kl_fn or objectives.closed_form_kl
    samples = []
    with torch.no_grad():
        for model, guide in objectives.trace_elbo_log_probs(vae, x, num_particles, scaled=False):
            samples.append(guide["z"] - model["z"])
        mc = torch.cat(samples).double()  # (N, B): log q - log p per point
        closed = kl_fn(vae, *vae.encoder(x)).double()
    n, mean = mc.shape[0], mc.mean(0)
    zs, se, _, ps, threshold = welch_test(
        (mean.cpu().numpy(), mc.var(0).cpu().numpy(), n), (closed.cpu().numpy(), 0.0, 1),
        level / x.shape[0])
    p = _bonferroni(list(ps))
    zs, se = torch.as_tensor(zs), torch.as_tensor(se)
    worst = int(zs.abs().argmax())
    threshold = float(threshold.reshape(-1)[worst]) if threshold.ndim else float(threshold)
    return Check(
        _label(vae), name, bool(p >= level), mean.mean().item(), closed.mean().item(),
        (se.pow(2).mean().sqrt()).item(), zs[worst].item(), threshold, p=p, level=level,
        detail=f"worst of {x.shape[0]} points: {mean[worst].item():.4f} vs "
        f"{closed[worst].item():.4f} nats",
        extra={"mc_kl": mean.tolist(), "closed_kl": closed.tolist(), "z": zs.tolist()},
    )


def gradient_agreement(
    vae: VAE, x: torch.Tensor, repeats: int = 100, num_particles: int = 20,
    directions: int = 8, seed: int = 0, kl_fn: KLFn | None = None, level: float = ALPHA / 5,
) -> Check:
    """(d) The mean of ``repeats`` ``Trace_ELBO`` gradients (each over ``num_particles``
    particles) against the mean of as many analytic-KL gradients, projected on ``directions``
    fixed random unit vectors: a Welch t-test per direction, Bonferroni over the directions, the
    family at ``level``."""
    name = "d. E[Trace_ELBO gradient] = analytic-KL gradient"
    if not vae.prior_net.closed_form_kl:
        return _no_closed_form(vae, name)
    params = [p for p in vae.parameters() if p.requires_grad]
    elbo = objectives.pyro_elbo("trace", num_particles)

    def sampled() -> torch.Tensor:
        return elbo.differentiable_loss(vae.model, vae.guide, x)

    def analytic() -> torch.Tensor:
        recon, kl = objectives.analytic_elbo_terms(vae, x, num_particles, kl_fn=kl_fn)
        return (kl - recon).sum()

    gen = torch.Generator().manual_seed(seed)
    size = sum(p.numel() for p in params)
    basis = torch.randn(directions, size, generator=gen, dtype=torch.float64)
    basis = (basis / basis.norm(dim=1, keepdim=True)).to(params[0].device)
    proj = {}
    for label, loss_fn in (("trace", sampled), ("analytic", analytic)):
        rows = []
        for _ in range(repeats):
            grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
            flat = torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, params)
            ]).double()
            rows.append(basis @ flat)
        proj[label] = (torch.stack(rows) / x.shape[0]).cpu()
    each = level / directions
    tests = [tuple(float(v) for v in welch_test(
        _summary(proj["trace"][:, j]), _summary(proj["analytic"][:, j]), each))
        for j in range(directions)]
    p = _bonferroni([t[3] for t in tests])
    worst = min(range(directions), key=lambda j: tests[j][3])
    t, se, dof, _, threshold = tests[worst]
    return Check(
        _label(vae), name, bool(p >= level),
        proj["trace"].mean(0)[worst].item(), proj["analytic"].mean(0)[worst].item(),
        se, t, threshold, p=p, level=level,
        detail=f"{repeats} x {num_particles} particles, worst of {directions} random directions",
        extra={"z": [t[0] for t in tests], "dof": [t[2] for t in tests]},
    )


def independent_agreement(vae: VAE, x: torch.Tensor, num_particles: int = 10000,
                          level: float = ALPHA / 5) -> Check:
    """(e) ``Trace_ELBO`` against the Monte Carlo ELBO from ``prior()``/``encode()``/``decode()``
    (independent noise, Welch t-test at ``level``): the check for every prior, closed-form KL or
    not."""
    b = x.shape[0]
    closed = "" if vae.prior_net.closed_form_kl else "no closed-form KL for this prior"
    return _agreement_row(
        vae, f"e. Trace_ELBO = Monte Carlo ELBO from accessors (N={num_particles})",
        trace_elbo_particles(vae, x, num_particles) / b,
        accessor_elbo_particles(vae, x, num_particles) / b, level, detail=closed,
    )


def run_checks(
    vae: VAE, x: torch.Tensor, particles: Sequence[int] = (10, 100, 1000, 10000),
    gradient_repeats: int = 100, seed: int = 0, kl_fn: KLFn | None = None,
    alpha: float = ALPHA, replicates: int = REPLICATES, trace_fn: ParticlesFn | None = None,
) -> list[Check]:
    """Checks a to e for one model on one batch of examples. ``alpha`` is the family-wise error
    rate of the rows returned: each of the :func:`count_tests` statistical tests runs at level
    ``alpha / count`` (Bonferroni). ``kl_fn`` and ``trace_fn`` replace the closed-form KL and
    the ``Trace_ELBO`` particle stream of check b (tests pass wrong ones)."""
    if not 0 < alpha < 1:
        raise PyrovaeError(f"alpha must be between 0 and 1, got {alpha!r}")
    closed_form = vae.prior_net.closed_form_kl
    level = alpha / count_tests(closed_form, len(particles), replicates)
    pyro.set_rng_seed(seed)
    was_training = vae.training
    vae.eval()  # batch norm uses its running statistics: one fixed function of x
    try:
        rows = [loss_equality(vae, x, seed, kl_fn)]
        rows += elbo_agreement(vae, x, particles, kl_fn, replicates, level, trace_fn)
        rows.append(kl_agreement(vae, x, max(particles), kl_fn, level))
        rows.append(gradient_agreement(vae, x, gradient_repeats, seed=seed, kl_fn=kl_fn,
                                       level=level))
        rows.append(independent_agreement(vae, x, max(particles), level))
    finally:
        vae.train(was_training)
    return rows


# ---- the command line -----------------------------------------------------------------------


def train_briefly(vae: VAE, splits, steps: int, batch_size: int = 128, lr: float = 1e-3,
                  seed: int = 0) -> VAE:
    """``steps`` SVI steps of ``Trace_ELBO`` with Adam on the training split."""
    stepper = make_stepper("svi", vae, "trace", lr=lr)
    gen = torch.Generator(device=splits.device).manual_seed(seed)
    n, done = splits.train.shape[0], 0
    vae.train()
    while done < steps:
        for batch in splits.train_batches(batch_size, gen):
            stepper.step(batch, n)
            done += 1
            if done == steps:
                break
    return vae.eval()


def move_prior(vae: VAE, seed: int, spread: float = 0.5) -> VAE:
    """Move every learned parameter of ``vae``'s prior by seeded N(0, spread^2) noise (for a
    constrained one, in its unconstrained space). A fresh prior starts where the terms of its
    parameters vanish (``diag_normal`` at N(0, I), a mixture with equal weights), so that a
    check of a fresh model would not see an error in them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in vae.prior_net.parameters():
            param.add_(spread * torch.randn(param.shape, generator=gen).to(param))
    return vae


def _models(args) -> Iterable[tuple[VAE | None, object]]:
    """(model, config) pairs to check: a trained checkpoint and its config; or, for every
    (chosen) prior x likelihood pair, None and the config of a fresh model (built once the
    data's example shape is known)."""
    from pyrovae import checkpoint
    from pyrovae.config import load_config
    from pyrovae.likelihoods import LIKELIHOODS
    from pyrovae.priors import PRIORS

    if args.checkpoint:
        vae = checkpoint.load(args.checkpoint)
        yield vae, vae.config
        return
    cfg = load_config(args.config, args.overrides)
    priors = _names(args.priors, list(PRIORS), "prior") or (
        [cfg.model.prior] if args.config else list(PRIORS))
    likelihoods = _names(args.likelihoods, list(LIKELIHOODS), "likelihood") or (
        [cfg.model.likelihood] if args.config else list(LIKELIHOODS))
    for prior in priors:
        for likelihood in likelihoods:
            pair = copy.deepcopy(cfg)
            pair.model.prior, pair.model.likelihood = prior, likelihood
            yield None, pair


def _names(value: str | None, choices: list[str], kind: str) -> list[str]:
    from pyrovae.errors import choice_error

    names = [v.strip() for v in value.split(",") if v.strip()] if value else []
    if value is not None and not names:
        raise PyrovaeError(f"--{kind}s names no {kind} ({value!r}): give comma-separated names "
                           f"from {', '.join(choices)}, or leave it out to check all")
    for name in names:
        if name not in choices:
            raise choice_error(kind, name, choices)
    return names


def _data_for(cfg, vae: VAE | None, cache: dict, examples: int):
    """(splits, None): the config's data as the pair's likelihood takes it, grey levels where
    its ``check`` accepts the examples checked, else binarized (a Bernoulli likelihood); or
    (None, why) where it takes neither, and the pair is skipped."""
    from pyrovae.likelihoods import build_likelihood

    kinds = ("static",) if cfg.data.name == "binarized_mnist" else ("none", "dynamic")
    for binarize in kinds:
        splits = _splits(cfg, binarize, cache)
        likelihood = vae.likelihood if vae is not None else build_likelihood(
            cfg.model.likelihood, splits.x_shape, **cfg.model.likelihood_options)
        try:
            likelihood.check(splits.test[:examples])
            return splits, None
        except PyrovaeError as err:
            why = str(err)
    return None, why


def _splits(cfg, binarize: str, cache: dict):
    """The config's data, binarized as ``binarize`` says (loaded once per binarization)."""
    from pyrovae.fit import load_splits

    if binarize not in cache:
        cfg.data.binarize = binarize
        cfg.data.limit = cfg.data.limit or 10000
        cache[binarize] = load_splits(cfg, torch.device("cpu"))
    return cache[binarize]


def check_all(args) -> list[Check]:
    """Every (model, config) of the command line, checked; the run's family-wise error rate
    ``args.alpha`` is split evenly over all its statistical tests (Bonferroni)."""
    from pyrovae.config import vae_kwargs
    from pyrovae.likelihoods import LIKELIHOODS
    from pyrovae.priors import PRIORS

    rows: list[Check] = []
    cache: dict = {}
    try:
        particles = [int(p) for p in str(args.particles).split(",")]
    except ValueError:
        raise PyrovaeError(f"--particles takes comma-separated whole numbers such as "
                           f"10,100,1000, got {args.particles!r}") from None
    least_values = (("--particles", min(particles), 2), ("--examples", args.examples, 1),
                    ("--gradient-repeats", args.gradient_repeats, 2),
                    ("--replicates", args.replicates, 2), ("--train-steps", args.train_steps, 0))
    for flag, value, least in least_values:
        if value < least:
            every = "all " if flag == "--particles" else ""
            raise PyrovaeError(f"{flag} must {every}be >= {least}, got {value}")
    if not 0 <= args.seed < 2**32:
        raise PyrovaeError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if not 0 < args.alpha < 1:
        raise PyrovaeError(f"--alpha is a probability between 0 and 1 (such as 0.01), "
                           f"got {args.alpha!r}")
    models = []
    for vae, cfg in _models(args):
        splits, why = _data_for(cfg, vae, cache, args.examples)
        if splits is None:  # the data in no form this likelihood takes: a row says so
            label = (_label(vae) if vae is not None else
                     f"{PRIORS[cfg.model.prior].__name__} x "
                     f"{LIKELIHOODS[cfg.model.likelihood].__name__}")
            rows.append(Check(label, "data", True, math.nan, math.nan,
                              detail=f"skipped: the data in no form this likelihood takes: {why}"))
        else:
            models.append((vae, cfg, splits))
    counts = [count_tests(vae.prior_net.closed_form_kl if vae is not None
                          else PRIORS[cfg.model.prior].closed_form_kl,
                          len(particles), args.replicates) for vae, cfg, _ in models]
    for (vae, cfg, splits), count in zip(models, counts):
        if vae is None:  # a fresh model of the config for this pair
            pyro.set_rng_seed(args.seed)
            vae = VAE(**vae_kwargs(cfg, splits.x_shape))
            move_prior(vae, args.seed)
            if args.train_steps:
                train_briefly(vae, splits, args.train_steps, seed=args.seed)
        x = splits.test[: args.examples]
        rows += run_checks(vae, x, particles, args.gradient_repeats, args.seed,
                           alpha=args.alpha * count / sum(counts), replicates=args.replicates)
    return rows


def _tested(rows: Sequence[Check]) -> list[Check]:
    return [r for r in rows if r.level is not None]


def format_table(rows: Sequence[Check]) -> str:
    """The report as a fixed-width table, one line per check, grouped by model."""
    lines, model = [], None
    w = max([5, *(len(r.check) for r in rows)])  # the longest label, never cut
    head = (f"{'check':<{w}} {'estimate':>11} {'reference':>11} {'SE':>9} {'z':>7} {'|z|<=':>6} "
            f"{'p':>8} {'level':>8}  ")
    for r in rows:
        if r.model != model:
            model = r.model
            lines += ["", f"== {model} ==", head + "verdict"]

        def cell(value, fmt: str, width: int) -> str:
            return "" if value is None or math.isnan(value) else f"{value:{width}{fmt}}"

        verdict = "n/a" if "skipped" in r.detail else ("agree" if r.passed else "DISAGREE")
        lines.append(
            f"{r.check:<{w}} {cell(r.estimate, '.4f', 11):>11} "
            f"{cell(r.reference, '.4f', 11):>11} {cell(r.stderr, '.2g', 9):>9} "
            f"{cell(r.z, '.2f', 7):>7} {cell(r.threshold, '.3g', 6):>6} "
            f"{cell(r.p, '.2g', 8):>8} {cell(r.level, '.2g', 8):>8}  {verdict}"
            + (f"  ({r.detail})" if r.detail else ""))
    failed = sum(not r.passed for r in rows)
    skipped = sum("skipped" in r.detail for r in rows)
    tested = _tested(rows)
    lines += ["", f"{len(rows) - failed - skipped} agree, {failed} disagree, {skipped} not "
              "applicable (ELBOs in nats per example; z = difference / standard error)"]
    if tested:
        total = sum(r.level for r in tested)
        lines.append(
            f"{len(tested)} statistical tests, each passing when p >= its level (Bonferroni): "
            f"a correct implementation fails this run with probability <= {total:.3g}; "
            "check a is exact arithmetic (relative tolerance), not a test")
    return "\n".join(lines)


def _strict(value):
    """``value`` with every NaN or infinite float replaced by None: strict JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def to_json(rows: Sequence[Check]) -> str:
    """The report as one strict JSON object (no NaN or Infinity: null where there is no
    number): ``agree``, ``alpha`` (the run's family-wise error bound, the sum of the levels)
    and ``checks``."""
    import json

    tested = _tested(rows)
    data = {"agree": all(r.passed for r in rows),
            "alpha": sum(r.level for r in tested) if tested else None,
            "tests": len(tested), "checks": [r.as_dict() for r in rows]}
    return json.dumps(_strict(data), allow_nan=False)


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(
        prog="python -m pyrovae.check",
        description="Check that Pyro's sampled ELBO agrees with the closed-form ELBO (checks a-e; "
        "see the module docstring). Default: the default model (configs/mnist.yaml) for every "
        "prior x likelihood pair on real MNIST test images. Exit status 1 when anything "
        "disagrees.",
    )
    parser.add_argument("--config", help="check this config's model (its prior and likelihood)")
    parser.add_argument("--checkpoint", help="check a trained model: a run folder or .pt file")
    parser.add_argument("--priors", help="comma-separated priors to check (default: all)")
    parser.add_argument("--likelihoods", help="comma-separated likelihoods (default: all)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train each fresh model this many SVI steps first (default 0)")
    parser.add_argument("--examples", type=int, default=8, help="test images (default 8)")
    parser.add_argument("--particles", default="10,100,1000,10000",
                        help="particle counts N for check b (default 10,100,1000,10000)")
    parser.add_argument("--gradient-repeats", type=int, default=100,
                        help="gradient estimates (of 20 particles each) averaged in check d "
                        "(default 100)")
    parser.add_argument("--replicates", type=int, default=REPLICATES,
                        help="independent Trace_ELBO estimates at each N whose spread check b "
                        f"compares with their standard error (default {REPLICATES})")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help="family-wise error rate of the run: the probability that a correct "
                        f"implementation fails it (Bonferroni; default {ALPHA})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. model.z_dim=8 data.mirror=../shared/data")
    args = parser.parse_args(argv)
    if args.checkpoint and (args.config or args.overrides or args.train_steps):
        raise PyrovaeError("--checkpoint checks a trained model as saved: drop --config, "
                           "--train-steps and overrides")
    rows = check_all(args)
    ok = all(r.passed for r in rows)
    if args.json:
        print(to_json(rows))
    else:
        print(format_table(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
