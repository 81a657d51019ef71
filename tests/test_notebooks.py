"""The notebooks: each ``notebooks/NN_name.py`` (jupytext percent format, the source) agrees with
its ``NN_name.ipynb`` (the same cells with the outputs of a full run); a rebuild rewrites nothing;
the saved outputs hold no errors, no timing metadata and no machine paths; every notebook
executes in fast mode (PYROVAE_FAST=1); and a notebook's data cell downloads through torchvision
where there is no data mirror, or says in one line what to do when it cannot."""

import ast
import inspect
import json
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from pyrovae import notebook as nb_helper

HERE = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(HERE))
import sync  # noqa: E402  (notebooks/sync.py: the .py -> .ipynb writer)

SOURCES = sync.sources()
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
MACHINE_PATHS = tuple(f"/{top}/" for top in ("work", "tmp", "root", "home"))  # never in outputs


def test_every_notebook_has_its_source():
    assert SOURCES, "no notebook sources found in notebooks/"
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in SOURCES}
    numbers = sorted(p.stem.split("_", 1)[0] for p in SOURCES)  # NN_name: one notebook per NN
    assert all(n.isdigit() and len(n) == 2 for n in numbers) and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_agrees_with_its_source(source):
    """Same cells, same types, same sources (as jupytext reads the .py); else run
    ``python notebooks/sync.py``."""
    text = jupytext.read(source)
    saved = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert sync.cells_of(saved) == sync.cells_of(text), (
        f"{source.with_suffix('.ipynb').name} disagrees with {source.name}: "
        "run python notebooks/sync.py"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_rebuilding_rewrites_nothing(source):
    """Cell ids come from the cells' contents and outputs are kept: writing the .ipynb again
    from its source gives the file as it is (no new ids, no timing metadata)."""
    path = source.with_suffix(".ipynb")
    rebuilt = sync.build(source, nbformat.read(path, as_version=4))
    assert nbformat.writes(rebuilt) + "\n" == path.read_text()


def test_cell_ids_depend_on_content_only():
    a = nbformat.v4.new_code_cell("x = 1")
    assert sync.cell_id(a, set()) == sync.cell_id(nbformat.v4.new_code_cell("x = 1"), set())
    assert sync.cell_id(a, set()) != sync.cell_id(nbformat.v4.new_markdown_cell("x = 1"), set())
    seen = set()
    assert sync.cell_id(a, seen) != sync.cell_id(a, seen)  # identical cells told apart


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_outputs_are_from_a_run_and_hold_no_machine_paths(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "run it fully before saving"
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    assert not any("execution" in c.get("metadata", {}) for c in code), "timing metadata"
    text = json.dumps([c.get("outputs", []) for c in code])
    assert not any(p in text for p in MACHINE_PATHS)


def stale_sources(nb) -> list[str]:
    """The expressions X of the cells printing ``inspect.getsource(X)`` whose saved output does
    not hold X's current source (X resolved with the notebook's own imports; an X that they do
    not resolve, such as a loop variable, is passed over)."""
    cells = [c for c in nb.cells if c.cell_type == "code"]
    trees = []
    for cell in cells:
        try:
            trees.append(ast.parse(cell.source))
        except SyntaxError:  # a cell magic
            trees.append(ast.Module([], []))
    namespace: dict = {}
    imports = [n for tree in trees for n in tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(imports, []), "<imports>", "exec"), namespace)  # noqa: S102
    stale = []
    for cell, tree in zip(cells, trees):
        printed = "".join(o.get("text", "") for o in cell.get("outputs", [])
                          if o.get("output_type") == "stream")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getsource" and node.args):
                expr = ast.unparse(node.args[0])
                try:
                    obj = eval(expr, namespace)  # noqa: S307  (a name or attribute of an import)
                except Exception:  # noqa: BLE001  (not resolvable from the imports alone)
                    continue
                if inspect.getsource(obj) not in printed:
                    stale.append(expr)
    return stale


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_printed_library_source_is_the_current_source(path):
    """A notebook that shows a function of the library with inspect.getsource shows it as it is
    now; else re-execute it (python notebooks/sync.py --execute NN)."""
    assert not stale_sources(nbformat.read(path, as_version=4)), path.name


def test_a_stale_printed_source_is_seen():
    """The test double: notebook 01 with the printed source of closed_form_kl cut short."""
    nb = nbformat.read(HERE / "01_elbo.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "getsource(objectives.closed_form_kl)" in cell.source:
            for out in cell.outputs:
                if out.get("output_type") == "stream":
                    out["text"] = out["text"].replace("def closed_form_kl", "def closed_form")
    assert "objectives.closed_form_kl" in stale_sources(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, mirror, data_root, monkeypatch):
    monkeypatch.setenv("PYROVAE_FAST", "1")
    monkeypatch.setenv("PYROVAE_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("PYROVAE_DATA_ROOT", str(data_root))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell


# --------------------------------------------------------------------------------------------
# where the data come from

def test_data_mirror_defaults_to_the_development_mirror_where_it_exists(monkeypatch, tmp_path):
    monkeypatch.delenv("PYROVAE_DATA_MIRROR", raising=False)
    monkeypatch.setattr(nb_helper, "DEV_MIRROR", tmp_path)
    assert nb_helper.data_mirror() == str(tmp_path)
    monkeypatch.setattr(nb_helper, "DEV_MIRROR", tmp_path / "absent")  # a laptop, Colab, Binder
    assert nb_helper.data_mirror() is None  # torchvision downloads
    monkeypatch.setenv("PYROVAE_DATA_MIRROR", "")  # set and empty: no mirror
    monkeypatch.setattr(nb_helper, "DEV_MIRROR", tmp_path)
    assert nb_helper.data_mirror() is None
    monkeypatch.setenv("PYROVAE_DATA_MIRROR", str(tmp_path / "m"))
    assert nb_helper.data_mirror() == str(tmp_path / "m")
    monkeypatch.setenv("PYROVAE_DATA_ROOT", str(tmp_path / "cache"))
    assert nb_helper.data_overrides() == [f"data.root={tmp_path / 'cache'}",
                                          f"data.mirror={tmp_path / 'm'}"]


# Run first in the kernel: no development mirror, and a fake internet that serves small fake
# MNIST files (md5s declared to match) to torchvision's downloader, or refuses every request.
FAKE_INTERNET = r'''
import gzip, io, urllib.error, urllib.request
import numpy as np
import torchvision
from pyrovae import notebook as nb
from pyrovae.data.sources.base import md5_of
from pyrovae.data.sources.mnist import idx_bytes

nb.DEV_MIRROR = nb.DEV_MIRROR.parent / "no-such-mirror"  # as on a laptop, Colab or Binder
OFFLINE = {offline}
rng = np.random.default_rng(0)
sizes = {{"train": 10_100, "t10k": 200}}  # MNIST's default validation split takes 10,000
files = {{}}
for name, _ in torchvision.datasets.MNIST.resources:
    n = sizes["train" if name.startswith("train") else "t10k"]
    array = ((rng.random((n, 28, 28)) < 0.2) * 255 if "images" in name
             else rng.integers(0, 10, n)).astype(np.uint8)
    files[name] = gzip.compress(idx_bytes(array), compresslevel=1, mtime=0)
torchvision.datasets.MNIST.resources = [(name, md5_of(data)) for name, data in files.items()]
REQUESTED = []


class Response(io.BytesIO):
    def __init__(self, url, data):
        super().__init__(data)
        self.url, self.length = url, len(data)


def urlopen(request, *args, **kwargs):
    url = getattr(request, "full_url", request)
    REQUESTED.append(url)
    if OFFLINE:
        raise urllib.error.URLError("no network in this test")
    return Response(url, files[url.rsplit("/", 1)[1]])


urllib.request.urlopen = urlopen
'''

CHECK_DOWNLOAD = '''
assert REQUESTED and {u.rsplit("/", 1)[1] for u in REQUESTED} == set(files), REQUESTED
assert splits.x_shape == (1, 28, 28) and len(splits.test) == 200
print("downloaded", len(files), "files")
'''


def _data_cells(source: Path) -> list[nbformat.NotebookNode]:
    """The setup cell and the data cell of a notebook, as its source has them."""
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    setup = next(c for c in cells if "nb.setup()" in c.source)
    data = next(c for c in cells if "load_data(" in c.source)
    return [nbformat.v4.new_code_cell(c.source) for c in (setup, data)]


def _run_data_cell(offline: bool, tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.delenv("PYROVAE_DATA_MIRROR", raising=False)
    monkeypatch.setenv("PYROVAE_DATA_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("PYROVAE_FAST", "1")
    cells = [nbformat.v4.new_code_cell(FAKE_INTERNET.format(offline=offline)),
             *_data_cells(HERE / "01_elbo.py"), nbformat.v4.new_code_cell(CHECK_DOWNLOAD)]
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def test_data_cell_downloads_through_torchvision_without_a_mirror(tmp_path, monkeypatch):
    nb = _run_data_cell(False, tmp_path, monkeypatch)
    assert "downloaded 4 files" in nb.cells[-1].outputs[0]["text"]
    assert (tmp_path / "cache" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_data_cell_offline_without_a_mirror_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(CellExecutionError) as caught:
        _run_data_cell(True, tmp_path, monkeypatch)
    err = caught.value
    assert err.ename == "PyrovaeError"
    assert "\n" not in err.evalue.strip()
    assert "could not be downloaded" in err.evalue and "PYROVAE_DATA_MIRROR" in err.evalue
