"""Checkpoints hold tensors and plain data only and are read with ``weights_only=True``: a
crafted file cannot run code, an old one (numpy RNG state) is refused with a one-line error and
can be converted, and the RNG states survive the round trip exactly."""

from __future__ import annotations

import os
import pickle
import random
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae import checkpoint
from pyrovae.errors import PyrovaeError

PLAIN = (torch.Tensor, str, int, float, bool, type(None))


def _plain(value) -> bool:
    """Only tensors, numbers, strings, None, and dicts / lists / tuples of them."""
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, PLAIN) and not isinstance(value, np.generic)


class _RunsACommand:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _draws(generator: torch.Generator) -> tuple:
    return (torch.rand(3).tolist(), random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
            np.random.randn(), torch.rand(3, generator=generator).tolist())


def test_rng_state_is_plain_data_and_round_trips_through_a_weights_only_file(tmp_path):
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    random.gauss(0, 1), np.random.randn()  # cached Gaussians in both Mersenne Twisters
    state = checkpoint.rng_state(generator)
    assert _plain(state), state.keys()
    checkpoint.atomic_save({"rng": state}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    first = _draws(generator)
    checkpoint.set_rng_state(loaded, generator)
    assert _draws(generator) == first  # exactly the same numbers from every generator
    checkpoint.set_rng_state(state, generator)
    _draws(generator)
    assert _draws(generator) != first  # (the comparison can fail)


def test_a_checkpoint_that_would_run_a_command_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": _RunsACommand(marker)}, path)
    with pytest.raises(PyrovaeError) as err:
        checkpoint.read(path)
    message = str(err.value)
    assert "\n" not in message and "weights_only=True" in message and "system" in message
    assert not marker.exists()
    with pytest.raises(PyrovaeError):
        checkpoint.load(path)
    assert not marker.exists()
    # the test double: the old read (weights_only=False) runs the command
    torch.load(path, weights_only=False)
    assert marker.exists()


def _old_checkpoint(path: Path, generator: torch.Generator) -> dict:
    """A checkpoint as pyrovae wrote it before: numpy's RNG state as a tuple holding an array,
    Python's as a tuple."""
    from pyrovae.model import VAE

    vae = VAE(x_shape=(1, 4, 4), z_dim=2, hidden=[8])
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": np.random.get_state(), "batches": generator.get_state()}
    torch.save({"model": vae.state_dict(), "config": {"model": {"z_dim": 2}},
                "x_shape": (1, 4, 4), "rng": rng}, path)
    return vae.state_dict()


def test_an_old_checkpoint_is_refused_with_a_clear_message_and_can_be_converted(tmp_path):
    generator = torch.Generator().manual_seed(0)
    np.random.seed(7)
    path = tmp_path / "checkpoint.pt"
    weights = _old_checkpoint(path, generator)
    with pytest.raises(PyrovaeError) as err:
        checkpoint.read(path)
    message = str(err.value)
    assert "\n" not in message and "older pyrovae" in message and "re-create" in message
    assert "numpy" in message and "convert" in message
    expected = np.random.rand(4)
    np.random.seed(99)
    assert checkpoint.convert(path) == path
    ckpt = checkpoint.read(path)  # now plain data
    assert _plain(ckpt["rng"]) and torch.equal(ckpt["model"]["encoder.net.0.weight"],
                                               weights["encoder.net.0.weight"])
    checkpoint.set_rng_state(ckpt["rng"], generator)
    assert np.array_equal(np.random.rand(4), expected)


def test_truncated_and_missing_files_are_one_line_errors(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.atomic_save({"model": {}, "config": {}}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PyrovaeError, match="not a readable pyrovae checkpoint"):
        checkpoint.read(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PyrovaeError, match=r"holds no run \(best.pt or checkpoint.pt\)"):
        checkpoint.read(empty)
    with pytest.raises(PyrovaeError, match="does not exist"):
        checkpoint.read(tmp_path / "nope.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(PyrovaeError, match="no model and config"):
        checkpoint.read(tmp_path / "list.pt")


def test_a_real_run_is_plain_data_and_loads(small_run):
    for name in (checkpoint.CHECKPOINT, checkpoint.BEST):
        ckpt = torch.load(small_run / name, weights_only=True)
        assert _plain(ckpt), name
    ckpt = checkpoint.read(small_run / checkpoint.CHECKPOINT)
    assert {"model", "optim", "rng", "config", "epoch"} <= set(ckpt)
    assert checkpoint.load(small_run).z_dim == 4


def _set(ckpt: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        ckpt = ckpt[key]
    if value is _DROP:
        del ckpt[last]
    else:
        ckpt[last] = value


_DROP = object()


@pytest.mark.parametrize("key, value, words", [
    ("config.model.z_dim", 16, "its weights do not fit its config"),
    ("x_shape", _DROP, "x_shape=None is missing"),
    ("x_shape", (3, 5), "its weights do not fit its config"),
    ("x_shape", [0, -1], "is missing or not a list of positive sizes"),
    ("model", 5, "its weights do not fit its config"),
    ("model", {}, "its weights do not fit its config"),
])
def test_an_edited_checkpoint_is_a_one_line_error_when_loaded(small_run, tmp_path, key, value,
                                                               words):
    """Plain data that unpickles safely but does not fit together: pyrovae.load (as generate,
    evaluate and check use it) says so in one line."""
    ckpt = torch.load(small_run / checkpoint.BEST, weights_only=True)
    _set(ckpt, key, value)
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(PyrovaeError, match=words) as err:
        checkpoint.load(tmp_path / "edited.pt", log=None)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("rng", _DROP), ("optim", _DROP), ("metrics", _DROP), ("epoch", "x"), ("epoch", -1),
    ("rng", {"torch": 5}),
])
def test_an_edited_checkpoint_is_a_one_line_error_when_resumed(small_run, tmp_path, key, value):
    ckpt = torch.load(small_run / checkpoint.CHECKPOINT, weights_only=True)
    checkpoint.check_resumable(ckpt, "checkpoint.pt")  # the real one is resumable
    _set(ckpt, key, value)
    with pytest.raises(PyrovaeError, match="cannot be resumed"):
        checkpoint.check_resumable(ckpt, "checkpoint.pt")
    best = torch.load(small_run / checkpoint.BEST, weights_only=True)
    with pytest.raises(PyrovaeError, match="cannot be resumed"):
        checkpoint.check_resumable(best, "best.pt")  # no optimizer, no random states


def test_random_bytes_and_a_raw_pickle_are_one_line_errors_without_warnings(tmp_path):
    """Bytes that are no checkpoint, and an old-style pickle file that would run a command: one
    line, no torch warning printed before it, and no command run."""
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    marker = tmp_path / "ran"
    with open(tmp_path / "raw.pt", "wb") as f:
        pickle.dump({"model": _RunsACommand(marker), "config": {}}, f, protocol=4)
    for name in ("random.pt", "raw.pt"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would fail the test
            with pytest.raises(PyrovaeError, match="not a readable pyrovae checkpoint"):
                checkpoint.read(tmp_path / name)
    assert not marker.exists()
