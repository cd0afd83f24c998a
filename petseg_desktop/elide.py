"""Text that does not fit is elided ("…") with the full text in a tooltip, instead of being clipped."""

from __future__ import annotations

from PyQt5.QtCore import QSize, Qt
from PyQt5.QtGui import QPainter
from PyQt5.QtWidgets import QComboBox, QLabel, QListWidget, QSizePolicy

MIN_CHARS = 6  # an elided label keeps room for about this many characters


class ElidedLabel(QLabel):
    """A one-line label that elides its text to its width; the tooltip is ``what`` plus the full text."""

    def __init__(self, what: str = "", max_chars: int = 36, mode: Qt.TextElideMode = Qt.ElideMiddle,
                 parent=None) -> None:
        super().__init__(parent)
        self._what = what
        self._max_chars = max_chars  # asks for no more room than this: the status bar's message keeps its room
        self._mode = mode
        self._full = ""
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)
        self.setToolTip(what)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self._full = text
        self.setToolTip(f"{self._what}: {text}" if self._what and text else (text or self._what))
        super().setText(text)  # for sizeHint and accessibility; painting elides
        self.updateGeometry()
        self.update()

    def text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """The text as drawn at the current width (elided when it does not fit)."""
        return self.fontMetrics().elidedText(self._full, self._mode, self.contentsRect().width())

    def is_elided(self) -> bool:
        return self.shown_text() != self._full

    def _capped(self, hint: QSize, chars: int) -> QSize:
        margins = self.contentsMargins()
        room = self.fontMetrics().averageCharWidth() * chars + margins.left() + margins.right()
        return QSize(min(hint.width(), room), hint.height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return self._capped(super().sizeHint(), self._max_chars)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return self._capped(super().minimumSizeHint(), MIN_CHARS)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self.contentsRect(), int(self.alignment() | Qt.AlignVCenter), self.shown_text())


def elide_combo(combo: QComboBox, min_chars: int = 24) -> None:
    """Let ``combo`` be narrower than its longest entry (Qt elides the shown one); tooltips carry the full text."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(min_chars)
    combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    combo.view().setTextElideMode(Qt.ElideMiddle)

    def sync(_index: int = -1) -> None:
        for i in range(combo.count()):
            combo.setItemData(i, combo.itemText(i), Qt.ToolTipRole)
        combo.setToolTip(combo.currentText())

    combo.currentIndexChanged.connect(sync)
    combo.model().rowsInserted.connect(lambda *_: sync())
    sync()


def elide_list(view: QListWidget, mode: Qt.TextElideMode = Qt.ElideMiddle) -> None:
    """Rows of ``view`` are elided to its width (no sideways scrolling); see ``tooltips_from_text``."""
    view.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    view.setTextElideMode(mode)


def tooltips_from_text(view: QListWidget) -> None:
    """Give each row of ``view`` its full text as tooltip (call after filling it)."""
    for i in range(view.count()):
        item = view.item(i)
        item.setToolTip(item.text())
