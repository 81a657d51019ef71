"""Published numbers: a run is matched with Burda et al.'s row of the bound it trained and its
K."""

from __future__ import annotations

from pyrovae.literature import BURDA_2015, burda_2015
from pyrovae.objectives import OBJECTIVES


def test_published_rows_are_found_by_bound_and_k():
    """A run is compared with Burda et al.'s row of the bound it trained and its K, whatever the
    estimator; the IWAE bound with K = 1 is the ELBO; a bound and K not in the table has none."""
    for (bound, k), row in BURDA_2015.items():
        for name, cls in OBJECTIVES.items():
            if cls.bound_name == bound:
                assert burda_2015(name, k) == row
    for name, cls in OBJECTIVES.items():
        if cls.bound_name in ("ELBO", "IWAE"):
            assert burda_2015(name, 1) == BURDA_2015["ELBO", 1]
        assert burda_2015(name, 7) is None
