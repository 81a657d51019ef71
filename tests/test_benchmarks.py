"""The benchmark scripts on tiny settings: the long run's bookkeeping (thresholds, minutes,
IWAE >= ELBO) and the command-line errors. The timings themselves are measured, not tested."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import long_run  # noqa: E402

from pyrovae.config import load_config  # noqa: E402

TINY = ["data.limit=1000", "model.z_dim=4", "model.hidden=[64]", "train.progress=false",
        "train.epochs=3"]


def test_long_run_records_thresholds(mirror, data_root, tmp_path, monkeypatch):
    """With thresholds of 1000, 600 and 1 nats, a tiny model passes the first two at its first
    measurement and never the last; the IWAE-50 log-likelihood lies above the ELBO."""
    monkeypatch.setattr(long_run, "THRESHOLDS", (1000.0, 600.0, 1.0))
    cfg = load_config(None, [*TINY, f"data.root={data_root}", f"run_dir={tmp_path / 'run'}"])
    out = long_run.long_run(cfg, minutes=60, every=2, samples=50, limit=200, batch=100,
                            log=lambda *_: None)
    assert [r["epoch"] for r in out["rows"]] == [2, 3]  # every 2 epochs, and the last one
    first = out["rows"][0]
    assert out["reached"]["1000.0"] == out["reached"]["600.0"] == {
        "epoch": 2, "train_minutes": first["train_minutes"]}
    assert out["reached"]["1.0"] is None
    minutes = [r["train_minutes"] for r in out["rows"]]
    assert 0 < minutes[0] < minutes[1] and out["test_images"] == 200
    for row in out["rows"]:
        assert row["log_likelihood"] > row["test_elbo"]
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_long_run_stops_after_its_minutes(mirror, data_root, tmp_path):
    cfg = load_config(None, [*TINY, f"data.root={data_root}", f"run_dir={tmp_path / 'run'}"])
    out = long_run.long_run(cfg, minutes=1e-6, every=100, samples=5, limit=50, batch=50,
                            log=lambda *_: None)
    assert [r["epoch"] for r in out["rows"]] == [1]  # the budget ends it, measured at the end


@pytest.mark.parametrize("args", [["--every", "0"], ["--minutes", "-1"],
                                  ["--set", "train.engine=jax"]])
def test_long_run_bad_arguments_are_one_line(args, capsys):
    assert long_run.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("long_run: ") and err.count("\n") == 1
