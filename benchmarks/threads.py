"""CPU threads on an idle and on a shared machine: seconds per training epoch of the default run
(``configs/mnist.yaml``) with ``train.threads`` = 1, 2 and ``auto``.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/threads.py \\
        --json benchmarks/results/threads_cpu.json

``shared`` runs the same commands while one other process keeps one core busy (a Python loop,
started ``--warmup`` seconds before the first of them). Each variant is a fresh
``python -m pyrovae.fit`` for ``--epochs`` epochs; its time is the median training seconds of
the epochs after the first (``seconds`` in metrics.csv, evaluation excluded). The variants are
interleaved over ``--repeats`` rounds so that drift in the machine's load hits all of them
alike; the JSON holds every measurement, the medians and the ratios to ``threads=1`` in the
same condition. Run it alone: nothing else may use the cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import threads_note, write_json  # noqa: E402

from pyrovae.notebook import read_metrics  # noqa: E402

REPO = HERE.parent
SETTINGS = ("1", "2", "auto")
BUSY = "while True: pass"


def epoch_seconds(threads: str, epochs: int, config: str, folder: Path) -> dict:
    """One fresh fit run; the median seconds of its epochs after the first, and what it logged
    about threads."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "pyrovae.fit", "--config", config, f"train.epochs={epochs}",
           f"train.threads={threads}", "train.progress=false", f"run_dir={folder}"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    metrics = sorted(folder.glob("*/metrics.csv"))[-1]
    seconds = [r["seconds"] for r in read_metrics(metrics.parent)]
    note = threads_note(out.stdout, out.stderr)
    return {"seconds": statistics.median(seconds[1:]), "epochs": seconds, "note": note}


def measure(condition: str, args, results: list[dict], tmp: Path) -> None:
    for round_ in range(args.repeats):
        for threads in SETTINGS:
            folder = tmp / f"{condition}_{threads}_{round_}"
            r = epoch_seconds(threads, args.epochs, args.config, folder)
            results.append({"condition": condition, "threads": threads, "round": round_,
                            "load_average": os.getloadavg()[0], **r})
            print(f"{condition:6s} threads={threads:4s} {r['seconds']:.2f} s/epoch "
                  f"{' '.join(r['note'])}", flush=True)


def summary(results: list[dict]) -> dict:
    out = {}
    for condition in ("idle", "shared"):
        med = {t: statistics.median(r["seconds"] for r in results
                                    if r["condition"] == condition and r["threads"] == t)
               for t in SETTINGS}
        out[condition] = {"median_seconds": med,
                          "ratio_to_1_thread": {t: med[t] / med["1"] for t in SETTINGS}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/mnist.yaml")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of busy load before shared")
    p.add_argument("--json")
    args = p.parse_args(argv)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        measure("idle", args, results, Path(tmp))
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            time.sleep(args.warmup)
            measure("shared", args, results, Path(tmp))
        finally:
            busy.kill()
    out = {"command": "python benchmarks/threads.py " + " ".join(argv or sys.argv[1:]),
           "cores": os.cpu_count(), "config": args.config, "epochs": args.epochs,
           "results": results, "summary": summary(results)}
    write_json(args.json, out)
    for condition, s in out["summary"].items():
        print(condition, {t: f"{v:.2f} s ({s['ratio_to_1_thread'][t]:.2f}x)"
                          for t, v in s["median_seconds"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
