"""Does ``train.precision=bfloat16`` keep the ELBO within 0.1 nat of float32? Measured, paired.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/precision.py --seeds 4 \
        --json benchmarks/results/precision_cpu.json

For each seed, the config is trained twice with ``pyrovae.fit``, once per precision, from the
same initial weights, minibatch order and binarization (the seed fixes them all); each final
model's test ELBO (beta = 1, closed-form KL) is then computed in float32 with the same
``--particles`` noise. The paired differences bfloat16 - float32 over seeds give a mean and a
standard error. A second, evaluation-only number isolates the arithmetic: the float32-trained
model's test ELBO computed under autocast minus the same in float32, same noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_json  # noqa: E402

from pyrovae import fit, objectives  # noqa: E402
from pyrovae.config import CONFIG_DIR, load_config  # noqa: E402
from pyrovae.optim import autocast  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


def heldout_elbo(run: fit.Run, particles: int, precision: str = "float32") -> float:
    """The test ELBO of ``run``'s final model with fixed noise, the arithmetic in ``precision``."""
    torch.manual_seed(123)
    run.vae.eval()
    with torch.no_grad(), autocast(run.splits.device, precision):
        return objectives.dataset_elbo(run.vae, run.splits.test, num_particles=particles)["elbo"]


def train(config: Path, seed: int, precision: str, overrides: list[str], tmp: str) -> fit.Run:
    cfg = load_config(config, [f"train.seed={seed}", f"train.precision={precision}",
                               "train.progress=false", f"run_dir={tmp}/{seed}-{precision}",
                               *overrides])
    return fit.train(fit.start(cfg), log=lambda *_: None)


def measure(config: Path, seeds: int, particles: int, overrides: list[str]) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            row: dict = {"seed": seed}
            for precision in PRECISIONS:
                began = time.perf_counter()
                run = train(config, seed, precision, overrides, tmp)
                row[precision] = {
                    "test_elbo": heldout_elbo(run, particles),
                    "train_seconds": sum(m["seconds"] for m in run.metrics),
                    "wall_seconds": time.perf_counter() - began,
                }
                if precision == "float32":
                    row["eval_only_difference"] = (heldout_elbo(run, particles, "bfloat16")
                                                   - row[precision]["test_elbo"])
            row["difference"] = row["bfloat16"]["test_elbo"] - row["float32"]["test_elbo"]
            rows.append(row)
            print(f"seed {seed}: float32 {row['float32']['test_elbo']:.3f}, bfloat16 "
                  f"{row['bfloat16']['test_elbo']:.3f}, difference {row['difference']:+.3f} "
                  f"nats (evaluation only {row['eval_only_difference']:+.4f})", flush=True)
    diffs = [r["difference"] for r in rows]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return {"config": config.name, "overrides": overrides, "particles": particles,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows,
            "mean_difference": statistics.mean(diffs), "se_difference": se,
            "mean_eval_only_difference": statistics.mean(r["eval_only_difference"]
                                                         for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG_DIR / "mnist_fc400_z20.yaml"))
    parser.add_argument("--seeds", type=int, default=4, help="paired runs (default 4)")
    parser.add_argument("--particles", type=int, default=10, help="test ELBO particles")
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="config override for both precisions (repeatable)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    out = measure(Path(args.config), args.seeds, args.particles, args.set)
    print(f"bfloat16 - float32 test ELBO: {out['mean_difference']:+.3f} +- "
          f"{out['se_difference']:.3f} nats (mean +- SE over {args.seeds} paired seeds); "
          f"evaluation only: {out['mean_eval_only_difference']:+.4f} nats")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
