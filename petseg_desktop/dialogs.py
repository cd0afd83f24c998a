"""Help (shortcuts), About and model information dialogs."""

from __future__ import annotations

import html
import json
import platform
from pathlib import Path
from typing import Any

from PyQt5.QtCore import PYQT_VERSION_STR, QT_VERSION_STR, Qt
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
)

from models.version import __version__

MOUSE_GESTURES = [
    ("Left click", "Positive point (part of the pet)"),
    ("Right click / Shift+click", "Negative point (not the pet)"),
    ("Left drag", "Box around the pet"),
    ("Wheel", "Zoom around the cursor"),
    ("Middle drag / Space+drag", "Pan"),
    ("Double-click an object", "Re-edit it (its prompts and mask come back)"),
    ("Brush/eraser tool + drag", "Paint or erase the current mask (kept on top of the model's mask)"),
    ("Drag a row of the Objects list", "Reorder objects (top = front)"),
    ("Rest the mouse on the photo", "Hover preview of a click there (View > Hover preview)"),
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


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _size(path: str) -> str:
    try:
        return f"{Path(path).stat().st_size / 1e6:.1f} MB"
    except OSError:
        return "?"


def model_rows(path: str, metadata: dict[str, Any] | None, device: str | None) -> list[tuple[str, str]]:
    """The readable facts about one checkpoint: (what, value) rows for a table."""
    from models.checkpoint import CheckpointError, parameter_count  # torch: not at window import

    meta = metadata or {}
    training = meta.get("training") or {}
    metrics = meta.get("metrics") or {}
    config = meta.get("config") or {}
    arch = " ".join(str(x) for x in (meta.get("arch", "?"), config.get("encoder")) if x)
    try:
        params: int | None = parameter_count(path)
    except CheckpointError:
        params = None
    images = [f"{training[k]:,} {what}" for k, what in (("train_images", "train"), ("val_images", "validation"))
              if isinstance(training.get(k), int)]
    data = training.get("data_root")
    trained_on = ", ".join(images) + (f" from {data}" if data else "") + (f" ({training['split']})" if training.get("split") else "")
    epochs = training.get("total_epochs_done", training.get("epochs"))
    if epochs is not None and training.get("best_epoch") is not None:
        epochs = f"{epochs} (best {training['best_epoch']})"
    flat = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{name} {k}": v for k, v in value.items()})
        else:
            flat[name] = value
    rows = [
        ("Architecture", arch),
        ("Task", str(meta.get("task", "?"))),
        ("Input size", f"{meta.get('input_size', '?')} px"),
        ("Parameters", f"{params:,}" if params is not None else "?"),
        ("File", f"{Path(path).name} ({_size(path)})"),
        ("Trained on", trained_on or "?"),
        ("Epochs", str(epochs if epochs is not None else "?")),
        ("Validation", ", ".join(f"{k} {_number(v)}" for k, v in flat.items()) or "?"),
        ("Created", str(meta.get("created", "?"))),
        ("Package version", str(meta.get("package_version", "?"))),
        ("Device", device or "?"),
    ]
    return rows


def describe_model(task: str, path: str | None, metadata: dict[str, Any] | None, device: str | None) -> str:
    """HTML paragraph about one loaded model (the About box)."""
    if not path:
        return f"<p><b>{task.title()} model:</b> none loaded</p>"
    body = "".join(f"<tr><td><i>{html.escape(k)}</i></td><td>{html.escape(v)}</td></tr>"
                   for k, v in model_rows(path, metadata, device))
    return f"<p><b>{task.title()} model</b></p><table cellspacing='4'>{body}</table>"


class ModelInfoDialog(QDialog):
    """Model > Model info…: one table per model, each with its raw metadata behind a Details expander."""

    def __init__(self, models: list[tuple[str, str | None, dict[str, Any] | None, str | None]], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        layout = QVBoxLayout(self)
        self.tables: dict[str, QTableWidget] = {}
        self.details: dict[str, QPlainTextEdit] = {}
        self.expanders: dict[str, QToolButton] = {}
        for task, path, metadata, device in models:
            layout.addWidget(QLabel(f"<b>{html.escape(task.title())} model</b>" + ("" if path else ": none loaded")))
            if not path:
                continue
            self.tables[task] = table = self._table(model_rows(path, metadata, device))
            layout.addWidget(table)
            raw = QPlainTextEdit(json.dumps(metadata or {}, indent=2, sort_keys=True))
            raw.setReadOnly(True)
            raw.setVisible(False)
            expander = QToolButton()
            expander.setText("Details (raw metadata)")
            expander.setCheckable(True)
            expander.setArrowType(Qt.RightArrow)
            expander.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
            expander.toggled.connect(lambda on, r=raw, e=expander: (r.setVisible(on), e.setArrowType(Qt.DownArrow if on else Qt.RightArrow)))
            self.details[task], self.expanders[task] = raw, expander
            layout.addWidget(expander)
            layout.addWidget(raw, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addStretch()
        layout.addWidget(buttons)
        self.resize(640, 620)

    @staticmethod
    def _table(rows: list[tuple[str, str]]) -> QTableWidget:
        table = QTableWidget(len(rows), 2)
        table.horizontalHeader().hide()
        table.verticalHeader().hide()
        table.setEditTriggers(QTableWidget.NoEditTriggers)
        table.setWordWrap(False)  # one line a row; a long value is elided, in full in its tooltip
        table.setTextElideMode(Qt.ElideMiddle)
        for r, (what, value) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(what))
            item = QTableWidgetItem(value)
            item.setToolTip(value)
            table.setItem(r, 1, item)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        height = sum(table.rowHeight(r) for r in range(len(rows))) + 2 * table.frameWidth()
        table.setFixedHeight(height)
        return table

    def value(self, task: str, what: str) -> str | None:
        """The table cell of row ``what`` for ``task``'s model (None if absent)."""
        table = self.tables.get(task)
        for r in range(table.rowCount() if table else 0):
            if table.item(r, 0).text() == what:
                return table.item(r, 1).text()
        return None


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


def keep_open(dialog: QDialog) -> QDialog:
    """Show ``dialog`` modelessly (tests can inspect and close it)."""
    dialog.setAttribute(Qt.WA_DeleteOnClose, True)
    dialog.show()
    return dialog
