"""Batch export dialog: the ``petseg-export`` engine (export_images) in a QThread, with progress and cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PyQt5.QtCore import QSettings, pyqtSignal
from PyQt5.QtWidgets import QCheckBox, QComboBox, QFileDialog, QLineEdit, QWidget

from petseg_desktop.elide import elide_combo
from petseg_desktop.job_dialog import JobDialog, ProgressCallback, browse_row


def folder_row(dialog: QWidget, edit: QLineEdit, caption: str = "Choose folder") -> QWidget:
    """``edit`` with a "…" button that picks a folder."""
    return browse_row(edit, lambda current: QFileDialog.getExistingDirectory(dialog, caption, current))


class ExportDialog(JobDialog):
    """Folder in, folder out, semantic model, format; progress with images/s; cancel; failures."""

    exported = pyqtSignal(object)  # the ExportSummary, when an export has finished (masks may have been written)

    def __init__(self, settings: QSettings, folder: Path | None = None, parent=None) -> None:
        super().__init__("Batch export", "Export", parent)
        from petseg_desktop.export import FORMATS

        self.settings = settings
        self.summary = None
        self.input_edit = QLineEdit(str(folder or settings.value("export/input", "")))
        self.output_edit = QLineEdit(str(settings.value("export/output", "")))
        self.model_combo = QComboBox()
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(FORMATS))
        self.format_combo.setCurrentText(str(settings.value("export/format", "png")))
        self.skip_check = QCheckBox("Skip photos whose output exists")
        self.overwrite_check = QCheckBox("Replace files PetSeg did not write (hand-drawn masks, annotations.json)")
        self.form.addRow("Input folder", folder_row(self, self.input_edit))
        self.form.addRow("Output folder", folder_row(self, self.output_edit))
        self.form.addRow("Semantic model", self.model_combo)
        self.form.addRow("Format", self.format_combo)
        self.form.addRow("", self.skip_check)
        self.form.addRow("", self.overwrite_check)
        self._fill_models()
        elide_combo(self.model_combo)  # long checkpoint names are elided, in full in the tooltip
        self.resize(640, 440)

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
        fmt = self.format_combo.currentText()
        for key, value in (("input", inputs), ("output", output), ("format", fmt)):
            self.settings.setValue(f"export/{key}", value)
        self.summary = None
        self._started = time.perf_counter()
        skip, overwrite = self.skip_check.isChecked(), self.overwrite_check.isChecked()

        def job(progress: ProgressCallback, cancel: threading.Event):
            from models.predictor import load_segmenter
            from petseg_desktop.export import export_images

            segmenter = load_segmenter(checkpoint, None)
            return export_images([inputs], output, segmenter, fmt=fmt, skip_existing=skip,
                                 progress=progress, cancel=cancel, overwrite=overwrite)

        self.launch(job, self._on_done, f"Exporting {inputs} → {output} …")
        return True

    def show_progress(self, done: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        self.rate_label.setText(f"{done}/{total}  {rate:.1f} images/s  {Path(what).name}")

    def _on_done(self, summary) -> None:
        self.summary = summary
        self.rate_label.setText(f"{summary.images_per_second:.1f} images/s")
        self.log.setPlainText(summary.describe())
        self.exported.emit(summary)
