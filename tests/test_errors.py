"""models.errors.one_line: the one-line message the app's dialogs and the command lines show."""

from __future__ import annotations

import pytest

from models.errors import one_line


class QuietError(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("photo.png: not an image"), "photo.png: not an image"),
        # every line is kept, with all white space (newlines, tabs, runs of spaces) folded to one space
        (RuntimeError("Error(s) in loading state_dict for UNet:\n\tMissing key(s): \"head.weight\".\n"),
         'Error(s) in loading state_dict for UNet: Missing key(s): "head.weight".'),
        (OSError("  leading   and trailing  "), "leading and trailing"),
        # an empty (or white-space-only) message falls back to the exception type's name
        (QuietError(), "QuietError"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (ValueError(" \n\t"), "ValueError"),
        # str() of an exception with several arguments is their tuple, and still one line
        (ValueError("a", 2), "('a', 2)"),
        # KeyError's str() is the repr of its key
        (KeyError("arch"), "'arch'"),
    ],
)
def test_one_line(error: BaseException, expected: str) -> None:
    text = one_line(error)
    assert text == expected
    assert "\n" not in text and "\t" not in text
