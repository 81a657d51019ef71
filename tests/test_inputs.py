"""Every public entry point refuses every bad value of the catalogue below with a one-line
:class:`PyrovaeError` that names what was wrong; the commands print it as ``error: ...`` on
stderr with exit status 2 and nothing on stdout. No case trains or loads a dataset: each fails
before that (a few tiny models, a second or so in all)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import pyrovae
from pyrovae import check, checkpoint, evaluate, fit, generate
from pyrovae.checkpoint import atomic_save, write_latest
from pyrovae.config import Config, TrainConfig, load_config, to_dict, vae_kwargs, validate
from pyrovae.errors import PyrovaeError
from pyrovae.model import VAE, registries
from pyrovae.options import known_aliases

TINY = ["model.z_dim=4", "model.hidden=[8]"]


def _one_line(err: BaseException | str) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A config's run_dir holding one run folder (version_0, named in ``latest``) with a tiny
    untrained model: what the commands read, without any training."""
    parent = tmp_path_factory.mktemp("runs")
    run = parent / "version_0"
    run.mkdir()
    cfg = load_config(None, TINY)
    vae = VAE(**vae_kwargs(cfg, (1, 28, 28)))
    state = {"model": vae.state_dict(), "config": to_dict(cfg), "x_shape": (1, 28, 28)}
    atomic_save(state, run / "best.pt")
    resumable = {"optim": fit.stepper(cfg, vae).state_dict(), "metrics": [], "epoch": 0,
                 "step": 0, "best_valid": float("-inf"),
                 "rng": checkpoint.rng_state(torch.Generator())}
    atomic_save({**state, **resumable}, run / "checkpoint.pt")
    write_latest(parent, run)
    (parent / "a_file").write_text("not a folder\n")
    return parent


@pytest.fixture(scope="module")
def vae() -> VAE:
    return VAE(z_dim=4, hidden=[8])


# ---- config keys (load_config with key=value overrides) ------------------------------------

CONFIG = [
    (["train.epochs=2.5"], "train.epochs"),
    (["train.epochs=0"], "train.epochs must be > 0"),
    (["train.epochs=three"], "train.epochs"),
    (["train.batch_size=1.5"], "train.batch_size"),
    (["train.batch_size=-1"], "train.batch_size must be > 0"),
    (["model.z_dim=2.5"], "model.z_dim"),
    (["model.z_dim=0"], "model.z_dim must be > 0"),
    (["data.limit=0"], "data.limit must be > 0"),
    (["data.limit=2.5"], "data.limit"),
    (["data.valid_size=2.5"], "data.valid_size is a whole number"),
    (["data.valid_size=0"], "data.valid_size must be > 0"),
    (["train.num_particles=0"], "train.num_particles must be > 0"),
    (["train.num_particles=1.5"], "train.num_particles"),
    (["train.eval_particles=0"], "train.eval_particles must be > 0"),
    (["train.lr=-0.1"], "train.lr must be > 0"),
    (["train.lr=inf"], "train.lr must be a finite number"),
    (["train.lr=nan"], "train.lr"),
    (["train.beta=inf"], "train.beta must be a finite number"),
    (["train.beta=0"], "train.beta must be > 0"),
    (["train.lr_decay=0"], "train.lr_decay must be > 0"),
    (["train.adam_eps=0"], "train.adam_eps must be > 0"),
    (["train.clip_norm=0"], "train.clip_norm must be > 0"),
    (["train.warmup_epochs=-1"], "train.warmup_epochs must be >= 0"),
    (["train.seed=-1"], "train.seed must be between 0 and 2**32 - 1"),
    (["train.seed=4294967296"], "train.seed must be between"),
    (["train.seed=1.5"], "train.seed"),
    (["train.threads=0"], "train.threads must be auto or a whole number >= 1"),
    (["train.threads=2.5"], "train.threads"),
    (["train.threads=many"], "train.threads must be auto"),
    (["train.progress=maybe"], "train.progress"),
    (["train.tensorboard=maybe"], "train.tensorboard"),
    (["train.cuda_graphs=maybe"], "train.cuda_graphs"),
    (["train.device=gpu"], "train.device"),
    (["train.engine=fast"], "train.engine"),
    (["train.loss=elbo2"], "train.loss"),
    (["train.precision=float16"], "train.precision"),
    (["train.schedule=triangle"], "train.schedule"),
    (["model.prior=flow"], "model.prior"),
    (["model.likelihood=poisson"], "model.likelihood"),
    (["model.net=resnet"], "model.net"),
    (["model.activation=swish"], "model.activation"),
    (["model.scale_fn=abs"], "model.scale_fn"),
    (["model.hidden=[0]"], "model.hidden must be a list of positive integers"),
    (["model.hidden=[2.5]"], "model.hidden"),
    (["model.prior=mog", "model.components=0"], "model.components must be > 0"),
    (["model.prior=mog", "model.components=2.5"], "model.components"),
    (["model.learn_scale=global"], "model.learn_scale does not apply"),
    (["model.likelihood=gaussian", "model.likelihood_scale=-1"], "model.likelihood_scale"),
    (["model.likelihood=gaussian", "model.learn_scale=global", "model.min_scale=-1"],
     "model.min_scale must be >= 0"),
    (["model.channels=[8]"], "model.channels does not apply"),
    (["model.output_bias=zero"], "model.output_bias"),
    (["data.name=imagenet"], "data.name"),
    (["data.binarize=maybe"], "data.binarize"),
    (["data.name=npy"], "data.path"),
    (["run_name=a/b"], "run_name must be one folder name"),
    (["run_name=.."], "run_name must be one folder name"),
    (["run_name=latest"], "run_name must be one folder name"),
    (["run_dir="], "run_dir"),
    (["train.epoch=3"], "unknown config key 'train.epoch'"),
    (["epochs"], "bad override 'epochs'"),
]


@pytest.mark.parametrize("overrides, words", CONFIG, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_config_values(overrides, words):
    with pytest.raises(PyrovaeError) as err:
        load_config(None, overrides)
    assert words in _one_line(err.value)


# ---- a Config built in Python (fit.fit(cfg) validates it first) ------------------------------

PY_CONFIG = [
    ({"epochs": 2.5}, "train.epochs must be a whole number"),
    ({"batch_size": 1.5}, "train.batch_size must be a whole number"),
    ({"epochs": True}, "train.epochs must be a whole number"),
    ({"lr": "fast"}, "train.lr must be a finite number"),
    ({"progress": "yes"}, "train.progress must be true or false"),
    ({"threads": -2}, "train.threads"),
]


@pytest.mark.parametrize("train, words", PY_CONFIG, ids=str)
def test_python_configs(train, words):
    cfg = Config(train=TrainConfig(**train))
    with pytest.raises(PyrovaeError) as err:
        validate(cfg)
    assert words in _one_line(err.value)
    with pytest.raises(PyrovaeError):
        fit.fit(cfg, log=lambda *a: None)


def test_python_model_config():
    cfg = load_config(None, TINY)
    cfg.model.z_dim = 2.5
    with pytest.raises(PyrovaeError, match="model.z_dim must be a whole number"):
        validate(cfg)
    with pytest.raises(PyrovaeError, match="expected a pyrovae Config"):
        validate({"train": {}})


# ---- VAE arguments ---------------------------------------------------------------------------

VAE_ARGS = [
    ({"x_shape": (0, 28)}, "x_shape"),
    ({"x_shape": (2.5,)}, "x_shape must be a tuple of whole sizes"),
    ({"x_shape": "1,28,28"}, "x_shape"),
    ({"x_shape": None}, "x_shape"),
    ({"x_shape": (1, 2, 3, 4)}, "x_shape"),
    ({"z_dim": 2.5}, "z_dim must be a positive integer"),
    ({"z_dim": 0}, "z_dim must be a positive integer"),
    ({"z_dim": "8"}, "z_dim must be a positive integer"),
    ({"z_dim": None}, "z_dim must be a positive integer"),
    ({"z_dim": True}, "z_dim must be a positive integer"),
    ({"prior": "flow"}, "unknown prior 'flow'"),
    ({"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
    ({"net": "resnet"}, "unknown net 'resnet'"),
    ({"hidden": [0]}, "hidden must be a list of positive integers"),
    ({"hidden": [2.5]}, "hidden must be a list of positive integers"),
    ({"hidden": 5}, "hidden must be a list of positive integers"),
    ({"hidden": ["a"]}, "hidden must be a list of positive integers"),
    ({"net": "conv", "channels": [2.5]}, "channels must be a list of positive integers"),
    ({"channels": [8]}, "channels does not apply"),
    ({"activation": "swish"}, "unknown activation 'swish'"),
    ({"scale_fn": "abs"}, "unknown scale_fn 'abs'"),
    ({"prior": "mog", "components": 0}, "components must be > 0"),
    ({"prior": "mog", "components": 2.5}, "components must be a whole number"),
    ({"learn_scale": "global"}, "learn_scale does not apply"),
    ({"likelihood": "gaussian", "likelihood_scale": -1.0}, "scale must be > 0"),
    ({"likelihood": "gaussian", "learn_scale": "always"}, "unknown learn_scale"),
    ({"likelihood": "gaussian", "learn_scale": "global", "min_scale": -1.0}, "min_scale"),
]


@pytest.mark.parametrize("kwargs, words", VAE_ARGS, ids=str)
def test_vae_arguments(kwargs, words):
    with pytest.raises(PyrovaeError) as err:
        VAE(**{"hidden": [8], **kwargs})
    assert words in _one_line(err.value)


# ---- accessors and the Pyro program ----------------------------------------------------------

ACCESSORS = [
    ("encode, flat x", lambda v: v.encode(torch.rand(2, 784)), "x has shape (2, 784)"),
    ("encode, no batch", lambda v: v.encode(torch.ones(1, 28, 28)), "x has shape (1, 28, 28)"),
    ("encode, list", lambda v: v.encode([[0.0]]), "x must be a torch.Tensor"),
    ("encode, NaN", lambda v: v.encode(torch.full((2, 1, 28, 28), float("nan"))), "NaN"),
    ("decode, wrong z_dim", lambda v: v.decode(torch.zeros(2, 5)), "z has shape (2, 5)"),
    ("decode, scalar", lambda v: v.decode(torch.tensor(1.0)), "z has shape ()"),
    ("decode, integers", lambda v: v.decode(torch.zeros(2, 4, dtype=torch.long)), "dtype"),
    ("decode, NaN", lambda v: v.decode(torch.full((2, 4), float("nan"))), "NaN or inf"),
    ("decode, list", lambda v: v.decode([0.0] * 4), "z must be a torch.Tensor"),
    ("model, flat x", lambda v: v.model(torch.ones(2, 784)), "x has shape (2, 784)"),
    ("guide, flat x", lambda v: v.guide(torch.ones(2, 784)), "x has shape (2, 784)"),
    ("model, num_data < batch", lambda v: v.model(torch.ones(4, 1, 28, 28), num_data=2),
     "num_data (2) is smaller than the batch (4)"),
]


@pytest.mark.parametrize("name, call, words", ACCESSORS, ids=[c[0] for c in ACCESSORS])
def test_accessors(vae, name, call, words):
    with pytest.raises(PyrovaeError) as err:
        call(vae)
    assert words in _one_line(err.value)


def test_accessors_still_take_good_input(vae):
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    assert vae.encode(x).batch_shape == (3,)
    assert vae.decode(torch.zeros(2, 5, 4)).batch_shape == (2, 5)  # any batch dims


# ---- pyrovae.load ----------------------------------------------------------------------------

LOAD = [
    ("missing", lambda r: pyrovae.load(r / "nope"), "does not exist"),
    ("a plain file", lambda r: pyrovae.load(r / "a_file"), "a_file"),
    ("not a path", lambda r: pyrovae.load(123), "takes a run folder or checkpoint file path"),
    ("bad device", lambda r: pyrovae.load(r, device="gpu"), "bad device 'gpu'"),
]


@pytest.mark.parametrize("name, call, words", LOAD, ids=[c[0] for c in LOAD])
def test_load(runs, name, call, words):
    with pytest.raises(PyrovaeError) as err:
        call(runs)
    assert words in _one_line(err.value)


def test_load_of_a_folder_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PyrovaeError, match="holds no run") as err:
        pyrovae.load(tmp_path / "empty")
    _one_line(err.value)


# ---- the four commands -----------------------------------------------------------------------

COMMANDS = [
    # fit: everything here fails before any data is loaded
    ("fit", ["--no-such-flag"], "unrecognized arguments"),
    ("fit", ["train.epochs=2.5"], "train.epochs"),
    ("fit", ["train.threads=0"], "train.threads"),
    ("fit", ["run_name=../x"], "run_name"),
    ("fit", ["--config", "configs/nope.yaml"], "not found"),
    ("fit", ["--resume", "RUNS/nope"], "nothing to resume"),
    ("fit", ["--resume", "RUNS", "--config", "configs/mnist.yaml"], "drop --config"),
    ("fit", ["--resume", "RUNS", "epochs"], "bad override 'epochs'"),
    ("fit", ["--resume", "RUNS", "train.epoch=3"], "unknown config key 'train.epoch'"),
    ("fit", ["run_dir=RUNS/a_file"], "is a file, not a folder"),
    ("fit", ["run_dir=RUNS/a_file/sub"], "cannot create a run folder"),
    ("fit", ["run_dir=RUNS/version_0"], "is itself a run folder"),
    ("fit", ["run_dir=RUNS", "run_name=version_0"], "already holds a run"),
    # evaluate: the options are checked before the model is read
    ("evaluate", ["RUNS", "--limit", "0"], "--limit must be an integer >= 1"),
    ("evaluate", ["RUNS", "--iwae-samples", "0"], "--iwae-samples"),
    ("evaluate", ["RUNS", "--iwae-samples", "many"], "invalid int value"),
    ("evaluate", ["RUNS", "--nuts", "-1"], "--nuts"),
    ("evaluate", ["RUNS", "--nuts-samples", "2"], "--nuts-samples"),
    ("evaluate", ["RUNS", "--gap-examples", "-2"], "--gap-examples"),
    ("evaluate", ["RUNS", "--batch-size", "0"], "--batch-size"),
    ("evaluate", ["RUNS", "--seed", "-1"], "--seed"),
    ("evaluate", ["RUNS", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    ("evaluate", ["RUNS", "--no-such-option"], "unrecognized arguments"),
    ("evaluate", ["RUNS/nope"], "does not exist"),
    ("evaluate", [], "RUN_DIR"),
    # generate
    ("generate", ["RUNS", "--z", "0.1,0.2"], "has 2 numbers but this model's z_dim is 4"),
    ("generate", ["RUNS", "--z", "a,b"], "comma-separated numbers"),
    ("generate", ["RUNS", "--z", "nan,1,1,1"], "finite"),
    ("generate", ["RUNS", "--n", "0"], "--n must be between 1 and 10,000"),
    ("generate", ["RUNS", "--n", "1000000000"], "--n must be between 1 and 10,000"),
    ("generate", ["RUNS", "--z", "1,,1,1"], "empty field"),
    ("generate", ["RUNS", "--n", "two"], "invalid int value"),
    ("generate", ["RUNS", "--n", "2", "--z", "1,1,1,1"], "not allowed with argument"),
    ("generate", ["RUNS", "--seed", "-1"], "--seed"),
    ("generate", ["RUNS", "--out", "x.jpg"], ".png"),
    ("generate", ["RUNS", "--out", "RUNS/no/such.png"], "does not exist"),
    ("generate", ["RUNS", "--out", "RUNS/a_file.png"], "exists: choose another --out"),
    ("generate", ["RUNS/nope"], "does not exist"),
    # check: the options are checked before any data is loaded
    ("check", ["--examples", "0"], "--examples must be >= 1, got 0"),
    ("check", ["--particles", "1,10"], "--particles must all be >= 2, got 1"),
    ("check", ["--replicates", "1"], "--replicates must be >= 2, got 1"),
    ("check", ["--train-steps", "-5"], "--train-steps must be >= 0, got -5"),
    ("check", ["--seed", "-1"], "--seed must be between 0 and 2**32 - 1"),
    ("check", ["--priors", ",,,"], "--priors names no prior"),
    ("check", ["--particles", "ten"], "--particles takes comma-separated whole numbers"),
    ("check", ["--alpha", "2"], "--alpha is a probability"),
    ("check", ["--checkpoint", "RUNS", "--train-steps", "5"], "drop --config"),
]
MAINS = {"fit": fit.main, "evaluate": evaluate.main, "generate": generate.main,
         "check": check.main}


@pytest.mark.parametrize("command, args, words", COMMANDS,
                         ids=[f"{c}: {' '.join(a)}" for c, a, _ in COMMANDS])
def test_commands(runs, command, args, words, capsys):
    (runs / "a_file.png").write_bytes(b"mine")
    args = [a.replace("RUNS", str(runs)) for a in args]
    before = sorted(p.name for p in runs.rglob("*"))
    assert MAINS[command](args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    *notes, last = err.splitlines()
    assert last.startswith("error: ") and words in last, err
    # notes before the error: which run it picked, the threads chosen on a busy machine
    assert all(n.startswith(("pyrovae", "threads: ")) for n in notes), err
    assert sorted(p.name for p in runs.rglob("*")) == before  # nothing made or removed
    assert (runs / "a_file.png").read_bytes() == b"mine"


def test_the_catalogue_covers_every_option():
    """Each command-line flag and each config key appears in a case above."""
    text = repr(COMMANDS + CONFIG)
    for field in dataclasses.fields(evaluate.Options):
        flag = "--" + field.name.replace("_", "-").replace("nuts-examples", "nuts")
        if field.name in ("elbo_particles", "gap_eval_particles", "figures", "nuts_warmup",
                          "nuts_chains", "gap_steps"):
            continue  # Python-only fields, or flags checked by the same rule as their siblings
        assert flag in text, flag
    for section in ("data", "model", "train"):
        keys = dataclasses.fields(Config.__dataclass_fields__[section].default_factory)
        for key in keys:
            if f"{section}.{key.name}" in ("data.root", "data.mirror", "data.path"):
                continue  # paths: checked where the data is read (tests/test_data_inputs.py)
            if key.name.endswith("_options"):
                continue  # not keys: the components' options, covered by their flat keys below
            assert f"{section}.{key.name}" in text, f"{section}.{key.name}"
    for key in known_aliases(registries()):  # every option of every registered component
        assert f"model.{key}" in text, f"model.{key}"
