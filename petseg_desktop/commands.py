"""Undo/redo: every edit is a QUndoCommand between two snapshots of the image's annotation.

A :class:`State` is an immutable snapshot (objects are treated as immutable values, so a tuple of
them is a cheap snapshot). Prompt commands do not know their mask when pushed: the editor asks the
worker, and when the result comes back it is stored in the command (``set_result``), so redoing
later shows it again without a model run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PyQt5.QtWidgets import QUndoCommand

from petseg_desktop.annotation import AnnotationObject, Prompts, Strokes


@dataclass(frozen=True)
class State:
    """The undoable part of an image's annotation."""

    objects: tuple[AnnotationObject, ...]
    prompts: Prompts
    probabilities: np.ndarray | None
    editing: int | None
    resolved: bool = True  # the probabilities belong to these prompts (no model run outstanding)
    strokes: Strokes = Strokes()  # brush/eraser edits over the probabilities (a model result keeps them)


# Shows a state: ``restore(state, predict_for)``; ``predict_for`` is the command whose prompts the
# model must answer now (its result goes to ``set_result``), or None.
Restore = Callable[[State, "StateCommand | None"], None]


class StateCommand(QUndoCommand):
    """Switch between ``before`` and ``after`` with ``restore``; ``predict`` asks the model on first redo."""

    def __init__(self, restore: Restore, text: str, before: State, after: State, predict: bool = False) -> None:
        super().__init__(text)
        self.restore = restore
        self.before = before
        self.after = after
        self.predict = predict

    def redo(self) -> None:
        wants_model = self.predict and not self.after.resolved
        self.restore(self.after, self if wants_model else None)

    def undo(self) -> None:
        self.restore(self.before, None)

    def set_result(self, probabilities: np.ndarray) -> None:
        """The model's answer to this command's prompts: remembered for later redo."""
        self.after = replace(self.after, probabilities=probabilities, resolved=True)
