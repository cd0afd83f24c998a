"""The error of a ``fit`` run that the user can fix."""


class FitError(Exception):
    """A problem the user can fix; ``str(error)`` is a one-line message."""
