"""Data-parallel scaling: training examples per second of ``pyrovae.fit`` on 1 and W ranks.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/scaling.py \\
        --ranks 1 2 --json benchmarks/results/scaling_cpu.json
    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/scaling.py --device cuda --ranks 1 2 4 8

For each variant, one process (``python -m pyrovae.fit``, ``ranks`` = 0 in the JSON) and
``torchrun --standalone --nproc_per_node=W`` for each W, with ``OMP_NUM_THREADS`` threads per
process (default 1), train the same config for ``--epochs`` epochs; the throughput is the
training set size over an epoch's training seconds (``seconds`` of metrics.csv, measured by rank
0, evaluation excluded), the median over the epochs after the first (warm-up) and over the
repeats, which interleave the variants so that load on the machine hits all of them alike.
Scaling efficiency is ``throughput(W) / (W * throughput(1 rank under torchrun))``; ``speedup``
is against the plain one-process run. The metrics of every run are compared with the first
one's (``max_rel_diff``: the same trajectory up to float32 reduction order).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_json  # noqa: E402

from pyrovae.notebook import read_metrics  # noqa: E402

REPO = HERE.parent
NUMBERS = ("train_objective", "valid_elbo", "test_elbo")


def command(ranks: int, args: list[str]) -> list[str]:
    fit = ["-m", "pyrovae.fit", *args]
    if ranks == 0:
        return [sys.executable, *fit]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", *fit]


def run_once(ranks: int, args: list[str], threads: int, run_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    began = time.perf_counter()
    where = [f"run_dir={run_dir.parent}", f"run_name={run_dir.name}"]
    proc = subprocess.run(command(ranks, [*args, *where]), cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(command(ranks, args))} failed:\n{proc.stderr[-2000:]}")
    rows = read_metrics(run_dir)
    return {"wall_seconds": wall, "epoch_seconds": [r["seconds"] for r in rows],
            "metrics": [{k: r[k] for k in NUMBERS} for r in rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/mnist.yaml")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2],
                        help="world sizes under torchrun (the one-process run is always added)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=10000, help="training examples (data.limit)")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS per process")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is a warm-up)")

    overrides = ["--config", args.config, f"train.epochs={args.epochs}",
                 f"data.limit={args.limit}", f"train.engine={args.engine}",
                 f"train.device={args.device}", "train.progress=false", *args.set]
    variants = [0, *args.ranks]
    runs: dict[int, list[dict]] = {w: [] for w in variants}
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for w in variants:
                out = run_once(w, overrides, args.threads, Path(tmp) / f"r{repeat}w{w}")
                runs[w].append(out)
                print(f"ranks {w or 'none (one process)'}: epochs "
                      + ", ".join(f"{s:.2f}" for s in out["epoch_seconds"]) + " s", flush=True)

    first = runs[0][0]["metrics"]
    results = []
    for w in variants:
        seconds = statistics.median(s for r in runs[w] for s in r["epoch_seconds"][1:])
        diff = max(abs(a[k] - b[k]) / abs(b[k]) for r in runs[w]
                   for a, b in zip(r["metrics"], first, strict=True) for k in NUMBERS)
        results.append({"ranks": w, "epoch_seconds": seconds,
                        "examples_per_second": args.limit / seconds,
                        "wall_seconds": statistics.median(r["wall_seconds"] for r in runs[w]),
                        "max_rel_diff": diff})
    base = next((r for r in results if r["ranks"] == 1), None)
    for r in results:
        r["speedup"] = r["examples_per_second"] / results[0]["examples_per_second"]
        if base is not None and r["ranks"]:
            r["efficiency"] = r["examples_per_second"] / (r["ranks"] * base["examples_per_second"])
    print(f"{'ranks':>6} {'examples/s':>11} {'speedup':>8} {'efficiency':>10} {'max rel diff':>13}")
    for r in results:
        eff = f"{r['efficiency']:.2f}" if "efficiency" in r else "-"
        print(f"{r['ranks'] or 'none':>6} {r['examples_per_second']:>11.0f} {r['speedup']:>8.2f} "
              f"{eff:>10} {r['max_rel_diff']:>13.1e}")
    write_json(args.json, {
        "what": "pyrovae.fit training throughput, one process and torchrun data-parallel",
        "command": "python benchmarks/scaling.py " + " ".join(argv or sys.argv[1:]),
        "overrides": overrides, "threads_per_process": args.threads, "repeats": args.repeats,
        "started": started, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "results": results, "runs": {str(w): runs[w] for w in variants},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
