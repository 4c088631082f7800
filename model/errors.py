"""The model package's errors a user can act on, and the one place a command line turns them into
a message: bad data, an unreadable image, a checkpoint that is not ours. Programming errors (a
config value out of range) stay ValueError and keep their traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ModelError(Exception):
    """Base of the errors below; its message says what is wrong and where."""


class CheckpointError(ModelError):
    """A checkpoint is missing, not ours, or does not fit the model it describes."""


def run_command(main: Callable[[], object], errors: tuple[type[Exception], ...] = (ModelError,)) -> int:
    """Run a command line's ``main``: an expected error becomes one line on stderr and exit code 2."""
    try:
        result = main()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0
