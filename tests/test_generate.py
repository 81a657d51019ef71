import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae import generate
from pyrovae.checkpoint import atomic_save, write_latest
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
    assert capsys.readouterr().out == f"wrote {run / 'z.png'}\n"
    image = np.asarray(Image.open(run / "z.png").convert("L"), dtype=np.float64)
    assert image.shape == (280, 280)  # one 28 x 28 image (no border), 10 x 10 per pixel
    blocks = image.reshape(28, 10, 28, 10)
    assert (blocks == blocks[:, :1, :, :1]).all()  # nearest neighbour: whole pixels
    vae = generate.load(run)
    expected = vae.decode(generate.parse_z(z, 8)).mean
    assert torch.allclose(expected, torch.sigmoid(vae.decoder(generate.parse_z(z, 8))))
    pixels = expected.reshape(28, 28).detach().numpy() * 255
    assert np.abs(blocks[:, 0, :, 0] - pixels).max() <= 1  # the decoded mean, to 8 bits


def test_samples(run):
    assert generate.main([str(run), "--n", "16"]) == 0
    # 8 x 2 images of 28 pixels with 2-pixel borders, 5 x 5 per pixel: the short side >= 256
    assert Image.open(run / "generated.png").size == (5 * (8 * 30 + 2), 5 * (2 * 30 + 2))


def test_nothing_is_overwritten_without_force(run, capsys):
    assert generate.main([str(run), "--n", "4"]) == 0
    first = (run / "generated.png").read_bytes()
    assert generate.main([str(run), "--n", "4", "--seed", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {run / 'generated_1.png'}"
    assert (run / "generated.png").read_bytes() == first  # the first image is kept
    out = run / "mine.png"
    out.write_bytes(b"mine")
    assert generate.main([str(run), "--n", "4", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert generate.main([str(run), "--n", "4", "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_folder_above_the_runs_means_its_latest_run(run, tmp_path, capsys):
    parent = tmp_path / "runs"
    parent.mkdir()
    for name in ("version_0", "version_1"):
        (parent / name).mkdir()
        (parent / name / "best.pt").write_bytes((run / "best.pt").read_bytes())
    write_latest(parent, parent / "version_0")  # latest names the run, not the highest N
    assert generate.main([str(parent), "--n", "2"]) == 0
    captured = capsys.readouterr()
    assert (parent / "version_0" / "generated.png").is_file()
    assert not (parent / "version_1" / "generated.png").exists()
    assert f"using {parent / 'version_0'}, the latest run in {parent}" in captured.err
    (parent / "latest").unlink()  # without it: the highest version_N
    assert generate.main([str(parent), "--n", "2"]) == 0
    assert (parent / "version_1" / "generated.png").is_file()


@pytest.mark.parametrize("args, words", [
    (["--z", "0.1,0.2"], "has 2 numbers but this model's z_dim is 8"),
    (["--z", "a,b"], "comma-separated numbers"),
    (["--z", "nan,1,1,1,1,1,1,1"], "finite"),
    (["--n", "0"], "--n must be between 1 and 10,000"),
    (["--n", "1000000000"], "--n must be between 1 and 10,000"),
    (["--z", "1,,1,1,1,1,1,1,1"], "empty field"),
    pytest.param(["--n", "4", "--out", "/proc/g.png"], "cannot write /proc/g.png",
                 marks=pytest.mark.skipif(sys.platform != "linux", reason="/proc: Linux")),
    (["--n", "4", "--out", "x.jpg"], ".png"),
    (["--n", "x"], "invalid int value"),
])
def test_errors_are_one_line(run, args, words, capsys):
    assert generate.main([str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_missing_run(tmp_path, capsys):
    assert generate.main([str(tmp_path / "none"), "--n", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
