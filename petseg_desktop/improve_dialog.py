"""Model > Improve on this folder…: fine-tune the models in use on the open folder's annotated photos.

The photos whose mask is written and current are copied into a work folder (finetune_files.py), then
``petseg-train finetune`` runs as a child process (finetune_process.py), once for the semantic model
and, when asked, once more for the prompt model. A fifth of the photos is kept aside: a fine-tuned
model is added to the Model menu only when it beats the one it started from there.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PyQt5.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from models.classes import PROMPT, SEMANTIC
from petseg_desktop.finetune_files import (
    MIN_PHOTOS,
    copy_training_data,
    install_checkpoint,
    saved_photos,
    work_folder,
)
from petseg_desktop.finetune_process import FinetuneProcess, finetune_arguments, training_root
from petseg_desktop.job_dialog import JobDialog, browse_row
from petseg_desktop.mask_files import SAVED

DEFAULT_EPOCHS = 10  # petseg-train finetune's own default
REPLAY_EPOCHS = 40  # its default with --replay
REPLAY_SETTING = "improve/replay_folder"
MODEL_NAMES = {SEMANTIC: "Semantic model", PROMPT: "Prompt model"}
MEASURES = {SEMANTIC: [("val_miou", "val mIoU")],
            PROMPT: [("iou_1click", "IoU @1 click"), ("val_miou", "IoU @3 clicks (decides)")]}


def unavailable_reason(window) -> str | None:
    """Why Model > Improve on this folder… cannot run for ``window`` now, or None when it can."""
    if training_root() is None:
        return ("Training is not part of this installation (the packaged app); "
                "a Python install of PetSeg fine-tunes with petseg-train finetune")
    if window.folder is None:
        return "Open a folder of annotated photos first (File > Open folder…)"
    if not window.models.loaded_info(SEMANTIC)[0]:
        return "Load a semantic model first (Model > Semantic model)"
    count = len(window.files.rows_in(SAVED))
    return None if count >= MIN_PHOTOS else shortfall(count)


def shortfall(count: int) -> str:
    """What is missing when only ``count`` photos have a saved mask."""
    return (f"{count} photo{'' if count == 1 else 's'} of this folder {'has' if count == 1 else 'have'} a saved mask; "
            f"at least {MIN_PHOTOS} are needed: annotate {MIN_PHOTOS - count} more and save their masks")


def time_left(seconds: float) -> str:
    """``about 2 min 5 s left``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"about {minutes} min {secs} s left" if minutes else f"about {secs} s left"


@dataclass
class Run:
    """One model's fine-tune: where it starts, what the child said, and what was added."""

    task: str
    checkpoint: Path
    arch: str
    before: dict[str, Any] = field(default_factory=dict)  # the "parent" event
    best: dict[str, Any] = field(default_factory=dict)  # the last improving "epoch" event
    top: dict[str, float] = field(default_factory=dict)  # each measure's best over all epochs
    installed: Path | None = None

    def record_epoch(self, event: dict[str, Any]) -> None:
        if event.get("improved"):
            self.best = event
        for key, _ in MEASURES[self.task]:
            if isinstance(event.get(key), (int, float)):
                self.top[key] = max(self.top.get(key, event[key]), event[key])


class ImproveDialog(JobDialog):
    """Counts the folder's annotated photos, runs the fine-tune(s), shows before/after and adds the winners."""

    def __init__(self, window) -> None:
        super().__init__("Improve on this folder", "Start", window)
        self.window = window
        self.folder: Path = window.folder
        self.cancelled_text = "Cancelled: nothing was added"
        window.editor.flush()  # the open photo's last edits count
        self.photos = saved_photos(window.files.paths(), window.output_dir())
        self.runs: list[Run] = []
        self.current: Run | None = None
        self.process: FinetuneProcess | None = None
        self.work: Path | None = None
        self.when = datetime.now()
        self._cancelling = False
        self._clock: tuple[float, int] | None = None  # (time, steps done) at the current run's first step
        self._build_form()
        window.worker.modelLoaded.connect(self._model_loaded)
        self.results = self._build_results()
        self.layout().insertWidget(3, self.results)  # below the status line, above the log
        self.results.hide()
        self.resize(560, 520)

    # ------------------------------------------------------------------ the form
    def _build_form(self) -> None:
        count = len(self.photos)
        enough = count >= MIN_PHOTOS
        text = f"{count} photo{'' if count == 1 else 's'} in “{self.folder.name}” with a saved, current mask"
        self.count_label = QLabel(text if enough else f"{text}.\n{shortfall(count)}.")
        self.count_label.setWordWrap(True)
        self.form.addRow("Photos:", self.count_label)
        aside = QLabel(f"a fifth of them (about {round(count / 5)}) are kept aside: a new model is added "
                       "only if it beats the current one on them")
        aside.setWordWrap(True)
        self.form.addRow("Judged on:", aside)
        self.start_label = QLabel()
        self.form.addRow("Starts from:", self.start_label)
        semantic = self._show_start()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100)
        self.epochs.setValue(DEFAULT_EPOCHS)
        self.epochs.setToolTip("Passes over the training photos; the best epoch on the photos kept aside is kept")
        self.form.addRow("Epochs:", self.epochs)
        self.replay = QLineEdit(str(self.window.settings.value(REPLAY_SETTING, "", type=str)))
        self.replay.setPlaceholderText("optional: the models' original training data (e.g. Oxford-IIIT Pet)")
        self.replay.setToolTip(
            "A folder of labelled pet photos the models learned from. Its photos are mixed into every epoch and an "
            f"epoch that gets worse on some of them is never kept, so the whole model can learn ({REPLAY_EPOCHS} "
            "epochs). Without it the encoder stays frozen and the cat/dog split is kept from the current model.")
        self.replay.textChanged.connect(self._replay_changed)
        self.form.addRow("Original data:", browse_row(self.replay, lambda current: QFileDialog.getExistingDirectory(
            self, "The models' original training data", current)))
        self._replay_changed(self.replay.text())
        self.also_prompt = QCheckBox("Also the prompt model (clicks and boxes)")
        prompt_path, _, _ = self.window.models.loaded_info(PROMPT)
        self.also_prompt.setEnabled(bool(prompt_path))
        self.also_prompt.setToolTip(f"Then fine-tune {Path(prompt_path).name} on the same photos" if prompt_path
                                    else "No prompt model is loaded")
        self.form.addRow("", self.also_prompt)
        self.start_button.setEnabled(enough and semantic is not None)
        self.log.setPlaceholderText("The training log appears here")

    def _replay_changed(self, text: str) -> None:
        """The epochs follow the recipe (with or without original data) until the user sets them."""
        epochs = REPLAY_EPOCHS if text.strip() else DEFAULT_EPOCHS
        if self.epochs.value() in (DEFAULT_EPOCHS, REPLAY_EPOCHS):
            self.epochs.setValue(epochs)

    def _replay_folder(self) -> Path | None:
        text = self.replay.text().strip()
        return Path(text).expanduser() if text else None

    def _build_results(self) -> QWidget:
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Model", "On the photos kept aside", "Before", "After"])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.use_button = QPushButton("Use the new model")
        self.use_button.clicked.connect(self.use_new_models)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.use_button)
        column.addWidget(self.table)
        column.addWidget(self.verdict)
        column.addLayout(row)
        return box

    def _loaded_run(self, task: str) -> Run | None:
        """A run from ``task``'s model in use, or None when none is loaded."""
        path, metadata, _ = self.window.models.loaded_info(task)
        return Run(task, Path(path), (metadata or {}).get("arch", "model")) if path else None

    def _show_start(self) -> Run | None:
        """Say which semantic model a run starts from (the one in use now); returns its run."""
        run = self._loaded_run(SEMANTIC)
        self.start_label.setText(f"{run.checkpoint.name} ({run.arch})" if run else "no semantic model loaded")
        self.start_label.setToolTip(str(run.checkpoint) if run else "")
        return run

    def _model_loaded(self, task: str, *_: Any) -> None:
        """Another model chosen while the dialog is open: say so (a run in progress keeps its own)."""
        if task == SEMANTIC and not self.running():
            self._show_start()

    # ------------------------------------------------------------------ running
    def running(self) -> bool:
        return super().running() or (self.process is not None and self.process.running())

    def start(self) -> bool:
        """Copy the annotated photos, then fine-tune each chosen model in turn."""
        semantic = self._show_start()
        if self.running() or semantic is None or len(self.photos) < MIN_PHOTOS:
            return False
        replay = self._replay_folder()
        if replay is not None and not replay.is_dir():
            self.rate_label.setText(f"Original data: {replay} is not a folder")
            return False
        self.when = datetime.now()
        self.work = work_folder(self.folder, self.when)
        prompt = self._loaded_run(PROMPT) if self.also_prompt.isChecked() else None
        self.runs = [semantic, *([prompt] if prompt else [])]
        self._cancelling = False
        self.current = None
        self.results.hide()
        self.epochs.setEnabled(False)
        self.replay.setEnabled(False)
        self.also_prompt.setEnabled(False)
        self.window.settings.setValue(REPLAY_SETTING, self.replay.text().strip())
        output_dir, data = self.window.output_dir(), self.work / "data"
        self.launch(lambda progress, cancel: copy_training_data(self.photos, output_dir, data, progress, cancel),
                    self._copied, f"Copying {len(self.photos)} photos and their masks to {data}")
        return True

    def _copied(self, left_out: list[str]) -> None:
        """The photos are copied: train, unless too few had a mask that can be trained on."""
        if left_out:
            self.log.appendPlainText(f"Left out {len(left_out)} photo{'s' if len(left_out) > 1 else ''} whose "
                                     "mask cannot be trained on:\n" + "\n".join(left_out))
        usable = len(self.photos) - len(left_out)
        if usable < MIN_PHOTOS:
            return self._failed(f"{usable} photos have a mask that can be trained on; at least {MIN_PHOTOS} are needed")
        self._next_run()

    def show_progress(self, done: int, total: int, what: str) -> None:
        self.rate_label.setText(f"Copying photos: {done}/{total}")

    def _next_run(self) -> None:
        """Start the first run that has not finished, or show the results when all have."""
        index = 0 if self.current is None else self.runs.index(self.current) + 1
        if index == len(self.runs):
            return self._show_results()
        self.current = run = self.runs[index]
        if self.process is not None:
            self.process.deleteLater()  # the previous run's, which has ended
        self.process = FinetuneProcess(self)
        self.process.reported.connect(self._on_event)
        self.process.logLine.connect(self.log.appendPlainText)
        self.process.ended.connect(self._on_ended)
        self._clock = None
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.rate_label.setText(f"{MODEL_NAMES[run.task]}: measuring {run.checkpoint.name} on the photos kept aside…")
        self.log.appendPlainText(f"\n{MODEL_NAMES[run.task]}: fine-tuning {run.checkpoint.name}")
        out = self.work / f"finetune-{run.arch}"
        self.process.start(finetune_arguments(run.checkpoint, self.work / "data", out, self.folder, self.epochs.value(),
                                              self._replay_folder()))

    def _on_event(self, event: dict) -> None:
        run, kind = self.current, event["event"]
        if kind == "parent":
            run.before = event
        elif kind in ("epoch", "mix"):  # a mixture with the starting model is judged like an epoch
            run.record_epoch(event)
        elif kind == "done":
            run.best = run.best if event.get("best_epoch") or event.get("mixed") is not None else {}
        elif kind == "step" and not self._cancelling:
            self._show_step(event)

    def _show_step(self, event: dict) -> None:
        """The bar over every step of every run; the status line with the epoch and the time left."""
        per_run = event["epochs"] * event["steps"]
        in_run = (event["epoch"] - 1) * event["steps"] + event["step"]
        index = self.runs.index(self.current)
        total, done = per_run * len(self.runs), per_run * index + in_run
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, done)
        started, first = self._clock
        left = time_left((now - started) / (done - first) * (total - done)) if done > first else "timing…"
        name = MODEL_NAMES[self.current.task]
        self.rate_label.setText(f"{name}: epoch {event['epoch']}/{event['epochs']}, {left}")
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _on_ended(self, reason: str | None) -> None:
        run = self.current
        if self._cancelling:
            return self._stopped()
        if reason is not None:
            return self._failed(reason)
        best = self.work / f"finetune-{run.arch}" / "best.safetensors"
        if run.best and best.is_file():
            try:
                run.installed = install_checkpoint(best, run.arch, self.folder, self.when)
            except OSError as error:
                return self._failed(f"cannot copy the new checkpoint into the checkpoint folder: {error}")
            self.log.appendPlainText(f"Added {run.installed}")
        self._next_run()

    # ------------------------------------------------------------------ the end
    def _idle(self) -> None:
        self.current = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.epochs.setEnabled(True)
        self.replay.setEnabled(True)
        self.also_prompt.setEnabled(bool(self.window.models.loaded_info(PROMPT)[0]))
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        if self.work is not None:
            shutil.rmtree(self.work / "data", ignore_errors=True)  # the copies of the photos are not kept
            if self.work.is_dir() and not any(self.work.iterdir()):
                self.work.rmdir()  # a run that never started leaves no empty folder

    def _show_results(self) -> None:
        self._idle()
        self.progress.setValue(self.progress.maximum())
        self.table.setRowCount(0)
        for run in self.runs:
            for key, measure in MEASURES[run.task]:
                self._add_row(MODEL_NAMES[run.task], measure, run.before.get(key),
                              (run.best or run.top).get(key))
        self.table.resizeColumnsToContents()
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(self.table.horizontalHeader().height() + rows + 2 * self.table.frameWidth())
        added = [run for run in self.runs if run.installed]
        lines = [f"{MODEL_NAMES[run.task]}: added as {run.installed.name} (Model menu)" if run.installed else
                 f"{MODEL_NAMES[run.task]}: the fine-tuned model did not beat the current one on the photos kept "
                 "aside; nothing was added" for run in self.runs]
        self.verdict.setText("\n".join(lines))
        self.use_button.setVisible(bool(added))
        self.use_button.setText("Use the new models" if len(added) > 1 else "Use the new model")
        self.results.show()
        self.resize(self.width(), max(self.height(), self.sizeHint().height()))  # the log keeps its room
        self.rate_label.setText("Done: a new model was added" if added else "Done: nothing was added")
        if added:
            self.window.models.refresh()

    def _add_row(self, model: str, measure: str, before: Any, after: Any) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        for column, value in enumerate((model, measure, before, after)):
            text = f"{value:.4f}" if isinstance(value, (int, float)) else str(value or "–")
            self.table.setItem(row, column, QTableWidgetItem(text))

    def _failed(self, reason: str) -> None:
        self._idle()
        self.rate_label.setText("Failed")
        self.log.appendPlainText(f"Failed: {reason}")
        if any(run.installed for run in self.runs):
            self._show_results()
            self.rate_label.setText("Failed")

    def _stopped(self) -> None:
        self._idle()
        kept = [run.installed.name for run in self.runs if run.installed]
        text = f"Cancelled: nothing more was added (kept: {', '.join(kept)})" if kept else self.cancelled_text
        self.rate_label.setText("Cancelled")
        self.log.appendPlainText(text)
        if self.work is not None and not kept:
            shutil.rmtree(self.work, ignore_errors=True)  # a cancelled run's log is of no use

    def _on_failed(self, reason: str) -> None:
        """The copy failed or was cancelled (JobDialog's thread)."""
        if self.cancelled():
            self._stopped()
        else:
            super()._on_failed(reason)
            self._idle()

    def use_new_models(self) -> None:
        """Switch the window to the models this dialog added."""
        for run in self.runs:
            if run.installed:
                self.window.models.choose(run.task, str(run.installed))
        self.use_button.setEnabled(False)
        self.use_button.setText("In use")

    # ------------------------------------------------------------------ stopping
    def cancel(self) -> None:
        if self.process is not None and self.process.running():
            self._cancelling = True
            self.cancel_button.setEnabled(False)
            self.rate_label.setText("Cancelling…")
            self.process.stop()
        else:
            super().cancel()

    def closeEvent(self, event) -> None:
        """While it runs: ask, then stop the child and wait for it (no process outlives the dialog)."""
        if self.running():
            answer = QMessageBox.question(self, "Training is running", "Stop the training? Nothing more is added.",
                                          QMessageBox.Ok | QMessageBox.Cancel, QMessageBox.Cancel)
            if answer != QMessageBox.Ok:
                event.ignore()
                return
            self._cancelling = True
            if self.process is not None and self.process.running():
                self.process.stop_and_wait()  # its end signal tidies up
            else:
                super().cancel()
                self.job.wait()
                self._stopped()
        super().closeEvent(event)

