"""Which engine trains a config fastest over a whole run, compilation included: each config
trained by each engine (for the config's epochs, or ``--epochs``), each in a fresh
``python -m pyrovae.fit`` process with an empty inductor cache (what a user's first run pays),
one after the other.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/engines.py mnist mnist_conv \
        --json benchmarks/results/engines_cpu.json

For each run it reads the epochs' training seconds from ``metrics.csv`` (and keeps what the run
logged of its threads: nothing when it used torch's default) and reports the first
epoch (which compiles, for ``traced``/``compiled``), the median of the others, the process's
wall time, and for every engine the first epoch count at which its total would be below
``svi``'s (its extra first-epoch seconds over the seconds it saves an epoch). ``auto`` is the
engine ``pyrovae.optim.resolve_engine`` picks on this machine.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from common import cpu_hardware, threads_note, write_json

from pyrovae import cli
from pyrovae.errors import PyrovaeError
from pyrovae.notebook import read_metrics

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("svi", "torch", "traced", "compiled")


def train(config: str, engine: str, epochs: int | None, tmp: str, extra: list[str]) -> dict:
    """One run in a fresh process, inductor's cache empty; the epochs' seconds from its CSV."""
    run_dir = f"{tmp}/{config}_{engine}"
    cmd = ["python", "-m", "pyrovae.fit", "--config", f"configs/{config}.yaml",
           f"train.engine={engine}", *([f"train.epochs={epochs}"] if epochs else []),
           "train.progress=false", f"run_dir={run_dir}", "run_name=run", *extra]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor_{config}_{engine}"}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise PyrovaeError(f"{shlex.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    seconds = [r["seconds"] for r in read_metrics(f"{run_dir}/run")]
    return {"engine": engine, "first": seconds[0], "median_after": statistics.median(seconds[1:]),
            "total": sum(seconds), "wall": wall, "seconds": seconds,
            "threads": threads_note(done.stdout, done.stderr),
            "command": shlex.join(cmd).replace(tmp, "TMP")}


def break_even(run: dict, base: dict) -> int | None:
    """The first epoch count n at which ``run``'s total training seconds are below ``base``'s,
    taking the first epochs as measured and the others at their medians (None: never)."""
    extra = run["first"] - base["first"]
    saved = base["median_after"] - run["median_after"]
    if saved <= 0:
        return 1 if saved == 0 and extra < 0 else None
    return max(1, math.floor(extra / saved) + 2)


def table(results: dict) -> str:
    lines = [f"auto picks `{results['auto']}`; torch {results['torch']}, {results['hardware']}",
             "", "| config | engine | epochs | first epoch (s) | later epochs, median (s) "
             "| total of the epochs (s) | total, ratio to svi | process wall (s) "
             "| total below svi's from |", "|---|---|---|---|---|---|---|---|---|"]
    for config, runs in results["configs"].items():
        base = runs["svi"]
        for engine, r in runs.items():
            even = break_even(r, base)
            when = ("never" if even is None else f"epoch {even}") if engine != "svi" else ""
            lines.append(f"| {config} | {engine} | {len(r['seconds'])} | {r['first']:.1f} | "
                         f"{r['median_after']:.2f} | {r['total']:.1f} | "
                         f"{r['total'] / base['total']:.2f}x | {r['wall']:.1f} | {when} |")
    return "\n".join(lines)


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="names of configs/*.yaml")
    parser.add_argument("--epochs", type=int,
                        help="epochs of each run (at least 2; default: the config's)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="an override for every run")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch compiles, the others are "
                     "what an epoch costs after")
    if "svi" not in args.engines:
        parser.error("--engines must include svi, the baseline of the ratios")
    missing = [c for c in args.configs if not (REPO / "configs" / f"{c}.yaml").is_file()]
    if missing:
        parser.error(f"no configs/{missing[0]}.yaml; give names of files in configs/")
    import torch

    from pyrovae.optim import resolve_engine

    results = {"torch": version("torch"), "hardware": cpu_hardware(),
               "load_average_before": round(os.getloadavg()[0], 2), "epochs": args.epochs,
               "auto": resolve_engine("auto", torch.device("cpu")), "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            results["configs"][config] = {}
            for engine in args.engines:
                r = train(config, engine, args.epochs, tmp, args.set)
                results["configs"][config][engine] = r
                print(f"{config} {engine}: first {r['first']:.1f} s, then "
                      f"{r['median_after']:.2f} s an epoch", flush=True)
    print(table(results))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
