"""Learning-rate schedules (``train.schedule``): every registered schedule starts at ``train.lr``
and never rises; Burda et al.'s stages keep their 3^i proportions at any length; the cosine
schedule is symmetric about its midpoint and reaches 0 at the end of the budget."""

from __future__ import annotations

import math

import pytest

from pyrovae.schedules import BURDA_EPOCHS, SCHEDULES, burda_stage, learning_rate

LR = 2e-3


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("epochs", [1, 7, 470, BURDA_EPOCHS])
def test_every_schedule_starts_at_lr_and_never_rises(name, epochs):
    rates = [learning_rate(name, LR, e, epochs, lr_decay=0.97) for e in range(epochs + 5)]
    assert rates[0] == LR
    assert all(b <= a for a, b in zip(rates, rates[1:]))
    assert all(r >= 0 for r in rates)


def test_burda_stages_at_full_length_are_3_to_the_i():
    counts = [0] * 8
    for e in range(BURDA_EPOCHS):
        counts[burda_stage(e, BURDA_EPOCHS)] += 1
    assert counts == [3**i for i in range(8)]
    assert learning_rate("burda", LR, BURDA_EPOCHS - 1, BURDA_EPOCHS) == pytest.approx(LR / 10)


def test_burda_compressed_keeps_the_proportions():
    epochs = 760
    last = sum(burda_stage(e, epochs) == 7 for e in range(epochs))
    assert last == pytest.approx(epochs * 3**7 / BURDA_EPOCHS, abs=1)


def test_cosine_is_symmetric_and_ends_at_zero():
    epochs = 470
    for e in range(epochs + 1):
        pair = learning_rate("cosine", LR, e, epochs) + learning_rate("cosine", LR, epochs - e,
                                                                      epochs)
        assert pair == pytest.approx(LR, rel=1e-12)
    assert learning_rate("cosine", LR, epochs // 2, epochs) == pytest.approx(LR / 2, rel=1e-12)
    assert learning_rate("cosine", LR, epochs, epochs) == pytest.approx(0.0, abs=1e-18)
    assert learning_rate("cosine", LR, epochs + 10, epochs) == learning_rate("cosine", LR, epochs,
                                                                              epochs)
    # a linear decay would also start at lr and end at 0: the midpoint and a quarter tell them apart
    quarter = learning_rate("cosine", LR, epochs // 4 + 0.5, epochs)
    assert quarter == pytest.approx(LR * (1 + math.cos(math.pi / 4)) / 2, rel=1e-3)
