"""How often does ``python -m pyrovae.check`` fail on the correct code? Runs the whole check (every
prior x likelihood pair, fresh models, the cheapest settings that still run every check) with
``--runs`` different seeds and counts the runs that exit 1: the family-wise error rate of a run
is meant to be at most ``--alpha`` (1%). Also pools every statistical test's p-value over the
runs: for a calibrated test, the fraction below q is at most q.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/check_calibration.py --runs 50 \
        --out benchmarks/results/check_calibration_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import write_json  # noqa: E402

from pyrovae import check  # noqa: E402

CHEAP = ["--examples", "2", "--particles", "10,100", "--gradient-repeats", "10",
         "model.z_dim=2", "model.hidden=[16]", "data.limit=1000"]


def binomial_upper(failures: int, runs: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a failure probability."""
    from scipy import stats

    if failures >= runs:
        return 1.0
    return float(stats.beta.ppf(confidence, failures + 1, runs - failures))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=check.ALPHA)
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("extra", nargs="*", help="more check arguments / config overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs, pvalues, start = [], [], time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.runs):
        t0 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = check.main(["--json", "--seed", str(seed), "--alpha", str(args.alpha)]
                            + CHEAP + args.extra)
        out = json.loads(buf.getvalue(), parse_constant=lambda c: 1 / 0)
        tested = [c for c in out["checks"] if c["level"] is not None]
        pvalues += [c["p"] for c in tested]
        failed = [f"{c['model']}: {c['check']}" for c in out["checks"] if not c["passed"]]
        runs.append({"seed": seed, "exit": rc, "seconds": round(time.perf_counter() - t0, 2),
                     "tests": out["tests"], "alpha": out["alpha"],
                     "min_p_over_level": min(c["p"] / c["level"] for c in tested),
                     "failed": failed})
        print(f"seed {seed}: exit {rc}, {runs[-1]['seconds']} s"
              + (f", failed: {failed}" if failed else ""), file=sys.stderr, flush=True)
    failures = sum(r["exit"] == 1 for r in runs)
    n = len(pvalues)
    result = {
        "command": "python -m pyrovae.check --json --seed S --alpha A "
        + " ".join(CHEAP + args.extra),
        "alpha": args.alpha,
        "runs": len(runs),
        "exit_1_runs": failures,
        "other_exits": sum(r["exit"] not in (0, 1) for r in runs),
        "failure_rate": failures / len(runs),
        "failure_rate_upper_95": binomial_upper(failures, len(runs)),
        "tests_per_run": runs[0]["tests"],
        "pooled_p_values": {
            "count": n,
            **{f"fraction_below_{q}": sum(p < q for p in pvalues) / n
               for q in (0.5, 0.1, 0.05, 0.01, 0.001)},
            "binomial_se_at_0.05": math.sqrt(0.05 * 0.95 / n),
        },
        "seconds_total": round(time.perf_counter() - start, 1),
        "seconds_per_run": round((time.perf_counter() - start) / len(runs), 2),
        "machine": (f"{platform.processor() or platform.machine()}, torch threads 1, "
                    f"nice {os.nice(0)}"),
        "per_run": runs,
    }
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=2))
    return result


if __name__ == "__main__":
    main()
