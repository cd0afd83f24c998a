"""View > Overlay colours…: the fill colour of each class and the outline colour, kept in QSettings."""

from __future__ import annotations

from PyQt5.QtCore import QSettings
from PyQt5.QtGui import QColor, QIcon, QPixmap
from PyQt5.QtWidgets import QColorDialog, QDialog, QDialogButtonBox, QFormLayout, QPushButton

from models.classes import CLASS_NAMES, PET_CLASSES
from petseg_desktop.canvas import OUTLINE_COLOUR, OVERLAY_COLOURS, RGB

OUTLINE = "outline"  # the key of the outline colour beside the class ids


def default_colours() -> dict[int | str, RGB]:
    return {**OVERLAY_COLOURS, OUTLINE: OUTLINE_COLOUR}


def _key(which: int | str) -> str:
    return f"overlay/{CLASS_NAMES[which] if isinstance(which, int) else which}"


def load_colours(settings: QSettings) -> dict[int | str, RGB]:
    """The saved colours (``#rrggbb``), the defaults for those missing or unreadable."""
    colours = default_colours()
    for which in colours:
        colour = QColor(str(settings.value(_key(which), "")))
        if colour.isValid():
            colours[which] = (colour.red(), colour.green(), colour.blue())
    return colours


def save_colours(settings: QSettings, colours: dict[int | str, RGB]) -> None:
    for which, rgb in colours.items():
        settings.setValue(_key(which), QColor(*rgb).name())


def swatch(rgb: RGB) -> QIcon:
    pixmap = QPixmap(28, 16)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


class OverlayColoursDialog(QDialog):
    """One button per colour (click: a colour picker), Restore defaults, OK / Cancel."""

    def __init__(self, colours: dict[int | str, RGB], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Overlay colours")
        self.colours = dict(colours)
        self.buttons: dict[int | str, QPushButton] = {}
        form = QFormLayout(self)
        names = {**{cid: f"{CLASS_NAMES[cid].title()} fill" for cid in PET_CLASSES}, OUTLINE: "Outline"}
        for which, name in names.items():
            button = QPushButton()
            button.clicked.connect(lambda _=False, w=which: self.pick(w))
            self.buttons[which] = button
            form.addRow(name, button)
        box = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel | QDialogButtonBox.RestoreDefaults)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        box.button(QDialogButtonBox.RestoreDefaults).clicked.connect(self.restore_defaults)
        form.addRow(box)
        self._show()

    def _show(self) -> None:
        for which, button in self.buttons.items():
            button.setIcon(swatch(self.colours[which]))
            button.setText(QColor(*self.colours[which]).name())

    def set_colour(self, which: int | str, colour: QColor) -> None:
        if colour.isValid():
            self.colours[which] = (colour.red(), colour.green(), colour.blue())
            self._show()

    def pick(self, which: int | str) -> None:
        self.set_colour(which, QColorDialog.getColor(QColor(*self.colours[which]), self, "Overlay colour"))

    def restore_defaults(self) -> None:
        self.colours = default_colours()
        self._show()
