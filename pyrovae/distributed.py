"""Data-parallel training over processes, GPUs and machines, launched by ``torchrun``.

    torchrun --nproc_per_node=4 -m pyrovae.fit --config configs/mnist.yaml
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m pyrovae.fit --config configs/mnist.yaml

``python -m pyrovae.fit`` started by torchrun (the environment holds ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) trains one model over ``WORLD_SIZE`` ranks;
without torchrun nothing here runs. The process group is ``gloo`` on CPUs and ``nccl`` for the
GPUs (``cpu:gloo,cuda:nccl``; the rank's device is ``cuda:LOCAL_RANK``), with a timeout of
``PYROVAE_DIST_TIMEOUT`` seconds (default 600) on every collective, so a rank never waits for a
dead peer forever.

What a run of W ranks computes, and why it is the one-process run:

- ``train.batch_size`` B is the global minibatch; every epoch shuffles the whole training set
  with the batch generator (seeded alike on every rank) as one process does, and rank r takes
  its part, about B / W rows, of each global minibatch
  (:meth:`pyrovae.data.splits.ShardedSplits.train_parts`).
- Every random draw of a step is drawn for the whole global minibatch and sliced
  (:class:`BatchNoise`; dynamic binarization likewise), so each rank's noise is its part of the
  one-process noise and all ranks' random states stay equal.
- Rank r's loss is the objective's ``-(N / B_r) sum_b bound_b`` over its B_r rows with
  N_r = N W B_r / B (= N when B_r = B / W): averaged over the ranks, as DDP averages gradients,
  the loss and its gradient are the one-process ``-(N / B) sum_b bound_b`` of the global batch.
- Gradients are averaged by ``DistributedDataParallel`` around :class:`LossModule` (the
  objective's loss as a module's forward) for the ``svi`` and ``torch`` engines. The ``traced``,
  ``compiled`` (and ``auto``) engines compute gradients with ``torch.autograd.grad`` inside
  their recorded graph, which DDP's hooks on ``.grad`` accumulation never see: their gradients
  are averaged by one ``all_reduce`` of a flat buffer after the graph
  (:func:`average_gradients`).
- The validation and test ELBO are sums over each rank's shard (its part of every chunk of
  1000 rows, with the chunk's noise sliced), added up by ``all_reduce``.

So, with the same seed, a run of any number of ranks follows the one-process trajectory up to
the order of float32 sums (and exactly on the same number of CPU ranks). Batch norm is the
exception: in training it normalizes over each rank's rows, and each rank updates its own
running statistics; before each evaluation every rank takes rank 0's (:func:`sync_buffers`),
so that the validation and test ELBO logged are those of the model rank 0 saves.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from pyrovae.data.splits import RankBatch, ShardedSplits, Splits, chunk_parts, shard
from pyrovae.errors import PyrovaeError
from pyrovae.objectives import closed_form_kl

ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT")
TIMEOUT_ENV = "PYROVAE_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0


class AgreedError(PyrovaeError):
    """An error raised alike on every rank (after they compared notes): rank 0 prints it."""


def launched() -> bool:
    """Whether this process was started by torchrun (any of its rank variables is set)."""
    return any(k in os.environ for k in ENV)


def _int(env: dict, key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise PyrovaeError(f"{key}={env[key]!r} is not an integer: launch with torchrun, which "
                           "sets it") from None


def environment(env: dict | None = None) -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from the variables torchrun sets; a one-line error when
    some are missing or wrong, or when the rendezvous (``MASTER_ADDR``, ``MASTER_PORT``) is."""
    env = os.environ if env is None else env
    missing = [k for k in (*ENV, *RENDEZVOUS) if not env.get(k)]
    if missing:
        raise PyrovaeError(
            f"a distributed run needs {', '.join(ENV + RENDEZVOUS)}, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: launch with torchrun "
            "--nproc_per_node=N [--nnodes=M --node_rank=I --rdzv_endpoint=HOST:PORT] -m "
            "pyrovae.fit ..., or unset WORLD_SIZE/RANK/LOCAL_RANK to train in one process"
        )
    rank, local, world = (_int(env, k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise PyrovaeError(f"bad torchrun variables RANK={rank}, LOCAL_RANK={local}, "
                           f"WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return rank, local, world


def timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise PyrovaeError(f"{TIMEOUT_ENV}={value!r}: give the collectives' timeout in seconds "
                           "(> 0)")
    return seconds


@dataclass
class Context:
    """This process's place in a data-parallel run, and the collectives fit needs."""

    rank: int
    local_rank: int
    world_size: int
    timeout: float = DEFAULT_TIMEOUT
    cpu_group: Any = None  # a gloo group for plain-data collectives
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    # ---- collectives -----------------------------------------------------------------

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj`` (plain data), in rank order, on every rank."""
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.cpu_group)
        return out

    def agree(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on every rank. When it raises a :class:`PyrovaeError` on any rank, every rank
        raises the same :class:`AgreedError` (the lowest failing rank's message), so no rank
        goes on to wait for one that stopped."""
        try:
            result, message = fn(), None
        except PyrovaeError as err:
            result, message = None, str(err)
        failed = [(r, m) for r, m in enumerate(self.gather(message)) if m is not None]
        if failed:
            rank, message = failed[0]
            raise AgreedError(message if rank == 0 else f"rank {rank}: {message}")
        return result

    def rank0_first(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, then on the others (e.g. filling a shared data cache once)."""
        first = self.agree(fn if self.main else lambda: None)
        rest = self.agree(lambda: None if self.main else fn())
        return first if self.main else rest

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sums over the ranks, in float64."""
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.cpu_group)
        return t.tolist()


def init() -> Context:
    """Join the process group of a torchrun launch (gloo for CPU tensors, nccl for CUDA ones
    when there is a GPU); a one-line error when the rendezvous fails within the timeout."""
    rank, local, world = environment()
    seconds = timeout()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
        group = dist.new_group(backend="gloo") if backend != "gloo" else None
    except (dist.DistError, RuntimeError, ValueError) as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PyrovaeError(
            f"rank {rank} of {world} could not join the rendezvous at {where} within {seconds:g} "
            f"s ({cause}): start all {world} ranks with the same torchrun --nnodes/--rdzv_endpoint,"
            f" or raise {TIMEOUT_ENV}"
        ) from None
    return Context(rank, local, world, seconds, group)


def close(ctx: Context | None) -> None:
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


def device(ctx: Context, name: str) -> torch.device:
    """The rank's device for ``train.device``: ``cuda:LOCAL_RANK`` for ``auto`` (with a GPU) and
    ``cuda``, the CPU for ``cpu``; ``cuda:N`` is refused (torchrun assigns the GPUs)."""
    if name.startswith("cuda:"):
        raise PyrovaeError(f"train.device={name} under torchrun: use train.device=cuda (rank r "
                           "of a node takes cuda:LOCAL_RANK) or set CUDA_VISIBLE_DEVICES")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 0:
        raise PyrovaeError(f"train.device={name} but no CUDA GPU is available: use "
                           "train.device=cpu")
    if ctx.local_rank >= count:
        raise PyrovaeError(f"LOCAL_RANK {ctx.local_rank} but this machine has {count} GPUs: "
                           f"start at most {count} processes per node (--nproc_per_node)")
    dev = torch.device("cuda", ctx.local_rank)
    torch.cuda.set_device(dev)
    return dev


def digest(obj: Any) -> str:
    """A short hash of plain data (a config, a command line)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same(ctx: Context, what: str, obj: Any) -> None:
    """Refuse ranks started with different ``obj`` (compared by hash, all_gather)."""
    hashes = ctx.gather(digest(obj))
    odd = [r for r, h in enumerate(hashes) if h != hashes[0]]
    if odd:
        raise AgreedError(
            f"the ranks were started with different {what} (rank {odd[0]} differs from rank 0): "
            "start every rank with the same --config, overrides and config file contents"
        )


def check_batch(ctx: Context, batch_size: int, num_train: int) -> None:
    """The global batch must split evenly, and the epoch's last minibatch must give every rank
    a row."""
    w = ctx.world_size
    if batch_size % w:
        raise AgreedError(
            f"train.batch_size={batch_size} is the global batch, shared out among {w} ranks, but "
            f"{w} does not divide it: choose a batch size that is a multiple of {w}, or another "
            "number of processes"
        )
    last = num_train % batch_size
    if 0 < last < w:
        raise AgreedError(
            f"the last minibatch of each epoch has {last} of the {num_train} training examples, "
            f"fewer than the {w} ranks: change train.batch_size or data.limit so that "
            f"{num_train} mod batch_size is 0 or at least {w}"
        )


def shard_splits(ctx: Context, splits: Splits, dev: torch.device) -> ShardedSplits:
    return shard(splits, ctx.rank, ctx.world_size, dev)


# ---- noise: the one-process draws, sliced --------------------------------------------------


class BatchNoise(TorchFunctionMode):
    """Within it, a draw of standard normals whose dim -2 is this rank's ``hi - lo`` rows (the
    reparameterization noise of ``Normal.rsample`` and of the analytic objective, shape
    ``(K, rows, z_dim)``) is drawn for all ``total`` rows of the global minibatch and rows
    ``[lo, hi)`` kept: the very numbers one process draws for those rows, and the same random
    state on every rank afterwards."""

    def __init__(self, lo: int, hi: int, total: int) -> None:
        super().__init__()
        self.lo, self.hi, self.total = lo, hi, total

    def _ours(self, shape) -> bool:
        return self.total != self.hi - self.lo and len(shape) >= 2 \
            and shape[-2] == self.hi - self.lo

    def _full(self, shape) -> tuple:
        return (*shape[:-2], self.total, shape[-1])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.normal_ and self._ours(args[0].shape) \
                and kwargs.get("generator") is None:
            t = args[0]
            full = torch.empty(self._full(t.shape), dtype=t.dtype, device=t.device)
            full.normal_(*args[1:], **kwargs)
            with torch.no_grad():
                return t.copy_(full[..., self.lo : self.hi, :])
        if func is torch.randn and kwargs.get("generator") is None:
            shape = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            if self._ours(tuple(shape)):
                return torch.randn(self._full(tuple(shape)), **kwargs)[..., self.lo : self.hi, :]
        return func(*args, **kwargs)


# ---- the loss as a module, for DDP -----------------------------------------------------------


class LossModule(torch.nn.Module):
    """The objective's loss of this rank's part of a global minibatch as ``forward`` (the way
    Pyro's ``ELBOModule`` makes an ELBO a module): its parameters are the VAE's, so
    ``DistributedDataParallel`` around it averages their gradients."""

    def __init__(self, objective) -> None:
        super().__init__()
        self.vae = objective.vae
        self.objective = objective
        self.part = (0, 1, 1)  # (lo, hi, total) of the current step

    def forward(self, x: torch.Tensor, num_data: float | None = None,
                beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        with BatchNoise(*self.part):
            return self.objective.loss(x, num_data, beta)


class DataParallelObjective:
    """Stands in for a stepper's objective: ``loss`` goes through DDP (``svi``, ``torch``) or
    through the plain :class:`LossModule` (``traced``, ``compiled``: gradients averaged after
    the recorded graph)."""

    def __init__(self, objective, forward: Callable) -> None:
        self.inner = objective
        self.vae = objective.vae
        self.name = objective.name
        self.num_particles = objective.num_particles
        self.forward = forward

    def loss(self, x: torch.Tensor, num_data: float | None = None,
             beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.forward(x, num_data, beta)

    def __call__(self, model, guide, x: torch.Tensor, num_data: float | None = None,
                 beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """As ``pyro.infer.SVI`` calls its loss (``svi`` engine)."""
        return self.loss(x, num_data, beta)


def average_gradients(ctx: Context, params: list[torch.Tensor]) -> None:
    """Replace every ``.grad`` by its mean over the ranks: one ``all_reduce`` of a flat buffer."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(ctx.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def collective_failed(err: BaseException) -> bool:
    """Whether ``err`` is a collective's failure (a peer that died, closed its connection or
    timed out): torch's ``DistError``, or the plain ``RuntimeError`` that gloo raises, whose
    message names its source file under ``gloo/``."""
    return isinstance(err, torch.distributed.DistError) or (
        isinstance(err, RuntimeError) and "gloo" in str(err))


def sync_buffers(module: torch.nn.Module) -> None:
    """Every rank takes rank 0's buffers (batch norm's running statistics), which each rank
    updated from its own rows in training (the recorded engines never synchronize them; DDP
    does so at the start of a step, not after its last one)."""
    for buffer in module.buffers():
        torch.distributed.broadcast(buffer, src=0)


def data_parallel(ctx: Context, stepper, engine: str = "") -> LossModule:
    """Make ``stepper`` (``pyrovae.optim``) average its gradients over the ranks: DDP for the
    ``svi`` and ``torch`` engines, :func:`average_gradients` for the recorded ones (``traced``,
    ``compiled``, ``auto``, whose eager fallback too); returns the :class:`LossModule` whose
    ``part`` each step sets."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pyrovae.optim import TracedStepper

    module = LossModule(stepper.objective)
    if isinstance(stepper, TracedStepper):  # traced, compiled, auto
        forward = module
        stepper.after_backward = lambda params: average_gradients(ctx, params)
    else:
        batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                         for m in module.modules())
        cuda = ctx.device.type == "cuda"
        sync = "forward_sync_buffers" if "forward_sync_buffers" in \
            inspect.signature(DDP).parameters else "broadcast_buffers"  # its name in torch < 2.10
        forward = DDP(module, device_ids=[ctx.device.index] if cuda else None,
                      **{sync: batch_norm})
    stepper.set_objective(DataParallelObjective(stepper.objective, forward))
    return module


def train_step(ctx: Context, stepper, module: LossModule, part: RankBatch, num_data: int,
               beta: float) -> float:
    """One step on this rank's ``part`` of a global minibatch; returns the global minibatch's
    loss (the mean of the ranks' losses), the same number on every rank: a NaN on any rank
    stops all of them at the same step."""
    rows = part.hi - part.lo
    module.part = (part.lo, part.hi, part.total)
    if rows * ctx.world_size == part.total:
        scaled = num_data  # B_r = B / W: the objective's own N / B_r
    else:
        scaled = num_data * ctx.world_size * rows / part.total
    loss = stepper.step(part.x, scaled, beta)
    (total,) = ctx.sum([loss])
    return total / ctx.world_size


# ---- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def dataset_elbo(ctx: Context, vae, x: torch.Tensor, n: int,
                 num_particles: int = 1) -> dict[str, float]:
    """``objectives.dataset_elbo`` of a set of ``n`` rows of which this rank holds ``x`` (its
    part of each chunk, :func:`pyrovae.data.splits.chunk_parts`): per chunk, the rank's rows
    with its slice of the chunk's noise; the ranks' sums added by ``all_reduce``."""
    recon_sum = kl_sum = 0.0
    p = vae.prior()
    offset = 0
    for _, lo, hi, length in chunk_parts(n, ctx.rank, ctx.world_size):
        xb = x[offset : offset + hi - lo]
        offset += hi - lo
        if hi == lo:  # nothing of this chunk here: draw its noise all the same
            torch.empty((num_particles, length, vae.z_dim), device=x.device).normal_()
            continue
        q = vae.encode(xb)
        with BatchNoise(lo, hi, length):
            z = q.rsample((num_particles,))
        recon_sum += vae.decode(z).log_prob(xb).mean(0).sum().item()
        if vae.prior_net.closed_form_kl:
            kl = closed_form_kl(vae, q.base_dist.loc, q.base_dist.scale)
        else:
            kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
        kl_sum += kl.sum().item()
    recon_sum, kl_sum = ctx.sum([recon_sum, kl_sum])
    return {"elbo": (recon_sum - kl_sum) / n, "recon": recon_sum / n, "kl": kl_sum / n}
