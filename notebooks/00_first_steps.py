# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · First steps: the generative story, autoencoders, and just enough Pyro
#
# A variational autoencoder (VAE; Kingma & Welling 2013, Rezende, Mohamed & Wierstra 2014)
# is a probabilistic model of data with a neural network inside, fitted by variational
# inference. `pyrovae` writes it as a [Pyro](https://pyro.ai) program. This notebook is for
# a reader who knows PyTorch but not Pyro, and prepares notebooks 01–07:
#
# 1. **the generative story**: draw $z$, decode it, draw $x$; the graphical model; the
#    same three steps with `pyrovae.VAE`;
# 2. **a Pyro primer**, on a toy model, for exactly what the VAE uses: `pyro.sample` with and
#    without `obs=`, `.to_event`, `pyro.plate` and subsampling, `poutine.trace` to look
#    inside a program, `PyroModule`, and what `SVI.step` computes (checked by hand);
# 3. **the VAE read with the primer**: the traces of `vae.model` and `vae.guide`, one
#    `SVI.step` by hand, then training a VAE with a 2-d latent space next to a plain
#    autoencoder of the same size;
# 4. **why a plain autoencoder's latent space cannot be sampled**: the encodings of both
#    models, decoded points on a straight line between two encodings and drawn from
#    $\mathcal{N}(0, I)$, and a number for the holes;
# 5. where to go next, and references.
#
# Every number shown is printed by the code, and asserted where it must hold exactly.
#
# **Settings.** Full mode (the saved outputs): the first 20,000 MNIST training images,
# one hidden layer of 256 units, 2,500 steps of 100 images for each model (about a minute and a half
# of one CPU core for the whole notebook). `PYROVAE_FAST=1` (CI): 2,000 images, 64 hidden units and 100
# steps; the pictures are then rough, and the comparison of section 4 is printed but only
# asserted in full mode.

# %%
from pyrovae import notebook as nb

FAST = nb.setup()  # PYROVAE_FAST=1 (CI): small data, small nets, few steps

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from torch import nn

from pyrovae.data import load_data
from pyrovae.model import VAE

H = 64 if FAST else 256  # hidden units of every network below

# %% [markdown]
# ## 1. The generative story
#
# A VAE says how an image $x$ (here $D = 784$ binary pixels) comes about, in three steps:
#
# 1. draw a **latent code** $z \in \mathbb{R}^k$ from the prior, $z \sim p(z) = \mathcal{N}(0, I_k)$;
# 2. **decode** it: a neural network $f_\theta$ (the *decoder*, weights $\theta$) turns $z$
#    into $D$ numbers, one logit per pixel;
# 3. draw the image: $x \mid z \sim p_\theta(x\mid z) = \prod_{i=1}^{D} \mathrm{Bernoulli}\big(x_i;\, \mathrm{sigmoid}(f_\theta(z))_i\big)$,
#    each pixel independently, given $z$.
#
# Repeated for each of the $N$ images of a data set, with one $z_n$ per image. This is
# *ancestral sampling*: each variable is drawn after its parents. The model's density of an
# image is $p_\theta(x) = \int p(z)\,p_\theta(x\mid z)\,dz$, an integral over all codes that has no
# closed form, and so neither has the posterior $p_\theta(z\mid x)$, the codes that could have
# produced a given image. A second network, the *encoder* (weights $\phi$), approximates
# it: $q_\phi(z\mid x) = \mathcal{N}\big(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x)\big)$. Training
# maximizes a lower bound on $\log p_\theta(x)$ (the ELBO, notebook 01) over $\theta$ and $\phi$ together.
#
# The picture below is the model in *plate notation*: circles are random variables (shaded:
# observed), the box (a *plate*) stands for $N$ independent copies of what is inside, dots
# are parameters (plain numbers, no distribution). Solid arrows are the generative model
# $p(z)\,p_\theta(x\mid z)$; the dashed arrow is the inference model $q_\phi(z\mid x)$, which
# runs the other way and is only needed to train and to encode.


# %%
def draw_graphical_model(ax):
    """The VAE in plate notation: z -> x in a plate over N, theta and phi outside."""
    r = 0.42
    nodes = {"z": (2.0, 3.1), "x": (2.0, 1.0)}
    for name, (cx, cy) in nodes.items():
        ax.add_patch(Circle((cx, cy), r, fc="0.8" if name == "x" else "white", ec="k", lw=1.5))
        ax.text(cx, cy, f"${name}_n$", ha="center", va="center", fontsize=15)
    for label, (cx, cy), side in ((r"\theta", (4.3, 2.05), 1), (r"\phi", (-0.3, 2.05), -1)):
        ax.add_patch(Circle((cx, cy), 0.07, fc="k"))
        ax.text(cx + 0.2 * side, cy, f"${label}$", ha="left" if side > 0 else "right",
                va="center", fontsize=15)
    ax.add_patch(FancyBboxPatch((0.8, 0.3), 2.6, 3.6, boxstyle="round,pad=0,rounding_size=0.1",
                                fill=False, lw=1.2))
    ax.text(3.3, 0.4, "$N$", ha="right", va="bottom", fontsize=13)

    def arrow(a, b, dashed=False, rad=0.0):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=16, lw=1.5,
                                     ls="--" if dashed else "-", color="k",
                                     connectionstyle=f"arc3,rad={rad}"))

    arrow((2.0, 3.1 - r), (2.0, 1.0 + r))                             # z -> x: p_theta(x|z)
    arrow((4.2, 2.0), (2.0 + 0.9 * r, 1.0 + 0.5 * r))                 # theta -> x
    arrow((2.0 - 0.9 * r, 1.0 + 0.45 * r), (2.0 - 0.9 * r, 3.1 - 0.45 * r), True, -0.5)  # q
    arrow((-0.2, 2.05), (1.25, 2.05), True)                           # phi -> q
    ax.text(2.12, 2.05, r"$p_\theta(x\mid z)$", ha="left", va="center", fontsize=11)
    ax.text(2.5, 3.1, r"$p(z) = \mathcal{N}(0, I)$", ha="left", va="center", fontsize=11)
    ax.text(0.7, 2.6, r"$q_\phi(z\mid x)$", ha="right", va="center", fontsize=11)
    ax.set_xlim(-1.0, 5.0)
    ax.set_ylim(0.1, 4.1)
    ax.set_aspect("equal")
    ax.axis("off")


fig, ax = plt.subplots(figsize=(5, 3.4))
draw_graphical_model(ax)
plt.show()

# %% [markdown]
# **The three steps with `pyrovae.VAE`.** `vae.prior()` is $p(z)$, `vae.decode(z)` is
# $p_\theta(x\mid z)$ and `vae.encode(x)` is $q_\phi(z\mid x)$: ordinary
# `torch.distributions`-style objects (Pyro's), with `.sample()`, `.log_prob()` and `.mean`.
# Below, a VAE with a 2-d latent space ($k = 2$, so that section 4 can draw it) and one
# hidden layer, **before any training**: the decoder's weights are random, so the pixel
# probabilities are scattered around $\tfrac12$ and the images are noise. Section 4 decodes the same
# twelve $z$ after training. Each distribution has a *batch shape* (independent copies) and
# an *event shape* (one draw of one copy: a $z$, or a whole image); section 2c explains the two.


# %%
def tiles(images, gap=2):
    """A row of (n, 1, 28, 28) images as one (28, n * 30 - gap) array, white gaps between."""
    n = images.shape[0]
    out = np.ones((28, n * (28 + gap) - gap))
    for i, img in enumerate(images):
        out[:, i * (28 + gap): i * (28 + gap) + 28] = img.reshape(28, 28).numpy()
    return out


def show_rows(rows, titles, width=10.0):
    """One figure, one row of images per entry of ``rows``."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, 1.05 * len(rows)), squeeze=False)
    for ax, row, title in zip(axes[:, 0], rows, titles):
        ax.imshow(tiles(row), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    plt.tight_layout()
    return fig, axes[:, 0]


vae = VAE(x_shape=(1, 28, 28), z_dim=2, hidden=(H,))
print(vae.encoder, vae.decoder, sep="\n")
prior = vae.prior()
Z_SHOW = prior.sample((12,))  # step 1: twelve codes z ~ N(0, I)
with torch.no_grad():
    p_x = vae.decode(Z_SHOW)  # step 2: decode -> p(x|z), 784 pixel probabilities per z
    x_drawn = p_x.sample()    # step 3: one binary image per z
print(f"p(z):   {type(prior).__name__}, batch shape {tuple(prior.batch_shape)}, "
      f"event shape {tuple(prior.event_shape)}; z has shape {tuple(Z_SHOW.shape)}")
print(f"p(x|z): {type(p_x).__name__} of {type(p_x.base_dist).__name__}, batch shape "
      f"{tuple(p_x.batch_shape)}, event shape {tuple(p_x.event_shape)}")
print(f"x has shape {tuple(x_drawn.shape)}, values {sorted(x_drawn.unique().tolist())}; "
      f"pixel probabilities from {p_x.mean.min():.3f} to {p_x.mean.max():.3f}")
with torch.no_grad():
    assert torch.allclose(p_x.mean, torch.sigmoid(vae.decoder(Z_SHOW)))  # mean = sigmoid(logits)
assert p_x.batch_shape == (12,) and p_x.event_shape == (1, 28, 28)
show_rows([p_x.mean, x_drawn], ["untrained decoder: pixel probabilities E[x | z]",
                                "x ~ p(x | z): one binary draw per z"])
plt.show()

# %% [markdown]
# ## 2. A Pyro primer
#
# A Pyro *program* is an ordinary Python function that draws its random variables through
# `pyro.sample` with a **name**. Inference algorithms run the function under *effect
# handlers* (`pyro.poutine`) that record, replace or rescale those draws: the function itself
# stays plain Python and PyTorch. What the VAE uses, in the order of this section:
#
# | Pyro | what it does | in `pyrovae.VAE` |
# |---|---|---|
# | `pyro.sample("z", d)` | draws from `d` and records a random variable named `"z"` | site `"z"` in `model` (from $p(z)$) and in `guide` (from $q(z\mid x)$) |
# | `pyro.sample("x", d, obs=x)` | *observes* data: returns `x`, records $\log d(x)$ | site `"x"` in `model`: the images |
# | `d.to_event(k)` | the last `k` batch dimensions form one event: `log_prob` sums over them | the 784 pixels of an image; the coordinates of $z$ |
# | `pyro.plate("data", N, ...)` | declares independent copies; on a minibatch, scales log-densities by $N/B$ | the plate over the images |
# | `poutine.trace(f).get_trace(...)` | runs `f` and records every site | how `Trace_ELBO` computes the ELBO; how we look inside |
# | `PyroModule` | an `nn.Module` whose parameters live in Pyro's parameter store | `VAE`, its encoder and decoder |
# | `SVI(model, guide, optim, Trace_ELBO()).step(...)` | one gradient step on an estimate of $-$ELBO | training |
#
# The toy model of this section: $N = 1000$ numbers $y_n \sim \mathcal{N}(\mu, 1)$ with an unknown
# mean, prior $\mu \sim \mathcal{N}(0, 10^2)$. Its posterior is known exactly, so we can check what
# Pyro does.
#
# ### 2a. `pyro.sample`, and a first look with `poutine.trace`
#
# Called plainly, `pyro.sample(name, d)` is `d.sample()`: a new draw on every call. Under
# `poutine.trace`, every call leaves a *site* in a trace: a dict with the name, the
# distribution `fn`, the `value`, whether it was observed, and (after
# `compute_log_prob()`) its `log_prob`: the log-density of the value, times the site's `scale`
# (1 here; see 2d), the unscaled one being kept as `unscaled_log_prob`.

# %%
def draw_w():
    return pyro.sample("w", dist.Normal(0.0, 1.0))


print("two calls, two draws:", f"{draw_w().item():.4f}", f"{draw_w().item():.4f}")
trace = poutine.trace(draw_w).get_trace()
trace.compute_log_prob()
site = trace.nodes["w"]
print({k: site[k] for k in ("name", "type", "fn", "value", "is_observed", "log_prob")})
assert torch.equal(site["log_prob"], dist.Normal(0.0, 1.0).log_prob(site["value"]))

# %% [markdown]
# ### 2b. `obs=`: observed sites
#
# With `obs=value`, the site is **observed**: `pyro.sample` returns `value` instead of a
# draw, and the site's `log_prob` is the log-density of the data, $\log \mathcal{N}(0.5;\, 0, 1)$
# here. This is how a model contains data: in the VAE, `pyro.sample("x", vae.decode(z), obs=x)`
# contributes $\log p_\theta(x\mid z)$. (Outside any handler Pyro warns that observing means
# nothing there, so the cell runs it under `trace` only.)

# %%
def observe_w(value):
    return pyro.sample("w", dist.Normal(0.0, 1.0), obs=value)


trace = poutine.trace(observe_w).get_trace(torch.tensor(0.5))
trace.compute_log_prob()
site = trace.nodes["w"]
by_hand = -0.5 * math.log(2 * math.pi) - 0.5 * 0.5**2
print(f"value {site['value'].item()}, is_observed {site['is_observed']}, "
      f"log_prob {site['log_prob'].item():.7f}, by hand -log(2 pi)/2 - 0.5^2/2 = {by_hand:.7f}")
assert site["value"].item() == 0.5 and site["is_observed"]
assert trace.nodes["_RETURN"]["value"] == 0.5  # what observe_w returned
assert abs(site["log_prob"].item() - by_hand) < 1e-6

# %% [markdown]
# ### 2c. Batch shape, event shape, and `.to_event`
#
# A distribution with tensor parameters is a batch of independent distributions:
# `Normal(zeros(3, 2), 1)` has **batch shape** `(3, 2)` and **event shape** `()`, and `log_prob`
# returns one number per batch element. `.to_event(1)` declares the last batch dimension part
# of the event: now it is 3 independent **2-d** normals, and `log_prob` sums over the
# coordinates, one number per 2-d vector. The values and their densities are unchanged; what
# changes is what counts as *one* draw. `pyrovae` uses it for $z$ (event shape `(z_dim,)`) and
# for an image (event shape `(1, 28, 28)`: `Bernoulli(logits).to_event(3)`), so that every
# image gets one $\log p(x\mid z)$.

# %%
d = dist.Normal(torch.zeros(3, 2), 1.0)
v = d.sample()
d1 = d.to_event(1)
nb.print_table(["distribution", "batch_shape", "event_shape", "log_prob(v).shape"],
               [["Normal(zeros(3, 2), 1)", tuple(d.batch_shape), tuple(d.event_shape),
                 tuple(d.log_prob(v).shape)],
                [".to_event(1)", tuple(d1.batch_shape), tuple(d1.event_shape),
                 tuple(d1.log_prob(v).shape)]])
print("Normal(zeros(3, 2), 1).log_prob(v):", d.log_prob(v).double().numpy().round(4).tolist())
print(".to_event(1).log_prob(v), the row sums:", d1.log_prob(v).double().numpy().round(4).tolist())
assert d1.batch_shape == (3,) and d1.event_shape == (2,)
assert torch.allclose(d1.log_prob(v), d.log_prob(v).sum(-1), rtol=0, atol=1e-6)

# %% [markdown]
# ### 2d. `pyro.plate` and subsampling
#
# `with pyro.plate("data", N):` says that the sites inside are $N$ *conditionally independent*
# copies along the last batch dimension. With `subsample_size=B` the plate draws $B$ of the $N$
# indices at random, the model looks only at those, and every log-density inside is
# multiplied by the site's **`scale`** $N/B$: the sum over the minibatch times $N/B$ is an
# unbiased estimate of the sum over all $N$. Below, the toy likelihood with $\mu = 2$ fixed,
# on 10 of the 1,000 points (scale 100).

# %%
N_TOY = 1000
y_toy = 2.0 + torch.randn(N_TOY, generator=torch.Generator().manual_seed(0))


def toy_likelihood(mu, y, batch_size=None):
    """y_n ~ N(mu, 1), n in a plate over all of y; a random minibatch of batch_size."""
    with pyro.plate("data", len(y), subsample_size=batch_size) as idx:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])


mu2 = torch.tensor(2.0)
trace = poutine.trace(toy_likelihood).get_trace(mu2, y_toy, 10)
trace.compute_log_prob()
site, idx = trace.nodes["y"], trace.nodes["data"]["value"]
by_hand = dist.Normal(mu2, 1.0).log_prob(y_toy[idx])  # the 10 chosen points, unscaled
print("subsample indices:", idx.tolist())
print(f"scale {site['scale']}; log_prob has shape {tuple(site['log_prob'].shape)} and is "
      f"scale x unscaled_log_prob; log_prob_sum {site['log_prob_sum'].item():.3f} "
      f"= 100 x {by_hand.sum().item():.4f}")
print("plate frame:", repr(site["cond_indep_stack"][0]))
assert site["scale"] == N_TOY / 10 and len(idx) == 10
assert torch.equal(site["unscaled_log_prob"], by_hand)
assert torch.equal(site["log_prob"], 100 * by_hand)
assert torch.allclose(site["log_prob_sum"], 100 * by_hand.sum())

full = dist.Normal(mu2, 1.0).log_prob(y_toy).sum().item()
trace = poutine.trace(toy_likelihood).get_trace(mu2, y_toy)  # no subsample_size: all of y
trace.compute_log_prob()
assert trace.nodes["y"]["scale"] == 1.0 and abs(trace.log_prob_sum().item() - full) < 1e-2
estimates = []
for _ in range(200):
    trace = poutine.trace(toy_likelihood).get_trace(mu2, y_toy, 10)
    estimates.append(trace.log_prob_sum().item())
mean, se = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(len(estimates))
print(f"full log-likelihood {full:.2f}; 200 minibatch estimates: mean {mean:.2f} "
      f"(standard error {se:.2f}), from {min(estimates):.0f} to {max(estimates):.0f}")
assert abs(mean - full) < 4 * se  # unbiased: the mean of the estimates is the full sum

# %% [markdown]
# `pyrovae.VAE` uses the same plate, but the training loop has already picked the minibatch,
# so the plate is handed it: `pyro.plate("data", num_data, subsample=torch.arange(B))`. The
# scale is again `num_data / B` (section 3).
#
# ### 2e. `poutine.trace` of a whole model
#
# The whole toy model: $\mu$ from the prior (a latent site, outside the plate), then the
# plate. A trace records the sites in the order they ran; `trace.log_prob_sum()` is the sum of
# every site's scaled `log_prob_sum`, one sample of $\log p(\mu, y)$ (with the minibatch
# estimate of the likelihood). `site_table` is used again on the VAE.

# %%
def toy_model(y, batch_size=None):
    """mu ~ N(0, 10^2); y_n ~ N(mu, 1)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    toy_likelihood(mu, y, batch_size)
    return mu


def site_table(trace):
    """The sample sites of a trace: shapes, scale and log_prob_sum (scaled)."""
    trace.compute_log_prob()
    rows = []
    for name, s in trace.nodes.items():
        if s["type"] != "sample" or type(s["fn"]).__name__ == "_Subsample":
            continue  # the plate's own site (it records the subsample indices)
        rows.append([name, str(s["is_observed"]), type(s["fn"]).__name__,
                     tuple(s["fn"].batch_shape), tuple(s["fn"].event_shape),
                     tuple(s["value"].shape), tuple(s["log_prob"].shape), s["scale"],
                     s["log_prob_sum"].item()])
    nb.print_table(["site", "observed", "fn", "batch_shape", "event_shape", "value",
                    "log_prob", "scale", "log_prob_sum"], rows)
    params = [n for n, s in trace.nodes.items() if s["type"] == "param"]
    print(f"{len(params)} param sites; trace.log_prob_sum() = {trace.log_prob_sum().item():.3f}")


trace = poutine.trace(toy_model).get_trace(y_toy, 100)
site_table(trace)
parts = sum(s["log_prob_sum"] for s in trace.nodes.values() if s["type"] == "sample")
assert torch.allclose(trace.log_prob_sum(), parts)

# %% [markdown]
# ### 2f. `PyroModule`: networks and parameters
#
# Variational inference needs a **guide**: a second program with the same arguments as the
# model that samples the *same latent sites* (here `"mu"`; never the observed ones) from a
# distribution with learnable parameters. Written as a `PyroModule` (Pyro's subclass of
# `torch.nn.Module`), its `nn.Parameter`s are ordinary module parameters *and*, once the module
# runs, entries of Pyro's global **parameter store** under the module's name, where
# `SVI` finds them. The guide below is $q(\mu) = \mathcal{N}(\text{loc}, e^{\text{log\_scale}})$.
# `pyrovae.VAE` is a `PyroModule` too, registered under its own prefix (`vae.pyro_prefix`).

# %%
class ToyGuide(PyroModule):
    """q(mu) = N(loc, exp(log_scale)^2): two learnable numbers."""

    def __init__(self):
        super().__init__(name="toy_guide")
        self.loc = nn.Parameter(torch.tensor(0.0))
        self.log_scale = nn.Parameter(torch.tensor(0.0))

    def forward(self, y, batch_size=None):  # the model's arguments
        return pyro.sample("mu", dist.Normal(self.loc, self.log_scale.exp()))


store = pyro.get_param_store()
toy_guide = ToyGuide()
print("module parameters:", [n for n, _ in toy_guide.named_parameters()])
print("in the store before the first call:", [k for k in store.keys() if k.startswith("toy")])
toy_guide(y_toy)
print("in the store after the first call: ", [k for k in store.keys() if k.startswith("toy")])
assert pyro.param("toy_guide.loc") is toy_guide.loc  # one tensor, two ways to reach it

with torch.no_grad():
    vae.encode(torch.zeros(1, 1, 28, 28))  # the VAE's encoder and decoder have now both run
ours = sorted(k for k in store.keys() if k.startswith(vae.pyro_prefix))
print(f"\nthe VAE: prefix {vae.pyro_prefix!r}; {len(ours)} tensors in the store, e.g. {ours[0]!r}; "
      f"{sum(p.numel() for p in vae.parameters()):,} numbers in vae.parameters()")
assert ours == sorted(vae.pyro_prefix + n for n, _ in vae.named_parameters())

# %% [markdown]
# ### 2g. What `SVI.step` does
#
# `svi = SVI(model, guide, optimizer, loss=Trace_ELBO())`, then `svi.step(*args)`:
#
# 1. runs the **guide** under `poutine.trace`: draws $\mu \sim q(\mu)$ (reparameterized,
#    $\mu = \text{loc} + \text{scale}\cdot\varepsilon$, so gradients flow to loc and scale);
# 2. runs the **model** under `poutine.replay(model, trace=guide_trace)` and `trace`: its site
#    `"mu"` takes the guide's value instead of drawing, and the plate draws a minibatch;
# 3. the loss is one sample of $-\mathrm{ELBO}$: $-\big[\sum_{\text{model sites}} \log p - \sum_{\text{guide sites}} \log q\big]
#    = -\big[\log p(\mu) + \tfrac{N}{B}\sum_{b} \log p(y_b\mid\mu) - \log q(\mu)\big]$;
# 4. backpropagates it into the parameters that appeared in the two traces, takes one step
#    of the optimizer, zeroes the gradients, and returns the loss as a float.
#
# By hand below, with the same random seed, then `svi.step`: the same loss to the last bit
# (`Trace_ELBO` adds up the sites' `log_prob_sum`s as Python floats, so we do too), and plain
# SGD moves each parameter by $-\text{lr} \times$ the gradient of our loss.

# %%
LR_SGD = 1e-4
svi = SVI(toy_model, toy_guide, pyro.optim.SGD({"lr": LR_SGD}), loss=Trace_ELBO())

pyro.set_rng_seed(1)
guide_trace = poutine.trace(toy_guide).get_trace(y_toy, 100)
model_trace = poutine.trace(poutine.replay(toy_model, trace=guide_trace)).get_trace(y_toy, 100)
model_trace.compute_log_prob()
guide_trace.compute_log_prob()
log_p = sum(s["log_prob_sum"].item() for s in model_trace.nodes.values() if s["type"] == "sample")
log_q = sum(s["log_prob_sum"].item() for s in guide_trace.nodes.values() if s["type"] == "sample")
loss_by_hand = -(log_p - log_q)
(-(model_trace.log_prob_sum() - guide_trace.log_prob_sum())).backward()
before = {n: p.detach().clone() for n, p in toy_guide.named_parameters()}
grads = {n: p.grad.clone() for n, p in toy_guide.named_parameters()}
for p in toy_guide.parameters():
    p.grad = None

pyro.set_rng_seed(1)
loss = svi.step(y_toy, 100)
print(f"mu drawn by the guide: {guide_trace.nodes['mu']['value'].item():.5f}  "
      f"(the model replayed it: {model_trace.nodes['mu']['value'].item():.5f})")
print(f"by hand: -(log p {log_p:.4f} - log q {log_q:.4f}) = {loss_by_hand:.6f}")
print(f"svi.step returned                          {loss:.6f}")
nb.print_table(["parameter", "before", "gradient", "before - lr * gradient", "after svi.step"],
               [[n, f"{before[n].item():.6f}", f"{grads[n].item():.3f}",
                 f"{(before[n] - LR_SGD * grads[n]).item():.6f}", f"{p.item():.6f}"]
                for n, p in toy_guide.named_parameters()])
assert loss == loss_by_hand
for n, p in toy_guide.named_parameters():
    assert torch.allclose(p.detach(), before[n] - LR_SGD * grads[n], rtol=0, atol=1e-7)
    assert p.grad is None or not p.grad.any()  # zeroed after the step

# %% [markdown]
# **Many steps.** For this model the posterior is Gaussian and known exactly:
# $p(\mu\mid y) = \mathcal{N}\big(\sum_n y_n / (N + 10^{-2}),\; 1/(N + 10^{-2})\big)$. The guide's
# family contains it, so SVI on minibatches of 100 should bring $q$ close to it: 200 steps of
# Adam with a decaying learning rate (`ClippedAdam`) from where the SGD step left it.

# %%
precision = N_TOY + 1 / 10**2
post_loc, post_scale = y_toy.sum().item() / precision, 1 / math.sqrt(precision)
svi = SVI(toy_model, toy_guide, pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.99}),
          loss=Trace_ELBO())
rows = []
for step in range(1, 201):
    loss = svi.step(y_toy, 100)
    if step in (1, 10, 25, 50, 100, 200):
        rows.append([step, f"{loss:.1f}", f"{toy_guide.loc.item():.4f}",
                     f"{toy_guide.log_scale.exp().item():.4f}"])
rows.append(["exact", "", f"{post_loc:.4f}", f"{post_scale:.4f}"])
nb.print_table(["step", "loss", "loc", "scale"], rows)
q_loc, q_scale = toy_guide.loc.item(), toy_guide.log_scale.exp().item()
assert abs(q_loc - post_loc) < 3 * post_scale and 0.7 < q_scale / post_scale < 1.5

# %% [markdown]
# ## 3. The VAE, read with the primer
#
# `VAE.model` and `VAE.guide` (`pyrovae/model.py`), for a batch `x` of $B$ images out of
# `num_data`:
#
# ```python
# def model(self, x, num_data=None):                # p(x, z) = p(z) p(x|z)
#     with pyro.plate("data", num_data, subsample=torch.arange(B)):
#         z = pyro.sample("z", self.prior().expand([B]))     # step 1: z ~ N(0, I)
#         pyro.sample("x", self.decode(z), obs=x)            # steps 2 and 3, observed
#
# def guide(self, x, num_data=None):                # q(z|x)
#     q = self.encode(x)                                     # the encoder network
#     with pyro.plate("data", num_data, subsample=torch.arange(B)):
#         return pyro.sample("z", q)                         # the same latent site "z"
# ```
#
# (abridged: the real ones also check their input). The model is the generative story of
# section 1 with the images observed; the guide is the dashed arrow. We load MNIST through
# the library (binary pixels: each training batch is binarized afresh, the test set once)
# and trace both programs on 8 test images, with `num_data` the size of the training set.

# %%
splits = load_data(
    "mnist",
    root=nb.data_root(),
    mirror=nb.data_mirror(),
    limit=2000 if FAST else 20000,
    binarize="dynamic",
)
print(splits)
print("test set:", splits.test_binarization)
N_TRAIN = splits.train.shape[0]

# %%
x8 = splits.test[:8]
model_trace = poutine.trace(vae.model).get_trace(x8, N_TRAIN)
site_table(model_trace)
z8 = model_trace.nodes["z"]["value"]
with torch.no_grad():
    log_pz, log_px_z = vae.prior().log_prob(z8), vae.decode(z8).log_prob(x8)
scale = N_TRAIN / 8
print(f"scale = num_data / B = {N_TRAIN} / 8 = {scale}")
print("log p(z) per image:  ", log_pz.numpy().round(3))
print("log p(x|z) per image:", log_px_z.numpy().round(1))
for name, by_hand in (("z", log_pz), ("x", log_px_z)):
    s = model_trace.nodes[name]
    assert s["scale"] == scale and s["fn"].batch_shape == (8,)
    assert torch.allclose(s["unscaled_log_prob"], by_hand)
    assert torch.allclose(s["log_prob_sum"], scale * by_hand.sum())
x_site = model_trace.nodes["x"]
assert x_site["is_observed"] and x_site["fn"].event_shape == (1, 28, 28)

# %% [markdown]
# The model's `x` site has batch shape `(8,)` (one per image, the plate's dimension) and event
# shape `(1, 28, 28)`: its `log_prob` is one number per image, the sum over 784 pixels of
# $\log \mathrm{Bernoulli}$. The param sites are the decoder's weights, reached through
# `PyroModule`. The guide:

# %%
guide_trace = poutine.trace(vae.guide).get_trace(x8, N_TRAIN)
site_table(guide_trace)
with torch.no_grad():
    q = vae.encode(x8)
    loc, sd = vae.encoder(x8)
z_q = guide_trace.nodes["z"]["value"]
print(f"q(z|x): {type(q).__name__}(Normal), batch shape {tuple(q.batch_shape)}, "
      f"event shape {tuple(q.event_shape)}; encoder sd from {sd.min():.3f} to {sd.max():.3f}")
assert torch.allclose(guide_trace.nodes["z"]["unscaled_log_prob"], q.log_prob(z_q))
assert torch.equal(q.mean, loc) and guide_trace.nodes["z"]["scale"] == scale

# %% [markdown]
# **One `SVI.step` of the VAE, by hand.** Exactly as in 2g: trace the guide, replay the model
# with its `z`, sum the site log-densities; `svi.step` on a training minibatch of 100 images
# returns the same number, an estimate of $-\mathrm{ELBO}$ of the whole training set (the plate
# scales the minibatch by `num_data / 100`). The library's training loop (`pyrovae.fit`,
# notebook 04) does the same with `pyrovae.objectives` (notebook 01).

# %%
BATCH = 100
LR = 3e-3 if FAST else 1e-3
xb = next(splits.train_batches(BATCH, torch.Generator().manual_seed(0)))  # binarized batch
svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": LR}), loss=Trace_ELBO())
pyro.set_rng_seed(3)
guide_trace = poutine.trace(vae.guide).get_trace(xb, N_TRAIN)
model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(xb, N_TRAIN)
model_trace.compute_log_prob()
guide_trace.compute_log_prob()
log_p = sum(s["log_prob_sum"].item() for s in model_trace.nodes.values() if s["type"] == "sample")
log_q = sum(s["log_prob_sum"].item() for s in guide_trace.nodes.values() if s["type"] == "sample")
pyro.set_rng_seed(3)
loss = svi.step(xb, N_TRAIN)
print(f"by hand: -(log p {log_p:.2f} - log q {log_q:.2f}) = {-(log_p - log_q):.4f}")
print(f"svi.step returned                        {loss:.4f}")
print(f"per training image: -ELBO estimate {loss / N_TRAIN:.2f} nats (untrained)")
assert loss == -(log_p - log_q)

# %% [markdown]
# **Training.** The loop is plain PyTorch around `svi.step`: shuffled minibatches,
# binarized afresh each epoch (`splits.train_batches`). Next to the VAE, and on the very same
# minibatches, we train a **plain autoencoder** of the same size in plain PyTorch: an encoder
# $e$ (784 → $H$ → 2) and a decoder $d$ (2 → $H$ → 784), trained to reconstruct,
# minimizing $-\log p(x\mid z = e(x)) = \mathrm{BCE}(d(e(x)), x)$: the VAE's reconstruction term
# with the code fixed at one point ($\sigma = 0$) and without the KL term. (The autoencoder's
# loss is therefore not comparable to the VAE's $-$ELBO, which also pays for the KL.)
# `pyro.validation_enabled(False)` skips the per-step input checks, which cost time.

# %%
STEPS = 100 if FAST else 2500
ae_encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, H), nn.ReLU(), nn.Linear(H, 2))
ae_decoder = nn.Sequential(nn.Linear(2, H), nn.ReLU(), nn.Linear(H, 784),
                           nn.Unflatten(1, (1, 28, 28)))
ae_optim = torch.optim.Adam([*ae_encoder.parameters(), *ae_decoder.parameters()], lr=LR)

generator = torch.Generator().manual_seed(0)
vae_losses, ae_losses = [], []
while len(vae_losses) < STEPS:
    for xb in splits.train_batches(BATCH, generator):
        with pyro.validation_enabled(False):
            vae_losses.append(svi.step(xb, N_TRAIN) / N_TRAIN)  # -ELBO per image
        ae_loss = F.binary_cross_entropy_with_logits(ae_decoder(ae_encoder(xb)), xb,
                                                     reduction="sum") / len(xb)
        ae_optim.zero_grad()
        ae_loss.backward()
        ae_optim.step()
        ae_losses.append(ae_loss.item())  # -log p(x | z = e(x)) per image
        if len(vae_losses) == STEPS:
            break
vae.eval()
first, last = slice(0, 50), slice(-50, None)
nb.print_table(["model (nats per image)", "first 50 steps", f"last 50 of {STEPS} steps"],
               [["VAE: -ELBO", np.mean(vae_losses[first]), np.mean(vae_losses[last])],
                ["autoencoder: -log p(x|e(x))", np.mean(ae_losses[first]),
                 np.mean(ae_losses[last])]])
assert np.mean(vae_losses[last]) < np.mean(vae_losses[first]) - 20
assert np.mean(ae_losses[last]) < np.mean(ae_losses[first]) - 20

# %% [markdown]
# ## 4. Why a plain autoencoder's latent space cannot be sampled
#
# An autoencoder compresses: $e$ maps each image to a code, $d$ maps codes back to
# images. To *generate* a new image we need a new code, but an autoencoder says nothing about
# which codes are plausible: its loss only involves the codes $e(x_n)$ of the training images,
# a cloud of points whose position, scale and shape are whatever training happened to
# produce. Its decoder was never asked to produce anything anywhere else, and wherever we draw
# new codes from, some land in regions with no training codes nearby: **holes**. The VAE
# differs twice: its decoder is trained on *noisy* codes $z \sim q(z\mid x)$, whole
# neighbourhoods rather than points, and the KL term of the ELBO pulls the codes of the
# training set as a whole towards $p(z) = \mathcal{N}(0, I)$, which is therefore the
# distribution to sample from.
#
# Both models here have a 2-d latent space, so we can look. Below, the encodings (for the VAE
# the posterior mean $\mu(x)$) of the first 2,000 training images, the points where the
# decoders were trained, coloured by their digit label; the straight line between the
# encodings of the first "1" and the first "0" of the training set; and the ellipses holding
# 95% of two distributions to draw codes from: $\mathcal{N}(0, I)$, and, for the autoencoder,
# the Gaussian fitted to its codes (its best chance without a prior).

# %%
from torchvision.datasets import MNIST

M = 2000
mnist = MNIST(nb.data_root(), train=True, download=False)
assert torch.equal(mnist.data[:M, None] / 255.0, splits.train[:M])  # same images, same order
labels = mnist.targets[:M]
x_train = torch.bernoulli(splits.train[:M], generator=torch.Generator().manual_seed(1))
images = {"train": x_train, "held out": splits.valid[:M], "reference": splits.valid[M:2 * M]}
encoders = {"autoencoder": ae_encoder, "VAE": lambda x: vae.encode(x).mean}
decoders = {"autoencoder": lambda z: torch.sigmoid(ae_decoder(z)),
            "VAE": lambda z: vae.decode(z).mean}
with torch.no_grad():
    codes = {m: {k: enc(x) for k, x in images.items()} for m, enc in encoders.items()}
fitted = {m: (c["train"].mean(0), torch.linalg.cholesky(torch.cov(c["train"].T)))
          for m, c in codes.items()}  # mean and Cholesky factor of the training codes
a, b = (labels == 1).nonzero()[0].item(), (labels == 0).nonzero()[0].item()
r95 = math.sqrt(-2 * math.log(0.05))  # radius of the 95% circle of N(0, I) in 2-d
angle = torch.linspace(0, 2 * math.pi, 100)
circle = torch.stack([angle.cos(), angle.sin()], -1)  # the unit circle

fig, axes = plt.subplots(1, 2, figsize=(11, 5))
for ax, model in zip(axes, codes):
    c = codes[model]["train"]
    sc = ax.scatter(c[:, 0], c[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5,
                    vmax=9.5)
    ax.plot(*(r95 * circle).T, "k-", lw=1.2, label="95% of N(0, I)")
    if model == "autoencoder":
        mean, chol = fitted[model]
        ax.plot(*(mean + r95 * circle @ chol.T).T, "k--", lw=1.2,
                label="95% of the Gaussian fitted to the codes")
    ax.plot(*c[[a, b]].T, "r-o", lw=1.5, ms=5, label=f"line: training image {a} (1) to {b} (0)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{model}: encodings of {M} training images", fontsize=10)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.legend(fontsize=7, loc="upper left")
fig.colorbar(sc, ax=axes, ticks=range(10), label="digit", shrink=0.8)
plt.show()
for model, c in codes.items():
    print(f"{model:>11}: training codes: mean {c['train'].mean(0).numpy().round(2)}, "
          f"sd {c['train'].std(0).numpy().round(2)}")

# %% [markdown]
# **Numbers for the holes.** Distances are measured in each model's own latent space, in
# units set by its own codes, so the numbers do not depend on the scale of the codes. Let $r$
# be the 99th percentile of the distance from the code of a **held-out** image (2,000
# validation images) to the nearest of the 2,000 training codes: a new real image lands within
# $r$ of a training code 99% of the time. For a set of 2,000 codes drawn from some distribution:
#
# * **draws in holes**: the fraction of the draws farther than $r$ from every training code,
#   i.e. where the decoder was never trained;
# * **training codes missed**: the fraction of the training codes with no draw within $r'$,
#   i.e. kinds of images the draws do not produce; $r'$ is the 99th percentile of the distance
#   from a training code to the nearest of the 2,000 held-out codes.
#
# A distribution that puts codes where real images go scores about 1% on both; the codes of
# 2,000 further validation images are that reference (its distance from exactly 1% shows the
# noise of these estimates).

# %%
def nearest(z, ref):
    """Distance from each row of z to the nearest row of ref."""
    return torch.cdist(z, ref).min(1).values


radius = {m: nearest(c["held out"], c["train"]).quantile(0.99).item() for m, c in codes.items()}
radius_missed = {m: nearest(c["train"], c["held out"]).quantile(0.99).item()
                 for m, c in codes.items()}


def in_hole(model, z):
    """Whether each code of z is farther than r from every training code of the model."""
    return nearest(z, codes[model]["train"]) > radius[model]


u = torch.randn(M, 2, generator=torch.Generator().manual_seed(2))  # standard normal draws
samplers = {"2,000 further images' codes (reference)": lambda m: codes[m]["reference"],
            "N(0, I)": lambda m: u,
            "Gaussian fitted to the training codes": lambda m: fitted[m][0] + u @ fitted[m][1].T}
holes, missed = {}, {}
for s, draw in samplers.items():
    for m in codes:
        z = draw(m)
        holes[s, m] = in_hole(m, z).float().mean().item()
        missed[s, m] = (nearest(codes[m]["train"], z) > radius_missed[m]).float().mean().item()
nb.print_table(["codes drawn from", "autoencoder: in holes", "missed", "VAE: in holes", "missed"],
               [[s, *(f"{f[s, m]:.1%}" for m in codes for f in (holes, missed))]
                for s in samplers])
print(f"r: autoencoder {radius['autoencoder']:.3f}, VAE {radius['VAE']:.3f}; r': autoencoder "
      f"{radius_missed['autoencoder']:.3f}, VAE {radius_missed['VAE']:.3f} (in latent units)")
REF = "2,000 further images' codes (reference)"
assert all(f[REF, m] < 0.04 for f in (holes, missed) for m in codes)  # about 1%, noisy
if FAST:
    print(f"fast mode ({STEPS} steps): the comparison is asserted in full mode only")
else:  # each sampler of the autoencoder falls into holes or misses codes far more than the VAE
    VAE_PRIOR = ("N(0, I)", "VAE")
    assert holes[VAE_PRIOR] < holes["N(0, I)", "autoencoder"]
    assert missed[VAE_PRIOR] < 0.5 * missed["N(0, I)", "autoencoder"]
    assert holes[VAE_PRIOR] < 0.5 * holes["Gaussian fitted to the training codes", "autoencoder"]

# %% [markdown]
# **Decoded.** Rows 1–2: twelve evenly spaced points on the straight line between the two
# training encodings of the scatter plots (the ends are the reconstructions of those two
# images). Rows 3–5: the twelve standard normal draws `Z_SHOW` of section 1, decoded by the
# autoencoder as they are, by the autoencoder after mapping them into its fitted Gaussian,
# and by the trained VAE (its prior: the generative story of section 1, after training).
# Each image is $\mathbb{E}[x\mid z]$, the pixel probabilities; a red frame marks a code in a hole.

# %%
t = torch.linspace(0, 1, 12)[:, None]
rows, titles, flags = [], [], []
with torch.no_grad():
    for label, model, z in (
        ("line, autoencoder", "autoencoder",
         (1 - t) * codes["autoencoder"]["train"][a] + t * codes["autoencoder"]["train"][b]),
        ("line, VAE", "VAE", (1 - t) * codes["VAE"]["train"][a] + t * codes["VAE"]["train"][b]),
        ("N(0, I), autoencoder", "autoencoder", Z_SHOW),
        ("fitted Gaussian, autoencoder", "autoencoder",
         fitted["autoencoder"][0] + Z_SHOW @ fitted["autoencoder"][1].T),
        ("N(0, I), VAE (trained)", "VAE", Z_SHOW),
    ):
        hole = in_hole(model, z)
        rows.append(decoders[model](z))
        flags.append(hole)
        titles.append(f"{label}: {int(hole.sum())} of 12 codes in holes")
fig, axes = show_rows(rows, titles)
for ax, hole in zip(axes, flags):
    for i in hole.nonzero().flatten().tolist():
        ax.add_patch(Rectangle((i * 30 - 0.5, -0.5), 28, 28, fill=False, ec="red", lw=1.5))
plt.show()

# %% [markdown]
# **A grid over each sampling distribution.** Instead of random draws, a regular grid of
# quantiles, $g_{ij} = \big(\Phi^{-1}(u_j),\, \Phi^{-1}(u_i)\big)$ with $u$ evenly spaced in $[0.05, 0.95]$
# ($\Phi$: the standard normal CDF), so that every tile stands for the same probability:
# decoded by the VAE at $z = g$ (its prior) and by the autoencoder at $z = \bar z + L g$ (its
# fitted Gaussian, mean $\bar z$ and Cholesky factor $L$ of its training codes). Red: codes
# in holes.

# %%
def mosaic(images, n, gap=2):
    """n * n images (row by row) as one array, white gaps between."""
    step = 28 + gap
    out = np.ones((n * step - gap, n * step - gap))
    for k, img in enumerate(images):
        i, j = divmod(k, n)
        out[i * step: i * step + 28, j * step: j * step + 28] = img.reshape(28, 28).numpy()
    return out


n = 10 if FAST else 15
qs = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
g = torch.stack(torch.meshgrid(qs, qs.flip(0), indexing="xy"), -1).reshape(-1, 2)  # top: high z2
fig, axes = plt.subplots(1, 2, figsize=(11, 5.8))
for ax, (label, model, z) in zip(axes, (
        ("autoencoder, fitted Gaussian", "autoencoder",
         fitted["autoencoder"][0] + g @ fitted["autoencoder"][1].T),
        ("VAE, prior N(0, I)", "VAE", g))):
    with torch.no_grad():
        hole = in_hole(model, z)
        ax.imshow(mosaic(decoders[model](z), n), cmap="gray", vmin=0, vmax=1)
    for k in hole.nonzero().flatten().tolist():
        i, j = divmod(k, n)
        ax.add_patch(Rectangle((j * 30 - 0.5, i * 30 - 0.5), 28, 28, fill=False, ec="red", lw=1.5))
    ax.set_title(f"{label}: {int(hole.sum())} of {n * n} codes in holes", fontsize=10)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# What the numbers and pictures say (in the saved full run; the fast run's models are barely
# trained):
#
# * The autoencoder's codes sit at an arbitrary place and scale, in clusters and streaks with
#   empty space between them. $\mathcal{N}(0, I)$ means nothing to it: its draws cover a small
#   part of the cloud and miss most kinds of digits (the blends of row 3). The Gaussian fitted
#   to the codes covers the cloud, but puts many of its draws in the empty space between the
#   clusters (the red tiles of the grid).
# * The VAE's codes fill the region of $\mathcal{N}(0, I)$ much more evenly: fewer of its prior
#   draws land in holes, and far fewer training codes are missed. That is what makes
#   `vae.prior().sample()` followed by `vae.decode` a generator. Not a perfect one: its numbers
#   stay above those of real images, because the KL term pulls the codes towards the prior
#   without matching it exactly (Hoffman & Johnson 2016), one reason for richer priors
#   (notebook 05).
# * A hole does not decode to noise: the decoder is a smooth function and returns *some*
#   image, often a blend of digits or a distorted one. The harm is that the sampler spends its
#   draws where the decoder was never corrected by data. Conversely, a code outside the holes
#   is no guarantee of a good image (an autoencoder's clusters overlap, and so do its blends).

# %% [markdown]
# ## 5. Where to go next
#
# The primer covered what the other notebooks take for granted. In order:
#
# * [`01_elbo.py`](01_elbo.ipynb): the ELBO derived twice and checked against exact
#   $\log p(x)$; the Pyro `model`/`guide` and the `pyrovae.objectives` function behind each term.
# * [`02_gaussian_kl.py`](02_gaussian_kl.ipynb): the KL divergence between Gaussians, in closed form and by Monte Carlo.
# * [`03_reparameterization.py`](03_reparameterization.ipynb): why $z = \mu + \sigma\varepsilon$; score-function
#   against reparameterized gradients.
# * [`04_train_mnist.py`](04_train_mnist.ipynb): training with the library's entry points
#   (`load_config`, `fit`), the $\beta$ trade-off, samples and the 2-d manifold.
# * [`05_priors_and_likelihoods.py`](05_priors_and_likelihoods.ipynb): other priors (mixture, VampPrior) and
#   likelihoods, swapped by config.
# * [`06_posterior_checks.py`](06_posterior_checks.ipynb): how good is $q(z\mid x)$? Importance sampling, PSIS,
#   the amortization gap, NUTS.
# * [`07_tighter_bounds.py`](07_tighter_bounds.ipynb): the importance-weighted bound and its DReG gradients.
#
# Each `.py` is the source of the `.ipynb` beside it (the same cells, with the outputs of a full run).
#
# ## References
#
# * D. P. Kingma, M. Welling (2013). Auto-Encoding Variational Bayes. [arXiv:1312.6114](https://arxiv.org/abs/1312.6114).
# * D. J. Rezende, S. Mohamed, D. Wierstra (2014). Stochastic Backpropagation and Approximate
#   Inference in Deep Generative Models. ICML. [arXiv:1401.4082](https://arxiv.org/abs/1401.4082).
# * The Pyro documentation: [docs.pyro.ai](https://docs.pyro.ai); the tutorials on
#   [SVI](https://pyro.ai/examples/svi_part_i.html), [tensor shapes](https://pyro.ai/examples/tensor_shapes.html)
#   (batch and event shapes, plates) and [the VAE](https://pyro.ai/examples/vae.html).
# * E. Bingham et al. (2019). Pyro: Deep Universal Probabilistic Programming. JMLR 20(28).
# * M. D. Hoffman, M. J. Johnson (2016). ELBO surgery: yet another way to carve up the
#   variational evidence lower bound. NIPS Workshop on Advances in Approximate Bayesian Inference.
