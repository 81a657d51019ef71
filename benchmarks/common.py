"""What the benchmark scripts share: writing their JSON results, the CPU they ran on, and what
a ``pyrovae.fit`` subprocess logged of its CPU threads."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyrovae.files import atomic_write_text  # noqa: E402


def write_json(path: str | Path | None, data) -> None:
    """Write ``data`` as indented JSON to ``path`` (atomically; parents made), if a path is
    given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(data, indent=2) + "\n", path)


def threads_note(stdout: str, stderr: str = "") -> list[str]:
    """The ``threads:`` lines a ``pyrovae.fit`` process logged: empty when it ran with torch's
    default count (``train.threads=auto`` logs only a departure from it)."""
    return [line for line in (stdout + "\n" + stderr).splitlines() if line.startswith("threads:")]


def cpu_hardware() -> str:
    """The CPU a benchmark runs on: architecture, cores, and ``OMP_NUM_THREADS`` where set."""
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
            + (f", OMP_NUM_THREADS={omp}" if omp is not None else ""))
