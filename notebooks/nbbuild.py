"""The machinery shared by ``notebooks/build_*.py``: cells, notebooks, the runner and the CLI.

A build script holds only its notebooks' contents: functions returning lists of markdown and code
cells written as plain strings (made with ``md`` and ``code``), so that a review reads the
derivations and the checks side by side and a change is one edit + one rebuild, and a table
``{key: (file name, cell function)}``. Its ``main`` hands that table to :func:`cli` here, which
parses the command line, writes each notebook (full-mode settings substituted), executes it with
nbclient and refuses outputs that name an absolute path of this machine, then saves it. The
scripts run as ``python notebooks/build_X.py``, so this module is imported as their sibling.

The notebooks run with ``notebooks/`` as working directory (the data mirror is then
``../../shared/data``, or ``PYROVAE_DATA_MIRROR``); run folders and the data cache live under
the system's temporary folder. The committed notebooks hold the outputs of a full run
(``PYROVAE_FAST`` unset), which saves into ``notebooks/``; a fast run (``--fast`` or
``PYROVAE_FAST=1``, what CI runs) never overwrites them: it saves only where ``--out`` says.
``--no-save`` executes and checks but saves nothing; ``--no-execute`` only writes (into
``notebooks/`` or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "python3"
# Absolute paths of this machine (or of another) that must not appear in saved outputs.
FORBIDDEN = re.compile(r"/work\b|/tmp\b|/root\b|/home/|/Users/|[A-Za-z]:\\\\")

Cells = list[nbformat.NotebookNode]
Notebooks = Mapping[str, tuple[str, Callable[[], Cells]]]  # key -> (file name, cell function)
Settings = Mapping[str, Mapping[str, str]]  # key -> {placeholder: full-mode value}


# ------------------------------------------------------------------------------------------
# cells


def md(text: str) -> nbformat.NotebookNode:
    """A markdown cell from an indented (triple-quoted) string."""
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    """A code cell from an indented (triple-quoted) string."""
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


# Cell sources that several notebooks share word for word. They start at column 0, so they can
# be concatenated with a script's own source before md()/code() dedents it.

# The last cell of notebooks 01-03.
FOOTER = r'''
print(f"notebook ran in {time.time() - T0:.0f} s ({'FAST' if FAST else 'full'} mode)")
'''

# The last cell of notebooks 04-06: their temporary run folders go, then the timing line.
FOOTER_RUNS = r'''
shutil.rmtree(RUNS, ignore_errors=True)  # the temporary run folders''' + FOOTER

# The end of the setup cell of notebooks 04-06 (after FAST): data, run folders, device, clock.
SETUP_PATHS = r'''
# The read-only data mirror (never written to) and a cache folder for the copied files.
MIRROR = os.environ.get("PYROVAE_DATA_MIRROR") or "../../shared/data"
if not os.path.isabs(MIRROR) and not os.path.isdir(MIRROR) and os.path.isdir(os.path.join("..", MIRROR)):
    MIRROR = os.path.join("..", MIRROR)  # the variable was given relative to the repository root
DATA_ROOT = os.environ.get("PYROVAE_DATA_ROOT") or os.path.join(
    tempfile.gettempdir(), "pyrovae-notebook-data"
)
RUNS = tempfile.mkdtemp(prefix="pyrovae-notebook-runs-")  # run folders, removed at the end
CPU = torch.device("cpu")
T0 = time.time()
print("mode:", "FAST" if FAST else "full")
'''  # noqa: E501  (notebook code)

# A helper function of notebooks 04-06 (part of their helper cell).
PRINT_TABLE = r'''
def print_table(header, rows):
    """A plain-text table: header strings, rows of values (floats printed with 2 decimals)."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
'''


# ------------------------------------------------------------------------------------------
# notebooks


def new_notebook(cells: Cells, settings: Mapping[str, str] | None = None) -> nbformat.NotebookNode:
    """A notebook of these cells for the python3 kernel; each ``settings`` placeholder is
    replaced by its (full-mode) value in every cell's source."""
    for cell in cells:
        for placeholder, value in (settings or {}).items():
            cell.source = cell.source.replace(placeholder, value)
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def leaked_paths(nb: nbformat.NotebookNode) -> list[str]:
    """Lines of the notebook's outputs that name an absolute path of this machine."""
    hits = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts = [out.get("text", ""), out.get("evalue", "")]
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            texts += out.get("traceback", [])
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                hits += [line for line in text.splitlines() if FORBIDDEN.search(line)]
    return hits


def report_timing(nb: nbformat.NotebookNode) -> None:
    """Print the five slowest code cells and drop the timing metadata."""
    rows = []
    for i, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code" and timing and "iopub.status.idle" in timing:
            t0 = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            t1 = datetime.fromisoformat(timing["iopub.status.idle"].replace("Z", "+00:00"))
            rows.append(((t1 - t0).total_seconds(), i, cell.source.splitlines()[0][:60]))
    for seconds, i, first in sorted(rows, reverse=True)[:5]:
        print(f"   cell {i:>2}: {seconds:6.1f} s  {first}")


def execute(nb: nbformat.NotebookNode, timeout: int, timing: bool = False,
            coalesce_streams: bool = False) -> float:
    """Run every cell in a fresh kernel with ``notebooks/`` as working directory (raises on the
    first failing cell); returns the seconds it took."""
    start = time.time()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL, record_timing=timing,
        coalesce_streams=coalesce_streams, resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()
    return time.time() - start


def shown(path: Path) -> str:
    """The path relative to the repository, or only its name (no machine path in the log)."""
    path = path.resolve()
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else path.name


# ------------------------------------------------------------------------------------------
# the runner and the command line


def fast_mode() -> bool:
    """Whether the notebooks run in fast mode (the kernel inherits the environment)."""
    return os.environ.get("PYROVAE_FAST") == "1"


def build_all(notebooks: Notebooks, keys: Iterable[str], out_dir: Path | None, *,
              settings: Settings | None = None, run: bool = True, timeout: int = 1800,
              timing: bool = False, coalesce_streams: bool = False) -> int:
    """Write, execute (if ``run``), check and save (into ``out_dir``, unless it is None) the
    notebooks ``keys`` of the table; returns the exit status (1: an output leaks a path)."""
    mode = "FAST" if fast_mode() else "full"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        name, make = notebooks[key]
        nb = new_notebook(make(), (settings or {}).get(key))
        if run:
            seconds = execute(nb, timeout, timing, coalesce_streams)
            print(f"{name}: executed in {seconds:.0f} s ({mode} mode)", flush=True)
            if timing:
                report_timing(nb)
            leaks = leaked_paths(nb)
            if leaks:
                print(f"{name}: outputs contain absolute paths:", *leaks[:5], sep="\n  ")
                return 1
        nbformat.validate(nb)
        if out_dir is None:
            done = f"{mode.lower()} run passed" if run else "built, not executed"
            print(f"{name}: {done}; not saved (give --out DIR to keep it)", flush=True)
            continue
        path = out_dir / name
        nbformat.write(nb, path)
        print(f"wrote {shown(path)}", flush=True)
    return 0


def examples(prog: str, keys: list[str]) -> str:
    """The usage examples shown by ``--help`` (``prog``: the script's file name)."""
    run = f"python notebooks/{prog}"
    rows = [
        (run, "write + execute all (full run), save into notebooks/"),
        (f"{run} --fast", "execute in fast mode (what CI runs); save nothing"),
        (f"PYROVAE_FAST=1 {run}", "the same as --fast"),
        (f"{run} --fast --out DIR", "fast mode, executed notebooks saved into DIR"),
        (f"{run} {' '.join(keys[-2:])}", "only some notebooks"),
        (f"{run} --no-save", "execute and check; leave the files as they are"),
        (f"{run} --no-execute", "only write them (no outputs), into notebooks/ or --out"),
    ]
    width = max(len(command) for command, _ in rows)
    return "examples:\n" + "\n".join(f"  {c.ljust(width)}  # {what}" for c, what in rows)


def parser_for(notebooks: Notebooks, doc: str, timeout: int) -> argparse.ArgumentParser:
    """The command line of a build script: which notebooks, mode, where to save, timing."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.epilog = examples(parser.prog, list(notebooks))
    parser.add_argument("which", nargs="*", help=f"notebooks to build: {', '.join(notebooks)} "
                        "(default: all)")
    parser.add_argument("--fast", action="store_true",
                        help="execute in fast mode (PYROVAE_FAST=1, as CI); saves nothing "
                        "unless --out is given")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, metavar="DIR", help="folder to save the notebooks into "
                       "(default: notebooks/ for a full run; a fast run saves only with --out)")
    where.add_argument("--no-save", action="store_true",
                       help="execute and check, but leave the notebooks on disk as they are")
    parser.add_argument("--no-execute", action="store_true", help="write without executing")
    parser.add_argument("--timeout", type=int, default=timeout, help="per-cell timeout (s)")
    parser.add_argument("--timing", action="store_true", help="print the slowest cells")
    return parser


def cli(notebooks: Notebooks, doc: str, argv: list[str] | None = None, *,
        settings: Settings | None = None, timeout: int = 1800,
        coalesce_streams: bool = False) -> int:
    """A build script's command line: parse ``argv`` and build the chosen notebooks."""
    parser = parser_for(notebooks, doc, timeout)
    args = parser.parse_args(argv)
    unknown = [key for key in args.which if key not in notebooks]
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}: choose from {list(notebooks)}")
    if args.fast:
        os.environ["PYROVAE_FAST"] = "1"  # the kernel inherits the environment
    out_dir = args.out
    if out_dir is None and not args.no_save and not (fast_mode() and not args.no_execute):
        out_dir = HERE
    return build_all(notebooks, args.which or list(notebooks), out_dir, settings=settings,
                     run=not args.no_execute, timeout=args.timeout, timing=args.timing,
                     coalesce_streams=coalesce_streams)
