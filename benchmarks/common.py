"""What the benchmark scripts share: writing their JSON results."""

from __future__ import annotations

import json
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
