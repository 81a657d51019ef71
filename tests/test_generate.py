import pytest
import torch
from PIL import Image

from pyrovae import generate
from pyrovae.checkpoint import atomic_save
from pyrovae.config import load_config, to_dict, vae_kwargs
from pyrovae.model import VAE


@pytest.fixture
def run(tmp_path):
    cfg = load_config(None, ["model.z_dim=8", "model.hidden=[32]"])
    vae = VAE(**vae_kwargs(cfg, (1, 28, 28)))
    atomic_save({"model": vae.state_dict(), "config": to_dict(cfg), "x_shape": (1, 28, 28)},
                tmp_path / "best.pt")
    return tmp_path


def test_decode_a_given_z(run, capsys):
    z = "0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505"
    assert generate.main([str(run), "--z", z, "--out", str(run / "z.png")]) == 0
    assert Image.open(run / "z.png").size == (28, 28)  # one image: no grid border
    vae = generate.load(run)
    expected = vae.decode(generate.parse_z(z, 8)).mean
    assert torch.allclose(expected, torch.sigmoid(vae.decoder(generate.parse_z(z, 8))))


def test_samples(run):
    assert generate.main([str(run), "--n", "16"]) == 0
    assert Image.open(run / "generated.png").size == (8 * 30 + 2, 2 * 30 + 2)


@pytest.mark.parametrize("args, words", [
    (["--z", "0.1,0.2"], "has 2 numbers but this model's z_dim is 8"),
    (["--z", "a,b"], "comma-separated numbers"),
    (["--z", "nan,1,1,1,1,1,1,1"], "finite"),
    (["--n", "0"], "--n must be >= 1"),
    (["--n", "4", "--out", "x.jpg"], ".png"),
])
def test_errors_are_one_line(run, args, words, capsys):
    assert generate.main([str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_missing_run(tmp_path, capsys):
    assert generate.main([str(tmp_path / "none"), "--n", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
