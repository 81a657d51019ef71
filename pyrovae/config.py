"""Typed run configuration: YAML files in ``configs/`` plus ``key=value`` overrides (OmegaConf).

``load_config(path, overrides)`` merges, in order, the defaults below, the YAML file and the
dotted overrides (``train.epochs=3 model.prior=vamp``), then validates every value. An unknown
key or a bad value is a one-line :class:`PyrovaeError` naming the key and the valid choices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pyrovae.errors import PyrovaeError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "mnist.yaml"


@dataclass
class DataConfig:
    name: str = "mnist"  # mnist | fashion_mnist | cifar10 | binarized_mnist | folder | npy
    root: str | None = None  # cache folder (default ~/.cache/pyrovae/data)
    mirror: str | None = None  # read-only folder laid out like ../shared/data
    path: str | None = None  # folder of images (folder) or array file (npy)
    limit: int | None = None  # use only the first N training examples
    binarize: str = "dynamic"  # dynamic | static | none
    valid_size: float | None = None  # examples (>= 1) or fraction (< 1) held out for validation


@dataclass
class ModelConfig:
    z_dim: int = 20
    prior: str = "normal"
    likelihood: str = "bernoulli"
    net: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400])
    channels: list[int] | None = None  # conv only
    activation: str = "relu"
    scale_fn: str = "exp"  # exp | softplus
    components: int | None = None  # K for mog and vamp
    likelihood_scale: float | None = None  # gaussian / laplace scale (initial, if learned)
    learn_scale: str | None = None  # none | global | pixel
    min_scale: float | None = None  # floor of a learned gaussian / laplace scale (1/1020)
    output_bias: str = "default"  # default | data_mean: decoder output bias at the data mean


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    loss: str = "trace"  # trace | meanfield | analytic | iwae | iwae_dreg (pyrovae.objectives)
    engine: str = "auto"  # auto | svi | torch | traced | compiled (see pyrovae.optim)
    precision: str = "float32"  # float32 | bfloat16 (autocast matmuls; see BENCHMARKS.md)
    num_particles: int = 1  # particles per example (K of iwae / iwae_dreg)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    beta: float = 1.0  # KL weight after warm-up (1 = the exact ELBO)
    warmup_epochs: float = 0.0  # KL warm-up: beta rises linearly from 0 over this many epochs
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch (exponential)
    schedule: str = "exponential"  # exponential | burda (see pyrovae.schedules)
    adam_eps: float = 1.0e-8  # Adam's epsilon (Burda et al. 2015 use 1e-4)
    clip_norm: float | None = None  # gradient clipping (Pyro's ClippedAdam)
    eval_particles: int = 1  # particles per example for the validation/test ELBO
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = False  # per-epoch metrics and samples to RUN_DIR/tensorboard (extra)
    threads: int | str = "auto"  # CPU threads: auto (fewer when the cores are busy) or N


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: str = "runs/default"  # the folder of this config's runs: run_dir/version_N
    run_name: str | None = None  # a run folder name inside run_dir instead of version_N


def _choices() -> dict[str, Sequence[str]]:
    from pyrovae.data import BINARIZE, DATASETS
    from pyrovae.likelihoods import LEARN_SCALE, LIKELIHOODS
    from pyrovae.nets import ACTIVATIONS, NETS, SCALE_FNS
    from pyrovae.objectives import LOSSES
    from pyrovae.optim import ENGINES, PRECISIONS
    from pyrovae.priors import PRIORS
    from pyrovae.schedules import OUTPUT_BIAS, SCHEDULES

    return {
        "data.name": DATASETS,
        "data.binarize": BINARIZE,
        "model.prior": list(PRIORS),
        "model.likelihood": list(LIKELIHOODS),
        "model.net": list(NETS),
        "model.activation": list(ACTIVATIONS),
        "model.scale_fn": list(SCALE_FNS),
        "model.learn_scale": LEARN_SCALE,
        "train.loss": LOSSES,
        "train.engine": ENGINES,
        "train.precision": PRECISIONS,
        "train.schedule": list(SCHEDULES),
        "model.output_bias": OUTPUT_BIAS,
    }


_POSITIVE = ("model.z_dim", "train.epochs", "train.batch_size", "train.lr", "train.num_particles",
             "train.eval_particles", "data.limit", "model.components", "model.likelihood_scale",
             "train.clip_norm", "train.lr_decay", "data.valid_size", "train.beta",
             "train.adam_eps")
_NON_NEGATIVE = ("train.warmup_epochs", "model.min_scale")
#: Counts: whole numbers (a YAML or Python 2.5 here is refused, not truncated).
_INTEGERS = ("model.z_dim", "train.epochs", "train.batch_size", "train.num_particles",
             "train.eval_particles", "data.limit", "model.components", "train.seed")
_FLOATS = ("train.lr", "model.likelihood_scale", "train.clip_norm", "train.lr_decay",
           "data.valid_size", "train.beta", "train.adam_eps", "train.warmup_epochs",
           "model.min_scale")
_BOOLS = ("train.progress", "train.tensorboard")
_STRINGS = ("data.name", "data.binarize", "model.prior", "model.likelihood", "model.net",
            "model.activation", "model.scale_fn", "model.output_bias", "train.loss",
            "train.engine", "train.precision", "train.device", "train.schedule")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(cfg: Config) -> None:
    """The types a config built in Python (not through OmegaConf) can get wrong."""
    for key in _INTEGERS:
        value = _get(cfg, key)
        if value is not None and not _is_int(value):
            raise PyrovaeError(f"{key} must be a whole number, got {value!r}")
    for key in _FLOATS:
        value = _get(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise PyrovaeError(f"{key} must be a finite number, got {value!r}")
    for key in _BOOLS:
        if not isinstance(_get(cfg, key), bool):
            raise PyrovaeError(f"{key} must be true or false, got {_get(cfg, key)!r}")
    for key in _STRINGS:
        value = _get(cfg, key)
        if not isinstance(value, str):
            raise PyrovaeError(f"{key} must be a name, got {value!r}")
    for key in ("model.hidden", "model.channels"):
        value = _get(cfg, key)
        if value is None and key == "model.channels":
            continue
        if not isinstance(value, list | tuple) or not all(_is_int(w) for w in value):
            raise PyrovaeError(f"{key} must be a list of whole numbers such as [512, 256], "
                               f"got {value!r}")


def check_threads(value: Any, key: str = "train.threads") -> int | None:
    """``auto`` -> None; a whole number >= 1 -> it; anything else -> one-line error."""
    if value == "auto":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not _is_int(value) or value < 1:
        raise PyrovaeError(f"{key} must be auto or a whole number >= 1 (CPU threads), "
                           f"got {value!r}")
    return value


def _check_run_folder(cfg: Config) -> None:
    if not isinstance(cfg.run_dir, str) or not cfg.run_dir.strip():
        raise PyrovaeError(f"run_dir must name a folder (such as runs/mnist), got "
                           f"{cfg.run_dir!r}")
    name = cfg.run_name
    if name is not None and (not isinstance(name, str) or not name.strip()
                             or name in (".", "..", "latest") or "/" in name or "\\" in name):
        raise PyrovaeError(f"run_name must be one folder name (no /, not . or .. or latest), "
                           f"got {name!r}: the run goes to run_dir/run_name")


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def validate(cfg: Config) -> Config:
    """Check every value against its type, choices and range; return ``cfg`` unchanged."""
    if not isinstance(cfg, Config):
        raise PyrovaeError(f"expected a pyrovae Config (pyrovae.config.load_config), got "
                           f"{type(cfg).__name__}")
    _check_types(cfg)
    for key, choices in _choices().items():
        value = _get(cfg, key)
        if value is not None and value not in choices:
            raise PyrovaeError(
                f"bad value {value!r} for {key}; choose one of: {', '.join(choices)}"
            )
    for key in _POSITIVE:
        value = _get(cfg, key)
        if value is not None and not value > 0:
            raise PyrovaeError(f"{key} must be > 0, got {value!r}")
    for key in _NON_NEGATIVE:
        value = _get(cfg, key)
        if value is not None and value < 0:
            raise PyrovaeError(f"{key} must be >= 0, got {value!r}")
    valid_size = cfg.data.valid_size
    if valid_size is not None and valid_size >= 1 and valid_size != int(valid_size):
        raise PyrovaeError(f"data.valid_size is a whole number of examples (>= 1) or a fraction "
                           f"(< 1), got {valid_size!r}")
    if not 0 <= cfg.train.seed < 2**32:
        raise PyrovaeError(f"train.seed must be between 0 and 2**32 - 1, got {cfg.train.seed}")
    check_threads(cfg.train.threads)
    _check_run_folder(cfg)
    for width in [*cfg.model.hidden, *(cfg.model.channels or [])]:
        if width < 1:
            raise PyrovaeError(f"layer widths must be >= 1, got {width} in model.hidden/channels")
    device = cfg.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:")
                                                   and device[5:].isdigit())):
        raise PyrovaeError(
            f"bad value {device!r} for train.device; choose auto, cpu, cuda or cuda:N"
        )
    from pyrovae.model import check_component_options

    m = cfg.model
    check_component_options(m.prior, m.likelihood, m.net, {
        name: getattr(m, name) for name in ("components", "likelihood_scale", "learn_scale",
                                            "min_scale", "channels")}, prefix="model.")
    if cfg.data.name in ("folder", "npy") and not cfg.data.path:
        raise PyrovaeError(f"data.name={cfg.data.name} needs data.path (a folder or .npy file)")
    return cfg


def _one_line(err: OmegaConfBaseException, source: str) -> PyrovaeError:
    """OmegaConf's multi-line error, as one line that names the key and what is allowed."""
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if "not in" in msg or "Key '" in msg and "not" in msg:
        section = key.rsplit(".", 1)[0] if "." in key else ""
        valid = _valid_keys(section)
        return PyrovaeError(f"unknown config key {key!r} in {source}; valid keys"
                            f"{' under ' + section if section else ''}: {', '.join(valid)}")
    return PyrovaeError(f"bad config value for {key or '?'} in {source}: {msg}")


def _valid_keys(section: str) -> list[str]:
    node: Any = Config
    for part in filter(None, section.split(".")):
        node = {f.name: f for f in fields(node)}[part].default_factory
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- YAML file (default ``configs/mnist.yaml``) <- ``key=value`` overrides."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise PyrovaeError(f"config file {str(path)!r} not found: pass --config with an existing "
                           f"YAML file (see the configs/ folder)")
    schema = OmegaConf.structured(Config)
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # YAML syntax errors come in many types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PyrovaeError(f"{path} is not valid YAML: {first}") from None
    if not isinstance(loaded, type(OmegaConf.create({}))):
        raise PyrovaeError(f"{path} must hold a YAML mapping of config sections")
    try:
        merged = OmegaConf.merge(schema, loaded)
    except OmegaConfBaseException as err:
        raise _one_line(err, str(path)) from None
    return _with_overrides(merged, overrides)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """``cfg`` with ``key=value`` overrides applied, validated (e.g. on ``--resume``)."""
    return _with_overrides(OmegaConf.structured(cfg), overrides)


def _with_overrides(merged, overrides: Sequence[str]) -> Config:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise PyrovaeError(f"bad override {item!r}: write key=value, e.g. train.epochs=3")
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _one_line(err, "the overrides") from None
    return validate(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(data: dict) -> Config:
    """A config from a plain dict (as saved in a checkpoint), validated."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), data))
    except OmegaConfBaseException as err:
        raise _one_line(err, "the saved config") from None
    return validate(cfg)


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def vae_kwargs(cfg: Config, x_shape: Sequence[int]) -> dict:
    """The ``pyrovae.VAE`` keyword arguments of a config, for examples of shape ``x_shape``."""
    m = cfg.model
    return dict(
        x_shape=tuple(x_shape), z_dim=m.z_dim, prior=m.prior, likelihood=m.likelihood, net=m.net,
        hidden=list(m.hidden), channels=None if m.channels is None else list(m.channels),
        activation=m.activation, scale_fn=m.scale_fn, components=m.components,
        likelihood_scale=m.likelihood_scale, learn_scale=m.learn_scale, min_scale=m.min_scale,
    )


def resolve_path(value: str | None) -> Path | None:
    """A user path with ``~`` and environment variables expanded."""
    return None if value is None else Path(os.path.expandvars(os.path.expanduser(value)))
