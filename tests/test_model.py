import itertools

import pyro
import pytest
import torch
from pyro import poutine

from pyrovae import VAE
from pyrovae.errors import PyrovaeError
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.nets import NETS
from pyrovae.priors import PRIORS
from tests.conftest import prior_options

COMBOS = list(itertools.product(PRIORS, LIKELIHOODS, NETS))


@torch.no_grad()
def _data(vae, n=6):
    """``n`` examples in the VAE's data space, drawn from its own likelihood (no name rules)."""
    return vae.decode(torch.randn(n, vae.z_dim)).sample()


def _traces(vae, x, num_data=None):
    guide_tr = poutine.trace(vae.guide).get_trace(x, num_data)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, num_data)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    return model_tr, guide_tr


@pytest.mark.parametrize("prior, likelihood, net", COMBOS)
def test_model_and_guide_shapes_and_accessors(prior, likelihood, net):
    shape = (1, 12, 10)
    vae = VAE(x_shape=shape, z_dim=3, prior=prior, likelihood=likelihood, net=net,
              hidden=[16], **prior_options(prior, components=4),
              **({"channels": [4]} if net == "conv" else {}))
    x = _data(vae)
    model_tr, guide_tr = _traces(vae, x)
    z = guide_tr.nodes["z"]["value"]
    assert z.shape == (6, 3)
    assert model_tr.nodes["x"]["fn"].event_shape == shape
    assert model_tr.nodes["x"]["fn"].batch_shape == (6,)
    assert model_tr.nodes["z"]["fn"].event_shape == (3,)
    # the accessors give exactly the log-densities the Pyro program records (the prior first:
    # a VampPrior reads the encoder's batch-norm statistics, which encode(x) in training mode
    # moves, as the guide's pass did before the model's)
    p = vae.prior()
    q, px = vae.encode(x), vae.decode(z)
    assert q.batch_shape == (6,) and q.event_shape == (3,)
    assert px.batch_shape == (6,) and px.event_shape == shape
    assert torch.equal(guide_tr.nodes["z"]["log_prob"], q.log_prob(z))
    assert torch.allclose(model_tr.nodes["z"]["log_prob"], p.log_prob(z), atol=1e-6)
    assert torch.equal(model_tr.nodes["x"]["log_prob"], px.log_prob(x))


def test_site_names_and_data_plate():
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    model_tr, guide_tr = _traces(vae, torch.rand(5, 4))
    assert {"z", "x"} <= set(model_tr.nodes) and "z" in guide_tr.nodes
    assert model_tr.nodes["x"]["is_observed"]
    frames = model_tr.nodes["x"]["cond_indep_stack"]
    assert frames[0].name == "data" and frames[0].size == 5


def test_subsample_scaling_is_num_data_over_batch():
    vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    x = torch.rand(5, 4)
    pyro.set_rng_seed(1)
    full_m, full_g = _traces(vae, x)
    pyro.set_rng_seed(1)
    sub_m, sub_g = _traces(vae, x, num_data=500)
    for a, b in ((full_m, sub_m), (full_g, sub_g)):
        assert torch.allclose(b.log_prob_sum(), 100 * a.log_prob_sum(), rtol=1e-6)
    frame = sub_m.nodes["x"]["cond_indep_stack"][0]
    assert frame.full_size == 500 and frame.size == 5


def test_dropped_vaes_leave_pyros_parameter_store():
    """Build, use and drop 50 VAEs: none of their parameters stays alive in the global store;
    a VAE still referenced keeps its parameters there."""
    import gc
    import weakref

    kept = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    _traces(kept, torch.rand(3, 4))
    refs, prefixes = [], []
    for _ in range(50):
        vae = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
        _traces(vae, torch.rand(3, 4))
        refs += [weakref.ref(p) for p in vae.parameters()]
        prefixes.append(vae.pyro_prefix)
        del vae
    gc.collect()
    names = list(pyro.get_param_store().keys())
    assert not any(n.startswith(p) for n in names for p in prefixes)
    assert all(r() is None for r in refs)
    assert any(n.startswith(kept.pyro_prefix) for n in names)


def test_two_vaes_never_share_parameters():
    a = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    b = VAE(x_shape=(4,), z_dim=2, hidden=[8], likelihood="gaussian")
    x = torch.rand(3, 4)
    _traces(a, x)
    _traces(b, x)
    assert a.pyro_prefix != b.pyro_prefix
    assert not torch.equal(a.encoder.net[0].weight, b.encoder.net[0].weight)
    b.load_state_dict(a.state_dict())
    _traces(b, x)
    assert torch.equal(a.encoder.net[0].weight, b.encoder.net[0].weight)


@pytest.mark.parametrize("x, match", [
    (torch.rand(3, 1, 28, 27), r"x has shape \(3, 1, 28, 27\) but this VAE takes batches of "
                               r"shape \(B, 1, 28, 28\)"),
    (torch.rand(1, 28, 28), "reshape the data"),
    (torch.full((2, 1, 28, 28), float("nan")), "NaN or inf"),
    (torch.full((2, 1, 28, 28), float("inf")), "NaN or inf"),
    (torch.full((2, 1, 28, 28), 0.5), "needs binary data"),
    ([[0.0]], "must be a torch.Tensor"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8),
     r"x is torch.uint8 .*: convert it, e.g. x.float\(\) / 255"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.float64),
     r"weights are torch.float32: convert it, e.g. x.to\(torch.float32\)"),
])
def test_bad_input_is_one_line(x, match):
    vae = VAE()
    for fn in (vae.model, vae.guide):
        with pytest.raises(PyrovaeError, match=match) as err:
            fn(x)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"net": "transformer"}, "unknown net"),
    ({"prior": "no_such_prior"}, "unknown prior"),
    ({"likelihood": "softmax"}, "unknown likelihood"),
    ({"x_shape": (1, 0, 3)}, "x_shape must be"),
    ({"x_shape": "28x28"}, "x_shape must be"),
    ({"z_dim": 0}, "z_dim must be a positive integer"),
    ({"channels": [8]}, r"channels does not apply to .*net=mlp .*option of net=conv"),
])
def test_bad_construction_is_one_line(kwargs, match):
    with pytest.raises(PyrovaeError, match=match) as err:
        VAE(**kwargs)
    assert "\n" not in str(err.value)
