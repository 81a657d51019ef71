import pytest
import torch

from pyrovae.errors import PyrovaeError
from pyrovae.nets import NETS, ConvDecoder, ConvEncoder, build_nets, net_options

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 17, 9), (1, 1, 1), (1, 5, 2), (7,), (1,), (2, 11)]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("x_shape", SHAPES)
def test_shapes_round_trip(net, x_shape):
    small = {"hidden": [16], "channels": [4, 8]}  # where the net has them; else its defaults
    enc, dec = build_nets(net, x_shape, 3,
                          **{k: v for k, v in small.items() if k in net_options(net)})
    x = torch.rand(5, *x_shape)
    loc, scale = enc(x)
    assert loc.shape == scale.shape == (5, 3)
    assert (scale > 0).all()
    assert dec(loc).shape == (5, *x_shape)
    # extra leading (particle) dims pass through
    assert dec(torch.randn(2, 5, 3)).shape == (2, 5, *x_shape)
    assert enc(x.expand(2, *x.shape))[0].shape == (2, 5, 3)


def test_conv_is_strided_with_batchnorm_and_transposed():
    enc, dec = build_nets("conv", (1, 28, 28), 4, channels=[8, 16], hidden=[32])
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2)]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules()) == 2
    assert isinstance(enc, ConvEncoder) and isinstance(dec, ConvDecoder)


def test_widths_and_depths_follow_arguments():
    enc, dec = build_nets("mlp", (4,), 2, hidden=[10, 20, 30], activation="tanh")
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [10, 20, 30, 4]
    assert any(isinstance(m, torch.nn.Tanh) for m in enc.modules())


def test_softplus_scale():
    enc, _ = build_nets("mlp", (4,), 2, scale_fn="softplus")
    raw = enc.features(torch.zeros(1, 4))[..., 2:]
    assert torch.allclose(enc(torch.zeros(1, 4))[1], torch.nn.functional.softplus(raw) + 1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "resnet"}, "unknown net 'resnet'; choose one of: conv, mlp"),
    ({"name": "mlp", "activation": "swish"}, "unknown activation"),
    ({"name": "conv", "channels": []}, r"channels must be a list .*\(at least one\)"),
    ({"name": "mlp", "hidden": [0]}, "positive"),
    ({"name": "mlp", "scale_fn": "abs"}, "unknown scale_fn 'abs'"),
])
def test_bad_options(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(PyrovaeError, match=match) as err:
        build_nets(name, (1, 4, 4), 2, **kwargs)
    assert "\n" not in str(err.value)
