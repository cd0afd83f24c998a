"""The error of a ``fit`` run that the user can fix."""


class FitError(Exception):
    """A problem the user can fix; ``str(error)`` is a one-line message."""


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``resume`` is the command line that continues it."""

    def __init__(self, resume: str) -> None:
        super().__init__(resume)
        self.resume = resume
