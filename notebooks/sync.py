"""Write each notebook ``NN_name.ipynb`` from its source ``NN_name.py`` (jupytext percent format),
keeping the saved outputs of every cell whose source is unchanged; or execute notebooks and save
their outputs.

    python notebooks/sync.py                   # .py -> .ipynb, outputs of unchanged cells kept
    python notebooks/sync.py --check           # exit 1 if a .ipynb disagrees with its .py
    python notebooks/sync.py --execute 04 06   # full run of 04 and 06, outputs saved
    PYROVAE_FAST=1 python notebooks/sync.py --execute --out DIR   # fast mode, saved into DIR

The .py is the source to edit, lint and diff; the .ipynb holds the same cells with the outputs of a
full run (``PYROVAE_FAST`` unset). Cell ids are derived from the cell's content, so a rebuild
changes only the cells that changed; the execution timing metadata is dropped. A run executes
with ``notebooks/`` as working directory, in a fresh kernel, and refuses to save outputs that
name an absolute path of this machine. A fast run never overwrites the notebooks here.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "python3"
# Absolute paths of this machine (or of another) that must not appear in saved outputs.
FORBIDDEN = re.compile(r"/work\b|/tmp\b|/root\b|/home/|/Users/|[A-Za-z]:\\\\")
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": KERNEL},
    "language_info": {"name": "python"},
}


def sources() -> list[Path]:
    """The notebook sources: ``NN_name.py`` in this folder."""
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def cells_of(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(cell type, source) of every cell: what a .py and its .ipynb must agree on."""
    return [(c.cell_type, c.source) for c in nb.cells]


def cell_id(cell: nbformat.NotebookNode, seen: set[str]) -> str:
    """An id from the cell's type and source (a suffix tells identical cells apart)."""
    base = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
    new, n = base, 1
    while new in seen:
        n += 1
        new = f"{base}-{n}"
    seen.add(new)
    return new


def build(source: Path, saved: nbformat.NotebookNode | None) -> nbformat.NotebookNode:
    """The notebook of ``source``, with the outputs of ``saved`` for cells whose type and
    source are unchanged (matched in order), stable ids and no timing metadata."""
    nb = jupytext.read(source)
    old: dict[tuple[str, str], list[nbformat.NotebookNode]] = {}
    for cell in saved.cells if saved is not None else []:
        old.setdefault((cell.cell_type, cell.source), []).append(cell)
    seen: set[str] = set()
    cells = []
    for cell in nb.cells:
        match = old.get((cell.cell_type, cell.source))
        prev = match.pop(0) if match else None
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
            if prev is not None:
                new.outputs = prev.get("outputs", [])
                new.execution_count = prev.get("execution_count")
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.id = cell_id(new, seen)
        cells.append(new)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = saved.metadata if saved is not None else METADATA
    out.metadata.pop("jupytext", None)
    return out


def leaked_paths(nb: nbformat.NotebookNode) -> list[str]:
    """Lines of the notebook's outputs that name an absolute path of this machine."""
    hits = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts = [out.get("text", ""), out.get("evalue", ""), *out.get("traceback", [])]
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                hits += [line for line in text.splitlines() if FORBIDDEN.search(line)]
    return hits


def execute(nb: nbformat.NotebookNode, timeout: int) -> None:
    """Run every cell in a fresh kernel with ``notebooks/`` as working directory (raises on
    the first failing cell); the timing metadata is dropped."""
    NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, coalesce_streams=True,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def main(argv: list[str] | None = None) -> int:
    head, examples = __doc__.split("\n\n")[:2]
    parser = argparse.ArgumentParser(description=head,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=examples)
    parser.add_argument("which", nargs="*", help="notebook numbers or names (default: all)")
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument("--execute", action="store_true", help="execute, then save")
    parser.add_argument("--out", type=Path, metavar="DIR", help="save into DIR")
    parser.add_argument("--timeout", type=int, default=1800, help="per-cell timeout (s)")
    args = parser.parse_args(argv)
    chosen = [p for p in sources()
              if not args.which or any(p.stem == w or p.stem[:2] == w for w in args.which)]
    if not chosen:
        parser.error(f"no notebook matches {args.which}: choose from "
                     f"{[p.stem for p in sources()]}")
    fast = os.environ.get("PYROVAE_FAST") == "1"
    if args.execute and fast and args.out is None:
        parser.error("a fast run (PYROVAE_FAST=1) saves only with --out DIR")
    status = 0
    for source in chosen:
        path = source.with_suffix(".ipynb")
        saved = nbformat.read(path, as_version=4) if path.exists() else None
        nb = build(source, saved)
        if args.check:
            if saved is None or cells_of(saved) != cells_of(nb):
                print(f"{path.name} disagrees with {source.name}: run python notebooks/sync.py")
                status = 1
            continue
        if args.execute:
            execute(nb, args.timeout)
            leaks = leaked_paths(nb)
            if leaks:
                print(f"{path.name}: outputs name absolute paths:", *leaks[:5], sep="\n  ")
                return 1
        nbformat.validate(nb)
        target = (args.out / path.name) if args.out else path
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        missing = sum(1 for c in nb.cells if c.cell_type == "code" and not c.execution_count)
        note = f" ({missing} code cells without outputs)" if missing else ""
        print(f"wrote {target.name}{note}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
