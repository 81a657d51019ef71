"""The training steps: every engine takes the same Adam step (the traced and compiled ones from a
graph recorded once), the fused Adam kernel is Adam, and bfloat16 autocast keeps the loss, the
distributions and the gradients in float32."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pyro
import pytest
import torch

from pyrovae import VAE, optim
from pyrovae.errors import PyrovaeError
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.objectives import LOSSES
from pyrovae.optim import adam_options, autocast, make_stepper
from pyrovae.priors import PRIORS
from tests.conftest import needs_cxx

TRACED = ["traced", pytest.param("compiled", marks=needs_cxx)]
_G = torch.Generator().manual_seed(0)  # the data are the same whatever ran before (xdist)
X = torch.bernoulli(torch.rand(64, 1, 28, 28, generator=_G) * 0.4, generator=_G)


def _twins(n: int = 2, device: str = "cpu") -> list[VAE]:
    """``n`` VAEs with the same weights (each under its own Pyro prefix)."""
    torch.manual_seed(1)
    first = VAE(z_dim=4, hidden=[32]).to(device)
    vaes = [first]
    for _ in range(n - 1):
        vae = VAE(z_dim=4, hidden=[32]).to(device)
        vae.load_state_dict(first.state_dict())
        vaes.append(vae)
    return vaes


def _step(stepper, x: torch.Tensor, seed: int = 5, beta: float = 1.0) -> float:
    torch.manual_seed(seed)
    return stepper.step(x, 6000, beta)


def _weights(vae: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


@pytest.mark.parametrize("loss", LOSSES)
def test_engines_take_the_same_step(loss: str) -> None:
    """Every objective, same weights, same noise: SVI + pyro.optim.Adam and the objective's loss
    + one Adam give the same loss and (to float32 rounding) the same weights after three steps,
    with clipping."""
    a, b = _twins()
    svi = make_stepper("svi", a, loss, 2, lr=1e-2, clip_norm=5.0)
    plain = make_stepper("torch", b, loss, 2, lr=1e-2, clip_norm=5.0)
    for seed in range(3):
        assert _step(svi, X, seed) == pytest.approx(_step(plain, X, seed), rel=1e-6)
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(wa[k], v) for k, v in _weights(_twins(1)[0]).items())


@pytest.mark.parametrize("engine", TRACED)
def test_traced_engines_take_the_torch_step(engine: str) -> None:
    """The recorded graph replays the torch engine's step: same noise (tracing draws none), beta
    as an input (warm-up), clipping; the same weights, bit for bit when only traced."""
    a, b = _twins()
    ref = make_stepper("torch", a, "trace", lr=1e-2, clip_norm=5.0)
    traced = make_stepper(engine, b, "trace", lr=1e-2, clip_norm=5.0)
    for seed in range(4):
        beta = 0.25 * (seed + 1)
        assert _step(traced, X, seed, beta) == pytest.approx(_step(ref, X, seed, beta), rel=1e-6)
    assert _step(traced, X[:10], 9) == pytest.approx(_step(ref, X[:10], 9), rel=1e-6)
    assert len(traced.graphs) == 2  # one graph per batch shape, beta changes need none
    wa, wb = _weights(a), _weights(b)
    # Compiled kernels sum in another order, and Adam divides each coordinate's step by its own
    # gradient scale, so a coordinate with a near-zero gradient can turn float32 rounding into a
    # visible part of its step (measured: 8.6e-6 in one of 25,088 weights after 5 steps). A
    # wrong step moves weights by the order of lr; allow 1/1000 of the 5 steps' lr.
    atol = 1e-6 if engine == "traced" else 1e-3 * 5 * 1e-2
    for k in wa:
        if engine == "traced":
            assert torch.equal(wa[k], wb[k]), k
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=atol)
    b.eval()
    traced.step(X, 6000)
    assert len(traced.graphs) == 3  # and one for eval mode (batch norm behaves differently)


@pytest.mark.parametrize("prior, likelihood, loss, particles", [
    *[(prior, lik, "trace", 2) for prior in PRIORS for lik in LIKELIHOODS],
    ("normal", "continuous_bernoulli", "meanfield", 1), ("diag_normal", "bernoulli", "analytic", 3),
    ("normal", "bernoulli", "iwae", 4), ("mog", "gaussian", "iwae_dreg", 3),
    ("vamp", "bernoulli", "iwae_dreg", 2), *[("normal", "bernoulli", loss, 2) for loss in LOSSES],
])
def test_traced_step_is_the_torch_step_for_every_model(prior, likelihood, loss, particles):
    """Every prior, likelihood (a learned per-pixel scale too), loss and vectorized particles:
    three traced steps leave exactly the weights that three eager steps leave."""
    kwargs = {"z_dim": 3, "hidden": [16], "prior": prior, "likelihood": likelihood,
              "components": 3 if prior in ("mog", "vamp") else None,
              "learn_scale": "pixel" if likelihood == "gaussian" else None}
    torch.manual_seed(0)
    a, b = VAE(**kwargs), VAE(**kwargs)
    b.load_state_dict(a.state_dict())
    x = X[:12] if likelihood == "bernoulli" else X[:12] * 0.5 + 0.25
    ref = make_stepper("torch", a, loss, particles, lr=1e-2)
    traced = make_stepper("traced", b, loss, particles, lr=1e-2)
    for seed in range(3):
        assert _step(traced, x, seed, 0.5) == pytest.approx(_step(ref, x, seed, 0.5), rel=1e-6)
    for (k, wa), wb in zip(_weights(a).items(), _weights(b).values(), strict=True):
        assert torch.equal(wa, wb), k


@pytest.mark.parametrize("engine", TRACED)
def test_traced_engines_update_batchnorm_and_learned_scales(engine: str) -> None:
    """Buffers changed in place (batch-norm statistics) and constrained parameters (a learned
    likelihood scale) are read and written through the graph as in eager mode."""
    torch.manual_seed(2)
    kwargs = {"net": "conv", "channels": [4], "hidden": [16], "z_dim": 3,
              "likelihood": "gaussian", "learn_scale": "global"}
    a, b = VAE(**kwargs), VAE(**kwargs)
    b.load_state_dict(a.state_dict())
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ref = make_stepper("torch", a, "trace", lr=1e-2)
    traced = make_stepper(engine, b, "trace", lr=1e-2)
    for seed in range(3):
        assert _step(traced, x, seed) == pytest.approx(_step(ref, x, seed), rel=1e-5)
    wa, wb, fresh = _weights(a), _weights(b), _weights(VAE(**kwargs))
    for k in ("encoder.conv.1.running_mean", "encoder.conv.1.num_batches_tracked",
              "likelihood.scale_unconstrained"):
        assert not torch.equal(wa[k], fresh[k]), k  # they moved ...
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)  # ... alike


def test_untraceable_model_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose Python reads tensor values cannot be recorded: say so, and what to use."""
    (vae,) = _twins(1)
    decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z: decode(z if float(z.detach().sum()) else z))
    with pytest.raises(PyrovaeError, match="use train.engine=torch") as err:
        _step(make_stepper("traced", vae, "trace"), X)
    assert "\n" not in str(err.value) and "tensor values" in str(err.value)


def test_without_a_compiler_auto_runs_uncompiled_and_compiled_says_so_in_one_line() -> None:
    """Without a working C++ compiler (here: CXX names none): ``auto`` on the CPU trains with the
    recorded graph and never calls the compiler; a compiled step with ``auto``'s fallback (what
    ``auto`` gives on CUDA) warns once and runs the graph uncompiled; and the compiled engine's
    first step says what failed and what to use instead, in one line (in a fresh process: torch
    caches the compiler it found)."""
    code = ("import torch, warnings; from pyrovae import VAE\n"
            "from pyrovae.optim import TracedStepper, make_stepper\n"
            "x = torch.bernoulli(torch.rand(4, 1, 28, 28))\n"
            "for s in (make_stepper('auto', VAE(z_dim=2, hidden=[8]), 'trace'),\n"
            "          TracedStepper(VAE(z_dim=2, hidden=[8]), 'trace', 1, 1e-3, compile=True,\n"
            "                        fallback=True)):\n"
            "    with warnings.catch_warnings(record=True) as w:\n"
            "        warnings.simplefilter('always')\n"
            "        losses = [s.step(x, 10) for _ in range(3)]\n"
            "    print(sum('uncompiled' in str(m.message) for m in w), all(map(float, losses)),\n"
            "          flush=True)\n"
            "make_stepper('compiled', VAE(z_dim=2, hidden=[8]), 'trace').step(x, 10)\n")
    env = {**os.environ, "CXX": "/no/such/c++", "TORCHINDUCTOR_FX_GRAPH_CACHE": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    # auto: traced, no warning; the fallback: one warning, uncompiled
    assert done.stdout.split() == ["0", "True", "1", "True"], done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("pyrovae.errors.PyrovaeError: ")
    assert "C++ compiler" in last and "train.engine=traced" in last


def test_auto_engine_falls_back_to_eager_where_a_step_cannot_be_recorded(monkeypatch) -> None:
    """``auto`` on an untraceable model: one warning, then the torch engine's very steps."""
    a, b = _twins()
    for vae in (a, b):
        decode = vae.decode
        monkeypatch.setattr(vae, "decode",
                            lambda z, d=decode: d(z if float(z.detach().sum()) else z))
    auto = make_stepper("auto", a, "trace", lr=1e-2)
    ref = make_stepper("torch", b, "trace", lr=1e-2)
    with pytest.warns(UserWarning, match="running the torch engine instead"):
        first = _step(auto, X, 0)
    assert first == _step(ref, X, 0) and _step(auto, X, 1) == _step(ref, X, 1)


def test_auto_engine_resolves_by_device_and_what_the_machine_has(monkeypatch) -> None:
    """``traced`` on a CPU (compiling did not pay there, BENCHMARKS.md), ``compiled`` on CUDA
    where there is Triton; a name other than ``auto`` as is."""
    import torch.utils._triton as triton

    from pyrovae import optim

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert optim.resolve_engine("auto", cpu) == "traced"
    monkeypatch.setattr(triton, "has_triton", lambda: True)
    assert optim.resolve_engine("auto", cuda) == "compiled"
    monkeypatch.setattr(triton, "has_triton", lambda: False)
    assert optim.resolve_engine("auto", cuda) == "traced"
    assert optim.resolve_engine("svi", cpu) == "svi" and optim.resolve_engine("compiled", cpu) \
        == "compiled"


def test_fused_adam_is_adam() -> None:
    """The fused kernel (used on CPU and CUDA) matches torch's reference Adam step by step."""
    a, b = _twins()
    assert adam_options(a) == {"eps": 1e-8, "fused": True}
    params = {"fused": list(a.parameters()), "reference": list(b.parameters())}
    optims = {"fused": torch.optim.Adam(params["fused"], lr=1e-2, fused=True),
              "reference": torch.optim.Adam(params["reference"], lr=1e-2, foreach=False)}
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params["fused"]]
        for name, opt in optims.items():
            for p, g in zip(params[name], grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(params["fused"], params["reference"], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_bfloat16_step_keeps_float32_outside_the_layers() -> None:
    """Under autocast the layers run in bfloat16, yet q(z|x), p(x|z), the loss, the weights and
    their gradients are float32, and the loss is the float32 loss to bfloat16 accuracy."""
    a, b = _twins()
    with autocast(torch.device("cpu"), "bfloat16"):
        assert torch.nn.functional.linear(X.flatten(1), torch.ones(3, 784)).dtype == torch.bfloat16
        q = a.encode(X)
        assert q.base_dist.loc.dtype == q.base_dist.scale.dtype == torch.float32
        assert a.decode(q.sample()).base_dist.logits.dtype == torch.float32
    low = make_stepper("torch", a, "trace", precision="bfloat16")
    full = make_stepper("torch", b, "trace")
    loss_low, loss_full = _step(low, X), _step(full, X)
    assert loss_low == pytest.approx(loss_full, rel=1e-2)  # bfloat16 keeps 8 bits of mantissa
    # the layers really ran in bfloat16: the gradients differ (the loss alone, a sum of ~50,000
    # terms times N/B, can round to the same float32 number)
    assert any(not torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters(),
                                                                strict=True))
    assert all(p.dtype == torch.float32 for p in a.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in low.optim.state.values())


def _train(engine: str, vae: VAE, precision: str, x: torch.Tensor, steps: int = 60) -> list:
    """``steps`` steps of ``engine`` in ``precision`` at lr 1e-2; the losses."""
    stepper = make_stepper(engine, vae, "trace", lr=1e-2, precision=precision)
    return [_step(stepper, x, seed) for seed in range(steps)]


@pytest.mark.parametrize("engine", ["svi", "torch", *TRACED])
def test_bfloat16_trains_like_float32(engine: str) -> None:
    """Same start, same noise: both precisions lower the loss by over 15% in 60 steps and end
    within 2% of each other."""
    a, b = _twins()
    low, full = _train(engine, a, "bfloat16", X), _train(engine, b, "float32", X)
    for losses in (low, full):
        assert sum(losses[-10:]) < 0.85 * sum(losses[:10])
    assert sum(low[-10:]) == pytest.approx(sum(full[-10:]), rel=0.02)


def test_bad_engine_and_precision_are_one_line() -> None:
    (vae,) = _twins(1)
    with pytest.raises(PyrovaeError, match="engine") as err:
        make_stepper("jax", vae, "trace")
    assert "compiled, svi, torch, traced" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PyrovaeError, match="precision") as err:
        make_stepper("torch", vae, "trace", precision="float16")
    assert "bfloat16, float32" in str(err.value)


@pytest.mark.parametrize("fast", [True, False])
def test_bfloat16_warns_on_a_cpu_without_bfloat16_arithmetic(monkeypatch, fast: bool) -> None:
    """bfloat16 on a CPU that would emulate it (about 6x slower there): one warning that names the
    fix; none where the CPU has it, and none in float32 either way."""
    monkeypatch.setattr(optim, "fast_bfloat16", lambda device: fast)
    (vae,) = _twins(1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_stepper("torch", vae, "trace", precision="bfloat16")
        make_stepper("torch", vae, "trace", precision="float32")
    messages = [str(w.message) for w in seen]
    if fast:
        assert messages == []
    else:
        assert len(messages) == 1 and "use train.precision=float32" in messages[0]
        assert "\n" not in messages[0]


def test_gpus_count_as_fast_at_bfloat16() -> None:
    """The CPU's check is not asked for a CUDA device (no warning on a GPU)."""
    assert optim.fast_bfloat16(torch.device("cuda"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("engine", ["svi", "torch", "traced", "compiled"])
def test_steps_on_cuda(engine: str, precision: str) -> None:
    (vae,) = _twins(1, "cuda")
    assert adam_options(vae) == {"eps": 1e-8, "fused": True}
    losses = _train(engine, vae, precision, X.cuda())
    assert sum(losses[-10:]) < 0.85 * sum(losses[:10])


@pytest.mark.parametrize("engine", ["svi", "torch", "traced", "compiled"])
def test_cuda_graphs_need_the_compiled_engine_on_cuda(engine: str) -> None:
    """CUDA graphs replay a compiled CUDA step: anything else is refused in one line that says
    what to set, before any training."""
    (vae,) = _twins(1)
    with pytest.raises(PyrovaeError, match="set train.cuda_graphs=false") as err:
        make_stepper(engine, vae, "trace", cuda_graphs=True)
    assert f"train.engine={engine} on cpu" in str(err.value) and "\n" not in str(err.value)


@needs_cxx
def test_a_step_that_inductor_keeps_out_of_cuda_graphs_warns_once() -> None:
    """Where inductor skips the CUDA graph (here: a CPU graph, the double of a CUDA step with a
    CPU tensor in it), the first call says so in one line and the step still runs, compiled."""
    step = optim._compile(lambda x: (x * 2).sin(), cuda_graphs=True)
    x = torch.linspace(0, 1, 7)
    with pytest.warns(UserWarning, match="did not make this step a CUDA graph") as seen:
        torch.testing.assert_close(step(x), (x * 2).sin())
    assert len(seen) == 1 and "\n" not in str(seen[0].message)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        step(x)
    assert not later


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_draw_fresh_noise_and_train_like_the_compiled_step() -> None:
    """The step really is a CUDA graph (inductor skipped none, no warning); each replay draws
    new noise (a graph that froze its draws would give the same loss three times), the seed
    still decides it, and 60 steps train as the compiled step without graphs does (same start
    and seeds; within 2%)."""
    from torch._dynamo.utils import counters

    a, b = _twins(2, "cuda")
    x = X.cuda()
    graphs = make_stepper("compiled", a, "trace", lr=1e-2, cuda_graphs=True)
    plain = make_stepper("compiled", b, "trace", lr=1e-2)
    skips = counters["inductor"]["cudagraph_skips"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        draws = [graphs.backward(x, 6000).item() for _ in range(3)]
    assert counters["inductor"]["cudagraph_skips"] == skips
    assert not [w for w in seen if "cuda_graphs" in str(w.message)]
    assert len(set(draws)) == 3
    torch.manual_seed(7)
    again = graphs.backward(x, 6000).item()
    torch.manual_seed(7)
    assert graphs.backward(x, 6000).item() == again
    with_graphs = [_step(graphs, x, seed) for seed in range(60)]
    without = [_step(plain, x, seed) for seed in range(60)]
    assert sum(with_graphs[-10:]) < 0.85 * sum(with_graphs[:10])
    assert sum(with_graphs[-10:]) == pytest.approx(sum(without[-10:]), rel=0.02)


def teardown_module() -> None:
    pyro.clear_param_store()


def test_a_rate_set_before_the_first_step_is_used_by_every_engine() -> None:
    """set_lr on a fresh stepper: Pyro builds a parameter's Adam at its first step, from the
    stepper's arguments, which the rate must reach (it was lost under svi)."""
    a, b = _twins()
    svi = make_stepper("svi", a, "trace", lr=1e-3)
    plain = make_stepper("torch", b, "trace", lr=1e-3)
    for stepper in (svi, plain):
        stepper.set_lr(1e-1)
        _step(stepper, X, 0)
        _step(stepper, X, 1)
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("engine", ["svi", "torch", "traced"])
def test_a_loaded_optimizer_state_saves_again_before_a_step(engine: str) -> None:
    """A stepper that loaded a state and has not stepped yet (a resumed run saved at once) saves
    that state, not an empty one (Pyro keeps loaded states waiting for each first step)."""
    a, b = _twins()
    first = make_stepper(engine, a, "trace")
    _step(first, X, 0)
    saved = first.state_dict()
    second = make_stepper(engine, b, "trace")
    second.load_state_dict(saved)
    again = second.state_dict()
    assert again and set(again) == set(saved)


def _parameters(vae: VAE) -> dict[str, torch.Tensor]:
    """The trained weights (a fixed prior's buffers left out)."""
    return {k: v.detach().clone() for k, v in vae.named_parameters()}


class PlainEncoder(torch.nn.Module):
    """A user's encoder: a plain nn.Module, not a PyroModule."""

    z_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(784, 8)

    def forward(self, x):
        loc, raw = self.net(x.flatten(1)).chunk(2, -1)
        return loc, torch.nn.functional.softplus(raw) + 1e-3


@pytest.mark.parametrize("engine", ["svi", "torch", "traced"])
def test_a_given_pair_of_plain_modules_trains_under_every_engine(engine: str) -> None:
    """VAE(net=(encoder, decoder)) with plain nn.Modules: every engine moves their weights
    (SVI sees the parameters of PyroModules only; the pair is converted)."""
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(4, 784), torch.nn.Unflatten(-1, (1, 28, 28)))
    vae = VAE(z_dim=4, net=(PlainEncoder(), decoder))
    before = _parameters(vae)
    stepper = make_stepper(engine, vae, "trace", lr=1e-2)
    _step(stepper, X, 0)
    _step(stepper, X, 1)
    after = _parameters(vae)
    assert all(not torch.equal(before[k], after[k]) for k in before), engine


def test_a_copy_of_a_vae_trains_its_own_weights() -> None:
    """copy.deepcopy gives the copy its own Pyro prefix: SVI on the copy moves the copy's
    weights and leaves the original's."""
    import copy

    torch.manual_seed(0)
    original = VAE(z_dim=4, hidden=[32])
    _step(make_stepper("svi", original, "trace"), X, 0)  # its parameters in Pyro's store
    copied = copy.deepcopy(original)
    assert copied.pyro_prefix != original.pyro_prefix
    before, kept = _parameters(copied), _parameters(original)
    _step(make_stepper("svi", copied, "trace", lr=1e-1), X, 1)
    assert all(not torch.equal(before[k], v) for k, v in _parameters(copied).items())
    assert all(torch.equal(kept[k], v) for k, v in _parameters(original).items())


def test_the_traced_engine_takes_a_batch_in_any_memory_layout() -> None:
    """A batch of a recorded shape but another layout (a transposed view) replays the graph:
    the same loss as its contiguous copy."""
    a, b = _twins()
    traced, plain = make_stepper("traced", a, "trace"), make_stepper("torch", b, "trace")
    _step(traced, X, 0)
    _step(plain, X, 0)
    view = X.transpose(2, 3).contiguous().transpose(2, 3)
    assert not view.is_contiguous()
    assert _step(traced, view, 1) == pytest.approx(_step(plain, X, 1), rel=1e-6)
