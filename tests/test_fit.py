"""python -m pyrovae.fit on real MNIST: artifacts, resume after kill -9, Ctrl-C, divergence,
every config, and the command-line errors."""

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import fit
from pyrovae.config import CONFIG_DIR, load_config
from pyrovae.errors import PyrovaeError
from pyrovae.optim import SVIStepper, TorchStepper
from tests.conftest import needs_cxx

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.limit=2000", "model.z_dim=8", "model.hidden=[256]", "train.progress=false",
         "train.engine=torch"]


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _fit(overrides, tmp_path, name="run"):
    """A run in exactly ``tmp_path / name`` (run_name), so that a test knows its folder."""
    cfg = load_config(None, [*overrides, f"run_dir={tmp_path}", f"run_name={name}"])
    return fit.fit(cfg, log=lambda *a: None)


@pytest.fixture(scope="module")
def one_epoch(mirror, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    return _fit([*SMALL, "train.epochs=1", "train.batch_size=32", f"data.root={data_root}"], out)


def test_one_epoch_writes_every_artifact_and_learns(one_epoch):
    for name in ("checkpoint.pt", "best.pt", "config.yaml", "metrics.csv", "samples.png",
                 "reconstructions.png", "elbo.png", "interpolation.png"):
        assert (one_epoch / name).is_file(), name
    assert not (one_epoch / "manifold.png").exists()  # only for z_dim = 2
    (row,) = _metrics(one_epoch)
    assert set(fit.METRICS) <= set(row)
    # a fresh model sits near -545 nats; one epoch (63 steps) on 2,000 images gets below -230
    assert -230 < float(row["test_elbo"]) < -120
    assert float(row["kl"]) > 0 and float(row["seconds"]) > 0
    assert abs(float(row["recon"]) - float(row["kl"]) - float(row["test_elbo"])) < 1e-3


def test_load_returns_the_trained_model(one_epoch):
    vae = pyrovae.load(one_epoch)
    assert not vae.training and vae.z_dim == 8 and vae.config.data.limit == 2000
    assert next(vae.parameters()).device.type == "cpu"
    best = torch.load(one_epoch / "best.pt", weights_only=False)
    assert torch.equal(vae.state_dict()["encoder.net.0.weight"],
                       best["model"]["encoder.net.0.weight"])


def test_manifold_for_two_latent_dims(mirror, data_root, tmp_path):
    run = _fit(["data.limit=500", "model.z_dim=2", "model.hidden=[32]", "train.epochs=1",
                "train.progress=false", "train.engine=torch", f"data.root={data_root}"], tmp_path)
    assert (run / "manifold.png").is_file()


def test_a_run_on_three_examples_writes_the_figures_it_can(tmp_path):
    """One training, one validation and one test example (npy data): the run ends with its
    figures; the interpolation, which needs two test examples, is left out."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32))
    run = _fit(["data.name=npy", f"data.path={tmp_path / 'x.npy'}", "train.epochs=1",
                "train.progress=false", "train.engine=torch", "model.hidden=[8]"], tmp_path)
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()
    assert not (run / "interpolation.png").exists()


def _default_sigint() -> None:
    """In the child: SIGINT as in a terminal. A background job of a non-interactive shell (as CI
    may be) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "pyrovae.fit", *args], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kw)


def _numbers(run_dir):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(run_dir)]


def _wait_until_training(proc, checkpoint_file: Path, timeout: float = 900) -> None:
    """Until the run has written its first checkpoint (fit.start saves epoch 0 before
    training) and printed its header line (it prints that once started or resumed, just before
    training): a kill before then would leave nothing to resume on a slow machine (on 2 cores
    shared with other jobs, the first checkpoint took over 3 minutes)."""
    deadline = time.time() + timeout
    while not checkpoint_file.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint_file.exists() or proc.poll() is not None, f"no checkpoint in {timeout} s"
    for line in proc.stdout:  # the header, or EOF if the process ended
        if line.startswith("pyrovae.fit:"):
            break


@pytest.mark.slow  # ~80 s on 2 idle cores; the resume tests below check exactness in CI
def test_kill_9_and_resume_gives_the_numbers_of_an_uninterrupted_run(mirror, data_root,
                                                                     tmp_path):
    args = [*SMALL, "data.limit=1000", "train.epochs=4", f"data.root={data_root}",
            "train.num_particles=2", "train.threads=1", f"run_dir={tmp_path}"]
    plain = _cli([*args, "run_name=plain"])
    assert plain.wait(timeout=900) == 0, plain.stderr.read()
    killed = tmp_path / "killed"
    proc = _cli([*args, "run_name=killed"])
    rng = np.random.default_rng(0)
    kills = 0
    for delay in rng.uniform(0.5, 4.0, size=6):
        _wait_until_training(proc, killed / "checkpoint.pt")
        time.sleep(delay)  # then kill at a random moment of the training
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = _cli(["--resume", str(killed)])
    assert proc.wait(timeout=900) == 0, proc.stderr.read()
    assert kills >= 1
    assert _numbers(killed) == _numbers(tmp_path / "plain")
    a = torch.load(killed / "checkpoint.pt", weights_only=True)["model"]  # plain data
    b = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_leaves_a_usable_checkpoint(mirror, data_root, tmp_path):
    run = tmp_path / "run"
    proc = _cli([*SMALL, "train.epochs=50", "data.valid_size=500", f"data.root={data_root}",
                 f"run_dir={tmp_path}", "run_name=run"])
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and f"--resume {run}" in err
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] >= 1
    vae = pyrovae.load(run / "checkpoint.pt")
    assert vae.z_dim == 8


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(mirror, data_root, tmp_path,
                                                           monkeypatch):
    calls = {"n": 0}
    real_step = SVIStepper.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        return float("nan") if calls["n"] == 20 else real_step(self, *args, **kwargs)

    monkeypatch.setattr(SVIStepper, "step", step)
    with pytest.raises(PyrovaeError, match="diverged at epoch 2") as err:
        _fit([*SMALL, "train.epochs=3", "train.engine=svi", f"data.root={data_root}"], tmp_path)
    assert "kept" in str(err.value) and "\n" not in str(err.value)
    (ckpt,) = (tmp_path / "run").rglob("checkpoint.pt")
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1


def _cifar_like_npy(tmp_path):
    path = tmp_path / "cifar_like.npy"
    np.save(path, np.random.default_rng(0).random((300, 3, 32, 32), dtype=np.float32))
    return path


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_runs_a_few_steps(path, mirror, data_root, tmp_path, monkeypatch):
    """Each config as written (its data, prior, likelihood, net, objective, engine options) trains
    on its first 256 training examples for one epoch and measures a finite ELBO, on the first 256
    validation and test examples (the whole sets take most of the time and check nothing more:
    the VampPrior's 500 components on 20,000 examples alone took 11 s)."""
    overrides = ["train.epochs=1", "data.limit=256", "train.progress=false",
                 "train.engine=torch", f"data.root={data_root}", f"run_dir={tmp_path / 'run'}"]
    cfg = load_config(path)
    if cfg.data.name == "cifar10":  # no CIFAR-10 archive offline: the same shape from a file
        overrides += ["data.name=npy", f"data.path={_cifar_like_npy(tmp_path)}"]
    if cfg.data.name in ("mnist", "fashion_mnist"):
        overrides += ["data.valid_size=500"]
    cfg = load_config(path, overrides)
    real = fit.load_splits

    def first_256(*args, **kwargs):
        splits = real(*args, **kwargs)
        return dataclasses.replace(splits, valid=splits.valid[:256], test=splits.test[:256])

    monkeypatch.setattr(fit, "load_splits", first_256)
    run = fit.fit(cfg, log=lambda *a: None)
    (row,) = _metrics(run)
    assert np.isfinite(float(row["test_elbo"])) and np.isfinite(float(row["valid_elbo"]))


def test_existing_run_is_never_overwritten(one_epoch, capsys):
    before = (one_epoch / "checkpoint.pt").stat().st_mtime_ns
    assert fit.main([f"run_dir={one_epoch}", *SMALL]) == 2  # a run folder as the parent
    assert "is itself a run folder" in capsys.readouterr().err
    assert fit.main([f"run_dir={one_epoch.parent}", f"run_name={one_epoch.name}", *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (one_epoch / "checkpoint.pt").stat().st_mtime_ns == before


def test_each_run_gets_its_own_folder_and_latest_names_it(mirror, data_root, tmp_path,
                                                          capsys):
    """The main command twice: two runs, version_0 and version_1; the parent folder then
    means the latest run for --resume, pyrovae.load, and says so."""
    args = ["data.limit=300", "model.z_dim=2", "model.hidden=[16]", "train.epochs=1",
            "train.progress=false", "train.engine=torch", f"data.root={data_root}",
            f"run_dir={tmp_path / 'runs'}"]
    assert fit.main(args) == 0
    assert fit.main(args) == 0
    parent = tmp_path / "runs"
    first, second = parent / "version_0", parent / "version_1"
    assert (first / "best.pt").is_file() and (second / "best.pt").is_file()
    assert (parent / "latest").read_text() == "version_1\n"
    assert not [p for p in parent.iterdir() if p.name.startswith(".")]  # no temporary files
    out = capsys.readouterr().out
    assert f"run folder {second} (new; {parent / 'latest'} names it" in out
    config = (second / "config.yaml").read_text()
    assert config.startswith("# data_source: mnist from the mirror ")
    assert "run_dir: " + str(parent) in config  # run_dir: the parent of the runs
    pyrovae.load(parent)  # the latest, named on stderr
    assert f"using {second / 'best.pt'}, the latest run in {parent}" in capsys.readouterr().err
    before = (first / "checkpoint.pt").read_bytes()
    assert fit.main(["--resume", str(parent), "train.epochs=2"]) == 0
    assert f"run folder {second} (resumed: the latest run in {parent}" in capsys.readouterr().out
    assert [r["epoch"] for r in _metrics(second)] == ["1", "2"]
    assert (first / "checkpoint.pt").read_bytes() == before  # the other run is untouched
    assert sorted(p.name for p in parent.iterdir()) == ["latest", "version_0", "version_1"]


def test_threads_auto_uses_the_idle_cores_and_keeps_a_choice(monkeypatch):
    logged = []
    default = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(fit, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    busy = {"now": (1.1, "over 0.5 s")}
    monkeypatch.setattr(fit, "busy_cores", lambda: busy["now"])
    assert fit.choose_threads("auto", log=logged.append) == 1 and chosen == [1]  # one busy
    assert "keep 1.1 of 2 cores busy" in logged[-1] and "train.threads" in logged[-1]
    busy["now"] = (7.8, "1-minute load average")  # very busy: still 1
    assert fit.choose_threads("auto", log=logged.append) == 1
    busy["now"] = (0.3, "over 0.5 s")  # idle: torch's default
    chosen.clear()
    assert fit.choose_threads("auto", log=logged.append) == 2 and chosen == []
    busy["now"] = None  # nothing to measure with: torch's default
    assert fit.choose_threads("auto", log=logged.append) == 2 and chosen == []
    assert fit.choose_threads(2, log=logged.append) == 2  # the user's choice, kept
    busy["now"] = (5.0, "over 0.5 s")
    assert fit.choose_threads(2, log=logged.append) == 2 and chosen == []
    assert fit.choose_threads("auto", saved=2, log=logged.append) == 2  # a resumed run
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice, kept
    assert fit.choose_threads("auto", log=logged.append) == 2 and chosen == []
    assert default >= 1


def test_busy_cores_is_the_non_idle_share_now_not_a_lagging_average(monkeypatch):
    """Two samples of /proc/stat: 3 of 4 ticks busy on each of 2 cores -> 1.5 cores busy;
    without /proc/stat, the load average; without both, None."""
    monkeypatch.setattr(fit, "_affinity", lambda: {0, 1})
    samples = iter([(100.0, 400.0), (110.0, 440.0)])  # (idle, total): 10 of 40 ticks idle
    monkeypatch.setattr(fit, "_cpu_times", lambda cpus: next(samples))
    monkeypatch.setattr(fit.time, "sleep", lambda s: None)
    assert fit.busy_cores() == (1.5, "over 0.5 s")
    monkeypatch.setattr(fit, "_cpu_times", lambda cpus: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.7, 0.5, 0.5))
    assert fit.busy_cores() == (0.7, "1-minute load average")
    monkeypatch.setattr(os, "getloadavg", lambda: (_ for _ in ()).throw(OSError()))
    assert fit.busy_cores() is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat")
def test_busy_cores_sees_a_busy_process():
    """A process spinning on one core is seen within the window (whatever else runs: at least
    the share the spinning process gets); the reading of an idle core is not tested here, CI's
    cores are shared."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy, how = fit.busy_cores(window=1.0)
    finally:
        spin.kill()
        spin.wait()
    assert how == "over 1 s" and 0.5 <= busy <= fit.cpu_count()


@pytest.mark.parametrize("args, words", [
    (["train.epochs=zero"], "train.epochs"),
    (["model.likelihood=poisson"], "model.likelihood"),
    (["--config", "configs/nope.yaml"], "not found"),
    (["--resume", "runs/does-not-exist"], "nothing to resume"),
    (["--resume", "runs/x", "--config", "configs/mnist.yaml"], "drop --config"),
    (["--resume", "RUN", "epochs"], "bad override 'epochs'"),
    (["--resume", "RUN", "train.epoch=3"], "unknown config key 'train.epoch'"),
    (["--resume", "RUN", "data.valid_size=2000"], "cannot resume with data.valid_size=2000"),
    (["--resume", "RUN", "model.z_dim=10"], "cannot resume with model.z_dim=10"),
    (["--resume", "RUN", "train.engine=svi"], "train.engine=svi cannot continue"),
    (["--resume", "RUN", "run_dir=elsewhere"], "cannot resume with run_dir"),
    (["--resume", ""], "--resume was given an empty path"),
    (["data.binarize=none", "data.limit=100"], "binarize"),
    (["data.name=npy"], "data.path"),
    (["data.name=folder", "data.path=no/such/folder"], "no/such/folder"),
])
def test_cli_errors_are_one_line(args, words, one_epoch, mirror, data_root, tmp_path, capsys):
    if "RUN" in args:  # an existing run to resume
        args = [str(one_epoch) if a == "RUN" else a for a in args]
    else:
        args = [*args, f"data.root={data_root}", f"run_dir={tmp_path / 'r'}"]
    code = fit.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err


@pytest.mark.parametrize("engine, loss", [
    ("svi", "trace"), ("torch", "iwae"),
    # the graph engines take the torch engine's step exactly (tests/test_optim.py); their resume
    # runs are slow (compilation), so they run with -m slow
    pytest.param("traced", "iwae_dreg", marks=pytest.mark.slow),
    pytest.param("compiled", "trace", marks=[needs_cxx, pytest.mark.slow])])
def test_resume_is_exact_under_every_engine(engine, loss, mirror, data_root, tmp_path):
    """Every engine, and the importance-weighted objectives (K = 3), resume bit for bit, with
    KL warm-up, learning-rate decay and clipping."""
    base = [*SMALL, "data.limit=600", f"data.root={data_root}", f"train.engine={engine}",
            f"train.loss={loss}", f"train.num_particles={1 if loss == 'trace' else 3}",
            "train.clip_norm=5", "train.lr_decay=0.9", "train.warmup_epochs=1.5"]
    straight = _fit([*base, "train.epochs=3"], tmp_path, "straight")
    split = _fit([*base, "train.epochs=1"], tmp_path, "split")
    fit.fit(resume_dir=split, overrides=["train.epochs=3"], log=lambda *a: None)
    assert _numbers(split) == _numbers(straight)
    assert [float(r["beta"]) for r in _metrics(split)][-1] == 1.0
    assert float(_metrics(split)[-1]["lr"]) == pytest.approx(1e-3 * 0.9**2)


@pytest.mark.parametrize("make, run_name, refused", [
    (lambda d: (d / "latest").mkdir(parents=True), None, "latest is not pyrovae's pointer"),
    (lambda d: (d / "latest").write_text("my notes\n"), None, "latest is not pyrovae's pointer"),
    (lambda d: ((d / "mine").mkdir(), (d / "mine" / "notes.txt").write_text("x")), "mine",
     "already holds files"),
    (lambda d: ((d / "version_0").mkdir(), (d / "latest").write_text("version_0\n")), None,
     None),
    (lambda d: (d / "latest").write_text("version_3\n"), None, None),  # a removed run
    (lambda d: (d / "mine").mkdir(), "mine", None),  # an empty folder
])
def test_a_new_run_replaces_no_file_it_did_not_write(make, run_name, refused, tmp_path):
    """Before any work: a run_dir whose `latest` pyrovae did not write, or a run_name folder
    holding someone's files, is a one-line error; pyrovae's own pointer and empty folders are
    fine."""
    parent = tmp_path / "runs"
    parent.mkdir()
    make(parent)
    if refused is None:
        fit.check_run_parent(parent, run_name)
    else:
        with pytest.raises(PyrovaeError, match=refused):
            fit.check_run_parent(parent, run_name)


def test_two_runs_started_at_once_with_one_run_name_get_one_folder(tmp_path, monkeypatch):
    """Both runs pass the checks before either makes its folder (the race); the second to
    claim the folder gets a one-line error, not a share of the first one's folder."""
    parent = tmp_path / "runs"
    monkeypatch.setattr(fit, "check_run_parent", lambda *args: None)
    assert fit.new_run_folder(parent, "mine") == parent / "mine"
    with pytest.raises(PyrovaeError, match="taken by another run"):
        fit.new_run_folder(parent, "mine")


def test_a_failed_config_write_releases_the_run_name(mirror, data_root, tmp_path, monkeypatch):
    """A run whose config.yaml cannot be written leaves no claimed folder behind: its run_name
    is free for the next run."""
    def fail(folder, cfg):
        raise PyrovaeError("cannot write config.yaml (No space left on device)")

    monkeypatch.setattr(fit, "write_config", fail)
    cfg = load_config(None, [*SMALL, "data.limit=300", f"data.root={data_root}", "train.epochs=1",
                             f"run_dir={tmp_path}", "run_name=mine"])
    with pytest.raises(PyrovaeError, match="No space left"):
        fit.start(cfg, log=lambda *a: None)
    assert not (tmp_path / "mine").exists()
    fit.check_run_parent(tmp_path, "mine")  # free


def _rates(state) -> set[float]:
    """Every learning rate in an optimizer state (one torch state dict, or Pyro's per-parameter
    dict of them)."""
    if isinstance(state, dict):
        groups = state.get("param_groups", ())
        return {g["lr"] for g in groups}.union(*(_rates(v) for v in state.values()))
    return set()


@pytest.mark.parametrize("engine", ["svi", "torch"])
def test_a_resumed_run_trains_at_the_rate_of_its_new_schedule(engine, mirror, data_root,
                                                               tmp_path, monkeypatch):
    """A cosine run of 2 epochs saves its optimizer with the rate of its second epoch, lr / 2;
    resumed with train.epochs=3, its third epoch trains at the rate that metrics.csv records for
    it, lr / 4 on the shorter cosine, read from the optimizer after each of its steps (Pyro's
    optimizers load their saved state, the rate included, only at their first step)."""
    base = [*SMALL, "data.limit=300", f"data.root={data_root}", f"train.engine={engine}",
            "train.schedule=cosine", "train.lr=1e-3"]
    run_dir = _fit([*base, "train.epochs=2"], tmp_path)
    used: list[set[float]] = []  # per resumed epoch, the rates its steps ran at
    train_epoch = fit.train_epoch

    def spy(run):
        step, rates = run.stepper.step, set()

        def step_and_read(*args, **kwargs):
            loss = step(*args, **kwargs)
            rates.update(_rates(run.stepper.state_dict()))
            return loss

        run.stepper.step = step_and_read
        used.append(rates)
        try:
            return train_epoch(run)
        finally:
            del run.stepper.step  # the class's own again

    monkeypatch.setattr(fit, "train_epoch", spy)
    fit.fit(resume_dir=run_dir, overrides=["train.epochs=3"], log=lambda *a: None)
    recorded = [float(r["lr"]) for r in _metrics(run_dir)[2:]]
    assert recorded == [pytest.approx(2.5e-4)]
    assert used == [{lr} for lr in recorded]
    assert load_config(run_dir / "config.yaml").train.epochs == 3  # the effective config


def test_a_run_resumed_with_another_batch_size_continues_its_warm_up(mirror, data_root,
                                                                      tmp_path, monkeypatch):
    """KL warm-up over 4 epochs: one epoch of 3 steps (batch 100), resumed with batch 50 (6
    steps an epoch), takes its steps at beta = (1 + (i + 1) / 6) / 4, where the ramp stopped,
    not at a ramp recomputed from the step count in the new batch size."""
    base = [*SMALL, "data.limit=300", f"data.root={data_root}", "train.warmup_epochs=4"]
    run_dir = _fit([*base, "train.epochs=1", "train.batch_size=100"], tmp_path)
    betas: list[float] = []
    step = TorchStepper.step

    def spy(self, batch, n, beta):
        betas.append(beta)
        return step(self, batch, n, beta)

    monkeypatch.setattr(TorchStepper, "step", spy)
    fit.fit(resume_dir=run_dir, overrides=["train.epochs=2", "train.batch_size=50"],
            log=lambda *a: None)
    assert betas == [pytest.approx((1 + (i + 1) / 6) / 4) for i in range(6)]
    assert float(_metrics(run_dir)[0]["beta"]) == pytest.approx(1 / 4)


def test_a_run_moved_from_a_gpu_continues_on_the_cpu(mirror, data_root, tmp_path):
    """A checkpoint whose batch generator was a CUDA one (16 bytes of state; simulated) resumes
    on the CPU, saying that its random streams differ."""
    run_dir = _fit([*SMALL, "data.limit=300", f"data.root={data_root}", "train.epochs=1"],
                   tmp_path)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["rng"]["batches"] = torch.arange(16, dtype=torch.uint8)
    state["device"] = "cuda:0"
    torch.save(state, run_dir / "checkpoint.pt")
    lines = []
    fit.fit(resume_dir=run_dir, overrides=["train.epochs=2"], log=lines.append)
    assert [r["epoch"] for r in _metrics(run_dir)] == ["1", "2"]
    assert any("trained on cuda:0 and continues on cpu" in line for line in lines)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("engine", ["svi", "torch", "compiled"])
def test_fit_on_cuda(engine, mirror, data_root, tmp_path):
    run = _fit([*SMALL, "data.limit=500", "train.epochs=1", "train.device=cuda",
                f"train.engine={engine}", f"data.root={data_root}"], tmp_path)
    (row,) = _metrics(run)
    assert np.isfinite(float(row["test_elbo"]))
    assert next(pyrovae.load(run, device="cuda").parameters()).is_cuda
