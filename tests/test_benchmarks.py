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


def test_a_measurement_leaves_the_training_noise_as_it_was():
    """per_image draws from a fixed seed (the same numbers twice) and restores the global random
    state, so a mark measured between epochs leaves the run's later noise unchanged."""
    import torch

    from pyrovae import VAE

    torch.manual_seed(5)
    vae = VAE(x_shape=(1, 4, 4), z_dim=2, hidden=[8])
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    before = torch.get_rng_state()
    first = reproduce.per_image(vae, x, 20, 3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(3)  # the state moves on; the measurement does not depend on it
    assert torch.equal(reproduce.per_image(vae, x, 20, 3), first)


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


# ---- benchmarks/configs.py: its table from saved rows --------------------------------------

import configs  # noqa: E402


def _config_row(name, fit_extra=(), iwae=("5000", "1000"), **fields):
    fit = (f"python -m pyrovae.fit --config configs/{name}.yaml run_dir=runs/b run_name={name} "
           "train.progress=false " + " ".join(fit_extra))
    evaluate = (f"python -m pyrovae.evaluate runs/b/{name} --iwae-samples {iwae[0]} "
                f"--limit {iwae[1]} --nuts 0 --gap-examples 20 --json")
    return {"config": name, "epochs": 3, "train_seconds": 90.0, "test_elbo": -100.0,
            "log_likelihood": -95.0, "log_likelihood_stderr": 1.0, "pareto_k_frac_bad": 0.5,
            "active_units": 7, "commands": [fit.strip(), evaluate], **fields}


def test_configs_table_says_how_each_row_departs_from_its_config(tmp_path, capsys):
    rows = [_config_row("mnist", test_elbo_all=-99.5, z_dim=32, hardware="CPU (x86_64, 2 cores)"),
            _config_row("mnist_conv", ["train.epochs=3"], ("1000", "200")),
            _config_row("mnist_vamp", ["train.epochs=10", "train.warmup_epochs=3"],
                        pareto_k_frac_bad=None)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert configs.main(["--table", str(tmp_path / "rows.json")]) == 0
    cells = [[c.strip() for c in ln.strip("|").split("|")]
             for ln in capsys.readouterr().out.splitlines() if ln.startswith("| mnist")]
    # label, test ELBO on all 10,000, k-hat, active units, hardware
    assert [[c[0], c[1], c[4], c[5], c[8]] for c in cells] == [
        ["mnist", "-99.50", "0.50", "7 of 32", "CPU (x86_64, 2 cores)"],
        ["mnist_conv (train.epochs=3; IWAE K = 1,000 on 200 images)", "not recorded", "0.50",
         "7", "not recorded"],
        ["mnist_vamp (train.epochs=10; train.warmup_epochs=3)", "not recorded",
         "too few samples", "7", "not recorded"]]


@pytest.mark.parametrize("content", ["not json", '{"config": "mnist"}', '[{"config": 1}]'])
def test_configs_table_of_a_file_it_did_not_write_is_one_line(tmp_path, content):
    (tmp_path / "rows.json").write_text(content)
    with pytest.raises(SystemExit) as stop:
        configs.main(["--table", str(tmp_path / "rows.json")])
    assert str(stop.value).startswith("error: ") and "\n" not in str(stop.value)


# ---- benchmarks/engines.py: where a compiling engine's total drops below svi's ---------------

import engines  # noqa: E402


def _epochs(first, after):
    return {"first": first, "median_after": after}


@pytest.mark.parametrize("first, after, expected", [
    (10.0, 1.0, 6),     # 8 s more, 2 s saved an epoch: equal after 5 epochs, below after 6
    (9.0, 1.0, 5),      # 7 s more: below after 5 (9 + 4 = 13 against 2 + 12 = 14)
    (1.0, 2.0, 1),      # cheaper from the first epoch
    (1.0, 3.0, 1),      # as cheap later, cheaper first
    (10.0, 3.0, None),  # never: its later epochs save nothing
    (10.0, 4.0, None)])
def test_break_even_is_the_first_epoch_count_with_a_lower_total(first, after, expected):
    base = _epochs(2.0, 3.0)
    n = engines.break_even(_epochs(first, after), base)
    assert n == expected
    if n is not None:  # the definition, checked directly: below at n, not below at n - 1
        def total(r, k):
            return r["first"] + (k - 1) * r["median_after"]
        run = _epochs(first, after)
        assert total(run, n) < total(base, n)
        assert n == 1 or total(run, n - 1) >= total(base, n - 1)


@pytest.mark.parametrize("args, says", [
    (["mnist", "--epochs", "1"], "--epochs must be at least 2"),
    (["mnist", "--engines", "torch", "compiled"], "--engines must include svi"),
    (["mnist_nope"], "no configs/mnist_nope.yaml")])
def test_engines_bad_arguments_are_one_line(args, says, capsys):
    assert engines.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1
