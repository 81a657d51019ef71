"""Time to nats: train a config under a budget of training minutes and measure the test
log-likelihood along the way, against Burda et al. (2015), Table 1.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/reproduce.py run \
        --config configs/burda_vae.yaml --minutes 120 --eval-at 15 30 60 90 120 \
        --run-dir runs/reproduce/burda_vae --json benchmarks/results/reproduce_burda_vae.json
    python benchmarks/reproduce.py plot benchmarks/results/reproduce_*.json \
        --out docs/figures/time_to_nats.png
    python benchmarks/reproduce.py table benchmarks/results/reproduce_*.json

``run`` is a ``pyrovae.fit`` run (checkpoint and metrics.csv after every epoch, in
``--run-dir``). The clock counts training only: the epochs' training seconds, without the
per-epoch validation/test ELBO and without the log-likelihood measurements. ``--clock cpu``
counts the process's CPU seconds instead of wall seconds: with ``OMP_NUM_THREADS=1`` that is the
time on one core, whatever else the machine runs (the JSON holds both clocks). When the clock
passes each ``--eval-at`` mark, training pauses: the model of that moment is saved
(``RUN_DIR/at_<minutes>min.pt``) and its test log-likelihood measured, the IWAE estimate with K
= ``--iwae-samples`` (5,000) samples per image (Burda et al. 2015, eq. 8) on the dynamically
binarized MNIST test set (binarized once with a fixed seed), all 10,000 images unless
``--images`` says fewer (a fixed random subset, the same for every mark and run). The JSON and
the curve are rewritten after every measurement, so a run stopped at any point keeps its curve.
With ``--background`` training does not pause: each mark's model is measured by a child process
(``evaluate``, ``--eval-threads`` threads, one model at a time) while training goes on, and its
point joins the curve when the child ends; the run waits for the last ones. On a 2-core CPU that
is one training thread with ``--clock cpu`` and the other core measuring all 10,000 images (about
28 minutes of one core per model). ``evaluate`` measures a saved model again (e.g. the last one
on all 10,000 images); ``compare`` measures two saved models on the same images and gives the
mean of the per-image differences with its standard error (a paired comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_json  # noqa: E402

from pyrovae import checkpoint, diagnostics, fit  # noqa: E402
from pyrovae.config import load_config  # noqa: E402
from pyrovae.errors import PyrovaeError  # noqa: E402
from pyrovae.files import atomic_save, atomic_write  # noqa: E402
from pyrovae.literature import BURDA_2015, burda_2015  # noqa: E402
from pyrovae.objectives import mean_stderr  # noqa: E402

#: Burda et al. (2015), Table 1: the reference lines of the curves (:mod:`pyrovae.literature`).
PUBLISHED = {f"{name} (Burda et al. 2015)": nats for name, nats in BURDA_2015.values()}
SUBSET_SEED = 2015
REPO = Path(__file__).resolve().parents[1]


def test_subset(x: torch.Tensor, images: int | None) -> torch.Tensor:
    """All test images, or a fixed random subset of ``images`` of them."""
    if images is None or images >= x.shape[0]:
        return x
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return x[torch.randperm(x.shape[0], generator=g)[:images].to(x.device)]


def per_image(vae, x: torch.Tensor, samples: int, batch: int) -> torch.Tensor:
    """The IWAE-``samples`` estimate of log p(x) of each image of ``x`` (a fixed seed), leaving
    the global random state as it was: a mark measured between epochs does not change the
    training noise that follows it."""
    vae.eval()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        return diagnostics.importance_sampling(vae, x, samples, batch_size=batch,
                                               psis_fit=False).log_likelihood


def log_likelihood(vae, x: torch.Tensor, samples: int, batch: int) -> dict:
    """Mean IWAE-``samples`` log p(x) over ``x``, with its standard error over images."""
    mean, se = mean_stderr(per_image(vae, x, samples, batch))
    return {"log_likelihood": mean, "stderr": se, "images": int(x.shape[0]),
            "iwae_samples": samples}


def test_images(vae, images: int | None) -> torch.Tensor:
    """The test images of the data ``vae`` was trained on (all, or the fixed subset)."""
    from pyrovae.fit import load_splits, resolve_device  # the run's own data, as trained on
    return test_subset(load_splits(vae.config, resolve_device("cpu")).test, images)


def measured_points(curve: list[dict]) -> list[dict]:
    """The points of a curve that hold their measurement (with ``--background``, the others are
    still being measured)."""
    return [p for p in curve if "log_likelihood" in p]


def reached(curve: list[dict]) -> dict:
    """For each published number: the first measurement at or below it (-log p(x)), or None."""
    return {name: next(({"train_minutes": p["train_minutes"], "epoch": p["epoch"]}
                        for p in measured_points(curve) if -p["log_likelihood"] <= nats), None)
            for name, nats in PUBLISHED.items()}


def run(args) -> dict:
    cfg = load_config(args.config, ["train.progress=false", f"run_dir={args.run_dir}", *args.set])
    r = fit.start(cfg)
    x = test_subset(r.splits.test, args.images)
    marks = sorted(args.eval_at)
    out = {"config": args.config, "overrides": args.set, "clock": args.clock,
           "minutes_budget": args.minutes, "device": str(r.splits.device),
           "threads": torch.get_num_threads(), "loss": cfg.train.loss,
           "num_particles": cfg.train.num_particles, "engine": cfg.train.engine,
           "epochs_scheduled": cfg.train.epochs, "epochs": [], "curve": []}
    clock = {"wall": 0.0, "cpu": 0.0}
    began = time.perf_counter()
    background = Background(args) if args.background else None

    def measured(points: list[dict]) -> None:
        for point in points:
            print(f"{point['train_minutes']:.1f} training minutes (epoch {point['epoch']}): test "
                  f"ELBO {point['test_elbo']:.2f}, log p(x) {point['log_likelihood']:.2f} "
                  f"± {point['stderr']:.2f} (IWAE-{point['iwae_samples']}, {point['images']} "
                  "images)", flush=True)
        if points:
            out["reached"] = reached(out["curve"])
            write_json(args.json, out)
            if args.plot:
                plot([out], args.plot)

    while r.epoch < cfg.train.epochs and clock[args.clock] < args.minutes * 60:
        if background:
            measured(background.finished())
        row = fit.run_epoch(r, log=lambda *_: None)
        clock["wall"] += row["seconds"]
        clock["cpu"] += row["cpu_seconds"]
        out["epochs"].append({"epoch": r.epoch, "train_minutes": clock[args.clock] / 60,
                              "test_elbo": row["test_elbo"], "lr": row["lr"]})
        done = r.epoch >= cfg.train.epochs or clock[args.clock] >= args.minutes * 60
        while marks and (clock[args.clock] >= marks[0] * 60 or done):
            mark = marks.pop(0)
            model = Path(args.run_dir) / f"at_{mark:g}min.pt"
            atomic_save({"model": r.vae.state_dict(), "config": r.state()["config"],
                         "x_shape": r.splits.x_shape}, model)
            point = {"mark_minutes": mark, "train_minutes": clock[args.clock] / 60,
                     "train_wall_minutes": clock["wall"] / 60,
                     "train_cpu_minutes": clock["cpu"] / 60, "epoch": r.epoch,
                     "test_elbo": row["test_elbo"],
                     "elapsed_minutes": (time.perf_counter() - began) / 60}
            out["curve"].append(point)
            if background:
                background.submit(point, model)
                write_json(args.json, out)
            else:
                point.update(log_likelihood(r.vae, x, args.iwae_samples, args.batch))
                measured([point])
                r.vae.train()
            if done:  # the model of the end: measured once, for the first mark not yet reached
                break
        if done:
            break
    if background:
        measured(background.finished(wait=True))
    write_json(args.json, out)
    return out


class Background:
    """The marks' log-likelihoods measured by a child process (``reproduce.py evaluate``, with
    ``--eval-threads`` threads) while training goes on, one model at a time in the order of the
    marks; each point of the curve gets its measurement when the child ends (its output in
    ``RUN_DIR/at_<minutes>min.log``). The run waits for the last ones when training ends."""

    def __init__(self, args):
        self.args = args
        self.queue: list[tuple[dict, Path]] = []
        self.running: tuple[dict, Path, subprocess.Popen] | None = None

    def command(self, model: Path) -> list[str]:
        a = self.args
        return [sys.executable, str(Path(__file__).resolve()), "evaluate", str(model),
                "--iwae-samples", str(a.iwae_samples), "--batch", str(a.batch),
                "--json", str(model.with_suffix(".json")),
                *(["--images", str(a.images)] if a.images else [])]

    def submit(self, point: dict, model: Path) -> None:
        self.queue.append((point, model))
        self._start()

    def _start(self) -> None:
        if self.running is None and self.queue:
            point, model = self.queue.pop(0)
            env = {**os.environ, "OMP_NUM_THREADS": str(self.args.eval_threads)}
            with open(model.with_suffix(".log"), "w") as log:
                child = subprocess.Popen(self.command(model), env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
            self.running = (point, model, child)

    def finished(self, wait: bool = False) -> list[dict]:
        """The points whose measurement has ended since the last call (all, with ``wait``)."""
        done = []
        while self.running is not None:
            point, model, child = self.running
            if (child.wait() if wait else child.poll()) is None:
                break
            self.running = None
            if child.returncode != 0:
                lines = model.with_suffix(".log").read_text().strip().splitlines() or [""]
                raise PyrovaeError(f"measuring {model} in the background failed ({lines[-1]}); "
                                   f"its output is in {model.with_suffix('.log')}")
            result = json.loads(model.with_suffix(".json").read_text())
            point.update({k: v for k, v in result.items() if k != "model"})
            done.append(point)
            self._start()
        return done


def evaluate(args) -> dict:
    """Measure a saved model; with ``--append-to``, add it to a run's curve as the point where
    the run was stopped (its training minutes from the checkpoint's per-epoch metrics)."""
    vae = checkpoint.load(args.model)
    x = test_images(vae, args.images)
    result = {"model": str(args.model), **log_likelihood(vae, x, args.iwae_samples, args.batch)}
    print(json.dumps(result))
    write_json(args.json, result)
    if args.append_to:
        res = json.loads(Path(args.append_to).read_text())
        rows = checkpoint.read(args.model).get("metrics", [])
        if not rows or "cpu_seconds" not in rows[-1]:
            raise PyrovaeError(f"{args.model} holds no per-epoch training times: pass a "
                               "checkpoint.pt written by a run")
        wall = sum(r["seconds"] for r in rows) / 60
        cpu = sum(r["cpu_seconds"] for r in rows) / 60
        res["curve"].append({
            "mark_minutes": None, "train_minutes": cpu if res["clock"] == "cpu" else wall,
            "train_wall_minutes": wall, "train_cpu_minutes": cpu, "epoch": len(rows),
            "test_elbo": rows[-1]["test_elbo"], **result, "elapsed_minutes": None,
            "note": "the run's last checkpoint, measured after the run was stopped"})
        res["reached"] = reached(res["curve"])
        write_json(args.append_to, res)
        if args.plot:
            plot([res], args.plot)
    return result


def compare(args) -> dict:
    """Two saved models on the same test images: the mean over images of the difference of
    their IWAE log p(x) (the second's minus the first's) with its standard error, a paired
    comparison, much tighter than the difference of two separately measured means."""
    vaes = [checkpoint.load(m) for m in (args.first, args.second)]
    datasets = [(v.config.data.name, v.config.data.binarize) for v in vaes]
    if datasets[0] != datasets[1]:
        raise PyrovaeError(f"the two models were trained on different data ({datasets[0]} and "
                           f"{datasets[1]}): compare models of one dataset")
    x = test_images(vaes[0], args.images)
    first, second = (per_image(v, x, args.iwae_samples, args.batch) for v in vaes)
    difference, se = mean_stderr(second - first)
    result = {"first": str(args.first), "second": str(args.second),
              "first_log_likelihood": first.mean().item(),
              "second_log_likelihood": second.mean().item(),
              "difference": difference, "stderr": se,
              "images": int(x.shape[0]), "iwae_samples": args.iwae_samples}
    print(json.dumps(result))
    write_json(args.json, result)
    return result


#: What each ``--clock`` counts, in the plot and the table.
CLOCKS = {"cpu": "CPU time of one core", "wall": "wall"}


def plot(results: list[dict], path: str | Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    clocks = {res.get("clock", "wall") for res in results}  # one clock: on the axis; else each
    for i, res in enumerate(results):
        pts = measured_points(res["curve"])
        if not pts:
            continue
        train = load_config(REPO / res["config"], res["overrides"]).train  # its schedule
        label = (f"{res['loss']} k={res['num_particles']}, {train.schedule} schedule from lr "
                 f"{train.lr:g} over {train.epochs} epochs ({res['engine']}, {res['threads']} "
                 f"thread{'s' if res['threads'] > 1 else ''}"
                 f"{'' if len(clocks) == 1 else ', ' + CLOCKS[res.get('clock', 'wall')]})")
        # points on a subset of the test images make the curve; those on all 10,000 (the last
        # model, measured again) are drawn apart as stars, as they average other images
        color = f"C{i}"
        subset = [p for p in pts if p["images"] < 10000]
        for part, fmt in ((subset, "o-"), ([p for p in pts if p not in subset], "*")):
            if part:
                ax.errorbar([p["train_minutes"] for p in part],
                            [-p["log_likelihood"] for p in part],
                            yerr=[p["stderr"] for p in part], fmt=fmt, capsize=3, color=color,
                            markersize=11 if fmt == "*" else 5,
                            label=f"{label}: {part[0]['images']:,} test images")
    for name, nats in PUBLISHED.items():
        ax.axhline(nats, ls="--", lw=1, color="grey")
        ax.text(ax.get_xlim()[0], nats, " " + name, va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("training minutes" + (f" ({CLOCKS[clocks.pop()]})" if len(clocks) == 1 else
                                         " (each curve's clock in its label)"))
    ax.set_ylabel("test -log p(x), IWAE-5000 (nats)")
    ax.set_title("Time to nats: one-stochastic-layer VAE on dynamically binarized MNIST")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def run_command(res: dict) -> str:
    """The ``run`` command of a result (its marks and images read from its curve; the run folder
    and the JSON named DIR and JSON), with the ``evaluate`` that measured its last model on more
    images, if one did."""
    marks = [p for p in res["curve"] if p.get("mark_minutes") is not None]
    images = marks[0]["images"] if marks else 10000
    command = (f"reproduce.py run --config {res['config']} --clock {res['clock']} --minutes "
               f"{res['minutes_budget']:g} --eval-at "
               + " ".join(f"{p['mark_minutes']:g}" for p in marks)
               + (f" --images {images}" if images < 10000 else "")
               + "".join(f" --set {s}" for s in res["overrides"]) + " --run-dir DIR --json JSON")
    if any(p.get("mark_minutes") is None and "log_likelihood" in p for p in res["curve"]):
        command += "; reproduce.py evaluate DIR/version_0/checkpoint.pt --append-to JSON"
    return command


def table(results: list[dict]) -> str:
    """The reproduction table: each run's last measurement beside Burda et al.'s number."""
    lines = ["| paper (Burda et al. 2015, Table 1) | pyrovae: test -log p(x), IWAE-5000 | "
             "training minutes | hardware | command |", "|---|---|---|---|---|"]
    for res in results:
        done = measured_points(res["curve"])
        if not done:
            continue
        last = done[-1]
        row = burda_2015(res["loss"], res["num_particles"])
        paper = (f"{row[0]}: {row[1]:.2f}" if row else
                 f"{res['loss']}, k = {res['num_particles']} (not quoted here)")
        clock = CLOCKS[res["clock"]]
        hardware = (f"{res['device']}, {res['threads']} thread"
                    f"{'s' if res['threads'] > 1 else ''}")
        lines.append(
            f"| {paper} | {-last['log_likelihood']:.2f} ± {last['stderr']:.2f} "
            f"(`{res['loss']}`; {last['images']:,} test images) | "
            f"{last['train_minutes']:.1f} ({clock}; "
            f"epoch {last['epoch']}) | {hardware} | `{run_command(res)}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train under a budget and measure the curve")
    r.add_argument("--config", required=True)
    r.add_argument("--minutes", type=float, required=True, help="training minutes at most")
    r.add_argument("--eval-at", type=float, nargs="+", required=True, metavar="MINUTES")
    r.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    r.add_argument("--run-dir", required=True)
    r.add_argument("--set", action="append", default=[], metavar="key=value")
    r.add_argument("--plot", help="also draw this run's curve here")
    r.add_argument("--background", action="store_true",
                   help="measure the marks in a child process while training goes on")
    r.add_argument("--eval-threads", type=int, default=1,
                   help="with --background: the child's threads (OMP_NUM_THREADS)")
    e = sub.add_parser("evaluate", help="measure a saved model (at_<minutes>min.pt)")
    e.add_argument("model")
    e.add_argument("--append-to", metavar="RUN_JSON",
                   help="add the model (a run's checkpoint.pt) to that run's curve")
    e.add_argument("--plot", help="with --append-to: redraw that run's curve here")
    c = sub.add_parser("compare", help="two saved models on the same test images, paired")
    c.add_argument("first")
    c.add_argument("second")
    for p in (r, e, c):
        p.add_argument("--iwae-samples", type=int, default=5000)
        p.add_argument("--images", type=int, default=None, help="a fixed random subset")
        p.add_argument("--batch", type=int, default=100, help="test images per IWAE batch")
        p.add_argument("--json")
    pl = sub.add_parser("plot", help="draw the curves of several runs' JSON files")
    pl.add_argument("results", nargs="+")
    pl.add_argument("--out", required=True)
    tb = sub.add_parser("table", help="print the reproduction table of several runs' JSON files")
    tb.add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        if args.command == "run":
            if args.minutes <= 0 or min(args.eval_at) <= 0 or args.eval_threads < 1:
                raise PyrovaeError("--minutes and every --eval-at mark must be > 0, "
                                   "--eval-threads >= 1")
            run(args)
        elif args.command == "evaluate":
            evaluate(args)
        elif args.command == "compare":
            compare(args)
        elif args.command == "plot":
            plot([json.loads(Path(f).read_text()) for f in args.results], args.out)
        else:
            print(table([json.loads(Path(f).read_text()) for f in args.results]))
    except PyrovaeError as err:
        print(f"reproduce: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
