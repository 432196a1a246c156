"""How command-line tools report a user's mistake: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

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
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
