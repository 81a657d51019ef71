"""Results table of the configs: train each with ``pyrovae.fit``, evaluate it with
``pyrovae.evaluate``, and print one Markdown row per config with the commands that made it.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/configs.py              # all CPU configs
    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/configs.py mnist mnist_z8 \
        --iwae-samples 5000 --limit 1000

Each config runs as ``python -m pyrovae.fit --config configs/NAME.yaml run_dir=runs/bench
run_name=NAME [overrides]`` and ``python -m pyrovae.evaluate runs/bench/NAME
--iwae-samples K --limit N --nuts 0 --json``. Overrides (``--set NAME:key=value``) shorten the
long configs for a CPU. Each JSON row also keeps the test ELBO on all test images, its KL and
reconstruction terms, of the epoch ``best.pt`` holds (best validation ELBO), from ``metrics.csv``,
and what the run ran on: torch's version, ``OMP_NUM_THREADS``, what ``pyrovae.fit`` logged of
its threads (nothing: torch's default, both cores here), and the one-minute load average before
it (which still holds the previous row's own processes).

    python benchmarks/configs.py --table benchmarks/results/configs_cpu.json ...

prints the table and the commands again from saved JSONs, without training.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from common import cpu_hardware, threads_note, write_json

from pyrovae.notebook import read_metrics

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{done.stderr[-2000:]}")
    return done.stdout


def bench(name: str, overrides: list[str], iwae: int, limit: int, run_root: str) -> dict:
    run_dir = f"{run_root}/{name}"
    fit_cmd = ["python", "-m", "pyrovae.fit", "--config", f"configs/{name}.yaml",
               f"run_dir={run_root}", f"run_name={name}", "train.progress=false", *overrides]
    eval_cmd = ["python", "-m", "pyrovae.evaluate", run_dir, "--iwae-samples", str(iwae),
                "--limit", str(limit), "--nuts", "0", "--gap-examples", "20", "--json"]
    load = os.getloadavg()[0]
    began = time.perf_counter()
    threads = None  # not known for a run made before
    if not (REPO / run_dir / "best.pt").exists():
        threads = threads_note(_run([sys.executable, *fit_cmd[1:]]))
    fit_seconds = time.perf_counter() - began
    result = json.loads(_run([sys.executable, *eval_cmd[1:]]))
    rows = read_metrics(REPO / run_dir)
    best = max(rows, key=lambda r: r["valid_elbo"])  # the epoch best.pt holds
    return {
        "config": name, "epochs": len(rows),
        "train_seconds": sum(r["seconds"] for r in rows), "wall_seconds": fit_seconds,
        "test_elbo_all": best["test_elbo"], "kl_all": best["kl"],
        "recon_all": best["recon"], "best_epoch": int(best["epoch"]),
        "test_elbo": result["elbo"], "log_likelihood": result["log_likelihood"],
        "log_likelihood_stderr": result.get("log_likelihood_stderr"),
        "pareto_k_frac_bad": result["pareto_k_frac_bad"],
        "active_units": result["active_units"], "z_dim": result["z_dim"],
        "num_samples": result["num_samples"],
        "num_examples": result.get("num_examples"),
        "commands": [shlex.join(fit_cmd), shlex.join(eval_cmd)],
        "torch": version("torch"), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": round(load, 2), "threads": threads, "hardware": cpu_hardware(),
    }


def label(r: dict) -> str:
    """The config's name, and how its row departs from the config and the default evaluation."""
    fit, evaluate = (shlex.split(c) for c in r["commands"])
    notes = fit[fit.index("train.progress=false") + 1:]
    k, n = evaluate[evaluate.index("--iwae-samples") + 1], evaluate[evaluate.index("--limit") + 1]
    if (k, n) != ("5000", "1000"):
        notes.append(f"IWAE K = {int(k):,} on {int(n):,} images")
    return r["config"] + (f" ({'; '.join(notes)})" if notes else "")


def row(r: dict) -> str:
    se = r["log_likelihood_stderr"]
    ll = f"{r['log_likelihood']:.2f}" + (f" ± {se:.2f}" if se is not None else "")
    full = f"{r['test_elbo_all']:.2f}" if "test_elbo_all" in r else "not recorded"
    units = f"{r['active_units']}" + (f" of {r['z_dim']}" if "z_dim" in r else "")
    khat = r["pareto_k_frac_bad"]  # None where PSIS had too few samples to fit
    khat = "too few samples" if khat is None else f"{khat:.2f}"
    return (f"| {label(r)} | {full} | {r['test_elbo']:.2f} | {ll} | "
            f"{khat} | {units} | {r['epochs']} | "
            f"{r['train_seconds'] / 60:.1f} min | {r.get('hardware', 'not recorded')} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=[
        "mnist", "mnist_fc400_z20", "mnist_z2_manifold", "mnist_z8", "mnist_gaussian",
        "fashion_mnist"])
    parser.add_argument("--iwae-samples", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=1000, help="test examples for IWAE")
    parser.add_argument("--set", action="append", default=[], metavar="NAME:key=value",
                        help="an override for one config")
    parser.add_argument("--runs", default="runs/bench", help="where the run folders go")
    parser.add_argument("--json", help="also write the rows as JSON")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="print the table from these saved JSONs instead of running")
    args = parser.parse_args(argv)
    if args.table:
        return table([r for path in args.table for r in read_rows(path)])
    results = []
    for name in args.configs:
        overrides = [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] == name]
        results.append(bench(name, overrides, args.iwae_samples, args.limit, args.runs))
        print(row(results[-1]), flush=True)
    table(results)
    write_json(args.json, results)
    return 0


def read_rows(path: str) -> list[dict]:
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read {path} ({err}); give a JSON that "
                         "benchmarks/configs.py --json wrote") from None
    if not (isinstance(rows, list) and all(isinstance(r, dict) and "commands" in r for r in rows)):
        raise SystemExit(f"error: {path} is not a list of rows that benchmarks/configs.py "
                         "--json wrote")
    return rows


def table(results: list[dict]) -> int:
    print("\n| config | test ELBO, all 10,000 | test ELBO, subset | log p(x), IWAE (± SE), subset "
          "| k-hat > 0.7 | active units | epochs | training time | hardware |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    for r in results:
        print(f"\n{r['config']}:\n    " + "\n    ".join(r["commands"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
