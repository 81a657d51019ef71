"""The classic hand-written PyTorch VAE, the baseline of the benchmarks.

It is the architecture and loss of the well-known PyTorch example (784-400-20 MLP with ReLU, a
(mu, log-variance) encoder head, sigmoid logits, binary cross-entropy + analytic KL, Adam), with
widths taken from the pyrovae config so both sides run the same networks; and its classic data
loop: a torchvision dataset with ``transforms.ToTensor()`` and a ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ClassicVAE(nn.Module):
    """Encoder D-h...-2z (mu, log sigma^2), decoder z-h...-D (logits), ReLU."""

    def __init__(self, x_dim: int = 784, hidden: Sequence[int] = (400,), z_dim: int = 20) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = _mlp([x_dim, *hidden, 2 * z_dim])
        self.dec = _mlp([z_dim, *hidden[::-1], x_dim])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO summed over the batch: BCE + 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2)."""
        x = x.flatten(1)
        mu, log_var = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        bce = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * torch.sum(log_var.exp() + mu.pow(2) - 1.0 - log_var)
        return bce + kl


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ClassicStepper:
    """zero_grad, loss, backward, Adam: the hand-written training step (default Adam); with
    ``bfloat16``, the loss under ``torch.autocast``, as the PyTorch AMP recipe writes it."""

    def __init__(self, model: ClassicVAE, lr: float = 1e-3, bfloat16: bool = False) -> None:
        self.model = model
        self.optim = torch.optim.Adam(model.parameters(), lr=lr)
        self.device = next(model.parameters()).device
        self.bfloat16 = bfloat16

    def step(self, x: torch.Tensor, num_data: int | None = None) -> float:
        self.optim.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            loss = self.model.loss(x)
        loss.backward()
        self.optim.step()
        return loss.item()


def classic_loader(root: str, batch_size: int = 128, limit: int = 50000):
    """torchvision MNIST with ``ToTensor()`` in a shuffled ``DataLoader`` (the classic loop),
    restricted to the same first ``limit`` training images that pyrovae trains on."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    data = datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor())
    return DataLoader(Subset(data, range(limit)), batch_size=batch_size, shuffle=True)


def classic_epoch(stepper: ClassicStepper, loader, device: torch.device,
                  binarize: bool = True) -> float:
    """One epoch of the classic loop; returns the mean loss per example. ``binarize`` samples
    binary pixels per batch as pyrovae's dynamic binarization does (same work on both sides)."""
    total, n = 0.0, 0
    for x, _ in loader:
        x = x.to(device)
        if binarize:
            x = torch.bernoulli(x)
        total += stepper.step(x)
        n += x.shape[0]
    return total / n
