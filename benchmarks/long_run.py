"""The long run: train a config and record the training minutes at which the test
log-likelihood first reaches 87, 86.5 and 86 nats. The test log-likelihood is the IWAE estimate
with K = 5,000 samples (Burda et al. 2015, eq. 8) on the whole dynamically binarized MNIST test
set, binarized once with a fixed seed. This run is meant for a GPU (issue 6: under 15 minutes on
one H200-class GPU); on a CPU it runs the same way, only slower.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/long_run.py --config configs/mnist.yaml \
        --minutes 15 --every 25 --json benchmarks/results/long_run_cuda.json \
        --set train.engine=torch --set train.device=cuda

The run is a ``pyrovae.fit`` run (checkpoint and metrics.csv after every epoch, in ``run_dir``).
Every ``--every`` epochs, and after the last one, the log-likelihood is measured. "Training
minutes" add up the epochs' training seconds, without the evaluations. The run stops when the
``--minutes`` of training are spent or the last threshold is reached.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_json  # noqa: E402

from pyrovae import diagnostics, fit  # noqa: E402
from pyrovae.config import CONFIG_DIR, load_config  # noqa: E402
from pyrovae.errors import PyrovaeError  # noqa: E402

THRESHOLDS = (87.0, 86.5, 86.0)  # nats: -log p(x) per test image


def heldout_log_likelihood(run: fit.Run, samples: int, limit: int | None, batch: int) -> float:
    """Mean IWAE-``samples`` log p(x) over the first ``limit`` test images (all by default)."""
    x = run.splits.test[:limit]
    torch.manual_seed(0)
    run.vae.eval()
    with torch.no_grad():
        return float(diagnostics.importance_sampling(
            run.vae, x, samples, batch_size=batch).log_likelihood.mean())


def long_run(cfg, minutes: float, every: int, samples: int, limit: int | None,
             batch: int, log=print) -> dict:
    run = fit.start(cfg)
    rows, reached, began = [], {}, time.perf_counter()
    train_minutes = 0.0
    while run.epoch < cfg.train.epochs and train_minutes < minutes:
        row = fit.run_epoch(run, log=lambda *_: None)
        train_minutes += row["seconds"] / 60
        last = run.epoch == cfg.train.epochs or train_minutes >= minutes
        if run.epoch % every and not last:
            continue
        ll = heldout_log_likelihood(run, samples, limit, batch)
        rows.append({"epoch": run.epoch, "train_minutes": train_minutes,
                     "wall_minutes": (time.perf_counter() - began) / 60,
                     "test_elbo": row["test_elbo"], "log_likelihood": ll})
        for t in THRESHOLDS:
            if -ll <= t and t not in reached:
                reached[t] = {"epoch": run.epoch, "train_minutes": train_minutes}
        log(f"epoch {run.epoch}: {train_minutes:.2f} training minutes, test ELBO "
            f"{row['test_elbo']:.2f}, log p(x) IWAE-{samples} {ll:.2f} nats")
        if len(reached) == len(THRESHOLDS):
            break
    return {"device": str(run.splits.device), "rows": rows,
            "reached": {str(t): reached.get(t) for t in THRESHOLDS},
            "iwae_samples": samples, "test_images": int(run.splits.test[:limit].shape[0]),
            "epochs_per_minute": run.epoch / max(train_minutes, 1e-9),
            "examples_per_second": run.epoch * run.splits.train.shape[0]
            / max(train_minutes * 60, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG_DIR / "mnist.yaml"))
    parser.add_argument("--minutes", type=float, default=15.0, help="training minutes at most")
    parser.add_argument("--every", type=int, default=25, help="epochs between measurements")
    parser.add_argument("--iwae-samples", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--batch", type=int, default=100, help="test images per IWAE batch")
    parser.add_argument("--max-epochs", type=int, default=100_000)
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="config override (repeatable)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        if args.every < 1 or args.minutes <= 0:
            raise PyrovaeError("--every must be >= 1 and --minutes > 0")
        cfg = load_config(args.config, [f"train.epochs={args.max_epochs}",
                                        "train.progress=false", *args.set])
        out = long_run(cfg, args.minutes, args.every, args.iwae_samples, args.limit, args.batch)
        out.update(config=args.config, overrides=args.set)
    except PyrovaeError as err:
        print(f"long_run: {err}", file=sys.stderr)
        return 2
    for t, hit in out["reached"].items():
        print(f"{t} nats: " + (f"epoch {hit['epoch']}, {hit['train_minutes']:.1f} training "
                              "minutes" if hit else "not reached"))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
