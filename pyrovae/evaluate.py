"""``python -m pyrovae.evaluate RUN_DIR``: how good are the bound and the guide of a trained run.

    python -m pyrovae.evaluate runs/mnist                      # its latest run; K = 5000
    python -m pyrovae.evaluate runs/mnist/version_0 --limit 100 --iwae-samples 1000 --json
    python -m pyrovae.evaluate runs/mnist --nuts 2             # + a NUTS reference posterior

On the test split of the run's dataset (binarized as the run's data config says), it reports in
nats per example: the ELBO (closed-form KL, and sampled from the Pyro model and guide), the
importance-weighted estimate of log p(x) with K samples (Burda et al. 2015) and its standard
error, PSIS (Yao et al. 2018: Pareto k-hat per example, the fraction above 0.7, the smoothed
log p(x)), the active units, the inference gap split into approximation and amortization gaps
(Cremer et al. 2018) and, on request (``--nuts N``: slow), for N examples a NUTS reference
posterior compared with q(z|x). It writes ``evaluation.json``, ``khat.png`` (with K >= 25, which
PSIS needs) and with NUTS ``posterior.png`` into the run folder, replacing those of an earlier
evaluation (a figure this one does not draw is removed). A run folder means its ``best.pt`` (the
best validation ELBO), else its ``checkpoint.pt``. RUN_DIR is a run folder, one of its ``.pt``
files, or the folder above the runs (a config's ``run_dir``: its latest run, named on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyrovae import checkpoint, cli, diagnostics, objectives, plots
from pyrovae.errors import PyrovaeError
from pyrovae.files import check_writable
from pyrovae.fit import choose_threads, load_splits, resolve_device
from pyrovae.model import VAE

RESULTS = "evaluation.json"
POSTERIOR_FIGURE = "posterior.png"
KHAT_FIGURE = "khat.png"
#: Latent dims drawn per example in posterior.png (the most active units first).
FIGURE_DIMS = 6


@dataclass
class Options:
    """What :func:`evaluate` computes; the command line's options."""

    iwae_samples: int = 5000  # K importance samples per example
    limit: int | None = None  # the first N test examples (None: all)
    nuts_examples: int = 0  # examples with a NUTS reference posterior (0: none; slow)
    nuts_warmup: int = 300
    nuts_samples: int = 300  # draws per chain after warmup
    nuts_chains: int = 2
    gap_examples: int = 50  # examples for the amortization gap (0: none)
    gap_steps: int = 300  # Adam steps of the local optimization of q
    elbo_particles: int = 10  # particles per example for the two ELBO estimates
    gap_eval_particles: int = 1000  # particles per example for the gaps' final ELBOs
    batch_size: int = 100  # examples per batch of importance sampling
    seed: int = 0
    device: str = "auto"
    figures: bool = True

    def check(self) -> Options:
        """Refuse a bad option with a one-line error naming the command-line flag."""
        minimum = {
            "iwae_samples": ("--iwae-samples", 1),
            "limit": ("--limit", 1),
            "nuts_examples": ("--nuts", 0),
            "nuts_warmup": ("--nuts-warmup", 0),
            "nuts_samples": ("--nuts-samples", 4),
            "nuts_chains": ("--nuts-chains", 1),
            "gap_examples": ("--gap-examples", 0),
            "gap_steps": ("--gap-steps", 1),
            "elbo_particles": ("elbo_particles", 1),
            "gap_eval_particles": ("gap_eval_particles", 1),
            "batch_size": ("--batch-size", 1),
        }
        for name, (flag, low) in minimum.items():
            value = getattr(self, name)
            if name == "limit" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PyrovaeError(f"{flag} must be an integer >= {low}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
                0 <= self.seed < 2**32):
            raise PyrovaeError(f"--seed must be an integer from 0 to 2**32 - 1, got {self.seed!r}")
        d = self.device
        if not isinstance(d, str) or not (d in ("auto", "cpu", "cuda") or (
                d.startswith("cuda:") and d[5:].isdigit())):
            raise PyrovaeError(f"--device must be auto, cpu, cuda or cuda:N, got {d!r}")
        return self


# ---- the evaluation, stage by stage ------------------------------------------------------


def _stat(result: dict, key: str, values) -> None:
    """``key`` = mean over examples and ``key_stderr`` = standard error of that mean."""
    result[key], result[f"{key}_stderr"] = diagnostics.mean_stderr(values)


def bounds(vae: VAE, x: torch.Tensor, opts: Options) -> tuple[dict, dict]:
    """ELBOs, IWAE and PSIS: the summary numbers, and the per-example arrays the later stages
    use (``log_likelihood``, ``pareto_k``)."""
    result: dict = {}
    elbo = objectives.dataset_elbo(vae, x, num_particles=opts.elbo_particles)
    result.update(elbo=elbo["elbo"], elbo_recon=elbo["recon"], elbo_kl=elbo["kl"])
    result["elbo_kl_closed_form"] = bool(vae.prior_net.closed_form_kl)
    sampled = torch.cat(
        [
            diagnostics.sampled_elbo(vae, x[i : i + opts.batch_size], opts.elbo_particles)
            for i in range(0, x.shape[0], opts.batch_size)
        ]
    )
    _stat(result, "elbo_sampled", sampled)
    with tqdm(
        total=x.shape[0], desc=f"IWAE K={opts.iwae_samples}", leave=False, disable=None, unit="ex"
    ) as bar:
        iw = diagnostics.importance_sampling(
            vae, x, opts.iwae_samples, opts.batch_size, progress=lambda n: bar.update(n - bar.n)
        )
    _stat(result, "log_likelihood", iw.log_likelihood)
    result["num_samples"] = opts.iwae_samples
    if iw.pareto_k is not None:
        _stat(result, "psis_log_likelihood", iw.psis_log_likelihood)
        result.update(diagnostics.pareto_k_summary(iw.pareto_k))
        result["pareto_k_sample_threshold"] = diagnostics.pareto_k_sample_threshold(
            opts.iwae_samples
        )
    else:
        for key in (
            "psis_log_likelihood",
            "psis_log_likelihood_stderr",
            "pareto_k_mean",
            "pareto_k_quantiles",
            "pareto_k_max",
            "pareto_k_frac_bad",
        ):
            result[key] = None
        result["psis_note"] = (
            f"PSIS needs K >= {diagnostics.PSIS_MIN_SAMPLES} importance samples per example"
        )
    return result, {"log_likelihood": iw.log_likelihood, "pareto_k": iw.pareto_k}


def gaps(
    vae: VAE,
    x: torch.Tensor,
    log_likelihood: torch.Tensor,
    opts: Options,
    pareto_k: np.ndarray | None = None,
) -> dict:
    """The inference, approximation and amortization gaps on the first ``gap_examples``.

    The inference and approximation gaps take the IWAE estimate as log p(x). Where an example's
    PSIS k-hat (``pareto_k``) exceeds 0.7, or is unknown (K < 25), IWAE may sit far below
    log p(x) (Yao et al. 2018), so those two gaps are lower bounds, possibly negative, not
    estimates: ``gaps_reliable`` is then False, ``gap_pareto_k_frac_bad`` says for how many of
    the examples, and ``gaps_note`` says it in words (the table marks both lines). The
    amortization gap, ELBO[q*] - ELBO[q], does not use log p(x) and is not flagged."""
    n = min(opts.gap_examples, x.shape[0])
    if n == 0:
        return {"gap_examples": 0}
    per = diagnostics.inference_gaps(
        vae,
        x[:n],
        log_likelihood[:n],
        steps=opts.gap_steps,
        eval_particles=opts.gap_eval_particles,
        seed=opts.seed,
    )
    result: dict = {"gap_examples": n, "gap_steps": opts.gap_steps}
    _stat(result, "log_likelihood_gap_examples", log_likelihood[:n])
    for key, values in per.items():
        _stat(result, key, values)
    result.update(gap_flags(pareto_k[:n] if pareto_k is not None else None, n))
    return result


def gap_flags(pareto_k: np.ndarray | None, n: int) -> dict:
    """Whether IWAE can stand for log p(x) in the gaps of ``n`` examples with these k-hats."""
    threshold = diagnostics.PARETO_K_THRESHOLD
    if pareto_k is None:
        return {
            "gaps_reliable": False,
            "gap_pareto_k_frac_bad": None,
            "gaps_note": (
                f"no PSIS k-hat (K < {diagnostics.PSIS_MIN_SAMPLES}): the inference and "
                "approximation gaps use IWAE as log p(x) unchecked and are lower bounds"
            ),
        }
    bad = int(np.sum(diagnostics.pareto_k_bad(pareto_k, threshold)))
    flags = {"gaps_reliable": bad == 0, "gap_pareto_k_frac_bad": bad / n}
    if bad:
        flags["gaps_note"] = (
            f"k-hat > {threshold} for {bad} of {n} gap examples: IWAE may be far below "
            "log p(x) there, so the inference and approximation gaps are lower bounds (they "
            "can come out negative), not estimates; raise --iwae-samples or train longer"
        )
    return flags


def nuts(vae: VAE, x: torch.Tensor, opts: Options) -> tuple[dict | None, list]:
    """NUTS reference posteriors of the first ``nuts_examples`` examples, compared with q."""
    n = min(opts.nuts_examples, x.shape[0])
    if n == 0:
        return None, []
    with torch.no_grad():
        loc, scale = vae.encoder(x[:n])
    with warnings.catch_warnings(record=True) as caught:  # reported inside the table
        warnings.simplefilter("always", UserWarning)
        idata = diagnostics.nuts_posterior(
            vae, x[:n], opts.nuts_warmup, opts.nuts_samples, opts.nuts_chains, seed=opts.seed
        )
        examples = diagnostics.posterior_comparison(
            idata, loc, scale, labels=[f"test example {i}" for i in range(n)]
        )
    examples = [{"index": i, **row} for i, row in enumerate(examples)]
    z = idata.posterior["z"].values  # (chain, draw, example, latent)
    draws = [z[:, :, i, :].reshape(-1, vae.z_dim) for i in range(n)]
    summary = {
        "num_examples": n,
        "num_chains": opts.nuts_chains,
        "num_warmup": opts.nuts_warmup,
        "num_samples": opts.nuts_samples,
        "rhat_threshold": diagnostics.RHAT_THRESHOLD,
        "max_r_hat": max(e["max_r_hat"] for e in examples),
        "min_ess_bulk": min(e["min_ess_bulk"] for e in examples),
        "divergences": examples[0]["divergences"],
        "rhat_flag": any(e["rhat_flag"] for e in examples),
        "ess_flag": any(e["ess_flag"] for e in examples),
        "mean_abs_mean_z": float(np.mean([np.abs(e["mean_z"]).mean() for e in examples])),
        "mean_std_ratio": float(np.mean([np.mean(e["std_ratio"]) for e in examples])),
        "examples": examples,
        "warnings": [" ".join(str(w.message).split()) for w in caught
                     if issubclass(w.category, UserWarning) and str(w.message).startswith("NUTS")],
    }
    return summary, draws


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now


def evaluate(run_dir: str | Path, opts: Options | None = None, log=cli.log) -> dict:
    """Every diagnostic of a trained run (its best model; or the checkpoint file ``run_dir``
    names; or, for the folder above the runs, its latest run, which ``log`` names) on its test
    split; writes ``evaluation.json`` (and the figures, unless ``opts.figures`` is False) into
    the run folder and returns the results (nats per example)."""
    opts = (opts or Options()).check()
    began = time.perf_counter()
    source, note = checkpoint.resolve_run(run_dir)  # a run folder, or a checkpoint file
    if note is not None and log is not None:
        log(f"pyrovae.evaluate: using {source}, {note}")
    run_dir = source if source.is_dir() else source.parent
    check_writable(run_dir, f"evaluate writes {RESULTS} and its figures into the run folder; "
                   "make it writable, or copy the run folder and evaluate the copy")
    device = resolve_device(opts.device, "--device ")
    vae = checkpoint.load(source, device, log=None)
    splits = load_splits(vae.config, device)
    x = splits.test if opts.limit is None else splits.test[: opts.limit]
    vae.check(x)
    pyro.set_rng_seed(opts.seed)
    result: dict = {
        "run_dir": str(run_dir),
        "dataset": splits.name,
        "num_examples": int(x.shape[0]),
        "test_binarization": splits.test_binarization,
        "z_dim": vae.z_dim,
        "likelihood": vae.config.model.likelihood,
        "prior": vae.config.model.prior,
        "seed": opts.seed,
        "device": str(device),
        "unit": "nats per example",
    }
    clock = _Clock()
    summary, per_example = bounds(vae, x, opts)
    result.update(summary)
    count, activity = diagnostics.active_units(vae, x)
    result.update(
        active_units=count,
        active_unit_variances=activity.tolist(),
        active_threshold=diagnostics.ACTIVE_THRESHOLD,
    )
    clock.lap("bounds")
    result.update(gaps(vae, x, per_example["log_likelihood"], opts, per_example["pareto_k"]))
    clock.lap("gaps")
    result["nuts"], draws = nuts(vae, x, opts)
    clock.lap("nuts")
    result["figures"] = _figures(run_dir, result, per_example["pareto_k"], draws, activity, opts)
    clock.lap("figures")
    result["stage_seconds"] = clock.laps
    result["seconds"] = time.perf_counter() - began
    checkpoint.atomic_write_text(json.dumps(_jsonable(result), indent=2) + "\n", run_dir / RESULTS)
    result["removed"] = _remove_stale_figures(run_dir, result["figures"])
    return result


def _remove_stale_figures(run_dir: Path, written: list[str]) -> list[str]:
    """The figures of an earlier evaluation that this one did not draw (no PSIS with K < 25, no
    NUTS), removed: the run folder's figures are those of its ``evaluation.json``."""
    stale = [name for name in (KHAT_FIGURE, POSTERIOR_FIGURE)
             if name not in written and (run_dir / name).is_file()]
    for name in stale:
        (run_dir / name).unlink()
    return stale


# ---- figures -------------------------------------------------------------------------------


def _figures(run_dir: Path, result: dict, khat, draws, activity, opts: Options) -> list[str]:
    if not opts.figures:
        return []
    written = []
    if khat is not None:
        written.append(plots.khat_histogram(khat, run_dir / KHAT_FIGURE, opts.iwae_samples).name)
    if draws:
        dims = [int(d) for d in torch.argsort(activity, descending=True)[:FIGURE_DIMS]]
        written.append(
            plots.posterior_marginals(
                draws, result["nuts"]["examples"], dims, run_dir / POSTERIOR_FIGURE
            ).name
        )
    return written


# ---- output --------------------------------------------------------------------------------


def _jsonable(value):
    """Plain JSON: NaN and infinities become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pm(mean: float | None, se: float | None, width: int = 10) -> str:
    if mean is None:
        return "n/a".rjust(width)
    text = f"{mean:{width}.2f}"
    return text + (f"  ± {se:.2f}" if se is not None and math.isfinite(se) else "")


def format_table(r: dict) -> str:
    """The results as a readable table (nats per example; ± one standard error of the mean
    over test examples)."""
    k = r["num_samples"]
    lines = [
        f"pyrovae.evaluate {r['run_dir']}: {r['dataset']}, {r['num_examples']} test examples, "
        f"{r['likelihood']} likelihood, {r['prior']} prior, z_dim {r['z_dim']}",
        f"test set: {r['test_binarization']}",
        *_warning_lines(r),
        "",
        "nats per example (± std. error over examples)",
        f"  {'ELBO, closed-form KL' if r['elbo_kl_closed_form'] else 'ELBO, Monte Carlo KL':<40}"
        f"{_pm(r['elbo'], None)}   (recon {r['elbo_recon']:.2f}, KL {r['elbo_kl']:.2f})",
        f"  {'ELBO, sampled from model/guide traces':<40}"
        f"{_pm(r['elbo_sampled'], r['elbo_sampled_stderr'])}",
        f"  {f'log p(x), IWAE, K = {k}':<40}{_pm(r['log_likelihood'], r['log_likelihood_stderr'])}",
        f"  {f'log p(x), PSIS-smoothed, K = {k}':<40}"
        f"{_pm(r['psis_log_likelihood'], r.get('psis_log_likelihood_stderr'))}",
        "",
    ]
    if r.get("pareto_k_mean") is not None:
        q = r["pareto_k_quantiles"]
        lines += [
            f"PSIS Pareto k-hat: mean {r['pareto_k_mean']:.2f}, median {q['0.5']:.2f}, "
            f"95% {q['0.95']:.2f}, max {r['pareto_k_max']:.2f}; "
            f"{100 * r['pareto_k_frac_bad']:.1f}% of examples above 0.7",
            f"  {KHAT_NOTE}",
        ]
    else:
        lines.append(f"PSIS: skipped ({r.get('psis_note', '')})")
    lines.append(
        f"active units: {r['active_units']} of {r['z_dim']} "
        f"(Cov_x E_q[z_u] > {r['active_threshold']})"
    )
    if r.get("gap_examples"):
        flag = "" if r.get("gaps_reliable", True) else "  [LOWER BOUND]"
        lines += [
            "",
            f"gaps on {r['gap_examples']} examples (Cremer et al. 2018; q* = Gaussian "
            f"optimized per example, {r['gap_steps']} Adam steps):",
            f"  {'log p(x), IWAE':<40}{_pm(r['log_likelihood_gap_examples'], None)}",
            f"  {'ELBO of the amortized q(z|x)':<40}{_pm(r['elbo_amortized'], None)}",
            f"  {'ELBO of the optimized q*':<40}{_pm(r['elbo_optimized'], None)}",
            f"  {'inference gap':<40}{_pm(r['inference_gap'], r['inference_gap_stderr'])}"
            f"{flag}",
            f"  {'= approximation gap':<40}"
            f"{_pm(r['approximation_gap'], r['approximation_gap_stderr'])}{flag}",
            f"  {'+ amortization gap':<40}"
            f"{_pm(r['amortization_gap'], r['amortization_gap_stderr'])}",
        ]
        if r.get("gaps_note"):
            lines.append(f"  [LOWER BOUND] {r['gaps_note']}")
    if r.get("nuts"):
        lines += ["", *_nuts_lines(r["nuts"])]
    figures = ", ".join(r.get("figures", [])) or "no figures"
    lines += ["", f"wrote {RESULTS} and {figures} to {r['run_dir']} in {r['seconds']:.1f} s"]
    if r.get("removed"):
        lines.append(f"removed {', '.join(r['removed'])} of an earlier evaluation (this one drew "
                     "no such figure)")
    return "\n".join(lines)


#: What k-hat means, printed under its line.
KHAT_NOTE = (
    "(k-hat: how heavy-tailed the weights p(x,z)/q(z|x) are; above 0.7 IWAE and PSIS may sit "
    "below log p(x) there: a limit of q(z|x) as a proposal, common in VAEs, not an error)"
)


def _warning_lines(r: dict) -> list[str]:
    """The run's warnings, each with what it means for the numbers below (none: no lines)."""
    found = list((r.get("nuts") or {}).get("warnings", []))
    if not found:
        return []
    return [
        "",
        f"warnings ({len(found)}): they concern the NUTS reference posterior only (the last "
        "section), not the bounds or q(z|x):",
        *(f"  - {w}" for w in found),
    ]


def _nuts_lines(n: dict) -> list[str]:
    """One line per example: convergence, and how far q(z|x) sits from NUTS (per-dimension
    numbers in evaluation.json and posterior.png)."""
    lines = [
        f"NUTS reference posterior ({n['num_chains']} chains x {n['num_samples']} draws "
        f"after {n['num_warmup']} warmup) against q(z|x); per dimension in {RESULTS}:"
    ]
    for e in n["examples"]:
        flags = [
            f for f, on in (("R-HAT > 1.01", e["rhat_flag"]), ("LOW ESS", e["ess_flag"])) if on
        ]
        shift = float(np.mean(np.abs(e["mean_z"])))
        ratio = float(np.mean(e["std_ratio"]))
        lines.append(
            f"  test example {e['index']}: max r-hat {e['max_r_hat']:.3f}, min bulk ESS "
            f"{e['min_ess_bulk']:.0f}, {e['divergences']} divergences; mean |q - NUTS| mean "
            f"{shift:.2f} NUTS sd, q sd / NUTS sd {ratio:.2f}"
            + (f"  [{', '.join(flags)}]" if flags else "")
        )
    return lines


# ---- command line --------------------------------------------------------------------------


# (flag, Options field, metavar, help); the default comes from Options
_INT_OPTIONS = (
    ("--iwae-samples", "iwae_samples", "K", "importance samples per example"),
    ("--nuts", "nuts_examples", "N_EXAMPLES",
     "examples with a NUTS reference posterior (slow: about a minute each on a CPU; 0 skips)"),
    ("--nuts-warmup", "nuts_warmup", "W", "NUTS warmup steps per chain"),
    ("--nuts-samples", "nuts_samples", "S", "NUTS draws per chain after warmup"),
    ("--nuts-chains", "nuts_chains", "C", "NUTS chains, run one after the other"),
    ("--gap-examples", "gap_examples", "N", "examples for the amortization gap (0 skips)"),
    ("--gap-steps", "gap_steps", "STEPS", "Adam steps of the per-example optimization of q"),
    ("--batch-size", "batch_size", "B", "examples per batch of importance sampling"),
    ("--seed", "seed", "SEED", "random seed"),
)


def parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m pyrovae.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    p.add_argument(
        "run_dir", metavar="RUN_DIR",
        help="a run folder written by pyrovae.fit, its .pt file, or the folder above the runs "
        "(its latest run)"
    )
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate the first N test examples (default: all)")
    for flag, field, metavar, text in _INT_OPTIONS:
        default = getattr(d, field)
        p.add_argument(flag, type=int, default=default, metavar=metavar, dest=field,
                       help=f"{text} (default {default})")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    opts = Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
                      if hasattr(args, f.name)}).check()
    choose_threads("auto", log=cli.log)
    result = evaluate(args.run_dir, opts)
    if args.json:
        print(json.dumps(_jsonable(result), indent=2))
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
