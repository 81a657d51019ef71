"""The optimization step: one of the losses (``trace``, ``meanfield``, ``analytic``) and Adam
(Kingma & Ba 2015), behind one interface, by engine:

- ``svi``: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` (one torch Adam per parameter, found
  through Pyro's parameter store): Pyro's reference training loop.
- ``torch``: the same loss from Pyro's ``ELBO.differentiable_loss`` (or the analytic loss), and a
  single ``torch.optim.Adam`` over ``vae.parameters()``: less overhead per step.
- ``traced``: the ``torch`` engine's step recorded once per batch shape (``make_fx``) and
  replayed: the same operations without Pyro's Python at every step (``TracedStepper``).
- ``compiled``: ``traced`` with the recorded graph compiled by ``torch.compile`` (seconds of
  compilation per batch shape, then the fastest step; see BENCHMARKS.md).

All clip gradients per parameter when ``clip_norm`` is set (as ``pyro.optim`` does), and all
save and restore their optimizer state, so a run resumes exactly under every engine. All run
their steps with Pyro's validation off (about 8% of a CPU step at batch 128, measured in
BENCHMARKS.md): ``pyrovae.fit`` checks the data once, up front, and the tests run the model and
guide with validation on. All use torch's fused Adam kernel on CPU and CUDA (one pass over each
parameter instead of about ten; the same update up to rounding).

``precision="bfloat16"`` runs the loss under ``torch.autocast`` (Micikevicius et al. 2018): the
networks' matrix products in bfloat16, their outputs cast back to float32 (see ``pyrovae.nets``)
so that every log-density, the KL and the loss stay float32, as do the weights and Adam's state.
BENCHMARKS.md measures its speed and its effect on the ELBO.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from unittest import mock

import pyro
import pyro.infer.trace_elbo
import pyro.infer.trace_mean_field_elbo
import pyro.optim
import torch
from pyro.infer import SVI
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae import objectives
from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.model import VAE

ENGINES = ("svi", "torch", "traced", "compiled")
PRECISIONS = ("float32", "bfloat16")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device`` (disabled for float32)."""
    if precision not in PRECISIONS:
        raise choice_error("precision", precision, PRECISIONS)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def adam_options(vae: VAE) -> dict:
    """``fused=True`` where torch has a fused Adam for every parameter (CPU and CUDA)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in vae.parameters())
    return {"fused": True} if fused else {}


def _device(vae: VAE) -> torch.device:
    return next(iter(vae.parameters()), torch.empty(0)).device


class SVIStepper:
    """``pyro.infer.SVI`` + ``pyro.optim.Adam``."""

    def __init__(self, vae: VAE, loss: str, num_particles: int, lr: float,
                 clip_norm: float | None = None, precision: str = "float32") -> None:
        self.vae = vae
        clip = {"clip_norm": clip_norm} if clip_norm else {}
        self.optim = pyro.optim.Adam({"lr": lr, **adam_options(vae)}, clip_args=clip)
        self.svi = SVI(vae.model, vae.guide, self.optim,
                       objectives.svi_loss(loss, vae, num_particles))
        self.autocast = functools.partial(autocast, _device(vae), precision)
        self.autocast()  # a bad precision fails here, before training

    def step(self, x: torch.Tensor, num_data: int) -> float:
        # SVI runs loss and backward in one call; autocast leaves the backward ops in the
        # dtypes of their forward ops.
        with pyro.validation_enabled(False), self.autocast():
            return self.svi.step(x, num_data=num_data)

    def set_lr(self, lr: float) -> None:
        for opt in self.optim.optim_objs.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def state_dict(self) -> dict:
        """Optimizer state keyed by parameter names without the VAE's Pyro prefix."""
        prefix = self.vae.pyro_prefix
        return {name.removeprefix(prefix): s for name, s in self.optim.get_state().items()}

    def load_state_dict(self, state: dict) -> None:
        self.optim.set_state({self.vae.pyro_prefix + name: s for name, s in state.items()})


class TorchStepper:
    """``ELBO.differentiable_loss`` + one ``torch.optim.Adam`` over all parameters."""

    def __init__(self, vae: VAE, loss: str, num_particles: int, lr: float,
                 clip_norm: float | None = None, precision: str = "float32") -> None:
        self.vae = vae
        self.loss = objectives.differentiable_loss(loss, vae, num_particles)
        self.params = [p for p in vae.parameters() if p.requires_grad]
        self.optim = torch.optim.Adam(self.params, lr=lr, **adam_options(vae))
        self.clip_norm = clip_norm
        self.autocast = functools.partial(autocast, _device(vae), precision)
        self.autocast()

    def backward(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        """The loss of the batch; its gradients in the parameters' ``.grad``."""
        self.optim.zero_grad(set_to_none=True)
        with pyro.validation_enabled(False), self.autocast():
            loss = self.loss(x, num_data)
        loss.backward()
        return loss

    def step(self, x: torch.Tensor, num_data: int) -> float:
        loss = self.backward(x, num_data)
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
    so Adam's updates and KL warm-up reach it; ``num_data`` and train/eval mode are fixed per
    graph (a new one is recorded when they change). Random draws stay in the graph as
    operations on torch's generator (in the compiled graph too: inductor's ``fallback_random``),
    so a step draws the same noise as the ``torch`` engine. Tracing runs the step once for
    real, so the generator and the buffers are restored after it: it leaves no trace in the
    noise or in batch-norm statistics.
    """

    def __init__(self, vae: VAE, loss: str, num_particles: int, lr: float,
                 clip_norm: float | None = None, precision: str = "float32",
                 compile: bool = False) -> None:
        super().__init__(vae, loss, num_particles, lr, clip_norm, precision)
        self.compile = compile
        self.graphs: dict[tuple, Callable] = {}

    def backward(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        self.vae.check(x)  # the input checks run eagerly (a graph cannot hold them)
        key = (tuple(x.shape), x.dtype, x.device, num_data, self.vae.training)
        if key not in self.graphs:
            self.graphs[key] = self._trace(x, num_data)
        beta = torch.tensor(float(self.vae.beta), device=x.device)
        loss, *grads = self.graphs[key](x, beta)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        return loss

    def _trace(self, x: torch.Tensor, num_data: int) -> Callable:
        def loss_and_grads(x: torch.Tensor, beta: torch.Tensor) -> tuple:
            self.vae.beta = beta
            with self.autocast():
                loss = self.loss(x, num_data)
            return (loss.detach(), *torch.autograd.grad(loss, self.params, allow_unused=True))

        beta, checks = self.vae.beta, self.vae.validate_inputs
        buffers = [(b, b.clone()) for b in self.vae.buffers()]  # batch-norm statistics
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            self.vae.validate_inputs = False
            with torch.random.fork_rng(devices), pyro.validation_enabled(False), _traceable():
                graph = make_fx(loss_and_grads)(x, torch.tensor(float(beta), device=x.device))
        except RuntimeError as err:  # data-dependent Python (a .item(), an if on a tensor)
            cause = str(err).strip().splitlines()[0]
            raise PyrovaeError(
                f"train.engine=traced/compiled cannot record this model's step ({cause[:200]}): "
                "its Python depends on tensor values; use train.engine=torch"
            ) from None
        finally:
            self.vae.beta, self.vae.validate_inputs = beta, checks
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)  # in place: the graph reads these very tensors
        if not self.compile:
            return graph
        return _compile(graph)


@contextlib.contextmanager
def _traceable() -> Iterator[None]:
    """Pyro's ELBOs read the loss's value with ``.item()`` (for a number they do not return)
    and hook a NaN check on it; neither can be traced, and neither changes the loss or its
    gradients, so both are switched off while tracing."""
    with contextlib.ExitStack() as stack:
        for module in (pyro.infer.trace_elbo, pyro.infer.trace_mean_field_elbo):
            stack.enter_context(mock.patch.object(module, "torch_item", lambda v: v))
            stack.enter_context(mock.patch.object(module, "warn_if_nan", lambda v, *_, **__: v))
        yield


def _compile(graph: Callable) -> Callable:
    """``torch.compile`` of a recorded step, with inductor's ``fallback_random`` (random draws
    use torch's generator, as in eager mode); a failed compilation becomes a one-line error."""
    import torch._dynamo.exc

    compiled = torch.compile(graph, dynamic=False, options={"fallback_random": True})

    def call(*args):
        try:
            with _quiet_compiler_logs():
                return compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            cause = str(err).strip().splitlines()[0]
            raise PyrovaeError(
                f"train.engine=compiled: torch.compile failed ({cause}); on a CPU it needs a "
                "working C++ compiler (such as g++); train.engine=traced runs the same graph "
                "without compiling it"
            ) from None

    return call


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
                 clip_norm: float | None = None,
                 precision: str = "float32") -> SVIStepper | TorchStepper:
    """The training step of ``engine`` (``svi``, ``torch``, ``traced``, ``compiled``) in
    ``precision``."""
    if engine not in ENGINES:
        raise choice_error("engine", engine, ENGINES)
    if engine in ("traced", "compiled"):
        return TracedStepper(vae, loss, num_particles, lr, clip_norm, precision,
                             compile=engine == "compiled")
    stepper = SVIStepper if engine == "svi" else TorchStepper
    return stepper(vae, loss, num_particles, lr, clip_norm, precision)
