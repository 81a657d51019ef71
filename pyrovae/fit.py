"""``python -m pyrovae.fit``: train a VAE from a config with Pyro (SVI or its recorded step).

    python -m pyrovae.fit                                   # a new run: runs/mnist/version_N
    python -m pyrovae.fit --config configs/mnist_vamp.yaml train.epochs=3 run_dir=runs/vamp
    python -m pyrovae.fit --resume runs/mnist               # continue its latest run
    python -m pyrovae.fit --resume runs/mnist/version_0     # continue this run
    torchrun --nproc_per_node=4 -m pyrovae.fit --config configs/mnist.yaml   # 4 ranks

Each run gets its own folder: ``run_dir`` (from the config) holds the config's runs,
``version_0``, ``version_1``, ... (the next free N; ``run_name=NAME`` for ``run_dir/NAME``), and
the text file ``latest`` naming the newest one; nothing of an earlier run is overwritten.
``--resume``, ``pyrovae.load``, ``evaluate``, ``generate`` and ``check --checkpoint`` take a run
folder or ``run_dir`` itself (its latest run; they say which). Every epoch writes
``checkpoint.pt`` atomically (model, optimizer, RNG states, config, epoch,
metrics), ``best.pt`` when the validation ELBO improves, and ``metrics.csv``; at the end the
figures ``samples.png``, ``reconstructions.png``, ``elbo.png``, ``interpolation.png`` (and
``manifold.png`` when z_dim = 2). A CPU run resumed after ``kill -9`` ends with the same numbers
as an uninterrupted run with the same seed.

Started by ``torchrun``, it trains one model data-parallel over the ranks
(:mod:`pyrovae.distributed`): ``train.batch_size`` is the global batch, each rank takes its part
of every global minibatch, and only rank 0 writes the run folder. The checkpoints are those of a
one-process run: ``--resume`` continues on any number of ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae import checkpoint, cli, distributed, objectives, plots, schedules, tracking
from pyrovae.config import (
    Config,
    apply_overrides,
    check_threads,
    from_dict,
    load_config,
    resolve_path,
    to_dict,
    to_yaml,
    validate,
)
from pyrovae.data import Splits, load_data
from pyrovae.errors import PyrovaeError
from pyrovae.files import check_writable
from pyrovae.model import VAE
from pyrovae.optim import SVIStepper, TorchStepper, make_stepper, resolve_engine

#: The columns of metrics.csv. ``train_objective`` is the training objective per example, as
#: optimized: the beta-weighted ELBO (beta < 1 during warm-up) or the IWAE bound, averaged over
#: the epoch's minibatches while the weights change; ``valid_elbo`` and ``test_elbo`` are the
#: ELBO (beta = 1) of the model at the end of the epoch.
METRICS = ("epoch", "train_objective", "valid_elbo", "test_elbo", "kl", "recon", "beta", "lr",
           "seconds")


def resolve_device(name: str, key: str = "train.device=") -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU; ``cuda`` without one is an error
    naming the setting ``key`` (``train.device=``, or a command's ``--device ``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PyrovaeError(f"{key}{name} but no CUDA GPU is available: use {key}auto or "
                           f"{key}cpu")
    return torch.device(name)


def load_splits(cfg: Config, device: torch.device,
                ctx: distributed.Context | None = None) -> Splits:
    """The run's data on ``device``; under torchrun, this rank's shards (loaded in host memory
    by rank 0 first, then by the others, so that a shared cache is filled once)."""
    d = cfg.data
    valid_size = d.valid_size  # >= 1: a number of examples; < 1: a fraction
    if valid_size is not None and valid_size >= 1:
        valid_size = int(valid_size)

    def load(device: torch.device | str) -> Splits:
        return load_data(
            d.name, root=resolve_path(d.root), mirror=d.mirror, path=d.path, limit=d.limit,
            binarize=d.binarize, valid_size=valid_size, device=device,
        )  # folder/npy data: one fixed shuffle (load_data's seed), whatever train.seed

    if ctx is None:
        return load(device)
    splits = distributed.shard_splits(ctx, ctx.rank0_first(lambda: load("cpu")), device)
    distributed.check_batch(ctx, cfg.train.batch_size, splits.train.shape[0])
    return splits


def data_source(cfg: Config) -> str:
    """Where the run's data comes from, in words: the mirror and how it was given, the cache."""
    d = cfg.data
    if d.name in ("folder", "npy"):
        return f"{d.name} {resolve_path(d.path).resolve()}"
    from pyrovae.data.cache import cache_root, env_mirror_note, resolve_mirror

    mirror = resolve_mirror(d.mirror)
    root = cache_root(resolve_path(d.root), mirror)
    if mirror is None:
        note = env_mirror_note()
        return (f"{d.name} from the cache {root} (downloaded by torchvision if missing"
                + (f"; {note})" if note else ")"))
    how = "data.mirror" if d.mirror else "PYROVAE_DATA_MIRROR"
    return f"{d.name} from the mirror {mirror.resolve()} ({how}), cached in {root}"


def cpu_count() -> int:
    """The cores this process may run on."""
    return len(_affinity())


def _cpu_times(cpus: set[int]) -> tuple[float, float] | None:
    """Idle and total time of ``cpus`` since boot (``/proc/stat``, in clock ticks), or None
    where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle, total = idle + ticks[3] + ticks[4], total + sum(ticks)
    return (idle, total) if total > 0 else None


def busy_cores(window: float = 0.5) -> tuple[float, str] | None:
    """How many of this process's cores other processes keep busy now, and how it was measured:
    the cores' non-idle share over ``window`` seconds (``/proc/stat``, while this process
    sleeps) times their number; where there is no ``/proc/stat``, the 1-minute load average
    (which lags: it still counts a run that ended a minute ago); None where neither exists."""
    cpus = _affinity()
    before = _cpu_times(cpus)
    if before is not None:
        time.sleep(window)
        after = _cpu_times(cpus)
        if after is not None and after[1] > before[1]:
            idle = (after[0] - before[0]) / (after[1] - before[1])
            return len(cpus) * min(1.0, max(0.0, 1.0 - idle)), f"over {window:g} s"
    try:
        return os.getloadavg()[0], "1-minute load average"
    except (AttributeError, OSError):
        return None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def choose_threads(setting, saved: int | None = None, log=print) -> int:
    """Set torch's CPU threads for a run and return how many it uses.

    ``train.threads=N`` is kept as given; with ``auto`` (the default) an ``OMP_NUM_THREADS``
    the user set is kept; a resumed run keeps the count it was started with (so that it
    repeats bit for bit); otherwise, when other processes keep some cores busy
    (:func:`busy_cores`), it uses only the idle ones (at least 1): torch's threads wait for
    each other at every operation, so on 2 cores shared with one busy process an MNIST epoch
    took 21.4 s with 2 threads and 7.5 s with 1 (BENCHMARKS.md). It logs what it chose when
    that is not torch's default."""
    requested = check_threads(setting)
    default = torch.get_num_threads()
    if requested is not None:
        n, why = requested, "train.threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        return default  # the user's choice, which torch already follows
    elif saved is not None:
        n, why = int(saved), "as when the run started, so that it repeats exactly"
    else:
        measured = busy_cores()
        if measured is None:
            return default
        busy, how = measured
        cores = cpu_count()
        n = max(1, min(default, int(cores - busy + 0.5)))
        why = (f"auto: other processes keep {busy:.1f} of {cores} cores busy ({how}); "
               "set train.threads=N or OMP_NUM_THREADS to choose")
    if n != default:
        torch.set_num_threads(n)
        log(f"threads: {n} of {default} ({why})")
    return n


def _run_device(cfg: Config, ctx: distributed.Context | None) -> torch.device:
    if ctx is None:
        return resolve_device(cfg.train.device)
    ctx.device = ctx.agree(lambda: distributed.device(ctx, cfg.train.device))
    return ctx.device


def _on_main(ctx: distributed.Context | None, fn) -> None:
    """``fn()`` in a one-process run; under torchrun on rank 0 alone (the run folder's only
    writer), its errors raised on every rank."""
    if ctx is None:
        fn()
    else:
        ctx.agree(fn if ctx.main else lambda: None)


def _all(ctx: distributed.Context | None, fn):
    """``fn()``, its errors raised on every rank under torchrun."""
    return fn() if ctx is None else ctx.agree(fn)


def check_data(vae: VAE, splits: Splits) -> None:
    """Check the data against the model once, up front (shape, finiteness, support), so that
    the training steps can skip the per-batch checks. Dynamically binarized training data is
    checked as it will be seen: binarized."""
    for name, x in (("train", splits.train), ("validation", splits.valid),
                    ("test", splits.test)):
        if name == "train" and splits.binarize == "dynamic":
            x = torch.bernoulli(x[:1000].to(splits.device).clamp(0, 1))
        try:
            vae.check(x)
        except PyrovaeError as err:
            raise PyrovaeError(f"{splits.name} {name} data: {err}") from None


@dataclass
class Run:
    """The state of a training run: everything a checkpoint holds, live."""

    cfg: Config
    run_dir: Path
    splits: Splits
    vae: VAE
    stepper: SVIStepper | TorchStepper
    generator: torch.Generator
    epoch: int = 0
    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    best_valid: float = -math.inf
    threads: int = 0  # CPU threads it runs with (saved: a resumed run keeps them)
    origin: str = ""  # how the run folder was chosen, for the log
    dist: distributed.Context | None = None  # under torchrun
    loss_module: distributed.LossModule | None = None  # its loss, wrapped by DDP
    tensorboard: tracking.TensorBoard | None = None  # train.tensorboard=true, rank 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder (always, but for ranks > 0 of torchrun)."""
        return self.dist is None or self.dist.main

    @property
    def lr(self) -> float:
        """The learning rate of the current epoch under ``train.schedule``."""
        t = self.cfg.train
        return schedules.learning_rate(t.schedule, t.lr, self.epoch, t.epochs, t.lr_decay)

    def beta(self, i: int, steps_per_epoch: int) -> float:
        """KL weight at step ``i`` of this epoch: rises linearly to ``train.beta`` over
        ``train.warmup_epochs``, by the share of the epochs done (counted after the step:
        Pyro cannot scale a site by 0). Measured in epochs, not steps, so that a run resumed
        with another batch size continues its ramp where it stopped."""
        warmup = self.cfg.train.warmup_epochs
        done = self.epoch + (i + 1) / steps_per_epoch
        ramp = 1.0 if warmup <= 0 else min(1.0, done / warmup)
        return self.cfg.train.beta * ramp

    def state(self) -> dict:
        return {
            "model": self.vae.state_dict(),
            "optim": self.stepper.state_dict(),
            "rng": checkpoint.rng_state(self.generator),
            "config": to_dict(self.cfg),
            "x_shape": self.splits.x_shape,
            "epoch": self.epoch,
            "step": self.step,
            "metrics": self.metrics,
            "best_valid": self.best_valid,
            "device": str(self.splits.device),
            "threads": self.threads,
        }

    def save(self) -> None:
        checkpoint.atomic_save(self.state(), self.run_dir / checkpoint.CHECKPOINT)

    def save_best(self) -> None:
        best = {k: v for k, v in self.state().items() if k not in ("optim", "rng")}
        checkpoint.atomic_save(best, self.run_dir / checkpoint.BEST)


def check_run_parent(parent: Path, run_name: str | None = None) -> None:
    """Refuse, before any work, a ``run_dir`` where a new run folder cannot go: a file, a run
    folder itself, or a ``run_name`` folder that already holds a run."""
    if parent.exists() and not parent.is_dir():
        raise PyrovaeError(f"run_dir {parent} is a file, not a folder: choose another "
                           "run_dir=... (runs go into run_dir/version_N)")
    above = next((p for p in parent.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise PyrovaeError(f"cannot create a run folder in {parent}: {above} is a file; choose "
                           "another run_dir=...")
    if checkpoint.holds_run(parent):
        raise PyrovaeError(
            f"run_dir {parent} is itself a run folder (it holds {checkpoint.CHECKPOINT}): new "
            f"runs go into run_dir/version_N, so choose another run_dir=... (such as "
            f"{parent.parent}), or continue this run with --resume {parent}")
    latest = parent / checkpoint.LATEST
    if latest.exists() and not checkpoint.is_latest_file(latest):
        raise PyrovaeError(f"{latest} is not pyrovae's pointer to the latest run (a one-line "
                           "file naming a run folder beside it) and would be replaced: move it, "
                           "or choose another run_dir=...")
    if run_name is not None:
        folder = parent / run_name
        if folder.exists() and not folder.is_dir():
            raise PyrovaeError(f"{folder} is a file: choose another run_name=...")
        if checkpoint.holds_run(folder):
            raise PyrovaeError(f"{folder} already holds a run: continue it with --resume "
                               f"{folder}, or choose another run_name=... (or none: a new "
                               f"{parent}/version_N)")
        if folder.is_dir() and any(folder.iterdir()):
            raise PyrovaeError(f"{folder} already holds files, which a run would replace: "
                               "choose another run_name=..., or move them")


def new_run_folder(parent: Path, run_name: str | None = None) -> Path:
    """Create and return the new run's folder: ``parent/run_name``, or ``parent/version_N``
    with the next free N (``mkdir`` without ``exist_ok``: two runs started at once get two
    folders). A ``run_name`` folder may exist empty, so a run claims it by creating its first
    file, ``config.yaml``, exclusively: of two runs started at once with one name, one gets
    the folder and the other a one-line error."""
    check_run_parent(parent, run_name)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if run_name is not None:
            folder = parent / run_name
            folder.mkdir(exist_ok=True)
            try:
                (folder / checkpoint.CONFIG).open("x").close()  # replaced by write_config
            except FileExistsError:
                raise PyrovaeError(f"{folder} was taken by another run started at the same "
                                   "time: choose another run_name=...") from None
            return folder
        n = 1 + max((checkpoint.version_number(p) for p in parent.iterdir()), default=-1)
        while True:
            folder = parent / f"version_{n}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                n += 1
    except OSError as err:
        raise PyrovaeError(f"cannot create a run folder in {parent} ({err.strerror or err}): "
                           "choose another run_dir=...") from None


def start(cfg: Config, ctx: distributed.Context | None = None, log=print) -> Run:
    """A new run in a new folder, ``run_dir/version_N`` (or ``run_dir/run_name``), which
    ``run_dir/latest`` then names; a folder that holds a run is never written into."""
    parent = resolve_path(cfg.run_dir)
    _on_main(ctx, lambda: check_run_parent(parent, cfg.run_name))
    threads = choose_threads(cfg.train.threads, log=log if ctx is None or ctx.main else _silent)
    pyro.set_rng_seed(cfg.train.seed)
    device = _run_device(cfg, ctx)
    splits = load_splits(cfg, device, ctx)
    vae = checkpoint.build(cfg, splits.x_shape).to(device)
    _all(ctx, lambda: check_data(vae, splits))
    if cfg.model.output_bias == "data_mean":
        vae.set_output_bias_to_mean(splits.train.mean(0))
    steps = _all(ctx, lambda: stepper(cfg, vae))

    def make_folder() -> str:
        folder = new_run_folder(parent, cfg.run_name)
        try:
            write_config(folder, cfg)
        except BaseException:  # release the folder: an empty claim would block its run_name
            with contextlib.suppress(OSError):
                (folder / checkpoint.CONFIG).unlink(missing_ok=True)
                folder.rmdir()  # only if empty: a run_name folder may have existed before
            raise
        return str(folder)

    if ctx is None:
        run_dir = Path(make_folder())
    else:
        run_dir = Path(ctx.broadcast(ctx.agree(make_folder if ctx.main else lambda: None)))
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
    run = Run(cfg, run_dir, splits, vae, steps, generator, threads=threads,
              origin=f"new; {parent / checkpoint.LATEST} names it", dist=ctx)
    _data_parallel(run)
    # epoch 0: a checkpoint exists from the start, so Ctrl-C always leaves one
    _on_main(ctx, run.save)
    _on_main(ctx, lambda: checkpoint.write_latest(parent, run_dir))
    return run


#: What a resumed run keeps: its data (the splits, whose validation set ``best.pt`` was chosen
#: on), its model and its folder. Where the data is read from may change (the same data), and
#: so may ``data.limit``, which takes the first N training examples after the split.
KEPT_ON_RESUME = ("data.", "model.", "run_dir", "run_name")
MOVABLE_ON_RESUME = ("data.root", "data.mirror", "data.path", "data.limit")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume(saved: Config, cfg: Config) -> None:
    """Refuse, in one line, overrides that a resumed run cannot take: another dataset, split,
    model or run folder (the checkpoint's weights and the validation set of ``best.pt`` belong
    to them), or a switch between ``svi`` and the torch engines (Pyro's optimizer state and
    torch's are stored differently)."""
    old, new = _flat(to_dict(saved)), _flat(to_dict(cfg))
    for key in sorted(set(old) | set(new)):
        if key.startswith(KEPT_ON_RESUME) and key not in MOVABLE_ON_RESUME \
                and old.get(key) != new.get(key):
            raise PyrovaeError(
                f"cannot resume with {key}={new.get(key)!r}: the run was trained with "
                f"{key}={old.get(key)!r}, and a resumed run keeps its data, model and folder; "
                "drop the override, or start a new run with python -m pyrovae.fit"
            )
    engines = saved.train.engine, cfg.train.engine
    if (engines[0] == "svi") != (engines[1] == "svi"):
        others = "train.engine=torch, traced, compiled or auto" if engines[0] != "svi" \
            else "train.engine=svi"
        raise PyrovaeError(
            f"train.engine={engines[1]} cannot continue a run trained with "
            f"train.engine={engines[0]}: Pyro's optimizer state and torch's are stored "
            f"differently; resume with {others}"
        )


def write_config(folder: Path, cfg: Config) -> None:
    """The run's effective config, ``config.yaml``, headed by where its data comes from."""
    header = f"# data_source: {data_source(cfg)}\n"
    checkpoint.atomic_write_text(header + to_yaml(cfg), folder / checkpoint.CONFIG)


def _restore(steps: SVIStepper | TorchStepper, generator: torch.Generator, state: dict,
             path: Path) -> None:
    """The saved optimizer and random states, or a one-line error naming the damaged part."""
    errors = (KeyError, ValueError, TypeError, RuntimeError, AttributeError)
    try:
        steps.load_state_dict(state["optim"])
    except errors as err:
        raise PyrovaeError(f"{path}: its optimizer state does not fit the model "
                           f"({type(err).__name__}); the file is damaged, start a new run") \
            from None
    try:
        checkpoint.set_rng_state(state["rng"], generator)
    except errors as err:
        raise PyrovaeError(f"{path}: its random states are damaged ({type(err).__name__}); "
                           "start a new run") from None


def resume(run_dir: str | Path, overrides: list[str] | tuple = (),
           ctx: distributed.Context | None = None, log=print) -> Run:
    """The run saved in ``run_dir``, at the end of its last completed epoch: a run folder, its
    ``checkpoint.pt``, or the folder above the runs (its latest run; ``Run.origin`` says so).
    Overrides (such as ``train.epochs=20`` to train longer) apply on top of the saved config.
    Under torchrun rank 0 reads the checkpoint and sends it to the others, with any number of
    ranks."""

    def read() -> tuple[dict, str, str]:
        try:
            folder, note = checkpoint.resolve_run(run_dir)
        except PyrovaeError as err:
            raise PyrovaeError(f"nothing to resume: {err}") from None
        if folder.is_file():  # a checkpoint file: its run folder
            folder = folder.parent
        path = folder / checkpoint.CHECKPOINT
        if not path.is_file():
            raise PyrovaeError(f"nothing to resume: {path} does not exist (start a new run "
                               "with python -m pyrovae.fit)")
        state = checkpoint.read(path)
        checkpoint.check_resumable(state, path)
        return state, str(folder), note or ""

    if ctx is None:
        state, folder, note = read()
    else:
        state, folder, note = ctx.broadcast(ctx.agree(read if ctx.main else lambda: None))
    run_dir = Path(folder)
    _on_main(ctx, lambda: check_writable(run_dir, "a resumed run writes its checkpoints there; "
                                         "make it writable, or copy the run folder and resume "
                                         "the copy"))
    saved = _all(ctx, lambda: from_dict(state["config"]))
    cfg = _all(ctx, lambda: apply_overrides(saved, overrides))
    _all(ctx, lambda: check_resume(saved, cfg))
    threads = choose_threads(cfg.train.threads, saved=state.get("threads"),
                             log=log if ctx is None or ctx.main else _silent)
    device = _run_device(cfg, ctx)
    splits = load_splits(cfg, device, ctx)
    path = run_dir / checkpoint.CHECKPOINT
    vae = _all(ctx, lambda: checkpoint.build_trained(cfg, state, path)).to(device)
    _all(ctx, lambda: check_data(vae, splits))
    steps = _all(ctx, lambda: stepper(cfg, vae))
    generator = torch.Generator(device=device)
    _all(ctx, lambda: _restore(steps, generator, state, path))  # a damaged file: one line
    moved = torch.device(state.get("device", "cpu")).type != device.type
    if moved and (ctx is None or ctx.main):
        log(f"note: the run was trained on {state.get('device')} and continues on {device}: the "
            "same model and optimizer, but other random streams, so its numbers will not be "
            "those of an uninterrupted run")
    if ctx is not None and device.type == "cuda" and "cuda" in state["rng"] and not moved:
        # every rank continues the random stream of the device that saved the run
        saved = torch.device(state.get("device", "cuda:0")).index or 0
        torch.cuda.set_rng_state(state["rng"]["cuda"][saved], device=device)
    run = Run(cfg, run_dir, splits, vae, steps, generator, state["epoch"], state["step"],
              list(state["metrics"]), state["best_valid"], threads=threads,
              origin=f"resumed: {note}" if note else "resumed", dist=ctx)
    _data_parallel(run)
    _on_main(ctx, lambda: write_config(run_dir, cfg))  # the overrides included
    return run


def _data_parallel(run: Run) -> None:
    """Under torchrun, average the stepper's gradients over the ranks."""
    if run.dist is not None:
        run.loss_module = distributed.data_parallel(run.dist, run.stepper, run.cfg.train.engine)


def stepper(cfg: Config, vae: VAE) -> SVIStepper | TorchStepper:
    t = cfg.train
    return make_stepper(t.engine, vae, t.loss, t.num_particles, t.lr, t.clip_norm, t.precision,
                        t.adam_eps, t.cuda_graphs)


def train_epoch(run: Run) -> dict:
    """One pass over the shuffled training set; returns the epoch's row of metrics."""
    cfg, vae, n = run.cfg, run.vae, run.splits.train.shape[0]
    steps = math.ceil(n / cfg.train.batch_size)
    vae.train()  # the data was checked once (check_data); the engines step without checks
    total, began, cpu = 0.0, time.perf_counter(), time.process_time()
    bar = tqdm(total=steps, desc=f"epoch {run.epoch + 1}/{cfg.train.epochs}", leave=False,
               disable=None if cfg.train.progress and run.main else True, dynamic_ncols=True)
    if run.dist is None:
        batches = run.splits.train_batches(cfg.train.batch_size, run.generator)
    else:  # this rank's parts of the global minibatches
        batches = run.splits.train_parts(cfg.train.batch_size, run.generator)
    error = PyrovaeError if run.dist is None else distributed.AgreedError
    try:
        for i, batch in enumerate(batches):
            beta = run.beta(i, steps)
            if run.dist is None:
                loss = run.stepper.step(batch, n, beta)
            else:  # the global minibatch's loss, the same on every rank
                loss = distributed.train_step(run.dist, run.stepper, run.loss_module, batch, n,
                                              beta)
            if not math.isfinite(loss):
                raise error(
                    f"training diverged at epoch {run.epoch + 1}, step {i + 1} (loss {loss}): "
                    f"the last good checkpoint (epoch {run.epoch}) is kept in {run.run_dir}; "
                    "lower train.lr or set train.clip_norm, then start again"
                )
            run.step += 1
            total += loss
            if i % 10 == 0:
                bar.set_postfix(objective=f"{-total / (i + 1) / n:.2f}")
            bar.update()
    finally:
        bar.close()
    seconds = time.perf_counter() - began
    return {"train_objective": -total / steps / n, "beta": beta, "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu}


def evaluate_epoch(run: Run) -> dict:
    """Validation and test ELBO (beta = 1) in nats per example, the test KL and reconstruction."""
    vae, k, splits = run.vae, run.cfg.train.eval_particles, run.splits
    vae.eval()
    if run.dist is None:
        valid = objectives.dataset_elbo(vae, splits.valid, num_particles=k)
        test = objectives.dataset_elbo(vae, splits.test, num_particles=k)
    else:  # each rank's shard, the sums added over the ranks
        valid = distributed.dataset_elbo(run.dist, vae, splits.valid, splits.num_valid, k)
        test = distributed.dataset_elbo(run.dist, vae, splits.test, splits.num_test, k)
    return {"valid_elbo": valid["elbo"], "test_elbo": test["elbo"], "kl": test["kl"],
            "recon": test["recon"]}


def write_metrics(run: Run) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    for row in run.metrics:
        writer.writerow({k: row[k] for k in METRICS})
    checkpoint.atomic_write_text(out.getvalue(), run.run_dir / "metrics.csv")


def train(run: Run, log=print) -> Run:
    """Train ``run`` to ``train.epochs``, checkpointing after every epoch."""
    while run.epoch < run.cfg.train.epochs:
        run_epoch(run, log)
    return run


def run_epoch(run: Run, log=print) -> dict:
    """One epoch: train, evaluate, checkpoint (the best model too), write metrics.csv, log."""
    row = {"epoch": run.epoch + 1, "lr": run.lr}
    # this epoch's rate, set before it trains: a resumed run whose schedule changed (train.epochs,
    # train.lr, train.schedule) would otherwise take its first epoch at the saved rate
    run.stepper.set_lr(row["lr"])
    row.update(train_epoch(run))
    if run.dist is not None:  # the running statistics of the model that rank 0 saves
        distributed.sync_buffers(run.vae)
    row.update(evaluate_epoch(run))
    run.epoch += 1
    run.metrics.append(row)
    if row["valid_elbo"] > run.best_valid:
        run.best_valid = row["valid_elbo"]
        if run.main:
            run.save_best()
    if run.main:  # under torchrun rank 0 alone writes (every rank holds the same state)
        run.save()
        write_metrics(run)
        if run.cfg.train.tensorboard:
            if run.tensorboard is None:
                run.tensorboard = tracking.TensorBoard(run.run_dir, seed=run.cfg.train.seed)
            run.tensorboard.log_epoch(row, run.vae)
    log(f"epoch {row['epoch']:>3}: train objective {row['train_objective']:9.3f}  valid ELBO "
        f"{row['valid_elbo']:9.3f}  test ELBO {row['test_elbo']:9.3f}  (KL {row['kl']:.2f}, "
        f"recon {row['recon']:.2f}) nats/example, {row['seconds']:.1f} s")
    return row


def write_figures(run: Run) -> list[Path]:
    """The figures of the run's best model (by validation ELBO)."""
    vae = checkpoint.load(run.run_dir, device=run.splits.device)
    test, out = run.splits.test, run.run_dir
    if run.dist is not None:  # the whole test set, as a one-process run draws it
        test = run.splits.full_test.to(run.splits.device)
    paths = [
        plots.samples(vae, out / "samples.png", seed=run.cfg.train.seed),
        plots.reconstructions(vae, test, out / "reconstructions.png"),
        plots.elbo_curves(run.metrics, out / "elbo.png"),
    ]
    if test.shape[0] >= 2:  # a line between two test examples' codes
        paths.append(plots.interpolation(vae, test, out / "interpolation.png"))
    if vae.z_dim == 2:
        paths.append(plots.manifold(vae, out / "manifold.png"))
    return paths


def fit(cfg: Config | None = None, resume_dir: str | Path | None = None,
        overrides: list[str] | tuple = (), log=print,
        ctx: distributed.Context | None = None) -> Path:
    """Train a config (or resume a run) to the end and write its figures; returns the run folder.
    Under torchrun (``ctx``), every rank trains and rank 0 alone logs and writes."""
    threads = torch.get_num_threads()
    try:
        return _fit(cfg, resume_dir, overrides, log, ctx)
    finally:
        torch.set_num_threads(threads)  # a run's own choice ends with it


def _fit(cfg: Config | None, resume_dir: str | Path | None, overrides, log,
         ctx: distributed.Context | None) -> Path:
    if cfg is not None:
        validate(cfg)  # a Config built in Python has not been checked yet
    if (cfg is not None and cfg.train.tensorboard) or "train.tensorboard=true" in overrides:
        tracking.summary_writer_class()  # missing TensorBoard: say so before training
    if resume_dir:
        run = resume(resume_dir, overrides, ctx, log)
    else:
        run = start(cfg or load_config(), ctx, log)
    if not run.main:
        log = _silent
    engine = run.cfg.train.engine
    engine = resolve_engine(engine, run.splits.device) + (" (auto)" if engine == "auto" else "")
    log(f"pyrovae.fit: {run.cfg.data.name} {run.splits.x_shape}, {run.splits.train.shape[0]} "
        f"training examples on {run.splits.device}, loss {run.cfg.train.loss}, engine {engine}; "
        f"run folder {run.run_dir} ({run.origin}; epoch {run.epoch} of {run.cfg.train.epochs})")
    log(f"data_source: {data_source(run.cfg)}")
    if ctx is not None:
        b, w = run.cfg.train.batch_size, ctx.world_size
        log(f"data-parallel over {w} ranks ({dist_backend()}): train.batch_size={b} is the "
            f"global batch, {b // w} examples per rank per step")
    try:
        train(run, log)
    except KeyboardInterrupt:
        raise Interrupted(run.run_dir) from None
    finally:  # its event file closed (log_epoch flushed every epoch) and its thread ended
        if run.tensorboard is not None:
            run.tensorboard.close()
    if not run.main:
        return run.run_dir
    paths = write_figures(run)
    log("wrote " + ", ".join(p.name for p in paths) + f" and metrics.csv to {run.run_dir}")
    return run.run_dir


def _silent(*args) -> None:
    pass


def dist_backend() -> str:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else "none"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, with the folder of the run to resume."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class Stopped(Exception):
    """SIGTERM under torchrun: its agent stops the other ranks when one fails."""


def _stop(signum, frame) -> None:
    raise Stopped()


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(prog="python -m pyrovae.fit", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default configs/mnist.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR (a run folder, one of its .pt files, "
                        "or the folder above the runs: its latest run)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.epochs=3 model.prior=vamp")
    ctx = None
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help
            return exit_.code if isinstance(exit_.code, int) else 0
        if distributed.launched():
            ctx = distributed.init()
            signal.signal(signal.SIGTERM, _stop)
        if args.resume is not None and not args.resume.strip():
            raise PyrovaeError("--resume was given an empty path: name the run folder to "
                               "continue (or its run_dir)")
        if args.resume and args.config:
            raise PyrovaeError("--resume continues a run with its saved config: drop --config")
        cfg = None if args.resume else _all(ctx, lambda: load_config(args.config, args.overrides))
        if ctx is not None:
            distributed.check_same(ctx, "configs", {
                "resume": bool(args.resume), "config": None if cfg is None else to_dict(cfg),
                "overrides": list(args.overrides) if args.resume else None})
        fit(cfg, args.resume, args.overrides if args.resume else (), ctx=ctx)
    except PyrovaeError as err:
        if ctx is None and distributed.launched() and os.environ.get("RANK", "0") != "0":
            return 2  # torchrun's variables are wrong on every rank: rank 0 says so
        if ctx is None or ctx.main:
            cli.print_error(err)
        elif not isinstance(err, distributed.AgreedError):  # this rank's own
            cli.print_error(err, prefix=f"rank {ctx.rank}: ")
        distributed.close(ctx)
        return cli.USAGE
    except KeyboardInterrupt as err:  # the newline ends the progress bar's line
        if ctx is None or ctx.main:
            folder = err.run_dir if isinstance(err, Interrupted) else "RUN_DIR"
            print(f"\ninterrupted: the last epoch's checkpoint is kept; continue with "
                  f"python -m pyrovae.fit --resume {folder}", file=sys.stderr)
        return cli.INTERRUPTED
    except (Stopped, RuntimeError) as err:
        if ctx is None or not (isinstance(err, Stopped) or distributed.collective_failed(err)):
            raise  # not a collective's failure: a bug, with its traceback
        what = "stopped by torchrun" if isinstance(err, Stopped) else \
            f"a collective failed ({(str(err).strip().splitlines() or [''])[0][:160]})"
        print(f"error: rank {ctx.rank}: {what}: another rank stopped or timed out; the last "
              "epoch's checkpoint is kept: continue with torchrun ... -m pyrovae.fit --resume "
              "RUN_DIR", file=sys.stderr)
        return 1
    distributed.close(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
