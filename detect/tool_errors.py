"""How command-line tools report a user's mistake: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm

from detect.checkpoint import CheckpointError
from detect.config import ConfigError
from detect.data.image_io import ImageReadError

# Errors that describe bad input (a config key, a file, a record) rather than a bug.
USER_ERRORS = (ConfigError, CheckpointError, ImageReadError, FileNotFoundError, ValueError)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        for bar in list(tqdm._instances):  # a live progress bar would take the start of the line
            bar.close()
        print(f"error: {error_line(e)}", file=sys.stderr)
        sys.exit(2)


def error_line(error: BaseException) -> str:
    """The error's own message, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception as the same type whose message is
    "Caught X in DataLoader worker process N." plus the worker's whole traceback;
    the original message is the traceback's last line, after the type's name.
    """
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    kind = type(error)
    for name in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
        if last.startswith(name):
            return last[len(name):]
    return last
