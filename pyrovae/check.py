"""The agreement checks: Pyro's sampled ELBO against the closed-form ELBO, shown statistically.

Every check returns :class:`Check` rows (numbers in nats per example):

a. ``loss_equality``: same noise, the plain-PyTorch analytic loss equals ``TraceMeanField_ELBO``
   (float64, 1e-5 relative);
b. ``elbo_agreement``: ``Trace_ELBO`` with N vectorized particles agrees with the closed-form ELBO
   within 3 standard errors, and its standard error shrinks like 1 / sqrt(N);
c. ``kl_agreement``: per data point, the Monte Carlo KL E_q[log q - log p] agrees with the closed
   form (3 standard errors, Bonferroni-adjusted over the data points);
d. ``gradient_agreement``: the mean of many sampled-ELBO gradients agrees with the analytic-KL
   gradient (projected on random directions; tolerance from the estimated standard errors);
e. ``independent_agreement``: ``Trace_ELBO`` against a Monte Carlo ELBO written from ``prior()``,
   ``encode()`` and ``decode()`` alone (the check for priors with no closed-form KL).

``python -m pyrovae.check`` runs them for every prior x likelihood pair: see :func:`main`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import pyro
import torch

from pyrovae import objectives
from pyrovae.model import VAE
from pyrovae.optim import make_stepper

KLFn = Callable[[VAE, torch.Tensor, torch.Tensor], torch.Tensor]
Z_THRESHOLD = 3.0  # standard errors
REL_TOLERANCE = 1e-5  # check (a), float64
SLOPE_TOLERANCE = 0.15  # check (b): |d log SE / d log N + 1/2|


@dataclass
class Check:
    """One row of the report. ``z`` is the difference in standard errors, where there is one."""

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

    def as_dict(self) -> dict:
        return asdict(self)


def family_threshold(count: int, z: float = Z_THRESHOLD) -> float:
    """The |z| threshold that keeps a family of ``count`` two-sided tests at the error rate of a
    single ``z``-standard-error test (Bonferroni): 3.0 for one test, ~3.6 for eight."""
    alpha = math.erfc(z / math.sqrt(2)) / max(count, 1)
    quantile = torch.special.erfinv(torch.tensor(1 - alpha, dtype=torch.float64)).item()
    return max(z, math.sqrt(2) * quantile)


def _z(diff: float, stderr: float) -> float:
    return diff / stderr if stderr > 0 else (0.0 if diff == 0 else math.inf)


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
    """Per particle: sum_b [log p(x_b|z_b) - beta KL_b] with the KL in closed form (reconstruction
    by reparameterized sampling, in plain PyTorch as in :func:`objectives.analytic_elbo_terms`)."""
    kl_fn = kl_fn or objectives.closed_form_kl
    out = []
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        kl = kl_fn(vae, loc, scale).sum()
        for k in objectives.particle_chunks(vae, x.shape[0], num_particles):
            z = loc + scale * torch.randn((k,) + loc.shape, dtype=loc.dtype, device=loc.device)
            out.append(vae.decode(z).log_prob(x).sum(-1) - vae.beta * kl)
    return torch.cat(out)


def accessor_elbo_particles(vae: VAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Per particle: sum_b [log p(x_b|z_b) + beta (log p(z_b) - log q(z_b|x_b))], z ~ q(z|x),
    written from ``prior()``, ``encode()`` and ``decode()`` alone: no Pyro inference code."""
    out = []
    with torch.no_grad():
        q, p = vae.encode(x), vae.prior()
        for k in objectives.particle_chunks(vae, x.shape[0], num_particles):
            z = q.sample((k,))
            log_w = vae.decode(z).log_prob(x) + vae.beta * (p.log_prob(z) - q.log_prob(z))
            out.append(log_w.sum(-1))
    return torch.cat(out)


# ---- the checks -----------------------------------------------------------------------------


def _label(vae: VAE) -> str:
    return f"{vae.prior_net.__class__.__name__} x {vae.likelihood.__class__.__name__}"


def _no_closed_form(vae: VAE, name: str) -> Check:
    return Check(
        _label(vae), name, True, math.nan, math.nan,
        detail="skipped: this prior has no closed-form KL; see check e",
    )


def loss_equality(vae: VAE, x: torch.Tensor, seed: int = 0, kl_fn: KLFn | None = None) -> Check:
    """(a) With the same noise, the analytic loss equals ``TraceMeanField_ELBO`` (float64)."""
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
            analytic = (vae64.beta * kl - recon).sum().item()
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
    kl_fn: KLFn | None = None,
) -> list[Check]:
    """(b) ``Trace_ELBO`` with N particles against the closed-form ELBO (independent noise), for
    each N; then the slope of log SE against log N, which must be -1/2."""
    name = "b. Trace_ELBO = closed-form ELBO"
    if not vae.prior_net.closed_form_kl:
        return [_no_closed_form(vae, name)]
    b, rows, ses = x.shape[0], [], []
    for n in particles:
        m_t, se_t = objectives.mean_stderr(trace_elbo_particles(vae, x, n) / b)
        m_c, se_c = objectives.mean_stderr(closed_form_elbo_particles(vae, x, n, kl_fn) / b)
        se = math.hypot(se_t, se_c)
        z = _z(m_t - m_c, se)
        ses.append(se_t)
        rows.append(Check(
            _label(vae), f"{name} (N={n})", abs(z) <= Z_THRESHOLD, m_t, m_c, se, z, Z_THRESHOLD,
            extra={"num_particles": n, "stderr_trace": se_t, "stderr_closed_form": se_c},
        ))
    if len(particles) >= 2:
        rows.append(_stderr_slope(vae, particles, ses))
    return rows


def _stderr_slope(vae: VAE, particles: Sequence[int], ses: Sequence[float]) -> Check:
    logn = torch.tensor([math.log(n) for n in particles], dtype=torch.float64)
    logse = torch.tensor([math.log(max(s, 1e-300)) for s in ses], dtype=torch.float64)
    slope = (((logn - logn.mean()) * (logse - logse.mean())).sum()
             / (logn - logn.mean()).pow(2).sum()).item()
    return Check(
        _label(vae), "b. Trace_ELBO standard error ~ 1/sqrt(N)",
        abs(slope + 0.5) <= SLOPE_TOLERANCE, slope, -0.5, threshold=SLOPE_TOLERANCE,
        detail="slope of log SE against log N; SE*sqrt(N) = "
        + ", ".join(f"{s * math.sqrt(n):.3g}" for s, n in zip(ses, particles)),
    )


def kl_agreement(
    vae: VAE, x: torch.Tensor, num_particles: int = 10000, kl_fn: KLFn | None = None
) -> Check:
    """(c) Per data point, the Monte Carlo KL E_q[log q(z|x) - log p(z)] (from ``Trace_ELBO``'s
    traces) against the closed form; the worst point's z must stay within the family threshold."""
    name = "c. Monte Carlo KL = closed-form KL, per data point"
    if not vae.prior_net.closed_form_kl:
        return _no_closed_form(vae, name)
    kl_fn = kl_fn or objectives.closed_form_kl
    samples = []
    with torch.no_grad():
        for model, guide in objectives.trace_elbo_log_probs(vae, x, num_particles):
            samples.append(guide["z"] - model["z"])
        mc = torch.cat(samples).double() / vae.beta  # (N, B): log q - log p per point
        closed = kl_fn(vae, *vae.encoder(x)).double()
    mean, se = mc.mean(0), mc.std(0) / math.sqrt(mc.shape[0])
    zs = torch.where(se > 0, (mean - closed) / se, (mean - closed).abs() * math.inf)
    worst = int(zs.abs().argmax())
    threshold = family_threshold(x.shape[0])
    return Check(
        _label(vae), name, bool(zs.abs().max() <= threshold), mean.mean().item(),
        closed.mean().item(), (se.pow(2).mean().sqrt()).item(), zs[worst].item(), threshold,
        detail=f"worst of {x.shape[0]} points: {mean[worst].item():.4f} vs "
        f"{closed[worst].item():.4f} nats",
        extra={"mc_kl": mean.tolist(), "closed_kl": closed.tolist(), "z": zs.tolist()},
    )


def gradient_agreement(
    vae: VAE, x: torch.Tensor, repeats: int = 100, num_particles: int = 20,
    directions: int = 8, seed: int = 0, kl_fn: KLFn | None = None,
) -> Check:
    """(d) The mean of ``repeats`` ``Trace_ELBO`` gradients (each over ``num_particles``
    particles) against the mean of as many analytic-KL gradients, projected on ``directions``
    fixed random unit vectors; each projected difference is divided by its estimated standard
    error and must stay within the family threshold."""
    name = "d. E[Trace_ELBO gradient] = analytic-KL gradient"
    if not vae.prior_net.closed_form_kl:
        return _no_closed_form(vae, name)
    params = [p for p in vae.parameters() if p.requires_grad]
    elbo = objectives.pyro_elbo("trace", num_particles)

    def sampled() -> torch.Tensor:
        return elbo.differentiable_loss(vae.model, vae.guide, x)

    def analytic() -> torch.Tensor:
        recon, kl = objectives.analytic_elbo_terms(vae, x, num_particles, kl_fn=kl_fn)
        return (vae.beta * kl - recon).sum()

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
        proj[label] = torch.stack(rows) / x.shape[0]
    diff = proj["trace"].mean(0) - proj["analytic"].mean(0)
    se = (proj["trace"].var(0) / repeats + proj["analytic"].var(0) / repeats).sqrt()
    zs = diff / se
    threshold = family_threshold(directions)
    worst = int(zs.abs().argmax())
    return Check(
        _label(vae), name, bool(zs.abs().max() <= threshold),
        proj["trace"].mean(0)[worst].item(), proj["analytic"].mean(0)[worst].item(),
        se[worst].item(), zs[worst].item(), threshold,
        detail=f"{repeats} x {num_particles} particles, worst of {directions} random directions",
        extra={"z": zs.tolist()},
    )


def independent_agreement(vae: VAE, x: torch.Tensor, num_particles: int = 10000) -> Check:
    """(e) ``Trace_ELBO`` against the Monte Carlo ELBO from ``prior()``/``encode()``/``decode()``
    (independent noise, 3 standard errors): the check for every prior, closed-form KL or not."""
    b = x.shape[0]
    m_t, se_t = objectives.mean_stderr(trace_elbo_particles(vae, x, num_particles) / b)
    m_a, se_a = objectives.mean_stderr(accessor_elbo_particles(vae, x, num_particles) / b)
    se = math.hypot(se_t, se_a)
    z = _z(m_t - m_a, se)
    closed = "" if vae.prior_net.closed_form_kl else "no closed-form KL for this prior; "
    return Check(
        _label(vae), f"e. Trace_ELBO = Monte Carlo ELBO from accessors (N={num_particles})",
        abs(z) <= Z_THRESHOLD, m_t, m_a, se, z, Z_THRESHOLD, detail=closed.rstrip("; "),
    )


def run_checks(
    vae: VAE, x: torch.Tensor, particles: Sequence[int] = (10, 100, 1000, 10000),
    gradient_repeats: int = 100, seed: int = 0, kl_fn: KLFn | None = None,
) -> list[Check]:
    """Checks a to e for one model on one batch of examples."""
    pyro.set_rng_seed(seed)
    was_training = vae.training
    vae.eval()  # batch norm uses its running statistics: one fixed function of x
    try:
        rows = [loss_equality(vae, x, seed, kl_fn)]
        rows += elbo_agreement(vae, x, particles, kl_fn)
        rows.append(kl_agreement(vae, x, max(particles), kl_fn))
        rows.append(gradient_agreement(vae, x, gradient_repeats, seed=seed, kl_fn=kl_fn))
        rows.append(independent_agreement(vae, x, max(particles)))
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
    for name in names:
        if name not in choices:
            raise choice_error(kind, name, choices)
    return names


def _splits(cfg, likelihood: str, cache: dict):
    """The config's data, binarized for a Bernoulli likelihood and grey-level otherwise."""
    from pyrovae.fit import load_splits

    binarize = "dynamic" if likelihood == "bernoulli" else "none"
    if cfg.data.name == "binarized_mnist":
        binarize = "static"
    if binarize not in cache:
        cfg.data.binarize = binarize
        cfg.data.limit = cfg.data.limit or 10000
        cache[binarize] = load_splits(cfg, torch.device("cpu"))
    return cache[binarize]


def check_all(args) -> list[Check]:
    from pyrovae.config import vae_kwargs
    from pyrovae.errors import PyrovaeError

    rows: list[Check] = []
    cache: dict = {}
    try:
        particles = [int(p) for p in str(args.particles).split(",")]
    except ValueError:
        raise PyrovaeError(f"--particles takes comma-separated whole numbers such as "
                           f"10,100,1000, got {args.particles!r}") from None
    if min(particles) < 2 or args.examples < 1 or args.gradient_repeats < 2:
        raise PyrovaeError("--particles must all be >= 2, --examples >= 1 and "
                           "--gradient-repeats >= 2")
    for vae, cfg in _models(args):
        splits = _splits(cfg, cfg.model.likelihood, cache)
        if vae is None:  # a fresh model of the config for this pair
            pyro.set_rng_seed(args.seed)
            vae = VAE(**vae_kwargs(cfg, splits.x_shape))
            if args.train_steps:
                train_briefly(vae, splits, args.train_steps, seed=args.seed)
        vae.beta = 1.0
        x = splits.test[: args.examples]
        rows += run_checks(vae, x, particles, args.gradient_repeats, args.seed)
    return rows


def format_table(rows: Sequence[Check]) -> str:
    """The report as a fixed-width table, one line per check, grouped by model."""
    lines, model = [], None
    head = f"{'check':<58} {'estimate':>11} {'reference':>11} {'SE':>9} {'z':>7} {'|z|<=':>6}  "
    for r in rows:
        if r.model != model:
            model = r.model
            lines += ["", f"== {model} ==", head + "verdict"]
        se = "" if r.stderr is None else f"{r.stderr:9.2g}"
        z = "" if r.z is None else f"{r.z:7.2f}"
        thr = "" if r.threshold is None else f"{r.threshold:6.3g}"
        est = "" if math.isnan(r.estimate) else f"{r.estimate:11.4f}"
        ref = "" if math.isnan(r.reference) else f"{r.reference:11.4f}"
        verdict = "agree" if r.passed else "DISAGREE"
        if "skipped" in r.detail:
            verdict = "n/a"
        lines.append(f"{r.check[:58]:<58} {est:>11} {ref:>11} {se:>9} {z:>7} {thr:>6}  {verdict}"
                     + (f"  ({r.detail})" if r.detail else ""))
    failed = sum(not r.passed for r in rows)
    skipped = sum("skipped" in r.detail for r in rows)
    lines += ["", f"{len(rows) - failed - skipped} agree, {failed} disagree, {skipped} not "
              "applicable (ELBOs in nats per example; z = difference / standard error)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    from pyrovae.errors import PyrovaeError

    parser = argparse.ArgumentParser(
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. model.z_dim=8 data.mirror=../shared/data")
    args = parser.parse_args(argv)
    try:
        if args.checkpoint and (args.config or args.overrides or args.train_steps):
            raise PyrovaeError("--checkpoint checks a trained model as saved: drop --config, "
                               "--train-steps and overrides")
        rows = check_all(args)
    except PyrovaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ok = all(r.passed for r in rows)
    if args.json:
        print(json.dumps({"agree": ok, "checks": [r.as_dict() for r in rows]}, default=float))
    else:
        print(format_table(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
