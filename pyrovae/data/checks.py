"""Argument checks of :func:`pyrovae.data.load_data`: each bad value is a one-line PyrovaeError."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyrovae.errors import PyrovaeError, choice_error


def short(exc: BaseException, width: int = 160) -> str:
    """The last non-empty line of an exception message, shortened: for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def dataset_name(name: object, choices: Sequence[str]) -> str:
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in choices:
        raise choice_error("dataset", name, tuple(choices))
    return key


def binarize_name(binarize: object, choices: Sequence[str]) -> str:
    key = binarize.strip().lower() if isinstance(binarize, str) else binarize
    if key not in choices:
        raise choice_error("binarize value", binarize, tuple(choices))
    return key


def check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise PyrovaeError(
            f"limit must be a positive integer (number of training examples), got {limit!r}"
        )
    return limit


def check_valid_size(valid_size: object) -> None:
    if valid_size is None:
        return
    if isinstance(valid_size, bool) or not isinstance(valid_size, (int, float)):
        raise PyrovaeError(
            f"valid_size must be a number of examples (int >= 1) or a fraction (float in (0, 1)), "
            f"got {valid_size!r}"
        )
    if isinstance(valid_size, int) and valid_size < 1:
        raise PyrovaeError(f"valid_size must be at least 1, got {valid_size}")
    if isinstance(valid_size, float) and not 0.0 < valid_size < 1.0:
        raise PyrovaeError(
            f"a fractional valid_size must lie strictly between 0 and 1, got {valid_size}; "
            "give an int for a number of examples"
        )


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PyrovaeError(f"seed must be an integer, got {seed!r}")
    return seed


def device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that can hold tensors here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise PyrovaeError(
            f"unknown device {device!r} ({short(e)}): use e.g. device=cpu or device=cuda"
        ) from None
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise PyrovaeError(
            f"device {device!r} is not usable here ({short(e)}): use device=cpu"
        ) from None
    return dev
