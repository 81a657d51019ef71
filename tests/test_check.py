"""The agreement checks on real MNIST test images, fresh and briefly trained, and the proof that
they can fail (a KL with a flipped sign)."""

import json

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae import VAE, check
from pyrovae.objectives import closed_form_kl

PARTICLES = (10, 100, 1000, 4000)


def flipped_kl(vae, loc, scale):
    """A test double: the closed-form KL with its sign flipped."""
    return -closed_form_kl(vae, loc, scale)


@pytest.fixture(scope="module")
def trained(mnist_binary):
    pyro.set_rng_seed(0)
    vae = VAE(z_dim=8, hidden=[256])
    return check.train_briefly(vae, mnist_binary, steps=300)


def _failed(rows):
    return [r.check for r in rows if not r.passed]


def test_trace_particles_are_exactly_trace_elbo(mnist_binary):
    vae = VAE(z_dim=4, hidden=[32]).eval()
    x = mnist_binary.test[:4]
    pyro.set_rng_seed(5)
    per_particle = check.trace_elbo_particles(vae, x, 50)
    pyro.set_rng_seed(5)
    loss = Trace_ELBO(num_particles=50, vectorize_particles=True,
                      max_plate_nesting=1).loss(vae.model, vae.guide, x)
    assert per_particle.shape == (50,)
    assert abs(-per_particle.mean().item() - loss) <= 1e-6 * abs(loss)


def test_all_checks_agree_on_a_fresh_model(mnist_binary):
    vae = VAE(z_dim=8, hidden=[256])
    rows = check.run_checks(vae, mnist_binary.test[:8], PARTICLES, gradient_repeats=50)
    assert not _failed(rows), check.format_table(rows)
    assert {r.check[0] for r in rows} == set("abcde")


def test_all_checks_agree_on_a_trained_model(trained, mnist_binary):
    rows = check.run_checks(trained, mnist_binary.test[:8], PARTICLES, gradient_repeats=50)
    assert not _failed(rows), check.format_table(rows)
    kl = next(r for r in rows if r.check.startswith("c."))
    assert kl.reference > 1.0  # training moved q away from the prior: the KL is not trivial


def test_a_flipped_kl_makes_the_check_fail(trained, mnist_binary):
    rows = check.run_checks(trained, mnist_binary.test[:8], PARTICLES, gradient_repeats=50,
                            kl_fn=flipped_kl)
    failed = _failed(rows)
    for name in ("a.", "b. Trace_ELBO = closed-form ELBO (N=1000)", "c.", "d."):
        assert any(f.startswith(name) for f in failed), check.format_table(rows)
    assert not any(f.startswith("e.") for f in failed)  # e does not use the closed form


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_priors_without_closed_form_say_so_and_pass_check_e(prior, mnist_binary):
    vae = VAE(z_dim=4, hidden=[64], prior=prior, components=5)
    rows = check.run_checks(vae, mnist_binary.test[:4], (10, 100, 1000), gradient_repeats=10)
    assert all(r.passed for r in rows)
    assert sum("no closed-form KL" in r.detail for r in rows) == 5
    assert rows[-1].check.startswith("e.") and rows[-1].z is not None


def test_family_threshold():
    assert check.family_threshold(1) == 3.0
    assert 3.5 < check.family_threshold(8) < 3.7
    assert check.family_threshold(100) > check.family_threshold(8)


def test_cli_json_and_exit_status(mirror, data_root, capsys):
    args = ["--priors", "normal,mog", "--likelihoods", "bernoulli", "--particles", "10,100",
            "--gradient-repeats", "10", "--examples", "4", "--json", "model.z_dim=4",
            "model.hidden=[32]", f"data.root={data_root}"]
    assert check.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["agree"] is True
    assert {c["model"] for c in out["checks"]} == {"StandardNormal x Bernoulli",
                                                   "MixtureOfGaussians x Bernoulli"}


def test_cli_table_and_bad_arguments(mirror, data_root, capsys):
    assert check.main(["--priors", "normal", "--likelihoods", "gaussian", "--particles", "10,100",
                       "--gradient-repeats", "5", "--examples", "2", "model.z_dim=2",
                       "model.hidden=[16]", f"data.root={data_root}"]) == 0
    out = capsys.readouterr().out
    assert "StandardNormal x Gaussian" in out and "agree" in out and "DISAGREE" not in out
    assert check.main(["--priors", "cauchy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown prior 'cauchy'") and err.count("\n") == 1
    assert check.main(["--particles", "1,10"]) == 2
    assert check.main(["--particles", "ten,100"]) == 2
    assert "comma-separated whole numbers" in capsys.readouterr().err
    assert check.main(["--checkpoint", "/nonexistent/run"]) == 2


def test_cli_checks_a_trained_checkpoint(trained, tmp_path, capsys):
    from pyrovae.checkpoint import atomic_save
    from pyrovae.config import load_config, to_dict

    cfg = load_config(None, ["model.z_dim=8", "model.hidden=[256]", "data.limit=5000"])
    atomic_save({"model": trained.state_dict(), "config": to_dict(cfg),
                 "x_shape": (1, 28, 28)}, tmp_path / "best.pt")
    assert check.main(["--checkpoint", str(tmp_path), "--particles", "10,100,1000",
                       "--gradient-repeats", "20"]) == 0
    assert "StandardNormal x Bernoulli" in capsys.readouterr().out
    assert torch.is_tensor(trained.encoder.net[0].weight)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_all_checks_agree_on_cuda(trained, mnist_binary):
    vae = VAE(z_dim=8, hidden=[256]).cuda()
    vae.load_state_dict(trained.state_dict())
    rows = check.run_checks(vae, mnist_binary.test[:8].cuda(), PARTICLES, gradient_repeats=50)
    assert not _failed(rows), check.format_table(rows)
