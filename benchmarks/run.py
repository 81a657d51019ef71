"""Benchmarks: pyrovae's Pyro training against the classic hand-written PyTorch VAE, side by side.

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/run.py            # CPU (+ CUDA if any)
    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/run.py --quick    # fewer repeats
    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/run.py --devices cuda   # the GPU alone
    python benchmarks/run.py --devices cuda --quick --steps-only   # step times alone (a minute)
    python benchmarks/run.py --json benchmarks/results/cpu.json

a. one training step, same networks and batch: pyrovae (engines ``svi``, ``torch``, ``traced``
   and ``compiled``; ``-bf16``: with ``train.precision=bfloat16``; on CUDA also
   ``compiled-graphs``, with ``train.cuda_graphs=true``; and the candidate ``jit`` =
   SVI with ``JitTrace_ELBO``) against the hand-written step (BCE + analytic KL; also under
   autocast, ``classic-bf16``), at batch 128 and 1024, on every device;
b. one MNIST epoch of ``configs/mnist_fc400_z20.yaml``: the ``pyrovae.fit`` loop (device tensors,
   binarization on the device), per engine and precision, against the classic ``DataLoader`` +
   ``ToTensor`` loop (compilation happens in the warm-up epoch and is reported apart);
c. peak memory of each step variant (CPU: peak RSS of a fresh process; CUDA: peak allocated).

Timings are medians over repeats after a warm-up, with the variants interleaved within each
repeat so that load on the machine hits all of them alike; ratios are pyrovae / classic.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import pyro  # noqa: E402
from classic import ClassicStepper, ClassicVAE, classic_epoch, classic_loader  # noqa: E402
from common import write_json  # noqa: E402
from pyro.infer import SVI, JitTrace_ELBO  # noqa: E402

from pyrovae import VAE  # noqa: E402
from pyrovae.config import CONFIG_DIR, load_config  # noqa: E402
from pyrovae.optim import make_stepper  # noqa: E402

CONFIG = CONFIG_DIR / "mnist_fc400_z20.yaml"
# name -> (engine, precision, cuda_graphs); "classic*" are the hand-written baseline, "jit" a
# candidate; "compiled-graphs" runs on CUDA only
PYROVAE = {"svi": ("svi", "float32", False), "torch": ("torch", "float32", False),
           "traced": ("traced", "float32", False), "compiled": ("compiled", "float32", False),
           "torch-bf16": ("torch", "bfloat16", False),
           "compiled-bf16": ("compiled", "bfloat16", False),
           "compiled-graphs": ("compiled", "float32", True)}
CUDA_ONLY = tuple(name for name, (_, _, graphs) in PYROVAE.items() if graphs)
STEP_VARIANTS = ("classic", "classic-bf16", *PYROVAE, "jit")
EPOCH_VARIANTS = ("svi", "torch", "compiled", "compiled-bf16", "compiled-graphs")


def variants(names: tuple[str, ...], device: torch.device) -> tuple[str, ...]:
    """The variants of ``names`` that run on ``device``."""
    return tuple(v for v in names if device.type == "cuda" or v not in CUDA_ONLY)


class JitStepper:
    """Candidate: SVI with ``JitTrace_ELBO`` (the loss traced once into a TorchScript graph)."""

    def __init__(self, vae: VAE, lr: float = 1e-3) -> None:
        self.svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}),
                       JitTrace_ELBO(ignore_jit_warnings=True))

    def step(self, x: torch.Tensor, num_data: int) -> float:
        return self.svi.step(x, num_data=num_data)


def _architecture() -> tuple[list[int], int]:
    cfg = load_config(CONFIG)
    return list(cfg.model.hidden), cfg.model.z_dim


def make_variant(name: str, device: torch.device):
    """A stepper of the benchmark's architecture (784-400-20) on ``device``."""
    hidden, z_dim = _architecture()
    if name.startswith("classic"):
        return ClassicStepper(ClassicVAE(784, hidden, z_dim).to(device),
                              bfloat16=name.endswith("bf16"))
    vae = VAE(x_shape=(1, 28, 28), z_dim=z_dim, hidden=hidden).to(device)
    if name == "jit":
        return JitStepper(vae)
    engine, precision, cuda_graphs = PYROVAE[name]
    return make_stepper(engine, vae, "trace", precision=precision, cuda_graphs=cuda_graphs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_steps(device: torch.device, batch: int, repeats: int, steps: int,
                names=STEP_VARIANTS) -> dict:
    """Median seconds per step of each variant (interleaved repeats)."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(batch, 1, 28, 28, device=device) * 0.3)
    made = {v: make_variant(v, device) for v in variants(names, device)}
    for s in made.values():  # warm-up (and the JIT's tracing)
        for _ in range(10):
            s.step(x, 60000)
    times: dict[str, list[float]] = {v: [] for v in made}
    for _ in range(repeats):
        for v, s in made.items():
            _sync(device)
            began = time.perf_counter()
            for _ in range(steps):
                s.step(x, 60000)
            _sync(device)
            times[v].append((time.perf_counter() - began) / steps)
    return {v: statistics.median(t) for v, t in times.items()}


def bench_epoch(device: torch.device, repeats: int, names=EPOCH_VARIANTS) -> dict:
    """Seconds per MNIST epoch of pyrovae.fit's loop per variant and of the classic loop: the
    median after a warm-up (``seconds``), the first epoch (``first``, with any compilation),
    and the training examples per second of the median epoch."""
    from pyrovae import fit

    names = variants(names, device)
    out: dict[str, list[float]] = {v: [] for v in (*names, "classic")}
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in names:
            engine, precision, cuda_graphs = PYROVAE[name]
            cfg = load_config(CONFIG, [f"train.engine={engine}", f"train.precision={precision}",
                                       f"train.cuda_graphs={cuda_graphs}",
                                       "train.progress=false", f"train.device={device}",
                                       f"run_dir={tmp}/{name}"])
            runs[name] = fit.start(cfg)
        root = str(fit.resolve_path(cfg.data.root) or _default_root())
        hidden, z_dim = _architecture()
        classic = ClassicStepper(ClassicVAE(784, hidden, z_dim).to(device))
        loader = classic_loader(root, cfg.train.batch_size, runs[names[0]].splits.train.shape[0])
        began = time.perf_counter()
        classic_epoch(classic, loader, device)  # warm-up
        first["classic"] = time.perf_counter() - began
        for name, run in runs.items():
            first[name] = fit.train_epoch(run)["seconds"]
        examples = runs[names[0]].splits.train.shape[0]
        for _ in range(repeats):
            for name, run in runs.items():
                _sync(device)
                out[name].append(fit.train_epoch(run)["seconds"])
            _sync(device)
            began = time.perf_counter()
            classic_epoch(classic, loader, device)
            _sync(device)
            out["classic"].append(time.perf_counter() - began)
    seconds = {k: statistics.median(v) for k, v in out.items()}
    return {"seconds": seconds, "first": first, "examples": examples,
            "examples_per_second": {k: examples / t for k, t in seconds.items()},
            "speedup": {k: seconds["classic"] / t for k, t in seconds.items()}}


def _default_root() -> Path:
    from pyrovae.data import default_root

    return default_root()


def peak_memory(variant: str, device: str, batch: int) -> float:
    """Peak memory (MiB) that 20 steps of ``variant`` add, in a fresh process: on the CPU the
    rise of the peak resident set (Linux VmHWM, reset after imports and data) over the resident
    set before the model is built; on CUDA the peak allocated."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", variant,
           "--device", device, "--batch", str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _memory_worker(variant: str, device: str, batch: int) -> None:
    dev = torch.device(device)
    x = torch.bernoulli(torch.rand(batch, 1, 28, 28, device=dev) * 0.3)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_mib("VmRSS")
    s = make_variant(variant, dev)
    for _ in range(20):
        s.step(x, 60000)
    if dev.type == "cuda":
        print(torch.cuda.max_memory_allocated(dev) / 2**20)
    else:
        print(_status_mib("VmHWM") - before)


def _devices(which: str = "all") -> list[torch.device]:
    """``all``: the CPU, and CUDA where there is one; ``cpu`` or ``cuda``: that one alone."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    chosen = [d for d in devices if which in ("all", d.type)]
    if not chosen:
        raise SystemExit(f"error: --devices {which}: torch sees no such device here")
    return chosen


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def run(quick: bool = False, devices: str = "all", steps_only: bool = False) -> dict:
    repeats, steps = (3, 20) if quick else (7, 50)
    results: dict = {"torch": torch.__version__, "pyro": pyro.__version__, "devices": {}}
    for device in _devices(devices):
        entry: dict = {"hardware": _hardware(device), "steps": {}, "memory_mib": {}}
        for batch in (128, 1024):
            t = bench_steps(device, batch, repeats, steps if batch == 128 else steps // 5)
            entry["steps"][batch] = {"seconds": t,
                                     "ratio": {v: t[v] / t["classic"] for v in t}}
            if not steps_only:
                entry["memory_mib"][batch] = {v: peak_memory(v, str(device), batch)
                                              for v in variants(STEP_VARIANTS, device)}
        if not steps_only:
            entry["epoch"] = bench_epoch(device, 2 if quick else 5)
        results["devices"][str(device)] = entry
    return results


def table(results: dict) -> str:
    lines = []
    for device, entry in results["devices"].items():
        lines.append(f"\n{device} ({entry['hardware']}); torch {results['torch']}, "
                     f"pyro {results['pyro']}")
        batches = list(entry["steps"])
        memory = entry["memory_mib"]
        lines.append("| step (ratio to classic) | " + " | ".join(
            f"batch {b}" + (f" | peak memory, batch {b}" if memory else "") for b in batches)
            + " |")
        lines.append("|---" * ((2 if memory else 1) * len(batches) + 1) + "|")
        for v in entry["steps"][batches[0]]["seconds"]:
            cells = []
            for b in batches:
                s = entry["steps"][b]
                cells.append(f"{s['seconds'][v] * 1e3:.2f} ms ({s['ratio'][v]:.2f}x)")
                if memory:
                    cells.append(f"{memory[b][v]:.0f} MiB")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        if "epoch" not in entry:
            continue
        e = entry["epoch"]
        lines.append("")
        lines.append(f"| MNIST epoch (mnist_fc400_z20, {e['examples']} images) | seconds | "
                     "examples/s | speed-up over classic | first epoch (s) |")
        lines.append("|---|---|---|---|---|")
        for k in e["seconds"]:
            lines.append(f"| {k} | {e['seconds'][k]:.2f} | {e['examples_per_second'][k]:.0f} | "
                         f"{e['speedup'][k]:.2f}x | {e['first'][k]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--devices", choices=("all", "cpu", "cuda"), default="all",
                        help="the devices to measure (default: the CPU, and CUDA if any)")
    parser.add_argument("--steps-only", action="store_true",
                        help="only the step times (part a): no memory, no epochs")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.memory_worker:
        _memory_worker(args.memory_worker, args.device, args.batch)
        return 0
    results = run(args.quick, args.devices, args.steps_only)
    print(table(results))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
