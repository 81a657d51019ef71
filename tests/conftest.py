"""Shared fixtures: the read-only data mirror (real MNIST), a cache root, MNIST splits."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # pytest -n N: N workers share the cores; one thread each (and in the processes they start)
    # instead of N x torch's default, which makes them wait for each other at every operation
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def has_cxx() -> bool:
    """Whether torch.compile finds a C++ compiler (the ``compiled`` engine needs one on a CPU)."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception:
        return False
    return True


needs_cxx = pytest.mark.skipif(not has_cxx(), reason="torch.compile needs a C++ compiler")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "real_data: needs the real datasets in the data mirror (PYROVAE_DATA_MIRROR, else "
        "../shared/data); fails, never skips, when they are missing",
    )


#: Tests that run for many seconds (torchrun launches, a notebook's kernel, compilers, NUTS,
#: trained models), longest first: collected before the others, so that under xdist the short
#: tests fill the cores around them instead of a long test ending the run on one core. Whole
#: modules, or tests of a module without module-scoped fixtures (no fixture is set up twice).
LONG_FIRST = ("tests/test_distributed.py",
              "tests/test_notebooks.py::test_notebook_runs_in_fast_mode", "tests/test_optim.py",
              "tests/test_check.py", "tests/test_benchmarks.py", "tests/test_diagnostics.py")


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        return next((i for i, p in enumerate(LONG_FIRST) if item.nodeid.startswith(p)),
                    len(LONG_FIRST))

    items.sort(key=rank)  # stable: in the order found within each rank


def one_line_error(fn, *args, match: tuple[str, ...] = (), **kwargs) -> str:
    """Call fn, expect a one-line PyrovaeError containing every string of ``match``."""
    from pyrovae.errors import PyrovaeError

    with pytest.raises(PyrovaeError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    for part in match:
        assert part in message, (part, message)
    return message


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def prior_options(name: str, **options) -> dict:
    """The ``options`` that the prior registered under ``name`` takes (it declares them)."""
    from pyrovae.priors import PRIORS

    return {k: v for k, v in options.items() if k in PRIORS[name].options}


def other_value(option):
    """A valid value of ``option`` (a :class:`pyrovae.options.Option`) other than its default,
    derived from its declaration: a test over every registered option needs no table of them."""
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    if option.type is bool:
        return not option.default
    if option.type is list:
        return [v + 1 for v in option.default] or [8]
    if option.type is int:
        return option.default // 2 if option.default >= 2 else option.default + 1
    return option.default / 2 if option.default else 0.5  # float; ranges are > 0 or >= 0


def mirror_path() -> Path:
    """PYROVAE_DATA_MIRROR, else ../shared/data beside the repository."""
    return Path(os.environ.get("PYROVAE_DATA_MIRROR", REPO.parent / "shared" / "data"))


MNIST_FILES = ("MNIST/raw/t10k-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte.gz")


def _download_mnist(path: Path, missing: list[str]) -> Path:
    """A mirror of real MNIST downloaded by torchvision, for a machine without the mirror (a
    user's, with internet): ``~/.cache/pyrovae/test-mirror/<xdist worker>``, reused. Without
    internet the test FAILS, saying what to do."""
    import torchvision

    from pyrovae.data.cache import default_root

    root = default_root().parent / "test-mirror" / os.environ.get("PYTEST_XDIST_WORKER", "main")
    try:
        for train in (True, False):
            torchvision.datasets.MNIST(str(root), train=train, download=True)
    except Exception as err:  # noqa: BLE001  (any download failure: one message)
        pytest.fail(f"real MNIST is missing from the data mirror {path} ({', '.join(missing)}) "
                    f"and could not be downloaded ({type(err).__name__}): set "
                    f"PYROVAE_DATA_MIRROR to a folder holding MNIST/raw/*.gz", pytrace=False)
    return root


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The mirror with real MNIST: PYROVAE_DATA_MIRROR (else ../shared/data), else MNIST as
    torchvision downloads it. Missing data FAILS the test (it must not skip silently)."""
    path = mirror_path().resolve()
    missing = [f for f in MNIST_FILES if not (path / f).is_file()]
    if missing:
        path = _download_mnist(path, missing)
    os.environ["PYROVAE_DATA_MIRROR"] = str(path)
    return path


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def mnist_binary(mirror, data_root):
    """MNIST (first 5,000 training images), test set stochastically binarized once."""
    from pyrovae.data import load_data

    return load_data("mnist", root=data_root, mirror=str(mirror), limit=5000, binarize="dynamic")


@pytest.fixture(scope="session")
def mnist_grey(mirror, data_root):
    from pyrovae.data import load_data

    return load_data("mnist", root=data_root, mirror=str(mirror), limit=5000, binarize="none")


@pytest.fixture(scope="session")
def small_run(mirror, data_root, tmp_path_factory) -> Path:
    """A run folder: a small VAE (z_dim 4, one hidden layer of 64) trained for one epoch on 2,000
    MNIST images."""
    from pyrovae import fit
    from pyrovae.config import load_config

    out = tmp_path_factory.mktemp("small_run")
    overrides = ["data.limit=2000", "model.z_dim=4", "model.hidden=[64]", "train.epochs=1",
                 "train.progress=false", "train.engine=torch", f"data.root={data_root}",
                 f"run_dir={out}"]
    return fit.fit(load_config(None, overrides), log=lambda *a: None)


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    yield


def binary_batch(n: int = 8, shape=(1, 28, 28), p: float = 0.3) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *shape), p))
