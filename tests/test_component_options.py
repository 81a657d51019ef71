"""Components own their options: every prior, likelihood and net declares its options
(``options: dict[str, Option]``) and nothing else names them. The contract runs over every
registered component; a prior defined in this file, with a hyperparameter of its own, is built
from a config and from ``VAE`` once it is in the registry, and no other file knows it."""

from __future__ import annotations

import inspect

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import VAE, checkpoint
from pyrovae.config import (
    KINDS,
    ModelConfig,
    from_dict,
    load_config,
    to_dict,
    to_yaml,
    vae_kwargs,
)
from pyrovae.files import atomic_save
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.model import registries
from pyrovae.nets import NETS
from pyrovae.options import TYPES, Option, known_aliases
from pyrovae.priors import PRIORS, Prior
from tests.conftest import one_line_error

TINY = ["model.z_dim=3", "model.hidden=[8]"]


def _classes(kind: str, name: str) -> list[type]:
    """The classes that take the options of a registered component (a net: two of them)."""
    return list(NETS[name]) if kind == "net" else [{"prior": PRIORS,
                                                    "likelihood": LIKELIHOODS}[kind][name]]


COMPONENTS = [(kind, name) for kind, registry in registries().items() for name in registry]


# ---- (a) every declared option is complete and consistent ------------------------------------


@pytest.mark.parametrize("kind, name", COMPONENTS, ids=lambda v: v)
def test_every_option_has_a_type_a_default_and_a_doc(kind, name):
    specs = registries()[kind][name]
    for option, spec in specs.items():
        assert isinstance(spec, Option), (option, spec)
        assert spec.type in TYPES, option
        assert spec.default is not None, option
        assert isinstance(spec.doc, str) and spec.doc.strip() and "\n" not in spec.doc, option
        # the default passes the option's own validation, and keeps its value
        value = spec.check(spec.default, option)
        assert value == (list(spec.default) if spec.type is list else spec.default), option
        # the flat key is a config key of its own, not one of the model's other keys
        assert spec.key(option) not in {"name", *ModelConfig.__dataclass_fields__}, option
    for cls in _classes(kind, name):
        params = inspect.signature(cls.__init__).parameters
        for option, spec in cls.options.items():
            # the class takes each option it declares, with the declared default
            assert option in params, (cls.__name__, option)
            default = params[option].default
            assert default == spec.default, (cls.__name__, option, default, spec.default)


def test_one_flat_key_means_one_option():
    """A flat key names the same option wherever it is declared (or routing would be ambiguous
    between components of one kind)."""
    meaning: dict[str, tuple[str, str]] = {}
    for kind, registry in registries().items():
        for specs in registry.values():
            for option, spec in specs.items():
                assert meaning.setdefault(spec.key(option), (kind, option)) == (kind, option)


@pytest.mark.parametrize("kind, name", COMPONENTS, ids=lambda v: v)
def test_a_bad_value_names_the_key_value_and_what_is_allowed(kind, name):
    for option, spec in registries()[kind][name].items():
        bad = "not-a-choice" if spec.choices else ("x" if spec.type is not str else 5)
        one_line_error(load_config, None, [f"model.{kind}={name}",
                                           f"model.{kind}.{option}={bad}"],
                       match=(f"model.{kind}.{option}", repr(bad)))
        one_line_error(VAE, x_shape=(4,), z_dim=2, **{kind: {"name": name, option: bad}},
                       match=(f"{option}", repr(bad)))


# ---- (b) an option of another component is a one-line error ----------------------------------


@pytest.mark.parametrize("kind, name", COMPONENTS, ids=lambda v: v)
def test_an_option_of_another_component_is_one_line(kind, name):
    regs = registries()
    own = regs[kind][name]
    others = {option: spec for registry in regs.values() for specs in registry.values()
              for option, spec in specs.items() if option not in own}
    assert others
    for option, spec in others.items():
        value = list(spec.default) if spec.type is list else spec.default
        text = str(value).replace(" ", "")
        takers = [f"{k}={n}" for k, r in regs.items() for n, s in r.items()
                  if option in s and (k, n) != (kind, name)]
        assert takers
        # nested under this component, in a config and in VAE
        message = one_line_error(
            load_config, None, [f"model.{kind}={name}", f"model.{kind}.{option}={text}"],
            match=(f"model.{kind}.{option} does not apply to model.{kind}={name}",))
        assert all(f"model.{t}" in message for t in takers), message
        one_line_error(VAE, x_shape=(4,), z_dim=2, **{kind: {"name": name, option: value}},
                       match=(f"{kind}.{option} does not apply to {kind}={name}",))
    # flat: an option that none of the chosen components takes
    chosen = {"prior": "normal", "likelihood": "bernoulli", "net": "mlp", kind: name}
    taken = {spec.key(o) for k, n in chosen.items() for o, spec in regs[k][n].items()}
    for key in sorted(known_aliases(regs) - taken):
        spec = next(s for r in regs.values() for specs in r.values()
                    for o, s in specs.items() if s.key(o) == key)
        value = list(spec.default) if spec.type is list else spec.default
        one_line_error(load_config, None, [f"model.{kind}={name}",
                                           f"model.{key}={str(value).replace(' ', '')}"],
                       match=(f"model.{key} does not apply to", "remove it"))
        one_line_error(VAE, x_shape=(4,), z_dim=2, **{kind: name}, **{key: value},
                       match=(f"{key} does not apply to", f"{kind}={name}"))


def test_the_same_option_twice_in_one_source_is_an_error():
    one_line_error(load_config, None, ["model.prior={name: mog, components: 3}",
                                       "model.components=4"],
                   match=("model.prior.components", "model.components", "keep one"))
    one_line_error(VAE, prior={"name": "mog", "components": 3}, components=4,
                   match=("prior.components", "keep one"))


# ---- (c) a new prior with its own hyperparameter: one file plus its registry line -----------


class StudentT(Prior):
    """p(z) = prod_i StudentT(z_i; df, 0, 1): a heavy-tailed prior with one hyperparameter."""

    options = {"df": Option(float, 3.0, "degrees of freedom of each coordinate", range="> 0")}

    def __init__(self, z_dim: int, df: float = options["df"].default, **context) -> None:
        super().__init__(z_dim, **context)
        self.df = df
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.StudentT(self.df, self.loc, torch.ones_like(self.loc)).to_event(1)


@pytest.fixture
def student_t(monkeypatch):
    """The registry line, and nothing else."""
    monkeypatch.setitem(PRIORS, "student_t", StudentT)
    return "student_t"


def _check_student_t(vae: VAE, df: float) -> None:
    prior = vae.prior()
    assert isinstance(vae.prior_net, StudentT) and vae.prior_net.df == df
    assert isinstance(prior.base_dist, dist.StudentT) and bool((prior.base_dist.df == df).all())
    x = torch.bernoulli(torch.full((2, *vae.x_shape), 0.5))
    assert vae.model(x).shape == (2, vae.z_dim)  # the Pyro program runs with it


def test_a_new_prior_with_its_own_option_is_built_from_a_config(student_t, tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text("model:\n  z_dim: 3\n  hidden: [8]\n  prior: {name: student_t, df: 5}\n")
    cfg = load_config(path)
    assert cfg.model.prior == "student_t" and cfg.model.prior_options == {"df": 5.0}
    _check_student_t(VAE(**vae_kwargs(cfg, (1, 28, 28))), 5.0)
    # the dotted and the flat forms, and its default
    assert load_config(None, [*TINY, "model.prior=student_t", "model.prior.df=5"]).model == (
        load_config(None, [*TINY, "model.prior=student_t", "model.df=5"]).model)
    assert load_config(path, ["model.prior=student_t", "model.df=5"]) == cfg
    assert load_config(None, ["model.prior=student_t"]).model.prior_options == {"df": 3.0}
    # saved and read back in the nested form
    assert "name: student_t" in to_yaml(cfg) and "df: 5.0" in to_yaml(cfg)
    (tmp_path / "saved.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "saved.yaml") == cfg == from_dict(to_dict(cfg))
    # its option is checked as declared, and is an error with another prior
    one_line_error(load_config, None, ["model.prior=student_t", "model.prior.df=0"],
                   match=("model.prior.df must be > 0", "got 0"))
    one_line_error(load_config, None, ["model.prior=mog", "model.df=2"],
                   match=("model.df does not apply to model.prior=mog",
                          "it is an option of model.prior=student_t"))


def test_a_new_prior_with_its_own_option_is_built_by_vae(student_t):
    small = {"x_shape": (1, 28, 28), "z_dim": 3, "hidden": [8]}
    _check_student_t(VAE(**small, prior="student_t", df=4.0), 4.0)
    _check_student_t(VAE(**small, prior={"name": "student_t", "df": 4.0}), 4.0)
    _check_student_t(VAE(**small, prior=StudentT, df=4.0), 4.0)
    _check_student_t(VAE(**small, prior="student_t"), 3.0)
    assert VAE(**small, prior="student_t", df=4).spec["prior"] == {"name": "student_t",
                                                                   "df": 4.0}
    one_line_error(VAE, **small, prior="student_t", df=-1.0, match=("df must be > 0",))
    one_line_error(VAE, **small, prior="mog", df=2.0,
                   match=("df does not apply to prior=mog", "option of prior=student_t"))


def test_an_unregistered_prior_class_and_a_built_prior():
    """Without the registry: a class is built with its declared options, an instance as it is."""
    small = {"x_shape": (1, 28, 28), "z_dim": 3, "hidden": [8]}
    _check_student_t(VAE(**small, prior=StudentT, df=6.0), 6.0)
    _check_student_t(VAE(**small, prior=StudentT(3, df=2.0)), 2.0)
    one_line_error(VAE, **small, prior=StudentT(4), match=("z_dim=4", "z_dim=3"))
    one_line_error(VAE, **small, prior=StudentT(3), components=3,
                   match=("components does not apply", "prior=StudentT"))


# ---- (d) nested and flat forms give the same model; old saved configs load -------------------

FLAT = ["model.z_dim=3", "model.prior=mog", "model.components=3", "model.net=conv",
        "model.channels=[4]", "model.hidden=[8]", "model.activation=tanh",
        "model.scale_fn=softplus", "model.likelihood=gaussian", "model.likelihood_scale=0.3",
        "model.learn_scale=global", "model.min_scale=0.01"]
NESTED = ["model.z_dim=3", "model.prior={name: mog, components: 3}", "model.net.name=conv",
          "model.net.channels=[4]", "model.net.hidden=[8]", "model.net.activation=tanh",
          "model.net.scale_fn=softplus",
          "model.likelihood={name: gaussian, scale: 0.3, learn_scale: global}",
          "model.likelihood.min_scale=0.01"]


def _weights(vae: VAE) -> dict:
    return {k: v for k, v in vae.state_dict().items()}


def _same_model(a: VAE, b: VAE) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.spec == b.spec


def test_nested_and_flat_configs_give_the_same_model():
    flat, nested = load_config(None, FLAT), load_config(None, NESTED)
    assert flat == nested
    assert nested.model.component("net") == {"name": "conv", "channels": [4], "hidden": [8],
                                             "activation": "tanh", "scale_fn": "softplus"}
    assert (flat.model.hidden, flat.model.components, flat.model.likelihood_scale) == (
        [8], 3, 0.3)  # the flat names still read the chosen component's options
    built = []
    for cfg in (flat, nested):
        pyro.set_rng_seed(0)
        built.append(VAE(**vae_kwargs(cfg, (1, 12, 12))))
    _same_model(*built)
    assert built[0].spec == {kind: nested.model.component(kind) for kind in KINDS}


def test_nested_and_flat_vae_arguments_give_the_same_model():
    flat = dict(prior="mog", components=3, net="conv", channels=[4], hidden=[8],
                likelihood="laplace", likelihood_scale=0.3, learn_scale="pixel")
    nested = dict(prior={"name": "mog", "components": 3},
                  net={"name": "conv", "channels": [4], "hidden": [8]},
                  likelihood={"name": "laplace", "scale": 0.3, "learn_scale": "pixel"})
    built = []
    for kwargs in (flat, nested, {**nested, "net": "conv", "channels": [4], "hidden": [8]}):
        pyro.set_rng_seed(0)
        built.append(VAE(x_shape=(1, 12, 12), z_dim=3, **kwargs))
    _same_model(built[0], built[1])
    _same_model(built[0], built[2])
    assert built[0].likelihood.scale.shape == (1, 12, 12)


def test_flat_keys_follow_the_component_chosen_last_and_a_new_name_resets_nested_options():
    # a flat key applies to the net chosen in the end, as before
    assert load_config(None, ["model.net=conv"]).model.net_options["hidden"] == [512, 256]
    vamp = load_config("configs/mnist_vamp.yaml", ["model.prior=mog"])  # flat components: 500
    assert vamp.model.prior_options == {"components": 500}
    # options given nested belong to their component
    cfg = load_config(None, ["model.prior={name: vamp, components: 7}"])
    assert apply(cfg, ["model.prior=mog"]).model.prior_options == {"components": 10}
    assert apply(cfg, ["model.prior=vamp"]).model.prior_options == {"components": 7}
    assert apply(cfg, ["model.prior=normal"]).model.prior_options == {}
    assert apply(cfg, ["model.components=8"]).model.prior_options == {"components": 8}
    # the same in Python
    model = load_config(None, ["model.prior={name: vamp, components: 7}"]).model
    model.components = 9
    assert model.prior_options == {"components": 9}
    model.prior = "mog"
    assert model.prior_options == {} and model.components == 10
    model.prior = {"name": "vamp", "components": 5}
    assert model.component("prior") == {"name": "vamp", "components": 5}
    with pytest.raises(AttributeError):
        model.no_such_option  # noqa: B018
    one_line_error(setattr, model, "channels", [4], match=("model.channels does not apply",))


def apply(cfg, overrides):
    from pyrovae.config import apply_overrides

    return apply_overrides(cfg, overrides)


def _old_flat(saved: dict, **model) -> dict:
    """A saved config as pyrovae wrote it before components owned their options: one key per
    option under ``model``, None for those not set."""
    flat = {"z_dim": 3, "prior": "normal", "likelihood": "bernoulli", "net": "mlp",
            "hidden": [400], "channels": None, "activation": "relu", "scale_fn": "exp",
            "components": None, "likelihood_scale": None, "learn_scale": None,
            "min_scale": None, "output_bias": "default"}
    return {**saved, "model": {**flat, **model}}


def test_an_old_flat_saved_config_loads(tmp_path):
    new = load_config(None, FLAT)
    old = _old_flat(to_dict(new), prior="mog", components=3, net="conv", channels=[4],
                    hidden=[8], activation="tanh", scale_fn="softplus", likelihood="gaussian",
                    likelihood_scale=0.3, learn_scale="global", min_scale=0.01)
    assert from_dict(old) == new
    # a config with nothing set but the names: every option at its component's default
    plain = from_dict(_old_flat(to_dict(new), prior="vamp", likelihood="laplace"))
    assert plain.model.component("prior") == {"name": "vamp", "components": 500}
    assert plain.model.likelihood_options["learn_scale"] == "none"
    assert plain.model.net_options["hidden"] == [400]
    # and a checkpoint that holds one loads into the same model
    pyro.set_rng_seed(1)
    vae = VAE(**vae_kwargs(new, (1, 12, 12)))
    atomic_save({"model": vae.state_dict(), "config": old, "x_shape": (1, 12, 12)},
                tmp_path / "best.pt")
    loaded = checkpoint.load(tmp_path / "best.pt", log=None)
    _same_model(loaded, vae)
    assert loaded.config == new
    # what is saved now is the nested form
    saved = to_dict(loaded.config)["model"]
    assert saved["prior"] == {"name": "mog", "components": 3} and "components" not in saved
