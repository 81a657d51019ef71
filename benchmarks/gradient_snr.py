"""Signal-to-noise ratio of the encoder's gradient against K, for the IWAE bound and its doubly
reparameterized gradient (Rainforth et al. 2018, Fig. 1; Tucker et al. 2018).

    PYROVAE_DATA_MIRROR=../shared/data python benchmarks/gradient_snr.py \
        --json benchmarks/results/gradient_snr_cpu.json --plot docs/figures/gradient_snr.png

A model of ``--config`` (default: the Burda et al. one-layer VAE) is trained for ``--epochs``
with the ELBO (or loaded from ``--model``); then, on a fixed minibatch of ``--examples`` test
images, ``--replicates`` independent gradients of each objective are drawn for every K. Per
parameter coordinate, SNR = |mean| / standard deviation of the replicates; the table gives the
median over the encoder's coordinates and over the decoder's (the same numbers for both
objectives: their decoder gradients are identical). For large K (K much larger than the variance
of the normalized importance weights), IWAE's encoder SNR falls like 1/sqrt(K) while DReG's and
the decoder's rise like sqrt(K) (Rainforth et al. 2018; Tucker et al. 2018); a model trained for
a few epochs is far from that regime, and the measured trends are weaker (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_json  # noqa: E402

from pyrovae import checkpoint, fit, objectives  # noqa: E402
from pyrovae.config import CONFIG_DIR, load_config  # noqa: E402
from pyrovae.files import atomic_write  # noqa: E402


def snr(vae, name: str, k: int, x: torch.Tensor, replicates: int, seed: int) -> dict:
    """Median |mean| / std over the encoder's and the decoder's gradient coordinates."""
    objective = objectives.build(name, vae, k)
    groups = {"encoder": [p for n, p in vae.named_parameters() if n.startswith("encoder")],
              "decoder": [p for n, p in vae.named_parameters() if n.startswith("decoder")]}
    params = groups["encoder"] + groups["decoder"]
    torch.manual_seed(seed)
    grads = []
    for _ in range(replicates):
        g = torch.autograd.grad(objective.loss(x), params)
        grads.append(torch.cat([t.reshape(-1) for t in g]).double())
    g = torch.stack(grads)
    ratio = g.mean(0).abs() / g.std(0).clamp_min(1e-30)
    n_enc = sum(p.numel() for p in groups["encoder"])
    return {"encoder": ratio[:n_enc].median().item(), "decoder": ratio[n_enc:].median().item()}


def plot(rows: list[dict], path: str | Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, style in (("iwae", "o-"), ("iwae_dreg", "s-")):
        pts = [r for r in rows if r["objective"] == name]
        ks = [r["k"] for r in pts]
        ax.loglog(ks, [r["encoder"] for r in pts], style, label=f"{name}: encoder")
        if name == "iwae":
            ax.loglog(ks, [r["decoder"] for r in pts], "^--", label="iwae and iwae_dreg: decoder")
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("median gradient SNR, |mean| / std")
    ax.set_title("Gradient signal-to-noise ratio against K (Rainforth et al. 2018)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str((CONFIG_DIR / "burda_vae.yaml").relative_to(
        CONFIG_DIR.parent)))
    parser.add_argument("--model", help="a run folder or checkpoint instead of training")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            vae = checkpoint.load(args.model)
            cfg = vae.config
        else:
            cfg = load_config(args.config, [f"train.epochs={args.epochs}", "train.progress=false",
                                            "train.engine=torch",
                                            "train.device=cpu", f"run_dir={tmp}/run"])
            vae = checkpoint.load(fit.fit(cfg, log=lambda *a: None))
        splits = fit.load_splits(cfg, torch.device("cpu"))
    x = splits.test[: args.examples]
    vae.train()
    rows = []
    for k in args.ks:
        for name in ("iwae", "iwae_dreg"):
            row = {"objective": name, "k": k, **snr(vae, name, k, x, args.replicates, seed=k)}
            rows.append(row)
            print(f"K = {k:>4}  {name:<10} encoder SNR {row['encoder']:.4f}  decoder SNR "
                  f"{row['decoder']:.4f}", flush=True)
    out = {"config": args.config, "model": args.model, "epochs": args.epochs,
           "examples": args.examples, "replicates": args.replicates, "rows": rows}
    write_json(args.json, out)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
