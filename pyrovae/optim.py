"""The optimization step: one of the losses (``trace``, ``meanfield``, ``analytic``) and Adam
(Kingma & Ba 2015), behind one interface, by engine:

- ``svi``: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` (one torch Adam per parameter, found
  through Pyro's parameter store): Pyro's reference training loop.
- ``torch``: the same loss from Pyro's ``ELBO.differentiable_loss`` (or the analytic loss), and a
  single multi-tensor ``torch.optim.Adam`` over ``vae.parameters()``: less overhead per step
  (see BENCHMARKS.md).

Both clip gradients per parameter when ``clip_norm`` is set (as ``pyro.optim`` does), and both
save and restore their optimizer state, so a run resumes exactly under either engine. Both run
their steps with Pyro's validation off (about 8% of a CPU step at batch 128, measured in
BENCHMARKS.md): ``pyrovae.fit`` checks the data once, up front, and the tests run the model and
guide with validation on. Both use torch's fused Adam kernel on CPU and CUDA (one pass over each
parameter instead of about ten; the same update up to rounding).

``precision="bfloat16"`` runs the loss under ``torch.autocast`` (Micikevicius et al. 2018): the
networks' matrix products in bfloat16, their outputs cast back to float32 (see ``pyrovae.nets``)
so that every log-density, the KL and the loss stay float32, as do the weights and Adam's state.
BENCHMARKS.md measures its speed and its effect on the ELBO.
"""

from __future__ import annotations

import functools

import pyro
import pyro.optim
import torch
from pyro.infer import SVI

from pyrovae import objectives
from pyrovae.errors import choice_error
from pyrovae.model import VAE

ENGINES = ("svi", "torch")
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
        self.loss = objectives.differentiable_loss(loss, vae, num_particles)
        self.params = [p for p in vae.parameters() if p.requires_grad]
        self.optim = torch.optim.Adam(self.params, lr=lr, **adam_options(vae))
        self.clip_norm = clip_norm
        self.autocast = functools.partial(autocast, _device(vae), precision)
        self.autocast()

    def step(self, x: torch.Tensor, num_data: int) -> float:
        self.optim.zero_grad(set_to_none=True)
        with pyro.validation_enabled(False), self.autocast():
            loss = self.loss(x, num_data)
        loss.backward()
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


def make_stepper(engine: str, vae: VAE, loss: str, num_particles: int = 1, lr: float = 1e-3,
                 clip_norm: float | None = None,
                 precision: str = "float32") -> SVIStepper | TorchStepper:
    """The training step of ``engine`` (``svi`` or ``torch``) in ``precision``."""
    classes = {"svi": SVIStepper, "torch": TorchStepper}
    if engine not in classes:
        raise choice_error("engine", engine, ENGINES)
    return classes[engine](vae, loss, num_particles, lr, clip_norm, precision)
