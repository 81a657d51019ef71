"""The time-to-nats benchmark on tiny settings: its bookkeeping (marks, clocks, the budget,
IWAE >= ELBO, the JSON and the curve) and its command-line errors. The timings themselves are
measured, not tested."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import reproduce  # noqa: E402

TINY = ["data.limit=1000", "model.z_dim=4", "model.hidden=[64]", "train.engine=torch",
        "train.epochs=3"]


def _run(tmp_path, data_root, minutes, marks, extra=()):
    args = ["run", "--config", "configs/mnist.yaml", "--minutes", str(minutes), "--eval-at",
            *map(str, marks), "--run-dir", str(tmp_path / "run"), "--iwae-samples", "50",
            "--images", "200", "--json", str(tmp_path / "out.json"), "--plot",
            str(tmp_path / "curve.png"), *extra]
    for item in [*TINY, f"data.root={data_root}"]:
        args += ["--set", item]
    assert reproduce.main(args) == 0
    return json.loads((tmp_path / "out.json").read_text())


def test_curve_has_a_point_per_mark_and_iwae_above_elbo(mirror, data_root, tmp_path):
    """Marks far beyond the run's three epochs: the model at the end is measured once."""
    out = _run(tmp_path, data_root, 60, [30, 60], ["--clock", "cpu"])
    assert [p["mark_minutes"] for p in out["curve"]] == [30]
    assert [e["epoch"] for e in out["epochs"]] == [1, 2, 3]
    for point in out["curve"]:
        assert point["epoch"] == 3 and point["images"] == 200
        assert point["log_likelihood"] > point["test_elbo"]
        assert point["train_minutes"] == point["train_cpu_minutes"] > 0
    assert set(out["reached"]) == set(reproduce.PUBLISHED)
    assert (tmp_path / "run" / "at_30min.pt").is_file() and (tmp_path / "curve.png").is_file()


def test_budget_ends_the_run_and_measures_its_model(mirror, data_root, tmp_path):
    out = _run(tmp_path, data_root, 1e-6, [1e-6, 5])
    assert [e["epoch"] for e in out["epochs"]] == [1]
    assert [p["epoch"] for p in out["curve"]] == [1]


def test_subset_is_fixed_and_random():
    import torch

    x = torch.arange(1000).float()
    a, b = reproduce.test_subset(x, 100), reproduce.test_subset(x, 100)
    assert torch.equal(a, b) and not torch.equal(a, x[:100])
    assert torch.equal(reproduce.test_subset(x, None), x)


@pytest.mark.parametrize("args", [
    ["run", "--config", "configs/mnist.yaml", "--minutes", "-1", "--eval-at", "1",
     "--run-dir", "x"],
    ["run", "--config", "configs/mnist.yaml", "--minutes", "1", "--eval-at", "1",
     "--run-dir", "x", "--set", "train.engine=jax"],
])
def test_bad_arguments_are_one_line(args, capsys):
    assert reproduce.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce: ") and err.count("\n") == 1


def test_a_stopped_runs_checkpoint_joins_its_curve(mirror, data_root, tmp_path):
    out = _run(tmp_path, data_root, 60, [60], ["--clock", "cpu"])
    (ckpt,) = (tmp_path / "run").rglob("checkpoint.pt")
    assert reproduce.main(["evaluate", str(ckpt), "--iwae-samples", "50", "--images", "200",
                           "--append-to", str(tmp_path / "out.json")]) == 0
    after = json.loads((tmp_path / "out.json").read_text())
    last, first = after["curve"][-1], out["curve"][0]
    assert len(after["curve"]) == 2 and last["mark_minutes"] is None
    assert last["epoch"] == 3 and last["train_cpu_minutes"] == pytest.approx(
        first["train_cpu_minutes"])
    assert last["log_likelihood"] == pytest.approx(first["log_likelihood"], abs=1e-9)


def test_background_measures_what_the_run_itself_would(mirror, data_root, tmp_path):
    """--background: a child process measures each saved model while the run goes on; its
    number is the one this process gets for the same model."""
    out = _run(tmp_path, data_root, 60, [30, 60], ["--clock", "cpu", "--background"])
    (point,) = out["curve"]
    assert point["epoch"] == 3 and point["images"] == 200 and point["mark_minutes"] == 30
    assert point["log_likelihood"] > point["test_elbo"]
    model = tmp_path / "run" / "at_30min.pt"
    assert reproduce.main(["evaluate", str(model), "--iwae-samples", "50", "--images", "200",
                           "--json", str(tmp_path / "here.json")]) == 0
    here = json.loads((tmp_path / "here.json").read_text())
    assert point["log_likelihood"] == pytest.approx(here["log_likelihood"], rel=1e-6)
    assert point["stderr"] == pytest.approx(here["stderr"], rel=1e-4)
    assert model.with_suffix(".log").is_file() and set(out["reached"]) == set(reproduce.PUBLISHED)


def test_points_still_being_measured_reach_nothing():
    pending = {"train_minutes": 1.0, "epoch": 1}
    done = {"train_minutes": 2.0, "epoch": 2, "log_likelihood": -80.0}
    assert set(reproduce.reached([pending]).values()) == {None}
    assert list(reproduce.reached([pending, done]).values()) == [
        {"train_minutes": 2.0, "epoch": 2}] * len(reproduce.PUBLISHED)


def test_a_failed_background_measurement_is_one_line(mirror, data_root, tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.setattr(reproduce.Background, "command", lambda self, model: [
        sys.executable, "-c", "import sys; print('out of memory'); sys.exit(1)"])
    args = ["run", "--config", "configs/mnist.yaml", "--minutes", "60", "--eval-at", "30",
            "--run-dir", str(tmp_path / "run"), "--background"]
    for item in [*TINY, f"data.root={data_root}"]:
        args += ["--set", item]
    assert reproduce.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(out of memory)" in err and "at_30min.log" in err


def test_table_sets_each_run_beside_the_row_of_its_bound_and_k():
    """iwae_dreg trains the IWAE bound: its run sits beside Burda et al.'s IWAE row of its K,
    with the objective named; a bound and K the paper has no number for says so. Points still
    being measured are not the last measurement. The command gives the run's marks and images,
    and the evaluate that measured its last model again."""
    from pyrovae.literature import BURDA_2015

    def result(loss, k):
        return {"loss": loss, "num_particles": k, "clock": "wall", "device": "cpu",
                "threads": 2, "overrides": ["train.loss=" + loss], "minutes_budget": 3.0,
                "config": "configs/burda_iwae_k5.yaml",
                "curve": [{"mark_minutes": 0.5, "train_minutes": 0.5, "epoch": 1,
                           "log_likelihood": -86.0, "stderr": 0.5, "images": 1000},
                          {"mark_minutes": None, "train_minutes": 1.0, "epoch": 1,
                           "log_likelihood": -85.0, "stderr": 0.25, "images": 10000},
                          {"mark_minutes": 2.5, "train_minutes": 2.0, "epoch": 2}]}

    rows = reproduce.table([result("iwae_dreg", 5), result("trace", 5)]).splitlines()[2:]
    name, nats = BURDA_2015["IWAE", 5]
    assert rows[0].startswith(f"| {name}: {nats:.2f} | 85.00 ± 0.25 (`iwae_dreg`; 10,000 ")
    assert "| 1.0 (wall; epoch 1) |" in rows[0]
    assert rows[1].startswith("| trace, k = 5 (not quoted here) | 85.00 ± 0.25 (`trace`;")
    assert ("--clock wall --minutes 3 --eval-at 0.5 2.5 --images 1000 --set train.loss=trace "
            "--run-dir DIR --json JSON; reproduce.py evaluate DIR/") in rows[1]


def test_compare_is_paired_over_the_same_images(mirror, data_root, tmp_path, monkeypatch,
                                                 capsys):
    """compare: a model against itself differs by exactly 0; against the model of an earlier
    epoch, by the difference of the two means, with a standard error below that of two separate
    measurements (the images are the same); models of other data are a one-line error."""
    _run(tmp_path, data_root, 60, [1e-6, 60], ["--clock", "cpu"])
    early, late = sorted((tmp_path / "run").glob("at_*.pt"), key=lambda p: p.stat().st_mtime)
    common = ["--iwae-samples", "50", "--images", "200", "--json", str(tmp_path / "c.json")]

    def compare(a, b):
        assert reproduce.main(["compare", str(a), str(b), *common]) == 0
        return json.loads((tmp_path / "c.json").read_text())

    same = compare(late, late)
    assert same["difference"] == 0 and same["stderr"] == 0 and same["images"] == 200
    out = compare(early, late)
    assert out["difference"] == pytest.approx(
        out["second_log_likelihood"] - out["first_log_likelihood"], abs=1e-9)
    separate = []
    for model in (early, late):
        assert reproduce.main(["evaluate", str(model), *common]) == 0
        separate.append(json.loads((tmp_path / "c.json").read_text())["stderr"])
    assert 0 < out["stderr"] < math.hypot(*separate)

    load = reproduce.checkpoint.load

    def other_data(path):
        vae = load(path)
        if path == str(late):
            vae.config.data.binarize = "static"
        return vae

    monkeypatch.setattr(reproduce.checkpoint, "load", other_data)
    capsys.readouterr()
    assert reproduce.main(["compare", str(early), str(late), *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce: ") and err.count("\n") == 1 and "different data" in err
