"""Typed run configuration: YAML files in ``configs/`` plus ``key=value`` overrides (OmegaConf).

``load_config(path, overrides)`` merges, in order, the defaults below, the YAML file and the
dotted overrides (``train.epochs=3 model.prior=vamp``), then validates every value. An unknown
key or a bad value is a one-line :class:`PyrovaeError` naming the key and the valid choices.

The model's components (``prior``, ``likelihood``, ``net``) are given with their options, as
each component declares them (:mod:`pyrovae.options`):

- nested: ``model.prior: {name: mog, components: 10}`` in YAML, ``model.prior.components=10``
  or ``model.prior='{name: mog, components: 10}'`` as overrides; ``model.prior: mog`` is the
  component with its defaults;
- flat, as in earlier versions: ``model.components=10``, ``model.hidden=[512,256]``,
  ``model.likelihood_scale=0.1``: each flat key goes to whichever chosen component declares it
  (its alias), and is a one-line error if none does.

A later source (the overrides after the file) changes an option of the component. Options
given nested belong to their component: naming a different one (``model.prior=vamp`` on a config
with ``prior: {name: mog, components: 5}``) starts it from its defaults. Flat keys stay
model-wide, as they always were: each goes to whichever component is chosen in the end (so
``model.net=conv`` on a file with ``hidden: [512, 256]`` keeps those widths). Where a flat and a
nested key give the same option, the later source wins; one source giving both is an error.

In the :class:`Config` object ``cfg.model.prior`` stays the component's *name* (a string), and
its options, every one filled in, are the mapping ``cfg.model.prior_options`` (likewise
``likelihood_options`` and ``net_options``); ``cfg.model.component("prior")`` is the two in the
nested form, ``{"name": "mog", "components": 10}``, which is what :func:`to_dict`,
:func:`to_yaml` (a run's ``config.yaml``) and checkpoints hold. The flat names still read and
write the chosen component's option (``cfg.model.hidden``); assigning another name to
``cfg.model.prior`` starts that component from its defaults. Saved configs of the flat form (old
checkpoints) load as they are.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pyrovae.errors import PyrovaeError
from pyrovae.options import yaml_boolean

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "mnist.yaml"


@dataclass
class DataConfig:
    name: str = "mnist"  # one of pyrovae.data.SOURCES (mnist, fashion_mnist, ...; README)
    root: str | None = None  # cache folder (default $XDG_CACHE_HOME/pyrovae/data)
    mirror: str | None = None  # read-only folder laid out like ../shared/data
    path: str | None = None  # folder of images (folder) or array file (npy)
    limit: int | None = None  # use only the first N training examples
    binarize: str = "dynamic"  # dynamic | static | none
    valid_size: float | None = None  # examples (>= 1) or fraction (< 1) held out for validation


#: The model's components, each with its options (``model.<kind>`` and ``model.<kind>_options``).
KINDS = ("prior", "likelihood", "net")


@dataclass
class ModelConfig:
    z_dim: int = 20
    prior: str = "normal"  # the name; its options in prior_options (see the module docstring)
    likelihood: str = "bernoulli"
    net: str = "mlp"
    output_bias: str = "default"  # default | data_mean: decoder output bias at the data mean
    prior_options: dict[str, Any] = field(default_factory=dict)
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    net_options: dict[str, Any] = field(default_factory=dict)

    def component(self, kind: str) -> dict[str, Any]:
        """The component ``kind`` (prior, likelihood or net) as ``{"name": ..., **options}``."""
        if kind not in KINDS:
            raise PyrovaeError(f"unknown component kind {kind!r}; choose one of: "
                               f"{', '.join(KINDS)}")
        return {"name": getattr(self, kind), **getattr(self, f"{kind}_options")}

    def __setattr__(self, name: str, value: Any) -> None:
        if name in KINDS and isinstance(value, Mapping):  # cfg.model.prior = {name: .., ..}
            options = dict(value)
            self.__setattr__(name, options.pop("name", self.__dict__.get(name)))
            object.__setattr__(self, f"{name}_options",
                               {**getattr(self, f"{name}_options"), **options})
            return
        if name in KINDS and name in self.__dict__ and self.__dict__[name] != value:
            object.__setattr__(self, f"{name}_options", {})  # another component: its defaults
        if name in _MODEL_FIELDS or name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        kind, option = _flat_option(self, name, strict=True)
        options = dict(self.__dict__[f"{kind}_options"])
        if value is None:
            options.pop(option, None)
        else:
            options[option] = value
        object.__setattr__(self, f"{kind}_options", options)

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not attributes: the flat form of an option
        if name.startswith("_") or name in _MODEL_FIELDS:
            raise AttributeError(name)
        try:
            found = _flat_option(self, name)
        except PyrovaeError:
            raise AttributeError(f"ModelConfig has no attribute {name!r}") from None
        if found is None:
            return None  # an option of a component that is not chosen: not set
        kind, option = found
        options = self.__dict__.get(f"{kind}_options", {})
        if options.get(option) is not None:
            return options[option]
        spec = _registries()[kind][self.__dict__[kind]][option]
        return spec.check(spec.default, name)


_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def _registries() -> dict:
    from pyrovae.model import registries

    return registries()


def _flat_option(model: ModelConfig, key: str, strict: bool = False) -> tuple[str, str] | None:
    """(kind, option) of the chosen component that takes the flat key ``model.<key>``; None
    where no chosen component takes it (an error if ``strict``), and an error where no
    registered component does."""
    from pyrovae.options import aliases, known_aliases, route

    regs = _registries()
    if key not in known_aliases(regs):
        raise PyrovaeError(f"unknown config key 'model.{key}'; valid keys under model: "
                           f"{', '.join(_valid_keys('model'))}")
    chosen = {}
    for kind in KINDS:
        name = model.__dict__.get(kind)
        if not isinstance(name, str) or name not in regs[kind]:
            raise _bad_name(kind, name)
        chosen[kind] = (name, regs[kind][name])
    if strict:  # the one-line error where no chosen component takes it
        route({key: key}, chosen, regs, prefix="model.")
    return next(((kind, aliases(specs)[key]) for kind, (_, specs) in chosen.items()
                 if key in aliases(specs)), None)


def _bad_name(kind: str, name: Any) -> PyrovaeError:
    names = list(_registries()[kind])
    return PyrovaeError(f"bad value {name!r} for model.{kind}; choose one of: {', '.join(names)}")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    loss: str = "trace"  # trace | meanfield | analytic | iwae | iwae_dreg (pyrovae.objectives)
    engine: str = "auto"  # auto | svi | torch | traced | compiled (see pyrovae.optim)
    precision: str = "float32"  # float32 | bfloat16 (autocast matmuls; see BENCHMARKS.md)
    cuda_graphs: bool = False  # compiled engine on CUDA: each step replayed as one CUDA graph
    num_particles: int = 1  # particles per example (K of iwae / iwae_dreg)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    beta: float = 1.0  # KL weight after warm-up (1 = the exact ELBO)
    warmup_epochs: float = 0.0  # KL warm-up: beta rises linearly from 0 over this many epochs
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch (exponential)
    schedule: str = "exponential"  # exponential | burda | cosine (see pyrovae.schedules)
    adam_eps: float = 1.0e-8  # Adam's epsilon (Burda et al. 2015 use 1e-4)
    clip_norm: float | None = None  # each parameter's gradient norm clipped to this
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
    from pyrovae.likelihoods import LIKELIHOODS
    from pyrovae.nets import NETS
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
        "train.loss": LOSSES,
        "train.engine": ENGINES,
        "train.precision": PRECISIONS,
        "train.schedule": list(SCHEDULES),
        "model.output_bias": OUTPUT_BIAS,
    }


# The keys of the config's own sections; the model's components check their options themselves
# (pyrovae.options, and each component's ``options``).
_POSITIVE = ("model.z_dim", "train.epochs", "train.batch_size", "train.lr", "train.num_particles",
             "train.eval_particles", "data.limit", "train.clip_norm", "train.lr_decay",
             "data.valid_size", "train.beta", "train.adam_eps")
_NON_NEGATIVE = ("train.warmup_epochs",)
#: Counts: whole numbers (a YAML or Python 2.5 here is refused, not truncated).
_INTEGERS = ("model.z_dim", "train.epochs", "train.batch_size", "train.num_particles",
             "train.eval_particles", "data.limit", "train.seed")
_FLOATS = ("train.lr", "train.clip_norm", "train.lr_decay", "data.valid_size", "train.beta",
           "train.adam_eps", "train.warmup_epochs")
_BOOLS = ("train.progress", "train.tensorboard", "train.cuda_graphs")
_STRINGS = ("data.name", "data.binarize", "model.prior", "model.likelihood", "model.net",
            "model.output_bias", "train.loss", "train.engine", "train.precision",
            "train.device", "train.schedule")


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
    for kind in KINDS:
        value = getattr(cfg.model, f"{kind}_options")
        if not isinstance(value, Mapping):
            raise PyrovaeError(f"model.{kind}_options must be a mapping of the {kind}'s options "
                               f"such as {{}}, got {value!r}")


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
    """Check every value against its type, choices and range; return ``cfg``, the options of
    its components filled in (``cfg.model.prior_options`` ...: every option, defaults too)."""
    if not isinstance(cfg, Config):
        raise PyrovaeError(f"expected a pyrovae Config (pyrovae.config.load_config), got "
                           f"{type(cfg).__name__}")
    _check_types(cfg)
    for key, choices in _choices().items():
        value = _get(cfg, key)
        if value is not None and value not in choices:
            raise PyrovaeError(f"bad value {value!r} for {key}{yaml_boolean(value)}; choose one "
                               f"of: {', '.join(choices)}")
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
    for kind, options in _filled(cfg.model).items():
        object.__setattr__(cfg.model, f"{kind}_options", options)
    device = cfg.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:")
                                                   and device[5:].isdigit())):
        raise PyrovaeError(
            f"bad value {device!r} for train.device; choose auto, cpu, cuda or cuda:N"
        )
    if cfg.train.schedule != "exponential" and cfg.train.lr_decay != 1:
        raise PyrovaeError(f"train.lr_decay applies to train.schedule=exponential, not "
                           f"{cfg.train.schedule}: remove it")
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
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
        hint = f"did you mean {(section + '.' if section else '') + close[0]!r}? " if close else ""
        return PyrovaeError(f"unknown config key {key!r} in {source}; {hint}valid keys"
                            f"{' under ' + section if section else ''}: {', '.join(valid)}")
    return PyrovaeError(f"bad config value for {key or '?'} in {source}: {msg}")


def _valid_keys(section: str) -> list[str]:
    node: Any = Config
    for part in filter(None, section.split(".")):
        node = {f.name: f for f in fields(node)}[part].default_factory
    if node is ModelConfig:  # the components' options are keys too, in their flat form
        from pyrovae.options import known_aliases

        own = [f.name for f in fields(node) if not f.name.endswith("_options")]
        return own + sorted(known_aliases(_registries()) - set(own))
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _filled(model: ModelConfig,
            keys: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, dict]:
    """kind -> every option of the chosen component, checked and filled in; ``keys`` names the
    key each given option was written as (default ``model.<kind>.<option>``)."""
    from pyrovae.model import Component, resolve_options

    regs = _registries()
    parts = {}
    for kind in KINDS:
        name = getattr(model, kind)
        if not isinstance(name, str) or name not in regs[kind]:
            raise _bad_name(kind, name)
        parts[kind] = Component(kind, name, dict(getattr(model, f"{kind}_options")),
                                regs[kind][name], prefix="model.")
    return resolve_options(parts, {}, keys, prefix="model.")


class _Components:
    """The model's components as the sources of a config (defaults, file, overrides) give
    them, one source after the other. Nested options belong to their component: naming a
    different component drops them. Flat keys are model-wide, as they always were: each goes,
    at the end, to whichever chosen component declares it. Where both give one option, the later
    source wins (the same source giving both is an error)."""

    def __init__(self, model: ModelConfig) -> None:
        self.names = {kind: getattr(model, kind) for kind in KINDS}
        #: kind -> option -> (value, the key it was written as, the source's number)
        self.options: dict[str, dict[str, tuple]] = {kind: {} for kind in KINDS}
        #: flat key -> (value, the source's number, the source's name)
        self.flat: dict[str, tuple] = {}
        self.sources = 0

    def apply(self, given: dict, where: str) -> None:
        """One source's component keys (:func:`_component_keys`)."""
        regs = _registries()
        self.sources += 1
        for kind, spec in given.get("nested", {}).items():
            spec = dict(spec)
            if "name" in spec:
                name = spec.pop("name")
                if not isinstance(name, str) or name not in regs[kind]:
                    raise _bad_name(kind, name)
                if name != self.names[kind]:
                    self.names[kind], self.options[kind] = name, {}
            for option, value in spec.items():
                self.options[kind][str(option)] = (value, f"model.{kind}.{option}", self.sources)
        for key, value in given.get("flat", {}).items():
            if value is None:  # not given: the default, or what nested keys say
                self.flat.pop(key, None)
            else:
                self.flat[key] = (value, self.sources, where)

    def set(self, model: ModelConfig) -> None:
        """Write the components into ``model``, every option checked and filled in."""
        from pyrovae.options import route

        regs = _registries()
        chosen = {kind: (self.names[kind], regs[kind][self.names[kind]]) for kind in KINDS}
        options = {kind: dict(self.options[kind]) for kind in KINDS}
        for key, (value, source, where) in self.flat.items():
            routed = route({key: value}, chosen, regs, prefix="model.")
            kind, option = next((k, o) for k, opts in routed.items() for o in opts)
            nested = options[kind].get(option)
            if nested is not None and nested[2] == source:
                raise PyrovaeError(f"the {kind} option {option} is given twice in {where}, as "
                                   f"{nested[1]} and as model.{key}: keep one")
            if nested is None or nested[2] < source:
                options[kind][option] = (value, f"model.{key}", source)
        for kind in KINDS:
            object.__setattr__(model, kind, self.names[kind])
            object.__setattr__(model, f"{kind}_options",
                               {o: v for o, (v, _, _) in options[kind].items()})
        keys = {kind: {o: key for o, (_, key, _) in options[kind].items()} for kind in KINDS}
        for kind, filled in _filled(model, keys).items():
            object.__setattr__(model, f"{kind}_options", filled)


def _is_component_key(key: str, aliases: set[str]) -> bool:
    return key in KINDS or key in aliases or (key.endswith("_options") and key[:-8] in KINDS)


def _component_keys(model: dict, where: str) -> dict:
    """The component keys of one source's ``model`` section (plain data), parsed:
    ``{"nested": {kind: {"name": ..., option: value}}, "flat": {key: value}}``."""
    given: dict = {"nested": {}, "flat": {}}
    for key, value in model.items():
        if key.endswith("_options"):
            kind = key[:-8]
            raise PyrovaeError(f"unknown config key 'model.{key}' in {where}: give the {kind}'s "
                               f"options with it, model.{kind}: {{name: ..., <option>: value}} "
                               f"(or model.{kind}.<option>=value)")
        if key in KINDS:
            if isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, Mapping):
                names = ", ".join(_registries()[key])
                raise PyrovaeError(f"model.{key} must be a name (one of {names}) or a mapping "
                                   f"{{name: ..., <option>: value}}, got {value!r} in {where}")
            given["nested"][key] = dict(value)
        else:
            given["flat"][key] = value
    return given


def _take_components(conf: Any, where: str) -> dict:
    """The component keys of one source (a DictConfig), taken out of it: what is left goes
    through the typed schema as the other keys do."""
    from pyrovae.options import known_aliases

    model = conf.get("model") if isinstance(conf, DictConfig) else None
    if not isinstance(model, DictConfig):
        return {}
    aliases = known_aliases(_registries())
    keys = [str(k) for k in model.keys() if _is_component_key(str(k), aliases)]
    try:
        plain = OmegaConf.to_container(model, resolve=True)
    except OmegaConfBaseException as err:
        raise _one_line(err, where) from None
    for key in keys:
        del model[key]
    return _component_keys({key: plain[key] for key in keys}, where)


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict]:
    """(the overrides of other keys, the component keys of the overrides, parsed)."""
    from pyrovae.options import known_aliases

    aliases = known_aliases(_registries())
    rest, model = [], {}
    for item in overrides:
        key, _, text = item.partition("=")
        path = key.strip().split(".")
        if path[0] != "model" or len(path) < 2 or not _is_component_key(path[1], aliases):
            rest.append(item)
            continue
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]),
                                           resolve=True)["v"]
        except OmegaConfBaseException as err:
            raise PyrovaeError(f"bad override {item!r}: {str(err).splitlines()[0]}") from None
        if path[1] not in KINDS or (len(path) == 2 and not isinstance(value, str | Mapping)):
            if len(path) > 2 and not path[1].endswith("_options"):
                raise PyrovaeError(f"bad override {item!r}: model.{path[1]} takes one value, "
                                   f"e.g. model.{path[1]}=...")
            model[path[1]] = value
            continue
        spec = model.get(path[1])
        if not isinstance(spec, dict):  # a bad value before: this one replaces it
            spec = model[path[1]] = {}
        if len(path) == 2:
            spec.update({"name": value} if isinstance(value, str) else dict(value))
        elif len(path) == 3:
            spec[path[2]] = value
        else:
            raise PyrovaeError(f"bad override {item!r}: an option of the {path[1]} is "
                               f"model.{path[1]}.<option>=value")
    return rest, _component_keys(model, "the overrides")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- YAML file (default ``configs/mnist.yaml``) <- ``key=value`` overrides."""
    if path is not None and str(path).strip() == "":
        raise PyrovaeError("--config was given an empty path: name a YAML file (see the configs/ "
                           "folder), or leave --config out for configs/mnist.yaml")
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if path.is_dir():
        raise PyrovaeError(f"config file {str(path)!r} is a folder: name a YAML file in it")
    if not path.is_file():
        raise PyrovaeError(f"config file {str(path)!r} not found: pass --config with an existing "
                           f"YAML file (see the configs/ folder)")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # YAML syntax errors come in many types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PyrovaeError(f"{path} is not valid YAML{where}: {problem or first}") from None
    if not isinstance(loaded, DictConfig):
        raise PyrovaeError(f"{path} must hold a YAML mapping of config sections")
    if not loaded:
        raise PyrovaeError(f"{path} is empty: give it the config sections (data, model, train), "
                           "e.g. by copying configs/mnist.yaml")
    return _merge(loaded, str(path), overrides)


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """``cfg`` with ``key=value`` overrides applied, validated (e.g. on ``--resume``)."""
    return _merge(OmegaConf.create(to_dict(cfg)), "the config", overrides)


#: Keys whose values are text (paths, names, a device) whatever they look like. YAML would read
#: run_name=1.10 as the number 1.1 and run_dir=on as True: an override of one is taken as the
#: text typed, and a file's value that YAML read as something else is refused.
TEXT_KEYS = ("run_dir", "run_name", "data.root", "data.mirror", "data.path", "train.device")


def _plain(value: Any, key: str, where: str) -> None:
    """Refuse, in one line, what a config must not hold: an interpolation (``${...}``, which
    would read the environment or other keys: a config from someone else must not), and a key of
    TEXT_KEYS that YAML read as something other than text."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _plain(v, f"{key}.{k}" if key else str(k), where)
    elif isinstance(value, list | tuple):
        for v in value:
            _plain(v, key, where)
    elif isinstance(value, str) and "${" in value:
        raise PyrovaeError(f"{key} in {where} holds an interpolation ({value!r}): pyrovae configs "
                           "take plain values; write the value out")
    elif key in TEXT_KEYS and value is not None and not isinstance(value, str):
        raise PyrovaeError(f"{key} in {where} was read as {type(value).__name__} {value!r}, not "
                           f"as text: write it in quotes, e.g. {key}: '...'")


def _checked_override(item: str) -> str:
    """One ``key=value`` override, checked (its form, its value's YAML, :func:`_plain`); a key
    of TEXT_KEYS gets its text as typed (quoted for YAML), unless it is null."""
    key, _, text = item.partition("=")
    key = key.strip()
    if "=" not in item or not key:
        raise PyrovaeError(f"bad override {item!r}: write key=value, e.g. train.epochs=3")
    if key == "model":
        raise PyrovaeError(f"bad override {item!r}: give the model's keys one by one, e.g. "
                           "model.prior=mog model.z_dim=8")
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]
    except Exception as err:  # noqa: BLE001  (YAML's parser errors come in many types)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PyrovaeError(f"bad override {item!r}: {problem}") from None
    if key in TEXT_KEYS and value is not None and not isinstance(value, str):
        text = text.strip()
        value = text
        item = f"{key}='{text.replace(chr(39), chr(39) * 2)}'"
    _plain(value, key, "the overrides")
    return item


def _merge(source: DictConfig, where: str, overrides: Sequence[str]) -> Config:
    """Defaults <- ``source`` <- ``overrides``, the model's components merged as the module
    docstring says, then validated."""
    overrides = [_checked_override(item) for item in overrides]
    _plain(OmegaConf.to_container(source, resolve=False), "", where)
    components = _Components(ModelConfig())
    given = _take_components(source, where)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), source)
    except OmegaConfBaseException as err:
        raise _one_line(err, where) from None
    components.apply(given, where)
    rest, given = _split_overrides(overrides)
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(rest))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _one_line(err, "the overrides") from None
    components.apply(given, "the overrides")
    components.set(cfg.model)
    return validate(cfg)


def to_yaml(cfg: Config) -> str:
    """The config as YAML, the model's components in the nested form (a run's config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


def from_dict(data: dict) -> Config:
    """A config from a plain dict (as saved in a checkpoint, nested or of the older flat form),
    validated."""
    if not isinstance(data, Mapping):
        raise PyrovaeError(f"the saved config must be a mapping of config sections, got "
                           f"{type(data).__name__}")
    _plain(data, "", "the saved config")  # before OmegaConf could resolve anything
    try:
        source = OmegaConf.create(dict(data))
    except OmegaConfBaseException as err:
        raise _one_line(err, "the saved config") from None
    return _merge(source, "the saved config", ())


def to_dict(cfg: Config) -> dict:
    """The config as plain data, the model's components in the nested form
    (``model.prior: {name: mog, components: 10}``), every option filled in."""
    filled = _filled(cfg.model)
    data = OmegaConf.to_container(OmegaConf.structured(cfg))
    model = {}
    for f in fields(ModelConfig):
        if f.name in KINDS:
            model[f.name] = {"name": getattr(cfg.model, f.name), **filled[f.name]}
        elif not f.name.endswith("_options"):
            model[f.name] = data["model"][f.name]
    data["model"] = model
    return data


def vae_kwargs(cfg: Config, x_shape: Sequence[int]) -> dict:
    """The ``pyrovae.VAE`` keyword arguments of a config, for examples of shape ``x_shape``: the
    components in the nested form, ``prior={"name": "mog", "components": 10}``."""
    m = cfg.model
    return dict(x_shape=tuple(x_shape), z_dim=m.z_dim,
                **{kind: m.component(kind) for kind in KINDS})


def resolve_path(value: str | None) -> Path | None:
    """A user path with ``~`` and environment variables expanded."""
    return None if value is None else Path(os.path.expandvars(os.path.expanduser(value)))
