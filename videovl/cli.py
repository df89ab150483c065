"""The tools' boundary: a user's mistake reads as one message and exit status 2; a bug keeps its traceback.

Every entry script ends in ``run_tool(main)``. Tests call ``main(argv)`` directly and still see the
exceptions themselves.

This is the package's top layer: it may import from anything below it, and nothing imports it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from videovl.config import ConfigError
from videovl.data.sources import ManifestError
from videovl.extras import MissingExtraError

__all__ = ["USER_ERRORS", "run_tool", "user_error_message"]

# A missing file on the command line (a checkpoint, a manifest, a video folder) is the user's to fix too,
# and so is a missing extra (the message says what to pip install).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    ManifestError,
    FileNotFoundError,
    MissingExtraError,
)
TRACEBACK_ENV = "VIDEOVL_TRACEBACK"  # set to 1 to see the traceback of a user error as well


def user_error_message(err: BaseException) -> str:
    """``err`` as the one message a user reads (``FileNotFoundError``'s errno prefix left out)."""
    if isinstance(err, FileNotFoundError) and err.filename is not None:
        return f"no such file or folder: {err.filename}"
    return str(err)


def run_tool(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Run ``main(argv)`` (default: ``sys.argv[1:]``) and exit; user errors exit 2 with one message."""
    if not sys.stderr.isatty():  # a log file: no redrawn bars from the libraries either (see progress)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        main(sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as err:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        name = os.path.basename(sys.argv[0]) or "videovl"
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under a launcher every process says it
            name += f" [rank {os.environ.get('RANK', '?')}]"
        print(f"{name}: error: {user_error_message(err)}", file=sys.stderr)
        sys.exit(2)
