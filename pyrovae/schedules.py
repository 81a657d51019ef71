"""Learning-rate schedules by epoch (``train.schedule``), and the decoder's output-bias start.

- ``exponential``: lr * lr_decay^epoch (a constant rate with the default ``lr_decay = 1``).
- ``burda``: the schedule of Burda, Grosse & Salakhutdinov (2015), Sec. 5: 8 stages; stage i
  (i = 0..7) runs 3^i passes at lr * 10^(-i/7), 3,280 passes in all. With ``train.epochs``
  other than 3,280 the stages keep their proportions (stage i is 3^i / 3,280 of the epochs), so
  a shorter budget runs the same decay compressed; past the last stage the rate stays at the
  last stage's.
- ``cosine``: lr * (1 + cos(pi * epoch / epochs)) / 2, from lr at the first epoch towards 0 at
  the last (Loshchilov & Hutter 2017, without restarts): the schedule for a fixed budget, where
  ``train.epochs`` is what the budget allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

BURDA_STAGES = 8
BURDA_EPOCHS = (3**BURDA_STAGES - 1) // 2  # 1 + 3 + ... + 3^7 = 3280

#: ``model.output_bias``: the decoder's output bias as built, or set to the likelihood's
#: parameter of the training data's mean (the logit of the mean pixel for Bernoulli).
OUTPUT_BIAS = ("default", "data_mean")


def burda_stage(epoch: int, epochs: int) -> int:
    """The stage (0..7) of the Burda et al. schedule that ``epoch`` (0-based) falls in when the
    whole schedule is ``epochs`` passes long."""
    for stage in range(BURDA_STAGES):
        end = epochs * (3 ** (stage + 1) - 1) / 2 / BURDA_EPOCHS  # passes through this stage
        if epoch < end - 1e-9:
            return stage
    return BURDA_STAGES - 1


def exponential(lr: float, epoch: int, epochs: int, lr_decay: float = 1.0) -> float:
    return lr * lr_decay**epoch


def burda(lr: float, epoch: int, epochs: int, lr_decay: float = 1.0) -> float:
    return lr * 10 ** (-burda_stage(epoch, epochs) / 7)


def cosine(lr: float, epoch: int, epochs: int, lr_decay: float = 1.0) -> float:
    return lr * (1 + math.cos(math.pi * min(epoch, epochs) / epochs)) / 2


SCHEDULES: dict[str, Callable[..., float]] = {
    "exponential": exponential, "burda": burda, "cosine": cosine}


def learning_rate(name: str, lr: float, epoch: int, epochs: int, lr_decay: float = 1.0) -> float:
    """The learning rate of the (0-based) ``epoch`` under the schedule ``name``."""
    return SCHEDULES[name](lr, epoch, epochs, lr_decay)
