"""``python -m pyrovae.generate RUN_DIR``: decode a given z, or draw samples, to a PNG.

    python -m pyrovae.generate runs/mnist_z8 \
        --z "0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505"
    python -m pyrovae.generate runs/mnist --n 64 --out samples.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pyrovae import plots
from pyrovae.checkpoint import load
from pyrovae.errors import PyrovaeError
from pyrovae.model import VAE


def parse_z(text: str, z_dim: int) -> torch.Tensor:
    """A comma-separated latent vector of exactly ``z_dim`` finite numbers, as a (1, z_dim)
    batch."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise PyrovaeError(f"--z must be comma-separated numbers, got {text!r}") from None
    if len(values) != z_dim:
        raise PyrovaeError(f"--z has {len(values)} numbers but this model's z_dim is {z_dim}: "
                           f"give exactly {z_dim} comma-separated values")
    z = torch.tensor(values).unsqueeze(0)
    if not torch.isfinite(z).all():
        raise PyrovaeError(f"--z must hold finite numbers, got {text!r}")
    return z


@torch.no_grad()
def decode_to_png(vae: VAE, z: torch.Tensor, path: str | Path) -> Path:
    """E[x|z] for each row of ``z``, saved as an image grid."""
    images = plots.decoded_mean(vae, z.to(next(vae.parameters())))
    return plots.save_grid(images, vae.x_shape, path, nrow=min(8, z.shape[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrovae.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN_DIR", help="run folder or checkpoint file")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--z", help="a latent vector: z_dim comma-separated numbers")
    what.add_argument("--n", type=int, help="draw this many samples z ~ p(z) (default 64)")
    parser.add_argument("--out", help="PNG file (default RUN_DIR/generated.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --n")
    args = parser.parse_args(argv)
    try:
        vae = load(args.run)
        out = Path(args.out) if args.out else Path(args.run) / "generated.png"
        if out.suffix.lower() != ".png":
            raise PyrovaeError(f"--out must name a .png file, got {str(out)!r}")
        if not out.parent.is_dir():
            raise PyrovaeError(f"the folder of --out ({out.parent}) does not exist")
        if args.z is not None:
            z = parse_z(args.z, vae.z_dim)
        else:
            n = 64 if args.n is None else args.n
            if n < 1:
                raise PyrovaeError(f"--n must be >= 1, got {n}")
            torch.manual_seed(args.seed)
            z = vae.prior().sample((n,))
        decode_to_png(vae, z, out)
    except PyrovaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
