from pathlib import Path

import pytest

from pyrovae.config import CONFIG_DIR, from_dict, load_config, to_dict, to_yaml
from pyrovae.errors import PyrovaeError
from tests.conftest import other_value

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
REQUIRED = ["mnist", "mnist_fc400_z20", "mnist_z2_manifold", "mnist_conv", "mnist_z8",
            "mnist_gaussian", "fashion_mnist", "cifar10_conv", "mnist_vamp"]


def test_the_classic_configs_exist():
    assert {p.stem for p in CONFIGS} >= set(REQUIRED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert from_dict(to_dict(cfg)) == cfg
    assert "run_dir" in to_yaml(cfg)


def test_default_is_mnist_yaml_and_overrides_apply():
    cfg = load_config(None, ["train.epochs=3", "model.hidden=[64,32]", "model.prior=vamp",
                             "data.limit=100", "train.device=cuda:1"])
    assert cfg.data.name == "mnist" and cfg.train.epochs == 3
    assert cfg.model.hidden == [64, 32] and cfg.model.prior == "vamp"
    assert cfg.data.limit == 100 and cfg.train.device == "cuda:1"


def test_classic_architectures():
    fc = load_config(CONFIG_DIR / "mnist_fc400_z20.yaml")
    assert (fc.model.hidden, fc.model.z_dim, fc.model.activation, fc.train.batch_size) == (
        [400], 20, "relu", 128)
    z2 = load_config(CONFIG_DIR / "mnist_z2_manifold.yaml")
    assert (z2.model.z_dim, z2.model.hidden) == (2, [128])
    conv = load_config(CONFIG_DIR / "mnist_conv.yaml")
    assert (conv.model.net, conv.model.scale_fn, conv.model.likelihood) == (
        "conv", "softplus", "bernoulli")
    gauss = load_config(CONFIG_DIR / "mnist_gaussian.yaml")
    assert gauss.model.likelihood == "gaussian" and gauss.model.learn_scale == "none"
    assert load_config(CONFIG_DIR / "mnist_vamp.yaml").model.prior == "vamp"
    assert load_config(CONFIG_DIR / "cifar10_conv.yaml").data.name == "cifar10"


@pytest.mark.parametrize("override, words", [
    ("train.epoch=3", ["unknown config key 'train.epoch'", "epochs"]),
    ("model.prior=flow", ["model.prior", "normal, diag_normal, mog, vamp"]),
    ("train.loss=elbo", ["train.loss", "trace, meanfield, analytic"]),
    ("train.precision=float16", ["train.precision", "float32, bfloat16"]),
    ("data.binarize=yes", ["data.binarize", "YAML reads yes", "dynamic, static, none"]),
    ("data.binarize=dinamic", ["'dinamic' for data.binarize;", "dynamic, static, none"]),
    ("train.device=tpu", ["train.device", "cuda:N"]),
    ("train.epochs=many", ["train.epochs", "many"]),
    ("train.batch_size=0", ["train.batch_size must be > 0"]),
    ("data.name=svhn", ["data.name", "mnist"]),
    ("verbose=1", ["unknown config key 'verbose'", "run_dir"]),
    ("epochs", ["bad override 'epochs'", "key=value"]),
    ("model.hidden=[1,2", ["bad override 'model.hidden=[1,2'"]),
    ("model={z_dim: 7, prior: mog}", ["bad override", "one by one"]),
    ("data.root=${oc.env:HOME}/x", ["data.root", "interpolation", "plain values"]),
    ("run_dir=\\${HOME}", ["run_dir", "interpolation"]),
    ("train.lr_decay=0.5", []),  # fine for the exponential schedule (checked below)
])
def test_bad_keys_and_values_are_one_line(override, words):
    if not words:
        load_config(None, [override])
        with pytest.raises(PyrovaeError, match="applies to train.schedule=exponential"):
            load_config(None, [override, "train.schedule=cosine"])
        return
    with pytest.raises(PyrovaeError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("text, words", [
    (None, "not found"),  # no file
    ("model: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("model:\n  z_dims: 3\n", "unknown config key 'model.z_dims'.* did you mean 'model.z_dim'"),
    ("train:\n  epochs: 3\n  epochs: 4\n", "not valid YAML at line 3, column 3: .*duplicate key"),
    ("", "is empty"),
    ("run_name: 1.10\n", "run_name in .* was read as float 1.1, not as text: write it in quotes"),
    ("train:\n  epochs: ${oc.env:HOME}\n", "train.epochs in .* holds an interpolation"),
])
def test_bad_files(tmp_path: Path, text, words):
    bad = tmp_path / "bad.yaml"
    if text is not None:
        bad.write_text(text)
    with pytest.raises(PyrovaeError, match=words):
        load_config(bad)


@pytest.mark.parametrize("path, words", [(".", "is a folder"), ("", "empty path")])
def test_a_config_path_that_names_no_file(path, words):
    with pytest.raises(PyrovaeError, match=words):
        load_config(path)


@pytest.mark.parametrize("overrides, option", [
    (["model.likelihood=bernoulli", "model.learn_scale=pixel"], "model.learn_scale"),
    (["model.likelihood=continuous_bernoulli", "model.likelihood_scale=0.1"],
     "model.likelihood_scale"),
    (["model.prior=normal", "model.components=5"], "model.components"),
    (["model.net=mlp", "model.channels=[8]"], "model.channels"),
])
def test_an_option_that_does_not_apply_is_one_line(overrides, option):
    with pytest.raises(PyrovaeError, match=rf"^{option} does not apply to .*: remove it$"):
        load_config(None, overrides)


def test_every_declared_option_is_accepted_by_its_component():
    """Each prior and likelihood takes the options it declares, from the config and from VAE."""
    from pyrovae import VAE
    from pyrovae.likelihoods import LIKELIHOODS
    from pyrovae.priors import PRIORS

    for kind, registry in (("prior", PRIORS), ("likelihood", LIKELIHOODS)):
        for name, cls in registry.items():
            options = {k: other_value(option) for k, option in cls.options.items()}
            flat = {cls.options[k].key(k): v for k, v in options.items()}
            nested = load_config(None, [f"model.{kind}={name}",
                                        *(f"model.{kind}.{k}={v}" for k, v in options.items())])
            assert nested.model.component(kind) == {"name": name, **options}
            assert load_config(None, [f"model.{kind}={name}", *(
                f"model.{k}={v}" for k, v in flat.items())]).model == nested.model
            VAE(x_shape=(4,), z_dim=2, hidden=[8], **{kind: name}, **flat)
    with pytest.raises(PyrovaeError, match="learn_scale does not apply"):
        VAE(likelihood="bernoulli", learn_scale="pixel")


@pytest.mark.parametrize("typed", ["1.10", "007", "on", "1e3", "it's"])
def test_text_keys_keep_the_text_typed_and_round_trip(typed):
    """run_name=1.10 is the folder 1.10 (YAML alone would read the number 1.1, and on as True),
    and the saved config gives it back."""
    cfg = load_config(None, [f"run_name={typed}", f"data.path={typed}"])
    assert cfg.run_name == typed and cfg.data.path == typed
    assert from_dict(to_dict(cfg)).run_name == typed
    assert load_config(None, ["data.mirror=null"]).data.mirror is None


def test_a_saved_config_is_never_resolved():
    """A checkpoint's config with an interpolation is refused before OmegaConf sees it: a file
    from someone else cannot read the environment into a run."""
    data = to_dict(load_config(None))
    data["run_dir"] = "runs/${oc.env:HOME}"
    with pytest.raises(PyrovaeError, match="run_dir in the saved config holds an interpolation"):
        from_dict(data)
