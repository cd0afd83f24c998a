"""File > Export annotations… and File > Import annotations…: the ``petseg-export annotations``
engine (annotation_export) and the importers (annotation_import) in a thread, with progress and Cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PyQt5.QtCore import QSettings
from PyQt5.QtWidgets import QCheckBox, QComboBox, QFileDialog, QLabel, QLineEdit, QWidget

from petseg_desktop.annotation_export import FORMATS, AnnotationExportSummary, export_annotations
from petseg_desktop.annotation_import import IMPORT_FORMATS, ImportPlan, ImportSummary, plan_import, read_annotations
from petseg_desktop.export_dialog import folder_row
from petseg_desktop.job_dialog import JobDialog, ProgressCallback, browse_row

FORMAT_NOTES = {
    "png": "index PNG per photo (0 background, 1 cat, 2 dog)",
    "instance": "index PNG and instance PNG per photo",
    "coco": "annotations.json, one RLE mask per object (exact)",
    "coco-polygons": "annotations.json, polygons per object",
    "yolo": "Ultralytics YOLO-seg: labels/, images/, data.yaml",
    "labelme": "one labelme .json per photo",
    "cutout": "one RGBA cut-out PNG per object",
}


class AnnotationExportDialog(JobDialog):
    """The open folder's accepted objects written in one format; photos without objects are listed."""

    def __init__(self, settings: QSettings, folder: Path, flush: Callable[[], bool], parent: QWidget | None = None) -> None:
        super().__init__("Export annotations", "Export", parent)
        self.cancelled_text = "Export cancelled: nothing was written"
        self.settings = settings
        self.folder = folder
        self.flush = flush
        self.summary: AnnotationExportSummary | None = None
        default = folder.parent / f"{folder.name}-annotations"
        self.output_edit = QLineEdit(str(settings.value("annotations/output", "") or default))
        self.format_combo = QComboBox()
        for fmt in FORMATS:
            self.format_combo.addItem(f"{fmt} — {FORMAT_NOTES[fmt]}", fmt)
        remembered = str(settings.value("annotations/format", "coco"))
        self.set_format(remembered if remembered in FORMATS else "coco")
        self.overwrite_check = QCheckBox("Replace files PetSeg did not write")
        self.overwrite_check.setToolTip("Without this, a file in the way that petseg-export did not write stops the export")
        self.form.addRow("Photos", QLabel(str(folder)))
        self.form.addRow("Output folder", folder_row(self, self.output_edit, "Folder for the exported annotations"))
        self.form.addRow("Format", self.format_combo)
        self.form.addRow("", self.overwrite_check)
        self.resize(640, 400)

    def fmt(self) -> str:
        return str(self.format_combo.currentData())

    def set_format(self, fmt: str) -> None:
        self.format_combo.setCurrentIndex(FORMATS.index(fmt))

    def start(self) -> bool:
        output = self.output_edit.text().strip()
        if not output:
            self.log.setPlainText("Choose an output folder")
            return False
        fmt, overwrite = self.fmt(), self.overwrite_check.isChecked()
        self.settings.setValue("annotations/output", output)
        self.settings.setValue("annotations/format", fmt)
        note = "" if self.flush() else "The open photo's last edits could not be saved; they are not in this export.\n"
        self.summary = None
        folder, target = self.folder, Path(output)

        def job(progress: ProgressCallback, cancel: threading.Event) -> AnnotationExportSummary:
            def told(stage: str, done: int, total: int, name: str) -> None:
                progress(done, total, f"{stage} {name}")  # "reading Abyssinian_2.jpg", "writing annotations.json"

            return export_annotations(folder, target, fmt, overwrite, progress=told, cancel=cancel)

        self.launch(job, lambda summary: self._on_done(summary, note), f"{note}Exporting {folder} → {output} as {fmt} …")
        return True

    def _on_done(self, summary: AnnotationExportSummary, note: str) -> None:
        self.summary = summary
        self.rate_label.setText("Done")
        self.log.setPlainText(note + "\n".join(summary.lines()))


class AnnotationImportDialog(JobDialog):
    """Another tool's annotations become accepted objects (source "import") of the folder's photos."""

    def __init__(
        self,
        settings: QSettings,
        folder: Path,
        photos: list[Path],
        apply: Callable[[ImportPlan, bool], ImportSummary],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Import annotations", "Import", parent)
        self.cancelled_text = "Import cancelled: nothing was changed"
        self.settings = settings
        self.folder = folder
        self.photos = photos
        self.apply = apply
        self.summary: ImportSummary | None = None
        self.format_combo = QComboBox()
        for fmt, what in IMPORT_FORMATS.items():
            self.format_combo.addItem(f"{fmt} — {what}", fmt)
        self.path_edit = QLineEdit(str(settings.value("import/path", "")))
        self.existing_combo = QComboBox()
        self.existing_combo.addItem("Add the imported objects to theirs", False)
        self.existing_combo.addItem("Replace their objects", True)
        self.form.addRow("Photos", QLabel(f"{folder}  ({len(photos)} photos, matched by file name)"))
        self.form.addRow("Format", self.format_combo)
        self.form.addRow("File or folder", browse_row(self.path_edit, self._choose))
        self.form.addRow("Photos with objects", self.existing_combo)
        self.resize(640, 380)

    def fmt(self) -> str:
        return str(self.format_combo.currentData())

    def set_format(self, fmt: str) -> None:
        self.format_combo.setCurrentIndex(list(IMPORT_FORMATS).index(fmt))

    def _choose(self, current: str) -> str | None:
        if self.fmt() == "coco":
            return QFileDialog.getOpenFileName(self, "COCO annotations file", current, "JSON (*.json)")[0]
        return QFileDialog.getExistingDirectory(self, "Folder to import", current)

    def start(self) -> bool:
        path = self.path_edit.text().strip()
        if not path or not Path(path).exists():
            self.log.setPlainText(f"Not found: {path or '(empty)'}")
            return False
        self.settings.setValue("import/path", path)
        fmt, folder, photos = self.fmt(), self.folder, list(self.photos)
        replace = bool(self.existing_combo.currentData())
        self.summary = None

        def job(progress: ProgressCallback, cancel: threading.Event) -> ImportPlan:
            return plan_import(read_annotations(fmt, Path(path), folder), photos, progress, cancel)

        self.launch(job, lambda plan: self._on_done(plan, replace), f"Reading {path} as {fmt} …")
        return True

    def _on_done(self, plan: ImportPlan, replace: bool) -> None:
        self.summary = self.apply(plan, replace)
        self.rate_label.setText("Done")
        self.log.setPlainText("\n".join(self.summary.lines()))
