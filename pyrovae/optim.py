"""The optimization step: a training objective (``train.loss``: ``trace``, ``meanfield``,
``analytic``, ``iwae``, ``iwae_dreg``; see ``pyrovae.objectives``) and Adam (Kingma & Ba 2015),
behind one interface, by engine:

- ``svi``: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` (one torch Adam per parameter, found
  through Pyro's parameter store), the objective as SVI's loss: Pyro's reference training loop.
- ``torch``: the objective's loss and a single ``torch.optim.Adam`` over ``vae.parameters()``:
  less overhead per step.
- ``traced``: the ``torch`` engine's step recorded once per batch shape (``make_fx``) and
  replayed: the same operations without Pyro's Python at every step (``TracedStepper``).
- ``compiled``: ``traced`` with the recorded graph compiled by ``torch.compile`` (seconds of
  compilation per batch shape, then the fastest step; see BENCHMARKS.md). On CUDA,
  ``train.cuda_graphs=true`` also replays each compiled step as one CUDA graph (inductor's
  CUDA graph trees, ``torch.compile``'s ``reduce-overhead``): one launch a step instead of one
  per kernel, for steps as small as these networks' (not yet measured: no GPU was lent to this
  work; BENCHMARKS.md has the prepared run).
- ``auto`` (the default): ``compiled`` on CUDA where ``torch.compile`` has Triton, else
  ``traced`` (on a CPU, see :func:`resolve_engine`). A graph that fails to compile runs
  uncompiled and a step that cannot be recorded runs eagerly, each with one warning.

``step(x, num_data, beta)`` takes the KL weight beta of the step (warm-up), which goes to the
objective: nothing changes state on the model. All clip gradients per parameter when
``clip_norm`` is set (as ``pyro.optim`` does), and all save and restore their optimizer state, so
a run resumes exactly under every engine. All run their steps with Pyro's validation off (about
8% of a CPU step at batch 128, measured in BENCHMARKS.md): ``pyrovae.fit`` checks the data once,
up front, and the tests run the model and guide with validation on. All use torch's fused Adam
kernel on CPU and CUDA (one pass over each parameter instead of about ten; the same update up to
rounding), with ``eps`` = ``train.adam_eps``.

``precision="bfloat16"`` runs the loss under ``torch.autocast`` (Micikevicius et al. 2018): the
networks' matrix products in bfloat16, their outputs cast back to float32 (see ``pyrovae.nets``)
so that every log-density, the KL and the loss stay float32, as do the weights and Adam's state.
BENCHMARKS.md measures its speed and its effect on the ELBO.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator

import pyro
import pyro.optim
import torch
from pyro.infer import SVI
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae import objectives
from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.model import VAE

ENGINES = ("auto", "svi", "torch", "traced", "compiled")
PRECISIONS = ("float32", "bfloat16")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device`` (disabled for float32)."""
    if precision not in PRECISIONS:
        raise choice_error("precision", precision, PRECISIONS)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices fast: on a CPU, whether torch's oneDNN has
    bfloat16 kernels for it (AVX-512 or AMX on x86); a GPU is not checked (True). Without them (an
    AVX2 CPU) its bfloat16 matrix products are far slower: an epoch of ``configs/burda_vae.yaml``
    took about 6x longer than in float32 on such a CPU (BENCHMARKS.md)."""
    if device.type != "cpu":
        return True
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return check is None or bool(check())


def adam_options(vae: VAE, eps: float = 1e-8) -> dict:
    """Adam's ``eps``, and ``fused=True`` where torch has a fused Adam for every parameter
    (CPU and CUDA)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in vae.parameters())
    return {"eps": eps, "fused": True} if fused else {"eps": eps}


def _device(vae: VAE) -> torch.device:
    return next(iter(vae.parameters()), torch.empty(0)).device


class SVIStepper:
    """``pyro.infer.SVI`` + ``pyro.optim.Adam``."""

    def __init__(self, vae: VAE, loss: str, num_particles: int, lr: float,
                 clip_norm: float | None = None, precision: str = "float32",
                 adam_eps: float = 1e-8) -> None:
        self.vae = vae
        clip = {"clip_norm": clip_norm} if clip_norm else {}
        self.optim = pyro.optim.Adam({"lr": lr, **adam_options(vae, adam_eps)}, clip_args=clip)
        self.objective = objectives.build(loss, vae, num_particles)
        self.svi = SVI(vae.model, vae.guide, self.optim, self.objective)
        self.autocast = functools.partial(autocast, _device(vae), precision)
        self.autocast()  # a bad precision fails here, before training

    def step(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> float:
        # SVI runs loss and backward in one call; autocast leaves the backward ops in the
        # dtypes of their forward ops.
        with pyro.validation_enabled(False), self.autocast():
            return self.svi.step(x, num_data=num_data, beta=beta)

    def set_objective(self, objective) -> None:
        """Train ``objective`` instead (``pyrovae.distributed`` puts DDP in front of the loss)."""
        self.objective = objective
        self.svi = SVI(self.vae.model, self.vae.guide, self.optim, objective)

    def set_lr(self, lr: float) -> None:
        """The rate of the next steps. Pyro builds a parameter's optimizer at its first step,
        from its arguments, and only then loads the state that ``load_state_dict`` left waiting,
        param_groups (and their saved rate) included, so the rate is set in the arguments and in
        those waiting states too."""
        self.optim.pt_optim_args["lr"] = lr
        for opt in self.optim.optim_objs.values():
            for group in opt.param_groups:
                group["lr"] = lr
        for state in self.optim._state_waiting_to_be_consumed.values():
            for group in state.get("param_groups", ()):
                group["lr"] = lr

    def state_dict(self) -> dict:
        """Optimizer state keyed by parameter names without the VAE's Pyro prefix."""
        prefix = self.vae.pyro_prefix
        # loaded states wait for their parameter's first step: saved again before it, they count
        states = {**self.optim._state_waiting_to_be_consumed, **self.optim.get_state()}
        return {name.removeprefix(prefix): s for name, s in states.items()}

    def load_state_dict(self, state: dict) -> None:
        self.optim.set_state({self.vae.pyro_prefix + name: s for name, s in state.items()})


class TorchStepper:
    """The objective's loss + one ``torch.optim.Adam`` over all parameters."""

    def __init__(self, vae: VAE, loss: str, num_particles: int, lr: float,
                 clip_norm: float | None = None, precision: str = "float32",
                 adam_eps: float = 1e-8) -> None:
        self.vae = vae
        self.objective = objectives.build(loss, vae, num_particles)
        self.params = [p for p in vae.parameters() if p.requires_grad]
        self.optim = torch.optim.Adam(self.params, lr=lr, **adam_options(vae, adam_eps))
        self.clip_norm = clip_norm
        self.autocast = functools.partial(autocast, _device(vae), precision)
        self.autocast()
        #: Called with the parameters after every backward, before clipping and the update
        #: (``pyrovae.distributed`` averages the gradients of the traced engines there).
        self.after_backward: Callable[[list], None] | None = None

    def set_objective(self, objective) -> None:
        """Train ``objective`` instead (``pyrovae.distributed`` puts DDP in front of the loss)."""
        self.objective = objective

    def backward(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> torch.Tensor:
        """The loss of the batch; its gradients in the parameters' ``.grad``."""
        self.optim.zero_grad(set_to_none=True)
        with pyro.validation_enabled(False), self.autocast():
            loss = self.objective.loss(x, num_data, beta)
        loss.backward()
        return loss

    def step(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> float:
        loss = self.backward(x, num_data, beta)
        if self.after_backward is not None:
            self.after_backward(self.params)
        if self.clip_norm:
            for p in self.params:
                torch.nn.utils.clip_grad_norm_(p, self.clip_norm)
        self.optim.step()
        return loss.item()

    def set_lr(self, lr: float) -> None:
        for group in self.optim.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return self.optim.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optim.load_state_dict(state)


class TracedStepper(TorchStepper):
    """The ``torch`` engine with Pyro's per-step Python taken out: for each batch shape, the
    first step runs the loss (Pyro's ELBO of ``model`` and ``guide``) and ``torch.autograd.grad``
    under ``make_fx``, which records the tensor operations they perform, forward and backward,
    as one FX graph; later steps replay the graph. With ``compile``, ``torch.compile`` (inductor)
    fuses that graph.

    The graph takes the batch and beta as inputs and reads the parameters and buffers in place,
    so Adam's updates and KL warm-up reach it (the objective's gradient, even one computed with
    an inner ``torch.autograd.grad`` as ``iwae_dreg``'s, is recorded as plain operations);
    ``num_data`` and train/eval mode are fixed per graph (a new one is recorded when they
    change). Random draws stay in the graph as
    operations on torch's generator (in the compiled graph too: inductor's ``fallback_random``),
    so a step draws the same noise as the ``torch`` engine. Tracing runs the step once for
    real, so the generator and the buffers are restored after it: it leaves no trace in the
    noise or in batch-norm statistics.
    """

    def __init__(self, vae: VAE, loss: str, num_particles: int, lr: float,
                 clip_norm: float | None = None, precision: str = "float32",
                 adam_eps: float = 1e-8, compile: bool = False, fallback: bool = False,
                 cuda_graphs: bool = False) -> None:
        super().__init__(vae, loss, num_particles, lr, clip_norm, precision, adam_eps)
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        #: ``train.engine=auto``: a graph that cannot be compiled runs uncompiled, a step that
        #: cannot be recorded runs eagerly (the ``torch`` engine), each with one warning.
        self.fallback = fallback
        self.eager = False
        self.graphs: dict[tuple, Callable] = {}

    def set_objective(self, objective) -> None:
        super().set_objective(objective)
        self.graphs.clear()  # recorded with the old objective

    def backward(self, x: torch.Tensor, num_data: int, beta: float = 1.0) -> torch.Tensor:
        if self.eager:
            return super().backward(x, num_data, beta)
        x = x.contiguous()  # the graph's views were recorded on a contiguous batch
        key = (tuple(x.shape), x.dtype, x.device, num_data, self.vae.training)
        if key not in self.graphs:
            self.vae.check(x)  # eagerly, once per graph (a graph cannot hold the checks)
            try:
                self.graphs[key] = self._trace(x, num_data)
            except PyrovaeError as err:
                if not self.fallback:
                    raise
                warnings.warn(f"train.engine=auto: {err}; running the torch engine instead",
                              stacklevel=2)
                self.eager = True
                return super().backward(x, num_data, beta)
        loss, *grads = self.graphs[key](x, torch.tensor(float(beta), device=x.device))
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        return loss

    def _trace(self, x: torch.Tensor, num_data: int) -> Callable:
        def loss_and_grads(x: torch.Tensor, beta: torch.Tensor) -> tuple:
            with self.autocast():
                loss = self.objective.loss(x, num_data, beta)
            return (loss.detach(), *torch.autograd.grad(loss, self.params, allow_unused=True))

        buffers = [(b, b.clone()) for b in self.vae.buffers()]  # batch-norm statistics
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices), pyro.validation_enabled(False):
                graph = make_fx(loss_and_grads)(x, torch.tensor(1.0, device=x.device))
        except RuntimeError as err:  # data-dependent Python (a .item(), an if on a tensor)
            cause = str(err).strip().splitlines()[0]
            raise PyrovaeError(
                f"train.engine=traced/compiled cannot record this model's step ({cause[:200]}): "
                "its Python depends on tensor values; use train.engine=torch"
            ) from None
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)  # in place: the graph reads these very tensors
        if not self.compile:
            return graph
        return _compile(graph, fallback=self.fallback, cuda_graphs=self.cuda_graphs)


def _compile(graph: Callable, fallback: bool = False, cuda_graphs: bool = False) -> Callable:
    """``torch.compile`` of a recorded step, with inductor's ``fallback_random`` (random draws
    use torch's generator, as in eager mode); a failed compilation becomes a one-line error, or,
    with ``fallback`` (``train.engine=auto``), one warning and the graph run uncompiled.

    ``cuda_graphs``: inductor's CUDA graph trees (``reduce-overhead``) replay the compiled step
    as one CUDA graph. Its outputs (the loss and the gradients) live in the graph's memory until
    the next replay, so each call first marks a new step: the caller has used the last step's
    gradients (Adam's update) by then."""
    import torch._dynamo.exc

    options = {"fallback_random": True, "triton.cudagraphs": cuda_graphs}
    compiled = torch.compile(graph, dynamic=False, options=options)
    failed, calls = [], []

    def call(*args):
        if failed:
            return graph(*args)
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with _quiet_compiler_logs():
                if calls or not cuda_graphs:
                    return compiled(*args)
                calls.append(True)
                return _warn_without_cuda_graphs(compiled, *args)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            cause = str(err).strip().splitlines()[0]
            if fallback:
                warnings.warn(f"train.engine=auto: torch.compile failed ({cause[:200]}); "
                              "running the recorded graph uncompiled (train.engine=traced)",
                              stacklevel=2)
                failed.append(True)
                return graph(*args)
            raise PyrovaeError(
                f"train.engine=compiled: torch.compile failed ({cause}); on a CPU it needs a "
                "working C++ compiler (such as g++); train.engine=traced runs the same graph "
                "without compiling it"
            ) from None

    return call


def _warn_without_cuda_graphs(compiled: Callable, *args):
    """The first call of a step compiled with CUDA graphs; one warning where inductor skipped
    them (a CPU tensor in the graph, say: it then runs the compiled step without graphs)."""
    from torch._dynamo.utils import counters

    skips = counters["inductor"]["cudagraph_skips"]
    out = compiled(*args)
    if counters["inductor"]["cudagraph_skips"] > skips:
        warnings.warn("train.cuda_graphs=true: torch.compile did not make this step a CUDA graph "
                      "(TORCH_LOGS=perf_hints says why); it runs compiled, without graphs",
                      stacklevel=3)
    return out


def resolve_engine(engine: str, device: torch.device) -> str:
    """``auto``: ``compiled`` on CUDA where ``torch.compile`` has Triton, else ``traced``. On a
    CPU, compiling costs 7-40 s and what it saves an epoch depends on the network: nothing for
    the default config's ReLU MLP, a loss for the convolutional net, much for tanh and mixture-
    prior nets (BENCHMARKS.md, "Which engine for a whole run"). ``traced`` never loses much, and
    the configs where compiling pays name ``compiled``. Any other name as is."""
    if engine != "auto":
        return engine
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return "compiled" if has_triton() else "traced"
    return "traced"


@contextlib.contextmanager
def _quiet_compiler_logs() -> Iterator[None]:
    """Silence torch's notice that a CPU-only machine has no CUDA runtime while compiling."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def make_stepper(engine: str, vae: VAE, loss: str, num_particles: int = 1, lr: float = 1e-3,
                 clip_norm: float | None = None, precision: str = "float32",
                 adam_eps: float = 1e-8, cuda_graphs: bool = False) -> SVIStepper | TorchStepper:
    """The training step of ``engine`` (``svi``, ``torch``, ``traced``, ``compiled``) with the
    objective ``loss`` in ``precision``; ``cuda_graphs``: the compiled step replayed as a CUDA
    graph (``compiled`` on CUDA only)."""
    if engine not in ENGINES:
        raise choice_error("engine", engine, ENGINES)
    device = _device(vae)
    given, auto, engine = engine, engine == "auto", resolve_engine(engine, device)
    if cuda_graphs and (engine != "compiled" or device.type != "cuda"):
        raise PyrovaeError(f"train.cuda_graphs=true replays the compiled step as a CUDA graph, "
                           f"so it needs train.engine=compiled (or auto) on a CUDA device, not "
                           f"train.engine={given} on {device}; set train.cuda_graphs=false")
    if precision == "bfloat16" and not fast_bfloat16(device):
        warnings.warn(f"train.precision=bfloat16: this CPU has no fast bfloat16 arithmetic (torch "
                      f"sees {torch.backends.cpu.get_cpu_capability()}), so training runs slower "
                      "than in float32; use train.precision=float32", stacklevel=2)
    if engine in ("traced", "compiled"):
        return TracedStepper(vae, loss, num_particles, lr, clip_norm, precision, adam_eps,
                             compile=engine == "compiled", fallback=auto, cuda_graphs=cuda_graphs)
    stepper = SVIStepper if engine == "svi" else TorchStepper
    return stepper(vae, loss, num_particles, lr, clip_norm, precision, adam_eps)
