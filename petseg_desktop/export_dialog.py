"""Batch export dialog: the ``petseg-export`` engine (export_images) in a QThread, with progress and cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PyQt5.QtCore import QSettings, QThread, pyqtSignal
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from models.errors import one_line


class ExportThread(QThread):
    """Loads the segmenter and runs export_images off the GUI thread; cancel sets an Event."""

    progressed = pyqtSignal(int, int, str)
    finishedWith = pyqtSignal(object)  # ExportSummary
    failed = pyqtSignal(str)

    def __init__(
        self, inputs, output_dir, checkpoint, fmt, skip_existing, device=None, parent=None, overwrite: bool = False
    ) -> None:
        super().__init__(parent)
        self.args = (inputs, output_dir, checkpoint, fmt, skip_existing, device, overwrite)
        self.cancel_event = threading.Event()

    def run(self) -> None:
        from petseg_desktop.export import export_images
        from models.predictor import load_segmenter

        inputs, output_dir, checkpoint, fmt, skip_existing, device, overwrite = self.args
        try:
            segmenter = load_segmenter(checkpoint, device)
            summary = export_images(
                inputs,
                output_dir,
                segmenter,
                fmt=fmt,
                skip_existing=skip_existing,
                progress=lambda done, total, path: self.progressed.emit(done, total, str(path)),
                cancel=self.cancel_event,
                overwrite=overwrite,
            )
        except Exception as error:  # noqa: BLE001 - NoModelError, unwritable output, bad COCO file...
            self.failed.emit(one_line(error))
            return
        self.finishedWith.emit(summary)


class ExportDialog(QDialog):
    """Folder in, folder out, semantic model, format; progress with images/s; cancel; failures."""

    progressed = pyqtSignal(int, int, str)  # done, total, path (GUI thread)

    def __init__(self, settings: QSettings, folder: Path | None = None, parent=None) -> None:
        super().__init__(parent)
        from petseg_desktop.export import FORMATS

        self.setWindowTitle("Batch export")
        self.settings = settings
        self.job: ExportThread | None = None
        self.summary = None
        self.input_edit = QLineEdit(str(folder or settings.value("export/input", "")))
        self.output_edit = QLineEdit(str(settings.value("export/output", "")))
        self.model_combo = QComboBox()
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(FORMATS))
        self.format_combo.setCurrentText(str(settings.value("export/format", "png")))
        self.skip_check = QCheckBox("Skip photos whose output exists")
        self.overwrite_check = QCheckBox("Replace files PetSeg did not write (hand-drawn masks, annotations.json)")
        self.progress = QProgressBar()
        self.rate_label = QLabel("")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.start_button = QPushButton("Export")
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        form = QFormLayout()
        form.addRow("Input folder", self._with_browse(self.input_edit))
        form.addRow("Output folder", self._with_browse(self.output_edit))
        form.addRow("Semantic model", self.model_combo)
        form.addRow("Format", self.format_combo)
        form.addRow("", self.skip_check)
        form.addRow("", self.overwrite_check)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.rate_label)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)
        self._fill_models()
        self.resize(640, 440)

    def _with_browse(self, edit: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        browse = QPushButton("…")
        browse.clicked.connect(lambda: self._browse(edit))
        row.addWidget(browse)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose folder", edit.text())
        if path:
            edit.setText(path)

    def _fill_models(self) -> None:
        from models.discovery import discover_checkpoints

        entries = discover_checkpoints(task="semantic")
        remembered = self.settings.value("model/semantic", "")
        for entry in entries:
            self.model_combo.addItem(entry.describe(), str(entry.path))
        index = self.model_combo.findData(remembered)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        if not entries:
            self.model_combo.addItem("(no semantic checkpoint found)", None)
            self.start_button.setEnabled(False)

    def running(self) -> bool:
        return self.job is not None and self.job.isRunning()

    def start(self) -> bool:
        inputs, output = self.input_edit.text().strip(), self.output_edit.text().strip()
        checkpoint = self.model_combo.currentData()
        if not inputs or not Path(inputs).exists():
            self.log.setPlainText(f"Input folder not found: {inputs or '(empty)'}")
            return False
        if not output:
            self.log.setPlainText("Choose an output folder")
            return False
        if checkpoint is None:
            self.log.setPlainText("No semantic model: train or install one first")
            return False
        for key, value in (("input", inputs), ("output", output), ("format", self.format_combo.currentText())):
            self.settings.setValue(f"export/{key}", value)
        self.summary = None
        self.log.setPlainText(f"Exporting {inputs} → {output} …")
        self.progress.setRange(0, 0)
        self._started = time.perf_counter()
        self.job = ExportThread(
            [inputs],
            output,
            checkpoint,
            self.format_combo.currentText(),
            self.skip_check.isChecked(),
            parent=self,
            overwrite=self.overwrite_check.isChecked(),
        )
        self.job.progressed.connect(self._on_progress)
        self.job.finishedWith.connect(self._on_done)
        self.job.failed.connect(self._on_failed)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job.start()
        return True

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self.rate_label.setText("Cancelling after the current photo…")

    def _on_progress(self, done: int, total: int, path: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        elapsed = time.perf_counter() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        if not self.job.cancel_event.is_set():
            self.rate_label.setText(f"{done}/{total}  {rate:.1f} images/s  {Path(path).name}")
        self.progressed.emit(done, total, path)

    def _finish(self) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def _on_done(self, summary) -> None:
        self.summary = summary
        self._finish()
        self.rate_label.setText(f"{summary.images_per_second:.1f} images/s")
        self.log.setPlainText(summary.describe())

    def _on_failed(self, reason: str) -> None:
        self._finish()
        self.rate_label.setText("Export failed")
        self.log.setPlainText(f"Export failed: {reason}")

    def closeEvent(self, event) -> None:
        if self.running():
            self.job.cancel_event.set()
            self.job.wait(30000)
        super().closeEvent(event)
