"""Data-parallel training under torchrun (pyrovae.distributed), on the CPU with gloo.

Tolerance: a run of W ranks computes the same numbers as one process (same batches, same noise,
gradients averaged), except that float32 sums over a minibatch are split into W partial sums.
Those rounding differences are about 1e-7 relative per step; over the few epochs here the
metrics agree within 1e-5 relative (``REL``). The same world size, resumed, is bit for bit.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae import distributed, fit
from pyrovae.config import load_config
from pyrovae.data import load_data
from pyrovae.data.splits import part_bounds, shard
from pyrovae.errors import PyrovaeError
from pyrovae.model import VAE
from pyrovae.objectives import dataset_elbo

REPO = Path(__file__).resolve().parents[1]
REL = 1e-5  # metrics of W ranks vs one process (float32 reduction order)
NUMBERS = ("train_objective", "valid_elbo", "test_elbo", "kl", "recon")
EPOCHS = 6


@pytest.fixture(scope="module")
def npy(tmp_path_factory) -> Path:
    """301 grey 8x8 images: 241 training examples (7 minibatches of 32 and one of 17, split 9 + 8
    between 2 ranks: the unequal scaling is exercised), 30 validation, 30 test."""
    path = tmp_path_factory.mktemp("data") / "x.npy"
    np.save(path, np.random.default_rng(0).random((301, 1, 8, 8), dtype=np.float32))
    return path


def _base(npy: Path) -> list[str]:
    return ["data.name=npy", f"data.path={npy}", "model.z_dim=3", "model.hidden=[16]",
            "train.batch_size=32", "train.progress=false", "train.device=cpu",
            "train.engine=torch", "train.lr=3e-3"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _torchrun(args: list[str], nproc: int = 2) -> subprocess.Popen:
    """``torchrun --standalone`` (a free local port) with ``nproc`` ranks."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", "-m", "pyrovae.fit", *args],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _folder(run_dir: Path) -> Path:
    """The run folder of a run started with ``run_dir=...``: ``run_dir`` itself, or the run
    under it (``run_dir/version_N``, named by ``run_dir/latest``)."""
    if (run_dir / "checkpoint.pt").exists() or not (run_dir / "latest").exists():
        return run_dir
    return run_dir / (run_dir / "latest").read_text().strip()


def _metrics(run_dir: Path) -> list[dict]:
    with open(_folder(run_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(f)]


def _close(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert (ra["epoch"], ra["beta"], ra["lr"]) == (rb["epoch"], rb["beta"], rb["lr"])
        for k in NUMBERS:
            assert ra[k] == pytest.approx(rb[k], rel=REL), (ra["epoch"], k)


def _one_process(args: list[str], run_dir: Path) -> Path:
    return fit.fit(load_config(None, [*args, f"run_dir={run_dir}"]), log=lambda *a: None)


@pytest.fixture(scope="module")
def two_ranks(npy, tmp_path_factory) -> Path:
    """An uninterrupted run on 2 gloo ranks."""
    run = tmp_path_factory.mktemp("two") / "run"
    proc = _torchrun([*_base(npy), f"train.epochs={EPOCHS}", f"run_dir={run}"])
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "train.batch_size=32 is the global batch, 16 examples per rank" in out
    return _folder(run)


# ---- sharding and noise: the ranks' parts are the one-process numbers ------------------------


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_parts_are_the_one_process_minibatches(npy, world):
    splits = load_data("npy", path=str(npy), binarize="dynamic")
    gen = torch.Generator().manual_seed(7)
    whole = list(splits.train_batches(32, gen))
    ranks = []
    for rank in range(world):
        g = torch.Generator().manual_seed(7)
        ranks.append(list(shard(splits, rank, world, "cpu").train_parts(32, g)))
        assert torch.equal(g.get_state(), gen.get_state())  # the generators stay equal
    for j, batch in enumerate(whole):  # binarized alike, row for row
        parts = [r[j] for r in ranks]
        assert [p.total for p in parts] == [batch.shape[0]] * world
        assert torch.equal(torch.cat([p.x for p in parts]), batch)
    n = splits.train.shape[0]
    assert sum(p.x.shape[0] for r in ranks for p in r) == n  # the whole set, once


def test_batch_noise_is_the_rank_s_slice_of_the_one_process_noise():
    torch.manual_seed(3)
    whole = torch.distributions.Normal(torch.zeros(2, 10, 3), 1.0).rsample()
    after = torch.get_rng_state()
    for rank in range(3):
        lo, hi = part_bounds(10, rank, 3)
        torch.manual_seed(3)
        with distributed.BatchNoise(lo, hi, 10):
            z = torch.distributions.Normal(torch.zeros(2, hi - lo, 3), 1.0).rsample()
        assert torch.equal(z, whole[:, lo:hi])
        assert torch.equal(torch.get_rng_state(), after)
        torch.manual_seed(3)
        with distributed.BatchNoise(lo, hi, 10):  # the analytic objective's draw
            eps = torch.randn((2, hi - lo, 3))
        assert torch.equal(eps, whole[:, lo:hi])


class _Alone(distributed.Context):
    """One rank of ``world`` run on its own: ``sum`` returns this rank's partial sums."""

    def sum(self, values):
        return list(values)


@torch.no_grad()
def test_sharded_elbo_adds_up_to_the_one_process_elbo():
    vae = VAE((1, 8, 8), z_dim=3, hidden=[16]).eval()
    x = torch.bernoulli(torch.full((2500, 1, 8, 8), 0.3))  # 3 chunks of up to 1000 rows
    torch.manual_seed(1)
    whole = dataset_elbo(vae, x, num_particles=2)
    total = dict.fromkeys(whole, 0.0)
    for rank in range(2):
        torch.manual_seed(1)
        rows = shard_rows(x, rank, 2)
        part = distributed.dataset_elbo(_Alone(rank, rank, 2), vae, rows, 2500, 2)
        total = {k: total[k] + part[k] for k in total}
    for k in whole:
        assert total[k] == pytest.approx(whole[k], rel=REL)


def shard_rows(x, rank, world):
    from pyrovae.data.splits import chunk_parts

    return torch.cat([x[s + lo : s + hi] for s, lo, hi, _ in chunk_parts(x.shape[0], rank, world)])


# ---- 2 ranks under torchrun --------------------------------------------------------------------


def test_two_ranks_follow_the_one_process_run(npy, two_ranks, tmp_path):
    one = _one_process([*_base(npy), f"train.epochs={EPOCHS}"], tmp_path / "one")
    _close(_metrics(two_ranks), _metrics(one))
    assert sorted(p.name for p in two_ranks.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(two_ranks.glob(".*"))  # no temporary files left
    a = torch.load(two_ranks / "checkpoint.pt", weights_only=True)
    b = torch.load(one / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS and a["step"] == b["step"] == EPOCHS * 8
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5), k


def _worker(parent: int, rank: int) -> int:
    """The pid of torchrun's worker with RANK=rank."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_text().split("\0")
            if ppid == parent and f"RANK={rank}" in env:
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue
    raise AssertionError(f"no worker of rank {rank} under torchrun {parent}")


def test_kill_9_of_one_rank_stops_the_run_and_it_resumes(npy, two_ranks, tmp_path):
    run = tmp_path / "killed"
    proc = _torchrun([*_base(npy), f"train.epochs={EPOCHS}", f"run_dir={run}"])
    deadline = time.time() + 600
    while not list(run.glob("**/metrics.csv")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    assert proc.poll() is None
    os.kill(_worker(proc.pid, 1), signal.SIGKILL)
    killed = time.time()
    _, err = proc.communicate(timeout=120)
    stopped = time.time() - killed
    assert proc.returncode != 0 and stopped < 60, (stopped, err[-3000:])
    run = _folder(run)
    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= epoch < EPOCHS, "the run ended before the kill: it is too fast to test"
    other = tmp_path / "copy"
    shutil.copytree(run, other)

    again = _torchrun(["--resume", str(run)])  # the same world size: bit for bit
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert _metrics(run) == _metrics(two_ranks)
    a = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two_ranks / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # another world size (one process): the same trajectory up to float32 reduction order
    fit.fit(resume_dir=other, log=lambda *a: None)
    _close(_metrics(other), _metrics(two_ranks))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_with_different_configs_stop_with_one_line(npy, tmp_path):
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = _env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, PYROVAE_DIST_TIMEOUT="120")
        args = [*_base(npy), f"run_dir={tmp_path / 'r'}", f"model.z_dim={3 + rank}"]
        procs.append(subprocess.Popen([sys.executable, "-m", "pyrovae.fit", *args], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    assert errs[0].startswith("error: the ranks were started with different configs (rank 1")
    assert errs[0].count("\n") == 1 and errs[1] == ""
    assert not (tmp_path / "r").exists()


# ---- bad input, in this process ----------------------------------------------------------------


def test_batch_and_environment_errors_are_one_line():
    ctx = distributed.Context(0, 0, 3)
    with pytest.raises(PyrovaeError, match="multiple of 3"):
        distributed.check_batch(ctx, 32, 1000)
    with pytest.raises(PyrovaeError, match="last minibatch of each epoch has 1 of the 33"):
        distributed.check_batch(distributed.Context(0, 0, 2), 32, 33)
    distributed.check_batch(distributed.Context(0, 0, 2), 32, 34)  # 2 rows: one each
    with pytest.raises(PyrovaeError, match="MASTER_ADDR, MASTER_PORT are not set"):
        distributed.environment({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    with pytest.raises(PyrovaeError, match="need 0 <= RANK < WORLD_SIZE"):
        distributed.environment({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0",
                                 "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(PyrovaeError, match="use train.device=cuda"):
        distributed.device(ctx, "cuda:1")


def test_missing_rendezvous_is_one_line_on_rank_0(monkeypatch, capsys):
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert fit.main(["train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a distributed run needs") and err.count("\n") == 1
    assert "MASTER_ADDR" in err and "torchrun" in err
    monkeypatch.setenv("RANK", "1")  # the other ranks leave the message to rank 0
    assert fit.main(["train.epochs=1"]) == 2
    assert capsys.readouterr().err == ""


GLOO_CLOSED = ("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
               "[127.0.0.1]:29500")


@pytest.mark.parametrize("error, one_line", [
    (RuntimeError(GLOO_CLOSED), True), (torch.distributed.DistError("timed out"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x784 and 785x400)"), False)])
def test_only_a_collectives_failure_is_reported_as_one(error, one_line, monkeypatch, capsys):
    """Under torchrun, a peer's death or silence (gloo's plain RuntimeError, torch's DistError)
    is one line that says to resume; any other RuntimeError is a bug and keeps its traceback."""
    env = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(fit, "fit", fail)
    try:
        if one_line:
            assert fit.main(["train.epochs=1"]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "a collective failed" in err and "--resume" in err
        else:
            with pytest.raises(RuntimeError, match="mat1 and mat2"):
                fit.main(["train.epochs=1"])
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_a_peer_that_never_comes_is_an_error_within_the_timeout(monkeypatch):
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "PYROVAE_DIST_TIMEOUT": "3"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    began = time.time()
    with pytest.raises(PyrovaeError, match="could not join the rendezvous") as err:
        distributed.init()
    assert time.time() - began < 60 and "\n" not in str(err.value)
    assert not torch.distributed.is_initialized()


def _sync_rank(rank: int, port: int, out: str) -> None:
    """One of 2 gloo ranks: a batch-norm layer whose running statistics differ by rank, then
    distributed.sync_buffers; its buffers saved for the test to compare."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    layer = torch.nn.BatchNorm1d(3).train()
    layer(torch.randn(8, 3, generator=torch.Generator().manual_seed(rank)))  # rank's own rows
    distributed.sync_buffers(layer)
    torch.save(dict(layer.named_buffers()), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_sync_buffers_gives_every_rank_the_running_statistics_of_rank_0(tmp_path):
    """What fit calls under torchrun before each evaluation: batch norm's running statistics,
    updated by each rank from its own rows, are rank 0's on every rank afterwards."""
    torch.multiprocessing.spawn(_sync_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    mine = torch.nn.BatchNorm1d(3).train()
    mine(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    assert set(a) == {"running_mean", "running_var", "num_batches_tracked"}
    for name, value in dict(mine.named_buffers()).items():  # rank 0's, as computed alone
        assert torch.equal(a[name], value) and torch.equal(b[name], value), name


# ---- the other engines (slow: one torchrun launch each) -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["svi", "traced"])
def test_two_ranks_follow_one_process_under_engine(engine, npy, tmp_path):
    args = [*_base(npy), f"train.engine={engine}", "train.epochs=2"]
    proc = _torchrun([*args, f"run_dir={tmp_path / 'two'}"])
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-3000:]
    one = _one_process(args, tmp_path / "one")
    _close(_metrics(tmp_path / "two"), _metrics(one))
