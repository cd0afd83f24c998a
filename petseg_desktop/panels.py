"""The dock panels: the file list (with annotated state), the object list, and the view controls."""

from __future__ import annotations

from pathlib import Path

from PyQt5.QtCore import QPointF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from models.classes import CLASS_NAMES, PET_CLASSES
from petseg_desktop.canvas import OVERLAY_COLOURS

PATH_ROLE = Qt.UserRole
STATE_ROLE = Qt.UserRole + 1  # "todo", "unsaved", "annotated" (see mask_files) or FAILED
FAILED = "failed"  # the state of a photo that could not be opened
STATE_TIPS = {
    "todo": "nothing annotated yet",
    "unsaved": "annotated, but the mask file is not written or is older than the annotation",
    "annotated": "mask written and current",
    FAILED: "could not be opened",
}


def dot_icon(colour: QColor, filled: bool, mark: str = "") -> QIcon:
    pixmap = QPixmap(16, 16)
    pixmap.fill(Qt.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setPen(QPen(colour, 1.5))
    painter.setBrush(colour if filled else Qt.transparent)
    painter.drawEllipse(2, 2, 12, 12)
    if mark:
        painter.setPen(QPen(Qt.white, 2))
        if mark == "check":
            painter.drawPolyline(*_points([(4.5, 8), (7, 11), (11.5, 5)]))
        elif mark == "dot":
            painter.setBrush(Qt.white)
            painter.drawEllipse(QPointF(8, 8), 1.5, 1.5)
        else:
            painter.drawLine(5, 5, 11, 11)
            painter.drawLine(11, 5, 5, 11)
    painter.end()
    return QIcon(pixmap)


def _points(pairs):
    return [QPointF(x, y) for x, y in pairs]


class FileList(QListWidget):
    """The folder's images: a grey ring (nothing yet), an orange dot (annotated, mask not written or
    stale), a green check (mask written and current), a red cross (failed to load); the tooltip says which."""

    fileActivated = pyqtSignal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._icons = {
            "annotated": dot_icon(QColor(40, 170, 60), True, "check"),
            "unsaved": dot_icon(QColor(230, 140, 20), True, "dot"),
            "todo": dot_icon(QColor(150, 150, 150), False),
            FAILED: dot_icon(QColor(210, 40, 40), True, "cross"),
        }
        self.currentRowChanged.connect(self._user_row)

    def _user_row(self, row: int) -> None:
        if row >= 0:
            self.fileActivated.emit(row)

    def set_files(self, paths: list[Path], states: list[str]) -> None:
        """List ``paths``, each with its state (a key of STATE_TIPS)."""
        self.blockSignals(True)  # filling the list is not the user picking a file
        self.clear()
        for path, state in zip(paths, states):
            item = QListWidgetItem(path.name)
            item.setData(PATH_ROLE, str(path))
            self.addItem(item)
            self._set_state(item, state)
        self.blockSignals(False)

    def _set_state(self, item: QListWidgetItem, state: str) -> None:
        item.setData(STATE_ROLE, state)
        item.setIcon(self._icons[state])
        item.setToolTip(f"{item.data(PATH_ROLE)}\n{STATE_TIPS[state]}")

    def rows_in(self, state: str) -> list[Path]:
        """The paths whose state is ``state``."""
        return [path for row, path in enumerate(self.paths()) if self.state(row) == state]

    def paths(self) -> list[Path]:
        return [Path(self.item(i).data(PATH_ROLE)) for i in range(self.count())]

    def row_of(self, path: Path) -> int:
        target = str(Path(path))
        for i in range(self.count()):
            if self.item(i).data(PATH_ROLE) == target:
                return i
        return -1

    def state(self, row: int) -> str:
        return self.item(row).data(STATE_ROLE)

    def set_state(self, path: Path, state: str) -> None:
        row = self.row_of(path)
        if row >= 0:
            self._set_state(self.item(row), state)

    def select_row(self, row: int) -> None:
        self.blockSignals(True)
        self.setCurrentRow(row)
        self.blockSignals(False)
        if 0 <= row < self.count():
            self.scrollToItem(self.item(row))


class ObjectList(QListWidget):
    """The object rows; dragging a row onto another place asks for a move instead of moving the item."""

    rowMoved = pyqtSignal(int, int)  # from row, to row

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setDragDropMode(QAbstractItemView.InternalMove)
        self.setDefaultDropAction(Qt.MoveAction)

    def dropEvent(self, event) -> None:
        source = self.currentRow()
        target = self.indexAt(event.pos()).row()
        if target < 0:
            target = self.count() - 1  # below the last row: to the end
        elif self.dropIndicatorPosition() == QAbstractItemView.AboveItem and target > source:
            target -= 1
        elif self.dropIndicatorPosition() == QAbstractItemView.BelowItem and target < source:
            target += 1
        event.setDropAction(Qt.IgnoreAction)  # the list is rebuilt from the document after the move
        event.accept()
        if 0 <= source != target:
            self.rowMoved.emit(source, target)


def compact_pixels(count: int) -> str:
    """A pixel count short enough for the Objects panel: 9,876 px, 123k px, 1.4M px."""
    if count < 10_000:
        return f"{count:,} px"
    if count < 999_500:
        return f"{count / 1000:.0f}k px"
    return f"{count / 1_000_000:.1f}M px"


class ObjectPanel(QWidget):
    """The image's objects, front first (the top row is painted last, over the others), and the
    class of the selected one. Signals and methods speak object indices (paint order), not rows."""

    editRequested = pyqtSignal(int)
    classChosen = pyqtSignal(int)  # class id from the combo
    deleteRequested = pyqtSignal(int)
    moveRequested = pyqtSignal(int, int)  # object index, new index

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.list = ObjectList()
        self.list.setToolTip("Top = front: an object covers the ones below it where they overlap.\n"
                             "Double-click an object to re-edit it (its prompts, mask and strokes come back);\n"
                             "drag it or press Ctrl+Up / Ctrl+Down to bring it forward or send it back")
        self.list.itemDoubleClicked.connect(lambda item: self.editRequested.emit(self.index_of(self.list.row(item))))
        self.list.rowMoved.connect(lambda a, b: self.moveRequested.emit(self.index_of(a), self.index_of(b)))
        self.combo = QComboBox()
        for cid in PET_CLASSES:
            self.combo.addItem(dot_icon(QColor(*OVERLAY_COLOURS[cid]), True), CLASS_NAMES[cid], cid)
        self.combo.setToolTip("Class of the selected object (C toggles)")
        self.combo.activated.connect(lambda i: self.classChosen.emit(self.combo.itemData(i)))
        delete = QPushButton("Delete")
        delete.clicked.connect(lambda: self.deleteRequested.emit(self.selected()))
        row = QHBoxLayout()
        row.addWidget(QLabel("Class"))
        row.addWidget(self.combo, 1)
        row.addWidget(delete)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(QLabel("Front (painted on top)"))
        layout.addWidget(self.list)
        layout.addWidget(QLabel("Back"))
        layout.addLayout(row)
        self.list.currentRowChanged.connect(self._sync_combo)
        self._classes: list[int] = []

    def index_of(self, row: int) -> int:
        """The object index shown in ``row`` (-1 for none); also the row of an index (the map is its own inverse)."""
        return len(self._classes) - 1 - row if 0 <= row < len(self._classes) else -1

    def set_objects(self, objects, editing: int | None, select: int | None = None) -> None:
        """Show ``objects`` (paint order) front first; ``select`` an index (default: keep the selection)."""
        keep = self.selected() if select is None else select
        if keep < 0 or keep >= len(objects):
            keep = len(objects) - 1  # C, Del and the class combo act on the newest object by default
        self.list.blockSignals(True)
        self.list.clear()
        self._classes = [o.class_id for o in objects]
        for i, obj in reversed(list(enumerate(objects))):
            text = f"{i + 1}. {obj.class_name}  ({compact_pixels(obj.area)}, {obj.source})"
            if i == editing:
                text += "  [editing]"
            item = QListWidgetItem(dot_icon(QColor(*OVERLAY_COLOURS[obj.class_id]), True), text)
            self.list.addItem(item)
        self.list.setCurrentRow(self.index_of(keep))
        self.list.blockSignals(False)
        self._sync_combo(self.list.currentRow())

    def _sync_combo(self, row: int) -> None:
        index = self.index_of(row)
        if index >= 0:
            self.combo.setCurrentIndex(self.combo.findData(self._classes[index]))

    def selected(self) -> int:
        """The selected object's index (-1 for none)."""
        return self.index_of(self.list.currentRow())

    def select(self, index: int) -> None:
        """Select object ``index``."""
        self.list.setCurrentRow(self.index_of(index))


class Controls(QWidget):
    """Threshold and overlay opacity sliders, and the brush size."""

    thresholdChanged = pyqtSignal(float)
    opacityChanged = pyqtSignal(float)
    brushChanged = pyqtSignal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.threshold = self._slider(50, "Mask threshold: probability above which a pixel is the object")
        self.opacity = self._slider(50, "Overlay opacity")
        self.threshold_label = QLabel("0.50")
        self.opacity_label = QLabel("50%")
        self.brush = QSpinBox()
        self.brush.setRange(1, 200)
        self.brush.setValue(8)
        self.brush.setSuffix(" px")
        self.brush.setToolTip("Brush/eraser radius in image pixels ([ and ] change it)")
        form = QFormLayout(self)
        form.setContentsMargins(4, 4, 4, 4)
        form.addRow("Threshold", self._pair(self.threshold, self.threshold_label))
        form.addRow("Opacity", self._pair(self.opacity, self.opacity_label))
        form.addRow("Brush", self.brush)
        self.threshold.valueChanged.connect(self._on_threshold)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.brush.valueChanged.connect(self.brushChanged)

    @staticmethod
    def _slider(value: int, tip: str) -> QSlider:
        slider = QSlider(Qt.Horizontal)
        slider.setRange(1, 99)
        slider.setValue(value)
        slider.setToolTip(tip)
        return slider

    @staticmethod
    def _pair(slider: QSlider, label: QLabel) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(slider, 1)
        label.setMinimumWidth(36)
        row.addWidget(label)
        return box

    def _on_threshold(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self.thresholdChanged.emit(value / 100)

    def _on_opacity(self, value: int) -> None:
        self.opacity_label.setText(f"{value}%")
        self.opacityChanged.emit(value / 100)
