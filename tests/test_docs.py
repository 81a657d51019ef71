"""The documentation names every registered component: each row of README's config table that
lists the choices of a key, and the first lines of the modules that hold a registry. A component
added with its registry line and no word in the docs fails here, naming what to add where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyrovae import likelihoods, nets, priors
from pyrovae.data import SOURCES
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.nets import NETS
from pyrovae.objectives import OBJECTIVES
from pyrovae.optim import ENGINES
from pyrovae.priors import PRIORS
from pyrovae.schedules import SCHEDULES

README = Path(__file__).resolve().parents[1] / "README.md"
REGISTRIES = {"data.name": SOURCES, "model.prior": PRIORS, "model.likelihood": LIKELIHOODS,
              "model.net": NETS, "train.loss": OBJECTIVES, "train.engine": ENGINES,
              "train.schedule": SCHEDULES}


def _row(key: str, text: str) -> str:
    """The line for ``key`` of README's config table (the section "Config keys")."""
    section = text.split("### Config keys", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, f"README.md has {len(rows)} config-table rows for {key}"
    return rows[0]


def unnamed(names, text: str) -> list[str]:
    """The ``names`` that ``text`` does not name in backticks."""
    quoted = set(re.findall(r"`([^`]+)`", text))
    return [name for name in names if name not in quoted]


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_readme_config_table_names_every_registered_choice(key):
    missing = unnamed(REGISTRIES[key], _row(key, README.read_text()))
    assert not missing, f"README.md's row for {key} does not name {missing}"


@pytest.mark.parametrize("module, registry", [(priors, PRIORS), (likelihoods, LIKELIHOODS),
                                              (nets, NETS)])
def test_module_docstrings_name_every_registered_component(module, registry):
    first = module.__doc__.split("\n\n")[0]
    missing = unnamed(registry, first.replace("``", "`"))
    assert not missing, f"the first lines of {module.__name__}'s docstring do not name {missing}"


def test_a_missing_name_is_seen():
    """The test double: a README row without one of the registered names."""
    row = _row("model.prior", README.read_text()).replace("`vamp`", "vamp")
    assert unnamed(PRIORS, row) == ["vamp"]
