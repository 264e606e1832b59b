"""User-facing errors.

A :class:`FaroError` is a problem with the user's input (file, column, run id, flag). The CLI turns it into
one line on stderr and exit code 2; the dashboard turns it into ``st.error``. Anything else is a bug.
"""

from __future__ import annotations


class FaroError(Exception):
    """A clear, user-fixable problem. The message names the file, column, row or run at fault."""


class DataError(FaroError):
    """Malformed or unusable preference data."""


class RunError(FaroError):
    """Unknown, unsafe or unusable run id / run directory."""
