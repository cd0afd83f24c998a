"""Dock helpers: a title bar with an arrow that collapses the dock to its title."""

from __future__ import annotations

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QDockWidget, QHBoxLayout, QSizePolicy, QToolButton, QWidget


class CollapsibleTitle(QWidget):
    """Title bar of ``dock``: ▾ Title shows the contents, ▸ Title hides them (the dock shrinks to this bar)."""

    def __init__(self, dock: QDockWidget) -> None:
        super().__init__(dock)
        self.dock = dock
        self.button = QToolButton(self)
        self.button.setText(dock.windowTitle())
        self.button.setCheckable(True)
        self.button.setChecked(True)
        self.button.setAutoRaise(True)
        self.button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.button.setArrowType(Qt.DownArrow)
        self.button.setToolTip(f"Show or hide the {dock.windowTitle()} panel's contents")
        self.button.toggled.connect(self.set_expanded)
        row = QHBoxLayout(self)
        row.setContentsMargins(2, 0, 2, 0)
        row.addWidget(self.button)
        row.addStretch()

    def set_expanded(self, expanded: bool) -> None:
        self.button.setChecked(expanded)
        self.button.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)
        widget = self.dock.widget()
        widget.setVisible(expanded)
        widget.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred if expanded else QSizePolicy.Ignored)

    def expanded(self) -> bool:
        return self.button.isChecked()


def make_collapsible(dock: QDockWidget) -> CollapsibleTitle:
    title = CollapsibleTitle(dock)
    dock.setTitleBarWidget(title)
    return title
