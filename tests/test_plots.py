"""The figures' grids of z: the 2-d manifold covers where the prior's mass is, for every prior."""

from __future__ import annotations

import pytest
import torch

from pyrovae import VAE
from pyrovae.check import move_prior
from pyrovae.plots import prior_quantiles
from pyrovae.priors import PRIORS
from tests.conftest import prior_options

Q = torch.tensor([0.05, 0.95])


def _coverage(vae: VAE, box: torch.Tensor) -> float:
    """The prior's mass in the box [box[0], box[1]] (per dimension), from 20,000 draws."""
    torch.manual_seed(1)
    z = vae.prior().sample((20000,))
    return float(((z >= box[0]) & (z <= box[1])).all(-1).float().mean())


@pytest.mark.parametrize("name", list(PRIORS))
def test_the_manifold_grid_covers_the_priors_mass(name):
    """The 5% and 95% quantiles of each dimension of a prior (moved off its initial values) hold
    about 0.9^2 of its mass, for every prior (within the Monte Carlo error of the quantiles);
    for the standard normal they are N(0, 1)'s, exactly."""
    torch.manual_seed(0)
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], prior=name, **prior_options(name, components=3))
    move_prior(vae, seed=0, spread=2.0)
    if name == "normal":
        assert torch.equal(prior_quantiles(vae, Q),
                           torch.distributions.Normal(0.0, 1.0).icdf(Q)[:, None].expand(2, 2))
    assert abs(_coverage(vae, prior_quantiles(vae, Q)) - 0.81) < 0.03


def test_the_standard_normal_grid_misses_a_learned_priors_mass():
    """The test double: the N(0, 1) quantiles that the grid used for every prior hold almost
    none of a learned prior centred at 5."""
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], prior="diag_normal")
    with torch.no_grad():
        vae.prior_net.loc.fill_(5.0)
    standard = torch.distributions.Normal(0.0, 1.0).icdf(Q)[:, None].expand(2, 2)
    assert _coverage(vae, standard) < 0.01
    assert abs(_coverage(vae, prior_quantiles(vae, Q)) - 0.81) < 0.03
