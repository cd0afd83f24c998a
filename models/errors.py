"""One-line error messages, for the app's dialogs and the command lines' stderr alike."""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """``error``'s whole message on one line (white space folded), or its type's name when empty."""
    return " ".join(str(error).split()) or type(error).__name__
