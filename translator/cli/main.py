"""The `translator` executable: the Typer app with every command registered.

translator = "translator.cli.main:entry_point"     # pyproject.toml's [project.scripts]
from translator.cli.main import app                # typer.testing.CliRunner().invoke(app, ...)
"""

from __future__ import annotations

import logging
import os
import sys

from translator.cli.app import app

# Importing a command module registers its commands, in this order in `--help`.
# isort: off
from translator.cli import prepare, train, decoding, rerank, serving, experiments  # noqa: F401, E402
# isort: on

__all__ = ["app", "entry_point"]


# Commands whose work is done and flushed when they return: their process may skip Python's
# finalization, which costs ~0.4 s once torch is loaded (a third of translating one sentence).
_QUICK_EXIT = {"translate", "evaluate"}


def entry_point() -> None:
    """The `translator` executable (and `python -m translator`): the app, then a quick exit for
    the commands that allow one."""
    try:
        app(prog_name="translator")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if len(sys.argv) > 1 and sys.argv[1] in _QUICK_EXIT:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:  # a closed pipe (`| head`): nothing more can be said anyway
                pass
            logging.shutdown()
            os._exit(code)
        raise
