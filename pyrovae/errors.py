"""One error type for every bad input: a single line saying what was wrong and how to fix it."""

from __future__ import annotations


class PyrovaeError(ValueError):
    """A user-facing error whose message is one line: what was wrong, and how to fix it.

    Command-line entry points catch it and print ``error: <message>`` with exit status 2
    instead of a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def choice_error(kind: str, name: object, choices: list[str] | tuple[str, ...]) -> PyrovaeError:
    """The error for an unknown name in a registry (prior, likelihood, net, dataset, ...)."""
    return PyrovaeError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}")
