"""Published results that pyrovae's benchmarks compare with.

Burda, Grosse & Salakhutdinov (2015), "Importance weighted autoencoders", Table 1: MNIST,
dynamically binarized; one stochastic layer of 50 units, two deterministic layers of 200 tanh
units (``configs/burda_*.yaml``), 3,280 passes; the test negative log-likelihood, their IWAE
estimate with 5,000 samples per image, in nats. The IWAE k = 5 number as the nbip/IWAE
reproduction's README quotes the table (it gives the other two as here; the paper's PDF was not
at hand to check).
"""

from __future__ import annotations

from pyrovae.objectives import OBJECTIVES

#: (bound trained, K) -> (Burda et al.'s row, test -log p(x) in nats).
BURDA_2015: dict[tuple[str, int], tuple[str, float]] = {
    ("ELBO", 1): ("VAE, k = 1", 86.76),
    ("IWAE", 5): ("IWAE, k = 5", 85.54),
    ("IWAE", 50): ("IWAE, k = 50", 84.78),
}


def burda_2015(loss: str, num_particles: int) -> tuple[str, float] | None:
    """Burda et al.'s row for a model trained with the objective ``loss`` (``train.loss``) and
    K = ``num_particles``: the row of the same bound and K, whatever the gradient estimator
    (``iwae_dreg`` trains the IWAE bound, as ``iwae`` does; ``meanfield`` the ELBO), or None.
    The IWAE bound with K = 1 is the ELBO."""
    bound = OBJECTIVES[loss].bound_name
    if bound == "IWAE" and num_particles == 1:
        bound = "ELBO"
    return BURDA_2015.get((bound, num_particles))
