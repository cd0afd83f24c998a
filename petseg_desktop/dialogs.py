"""Help (shortcuts), About and model information dialogs."""

from __future__ import annotations

import html
import json
import platform
from typing import Any

from PyQt5.QtCore import PYQT_VERSION_STR, QT_VERSION_STR, Qt
from PyQt5.QtWidgets import QDialog, QDialogButtonBox, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QTextBrowser, QVBoxLayout

from models.version import __version__

MOUSE_GESTURES = [
    ("Left click", "Positive point (part of the pet)"),
    ("Right click / Shift+click", "Negative point (not the pet)"),
    ("Left drag", "Box around the pet"),
    ("Wheel", "Zoom around the cursor"),
    ("Middle drag / Space+drag", "Pan"),
    ("Double-click an object", "Re-edit it (its prompts and mask come back)"),
    ("Brush/eraser tool + drag", "Paint or erase the current mask"),
]


class ShortcutsDialog(QDialog):
    """Every action with a shortcut, plus the mouse gestures."""

    def __init__(self, rows: list[tuple[str, str]], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PetSeg shortcuts")
        rows = [*MOUSE_GESTURES, *rows]
        table = QTableWidget(len(rows), 2, self)
        table.setHorizontalHeaderLabels(["Keys / mouse", "Does"])
        table.verticalHeader().hide()
        table.setEditTriggers(QTableWidget.NoEditTriggers)
        for r, (keys, text) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(keys))
            table.setItem(r, 1, QTableWidgetItem(text))
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        self.table = table
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Click the pet to segment it; Enter accepts it as an object; Ctrl+S saves the mask."))
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.resize(560, 620)


def describe_model(task: str, path: str | None, metadata: dict[str, Any] | None, device: str | None) -> str:
    """HTML paragraph about one loaded model."""
    if not path:
        return f"<p><b>{task.title()} model:</b> none loaded</p>"
    meta = metadata or {}
    metrics = meta.get("metrics") or {}
    training = meta.get("training") or {}
    rows = [
        ("File", path),
        ("Architecture", f"{meta.get('arch')} {json.dumps(meta.get('config', {}))}"),
        ("Input size", f"{meta.get('input_size')} px"),
        ("Device", device or "?"),
        ("Created", meta.get("created", "?")),
    ]
    if metrics:
        rows.append(("Metrics", ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())))
    if training:
        rows.append(("Training", ", ".join(f"{k}: {v}" for k, v in training.items())))
    body = "".join(f"<tr><td><i>{html.escape(k)}</i></td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<p><b>{task.title()} model</b></p><table cellspacing='4'>{body}</table>"


class InfoDialog(QDialog):
    def __init__(self, title: str, html_text: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setHtml(html_text)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(620, 460)


def about_html(models: list[str]) -> str:
    head = (
        f"<h2>PetSeg {__version__}</h2>"
        "<p>Segment pet photos into background, cat and dog: click, accept, save.</p>"
        f"<p>Python {platform.python_version()}, Qt {QT_VERSION_STR}, PyQt {PYQT_VERSION_STR}</p>"
    )
    return head + "".join(models)


def model_info_html(models: list[str]) -> str:
    return "".join(models)


def keep_open(dialog: QDialog) -> QDialog:
    """Show ``dialog`` modelessly (tests can inspect and close it)."""
    dialog.setAttribute(Qt.WA_DeleteOnClose, True)
    dialog.show()
    return dialog
