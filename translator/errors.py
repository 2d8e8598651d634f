"""The errors a user can cause and fix, as opposed to bugs.

The command line prints a UserError as one line and exits with its `exit_code`; any other
exception is a bug, reported as an "internal error" that says how to get the traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: a setting, an input, the data or a run dir."""

    exit_code = 1


class InputError(UserError, ValueError):
    """Input a command or the Python API cannot work with (an empty text, an engine that does
    not exist)."""
