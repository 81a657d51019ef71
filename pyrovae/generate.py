"""``python -m pyrovae.generate RUN_DIR``: decode a given z, or draw samples, to a PNG.

    python -m pyrovae.generate runs/mnist_z8 \
        --z "0.279,1.219,-0.458,0.547,1.738,-1.890,-0.543,0.505"
    python -m pyrovae.generate runs/mnist --n 64 --out samples.png

RUN_DIR is a run folder (its ``best.pt``, the best validation ELBO, else its ``checkpoint.pt``),
one of its ``.pt`` files, or the folder above the runs (a config's ``run_dir``: its latest run,
named on stderr). The image goes to ``--out``, or else into the run
folder as ``generated.png`` (``generated_1.png``, ... when that exists: nothing is overwritten
unless ``--force``); it prints where. Images are enlarged (nearest neighbour, whole pixels) to at
least 256 pixels on the short side, so that one 28 x 28 digit can be seen.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

from pyrovae import cli, plots
from pyrovae.checkpoint import load, resolve_run
from pyrovae.errors import PyrovaeError
from pyrovae.files import atomic_write
from pyrovae.model import VAE

#: The short side of a written image is enlarged to at least this many pixels.
MIN_SIDE = 256


def parse_z(text: str, z_dim: int) -> torch.Tensor:
    """A comma-separated latent vector of exactly ``z_dim`` finite numbers, as a (1, z_dim)
    batch."""
    fields = text.replace(" ", "").split(",")
    if len(fields) > 1 and fields[-1] == "":
        fields.pop()  # a trailing comma
    if "" in fields:
        raise PyrovaeError(f"--z has an empty field in {text!r} (two commas in a row?): give "
                           f"exactly {z_dim} comma-separated numbers")
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise PyrovaeError(f"--z must be comma-separated numbers, got {text!r}") from None
    if len(values) != z_dim:
        raise PyrovaeError(f"--z has {len(values)} numbers but this model's z_dim is {z_dim}: "
                           f"give exactly {z_dim} comma-separated values")
    z = torch.tensor(values).unsqueeze(0)
    if not torch.isfinite(z).all():
        raise PyrovaeError(f"--z must hold finite numbers, got {text!r}")
    return z


def enlarge(image: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """``image`` (C, H, W) repeated ``k`` times along H and W (nearest neighbour, whole pixels),
    with the smallest ``k`` that makes the short side at least ``min_side``."""
    k = max(1, math.ceil(min_side / min(image.shape[-2:])))
    return image.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


@torch.no_grad()
def decode_to_png(vae: VAE, z: torch.Tensor, path: str | Path,
                  min_side: int = MIN_SIDE) -> Path:
    """E[x|z] for each row of ``z``, as an image grid (8 per row), enlarged to at least
    ``min_side`` pixels on the short side, written atomically."""
    images = plots.decoded_mean(vae, z.to(next(vae.parameters())))
    grid = enlarge(plots.image_grid(images, vae.x_shape, nrow=min(8, z.shape[0])), min_side)
    return atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))


#: The most samples one grid holds (``--n``).
MAX_SAMPLES = 10_000


def free_name(folder: Path, stem: str = "generated") -> Path:
    """``folder/stem.png``, or ``stem_1.png``, ``stem_2.png``, ...: the first that does not
    exist."""
    path, n = folder / f"{stem}.png", 0
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n}.png"
    return path


def output_path(out: str | None, run: Path, force: bool) -> Path:
    if out is None:
        return free_name(run if run.is_dir() else run.parent)
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise PyrovaeError(f"--out must name a .png file, got {str(path)!r}")
    if not path.parent.is_dir():
        raise PyrovaeError(f"the folder of --out ({path.parent}) does not exist: create it")
    if path.is_dir():
        raise PyrovaeError(f"--out {path} is a folder: name a .png file")
    if path.exists() and not force:
        raise PyrovaeError(f"{path} exists: choose another --out, or add --force to replace it")
    return path


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(prog="python -m pyrovae.generate", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN_DIR",
                        help="run folder, checkpoint file, or the folder above the runs")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--z", help="a latent vector: z_dim comma-separated numbers")
    what.add_argument("--n", type=int, help="draw this many samples z ~ p(z) (default 64)")
    parser.add_argument("--out", help="PNG file (default: RUN_DIR/generated.png, or "
                        "generated_N.png if that exists)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument("--seed", type=int, default=0, help="seed for --n")
    args = parser.parse_args(argv)
    run, note = resolve_run(args.run)
    if note is not None:
        cli.log(f"pyrovae.generate: using {run}, {note}")
    out = output_path(args.out, run, args.force)
    vae = load(run, log=None)
    if args.z is not None:
        z = parse_z(args.z, vae.z_dim)
    else:
        n = 64 if args.n is None else args.n
        if not 1 <= n <= MAX_SAMPLES:
            raise PyrovaeError(f"--n must be between 1 and {MAX_SAMPLES:,} (one image grid), got "
                               f"{n}: for more, run generate several times with other --seed")
        if not 0 <= args.seed < 2**63:
            raise PyrovaeError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
        torch.manual_seed(args.seed)
        z = vae.prior().sample((n,))
    decode_to_png(vae, z, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
