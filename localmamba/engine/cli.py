"""Running an engine command: expected errors as one line and exit status 2, bugs as tracebacks.

An expected error is one the user fixes by changing the command (:data:`USER_ERRORS`: a wrong model
name, option, config file, data folder, checkpoint or direction spec); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DataError
from ..models.directions import DirectionSpecError

USER_ERRORS = (ConfigError, CheckpointError, DataError, DirectionSpecError)
EXIT_USER_ERROR = 2  # argparse's status for a bad command line


def run_command(main: Callable, prog: str, argv: Optional[Sequence[str]] = None):
    """``main(argv)``; a :data:`USER_ERRORS` exception prints ``prog: error: MESSAGE`` on one line of
    stderr and exits with status 2."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        message = " ".join(str(e).split())  # one line, however the message was wrapped
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
