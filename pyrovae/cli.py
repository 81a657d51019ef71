"""What every ``python -m pyrovae.*`` command shares: bad input is one line on stderr,
``error: <what was wrong and how to fix it>``, and exit status 2, never a traceback.

    @command
    def main(argv=None) -> int:
        args = Parser(prog="python -m pyrovae.x").parse_args(argv)
        ...                      # raise PyrovaeError("...") for a bad value

:class:`Parser` turns argparse's usage errors into a :class:`PyrovaeError` (one line, with a
pointer to ``--help``); :func:`command` catches it, prints it and returns 2; Ctrl-C returns 130.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from pyrovae.errors import PyrovaeError

#: Exit status of a bad input (as argparse uses for usage errors).
USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT).
INTERRUPTED = 130


def print_error(err: BaseException | str, prefix: str = "") -> None:
    """``error: <message>`` on stderr, on one line."""
    print(f"error: {prefix}{' '.join(str(err).split())}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are a one-line :class:`PyrovaeError` (see ``--help``)."""

    def error(self, message: str):
        raise PyrovaeError(f"{message} (see {self.prog} --help)")


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main(argv) -> int``: a :class:`PyrovaeError` becomes ``error: ...``
    on stderr and exit status 2, Ctrl-C exit status 130, ``--help`` exit status 0."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except PyrovaeError as err:
            print_error(err)
            return USAGE
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return INTERRUPTED
        except SystemExit as exit_:  # --help, --version
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None
                                                                   else USAGE)

    return wrapper


def log(message: str) -> None:
    """A note for the user that is not the command's output (which run was picked, how many
    threads): on stderr, so that ``--json`` output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)
