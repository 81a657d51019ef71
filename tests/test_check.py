"""The agreement checks on real MNIST test images, fresh and briefly trained; the proof that each
can fail for the reason it names (test doubles: a KL with a flipped sign, particle streams that
are not independent); and the calibration of the tests they use (fixed seeds, standard errors)."""

import json
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae import VAE, check, likelihoods
from pyrovae.errors import PyrovaeError
from pyrovae.objectives import closed_form_kl, kl_diag_normals

PARTICLES = (10, 100, 1000, 4000)
REPLICATES = 4  # check b's standard-error test, cheaply (its own tests below use 10)


def flipped_kl(vae, loc, scale):
    """A test double: the closed-form KL with its sign flipped."""
    return -closed_form_kl(vae, loc, scale)


def repeated_particles(vae, x, n):
    """A test double: a Trace_ELBO stream of only 10 distinct particles, repeated to n. Each
    particle is right; their mean is unbiased but its real standard error is s / sqrt(10)."""
    return check.trace_elbo_particles(vae, x, min(n, 10)).repeat(math.ceil(n / 10))[:n]


def shared_noise_particles(vae, x, n, shared=0.9):
    """A test double: an ELBO stream whose particles share noise. z = mu + sigma (sqrt(rho) e0 +
    sqrt(1 - rho) e_i) with e0 common to the n particles: each particle has the right
    distribution (z ~ q(z|x)) but they are correlated, so the standard error s / sqrt(n) is far
    too small."""
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        q, p = vae.encode(x), vae.prior()
        eps = (math.sqrt(shared) * torch.randn(loc.shape)
               + math.sqrt(1 - shared) * torch.randn((n,) + loc.shape))
        z = loc + scale * eps
        return (vae.decode(z).log_prob(x) + p.log_prob(z) - q.log_prob(z)).sum(-1)


def strict_json(text):
    """json.loads that rejects NaN, Infinity and -Infinity (not JSON)."""
    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


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
    rows = check.run_checks(vae, mnist_binary.test[:8], PARTICLES, gradient_repeats=50,
                            replicates=REPLICATES)
    assert not _failed(rows), check.format_table(rows)
    assert {r.check[0] for r in rows} == set("abcde")


def test_all_checks_agree_on_a_trained_model(trained, mnist_binary):
    rows = check.run_checks(trained, mnist_binary.test[:8], PARTICLES, gradient_repeats=50,
                            replicates=REPLICATES)
    assert not _failed(rows), check.format_table(rows)
    kl = next(r for r in rows if r.check.startswith("c."))
    assert kl.reference > 1.0  # training moved q away from the prior: the KL is not trivial


def test_a_flipped_kl_makes_the_check_fail(trained, mnist_binary):
    rows = check.run_checks(trained, mnist_binary.test[:8], PARTICLES, gradient_repeats=50,
                            kl_fn=flipped_kl, replicates=REPLICATES)
    failed = _failed(rows)
    for name in ("a.", "b. Trace_ELBO = closed-form ELBO (N=1000)", "c.", "d."):
        assert any(f.startswith(name) for f in failed), check.format_table(rows)
    assert not any(f.startswith("e.") for f in failed)  # e does not use the closed form
    # the standard-error test looks at Trace_ELBO alone, which is right
    assert not any(f.startswith("b. Trace_ELBO standard error") for f in failed)


@pytest.mark.parametrize("stream", [repeated_particles, shared_noise_particles])
def test_dependent_particles_fail_the_standard_error_check(stream, mnist_binary):
    """Streams whose reported standard error s / sqrt(N) is not their real one (the slope of
    log SE against log N, the check's old test, passes both) fail check b's F-test, while the
    real stream passes it with the same settings."""
    vae = VAE(z_dim=4, hidden=[32]).eval()
    x = mnist_binary.test[:4]

    def calibration(trace_fn):
        pyro.set_rng_seed(1)
        rows = check.elbo_agreement(vae, x, (10, 100, 1000), replicates=10, level=0.01 / 4,
                                    trace_fn=trace_fn)
        assert rows[-1].check.startswith("b. Trace_ELBO standard error")
        return rows[-1]

    real, broken = calibration(None), calibration(stream)
    assert real.passed, real
    assert not broken.passed and broken.p < 1e-6, broken
    ratio = dict(zip(broken.extra["num_particles"], broken.extra["ratio"]))
    assert ratio[1000] > 5  # replicates spread > 5 times the standard error they report
    assert max(real.extra["ratio"]) < 2


def test_levels_split_the_family_wise_error_rate(mnist_binary):
    vae = VAE(z_dim=4, hidden=[32])
    rows = check.run_checks(vae, mnist_binary.test[:2], (10, 100), gradient_repeats=5,
                            alpha=0.02, replicates=3)
    tested = [r for r in rows if r.level is not None]
    assert [r.check[0] for r in tested] == list("bbbcde")  # a is arithmetic, not a test
    assert check.count_tests(True, 2, 3) == len(tested)
    assert sum(r.level for r in tested) == pytest.approx(0.02)
    for r in tested:
        assert r.passed == (r.p >= r.level) and 0 <= r.p <= 1
        if r.z is not None:  # the threshold is the |z| a test at the row's level tolerates
            assert (abs(r.z) <= r.threshold) == r.passed
    with pytest.raises(PyrovaeError, match="alpha"):
        check.run_checks(vae, mnist_binary.test[:2], (10, 100), alpha=1.5)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_priors_without_closed_form_say_so_and_pass_check_e(prior, mnist_binary):
    vae = VAE(z_dim=4, hidden=[64], prior=prior, components=5)
    rows = check.run_checks(vae, mnist_binary.test[:4], (10, 100, 1000), gradient_repeats=10)
    assert all(r.passed for r in rows)
    assert sum("no closed-form KL" in r.detail for r in rows) == 5
    assert rows[-1].check.startswith("e.") and rows[-1].z is not None


def test_welch_test_has_its_level_with_ten_particles():
    """Two samples of 10: Student t with Welch's degrees of freedom keeps the level (the old
    normal 3-standard-error cutoff has ~0.7% false alarms instead of 0.27%)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 40000, 10, generator=gen, dtype=torch.float64)
    level = 0.0027
    summaries = [(v.mean(-1).numpy(), v.var(-1).numpy(), 10) for v in (a, b)]
    t, _, dof, p, threshold = check.welch_test(*summaries, level)
    se = math.sqrt(level * (1 - level) / len(p))
    assert abs((p < level).mean() - level) < 4 * se
    assert ((abs(t) > threshold) == (p < level)).all() and (dof >= 9).all() and (dof <= 18).all()
    assert (abs(t) > 3).mean() > level + 6 * se  # the old cutoff
    # against a known value: n - 1 degrees of freedom
    t, _, dof, p, _ = check.welch_test((a.mean(-1).numpy(), a.var(-1).numpy(), 10), None, 0.01)
    assert (dof == 9).all() and abs((p < 0.01).mean() - 0.01) < 4 * math.sqrt(0.01 * 0.99 / 40000)


@pytest.mark.parametrize("dist", ["normal", "laplace", "exponential"])
def test_standard_error_ftest_keeps_its_level(dist):
    """Independent particles (normal, heavy-tailed, skewed): the F-test of the reported
    standard error against the spread of 10 replicates rejects at most at its level (exactly,
    within sampling error, for normal particles)."""
    gen = torch.Generator().manual_seed(1)
    shape = (4000, 10, 10)  # 4000 independent tests of 10 replicates of N = 10 particles
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    x = {"normal": torch.randn(shape, generator=gen, dtype=torch.float64),
         "laplace": torch.distributions.Laplace(0.0, 1.0).icdf(u),
         "exponential": -torch.log1p(-u)}[dist]
    p = check.stderr_ftest(x)[3]
    for level in (0.05, 0.01):
        rate, se = (p < level).mean(), math.sqrt(level * (1 - level) / len(p))
        assert rate < level + 4 * se
        if dist == "normal":
            assert rate > level - 4 * se


def test_standard_error_ftest_fails_dependent_streams():
    gen = torch.Generator().manual_seed(2)
    distinct = torch.randn(50, 10, 10, generator=gen)
    repeated = distinct.repeat(1, 1, 100)  # N = 1000 particles, 10 distinct
    shared = torch.randn(50, 10, 1, generator=gen) + 0.3 * torch.randn(50, 10, 1000,
                                                                       generator=gen)
    for stream in (repeated, shared):
        f, _, _, p = check.stderr_ftest(stream)
        assert (f > 10).all() and (p < 1e-6).all()  # F ~ 100 F(9, .): spread 10 x SE


def test_family_threshold():
    assert check.family_threshold(1) == 3.0
    assert 3.5 < check.family_threshold(8) < 3.7
    assert check.family_threshold(100) > check.family_threshold(8)


def test_cli_json_and_exit_status(mirror, data_root, capsys):
    args = ["--priors", "normal,mog", "--likelihoods", "bernoulli", "--particles", "10,100",
            "--gradient-repeats", "10", "--examples", "4", "--json", "model.z_dim=4",
            "model.hidden=[32]", f"data.root={data_root}"]
    assert check.main(args) == 0
    out = strict_json(capsys.readouterr().out)  # skipped rows: null, not NaN
    assert out["agree"] is True
    assert {c["model"] for c in out["checks"]} == {"StandardNormal x Bernoulli",
                                                   "MixtureOfGaussians x Bernoulli"}
    skipped = [c for c in out["checks"] if "skipped" in c["detail"]]
    assert len(skipped) == 4 and all(c["estimate"] is None for c in skipped)
    # the run's family-wise error rate: 1% over all its statistical tests (6 + 1 here)
    tested = [c for c in out["checks"] if c["level"] is not None]
    assert out["tests"] == len(tested) == 7
    assert sum(c["level"] for c in tested) == pytest.approx(0.01) == out["alpha"]
    assert all(c["p"] >= c["level"] for c in tested)
    rc = check.main(args + ["--alpha", "0.05"])  # 5% of such runs of a correct code fail
    out = strict_json(capsys.readouterr().out)
    assert out["alpha"] == pytest.approx(0.05) and rc == (0 if out["agree"] else 1)
    with pytest.raises(ValueError, match="not strict JSON: NaN"):
        strict_json('{"x": NaN}')


def prior_signs_flipped_kl(vae, loc, scale):
    """A test double: the KL to N(-m, diag(1 / s^2)), the diag_normal prior's mean and log
    variance with their signs flipped; right where the prior is N(0, I)."""
    p = vae.prior_net
    return kl_diag_normals(loc, 2 * scale.log(), -p.loc, -2 * p.scale.log())


@pytest.mark.parametrize("moved", [True, False])
def test_the_check_of_a_fresh_model_sees_the_priors_own_terms(moved, mirror, data_root,
                                                               monkeypatch, capsys):
    """`python -m pyrovae.check` moves a fresh prior off its initial N(0, I) (move_prior), so
    that a KL wrong in the prior's parameters fails the run; without the move (the test double)
    the same wrong KL passes unseen."""
    monkeypatch.setattr(check.objectives, "closed_form_kl", prior_signs_flipped_kl)
    if not moved:
        monkeypatch.setattr(check, "move_prior", lambda vae, seed: vae)
    args = ["--priors", "diag_normal", "--likelihoods", "bernoulli", "--particles", "10,100",
            "--gradient-repeats", "10", "--examples", "4", "--json", "model.z_dim=4",
            "model.hidden=[32]", f"data.root={data_root}"]
    assert check.main(args) == (1 if moved else 0)
    out = strict_json(capsys.readouterr().out)
    assert out["agree"] is not moved


class OpenUnitInterval(likelihoods.ContinuousBernoulli):
    """Test double: a likelihood whose check refuses exact 0s and 1s (a Beta's would), so that
    MNIST suits it in no form."""

    def check(self, x):
        if not ((x > 0) & (x < 1)).all():
            raise PyrovaeError("this likelihood needs data in (0, 1), without exact 0s and 1s")


def test_the_data_follow_the_likelihoods_check_and_a_pair_without_data_is_skipped(
        mirror, data_root, monkeypatch, capsys):
    """The data of a pair are chosen by its likelihood's own check, not by its name: grey for the
    continuous Bernoulli, binarized for the Bernoulli; a likelihood that takes neither gets a
    skipped row, and the other pairs are checked."""
    monkeypatch.setitem(likelihoods.LIKELIHOODS, "open_unit", OpenUnitInterval)
    args = ["--priors", "normal", "--likelihoods", "bernoulli,continuous_bernoulli,open_unit",
            "--particles", "10,100", "--gradient-repeats", "10", "--examples", "4", "--json",
            "model.z_dim=4", "model.hidden=[32]", f"data.root={data_root}"]
    assert check.main(args) == 0
    out = strict_json(capsys.readouterr().out)
    (skipped,) = [c for c in out["checks"] if c["check"] == "data"]
    assert skipped["model"] == "StandardNormal x OpenUnitInterval"
    assert "(0, 1)" in skipped["detail"] and skipped["detail"].startswith("skipped")
    assert {c["model"] for c in out["checks"]} == {
        "StandardNormal x Bernoulli", "StandardNormal x ContinuousBernoulli",
        "StandardNormal x OpenUnitInterval"}
    tested = [c for c in out["checks"] if c["level"] is not None]
    assert sum(c["level"] for c in tested) == pytest.approx(0.01)  # the skipped pair has none


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
    capsys.readouterr()
    for bad in (["--alpha", "0"], ["--alpha", "1.5"], ["--replicates", "1"]):
        assert check.main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --") and err.count("\n") == 1


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
    rows = check.run_checks(vae, mnist_binary.test[:8].cuda(), PARTICLES, gradient_repeats=50,
                            replicates=REPLICATES)
    assert not _failed(rows), check.format_table(rows)
