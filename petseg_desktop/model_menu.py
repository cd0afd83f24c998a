"""The Model menu: every discovered checkpoint, which prompt/semantic model is in use, auto-segment,
and Improve on this folder… (enabled only when it can run; its tooltip says why not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QAction, QActionGroup, QMenu

from models.classes import PROMPT, SEMANTIC
from petseg_desktop.improve_dialog import unavailable_reason

TITLES = {PROMPT: "Prompt model (clicks and boxes)", SEMANTIC: "Semantic model (class, auto-segment)"}
IMPROVE_TIP = "Fine-tune the semantic model (and, if asked, the prompt model) on this folder's annotated photos"


class ModelMenus:
    """Owns the model submenus and the choice of models; the worker does the loading."""

    def __init__(self, window) -> None:
        self.window = window
        self.menus: dict[str, QMenu] = {}
        self.groups: dict[str, QActionGroup] = {}
        self.entries: list = []
        self._chosen: dict[str, str | None] = {PROMPT: None, SEMANTIC: None}
        self._loaded: dict[str, tuple[str | None, dict[str, Any] | None, str | None]] = {
            PROMPT: (None, None, None),
            SEMANTIC: (None, None, None),
        }
        worker = window.worker
        worker.modelLoaded.connect(self._on_loaded)
        worker.modelFailed.connect(self._on_failed)

    def build(self, menu: QMenu) -> None:
        w = self.window
        for task in (PROMPT, SEMANTIC):
            sub = menu.addMenu(TITLES[task])
            sub.setToolTipsVisible(True)
            self.menus[task] = sub
        menu.addSeparator()
        self.auto_action = w.action("&Auto-segment (semantic model)", w.editor.auto_segment, "Ctrl+Shift+A", menu)
        w.action("&Refresh model list", lambda: self.refresh(load_defaults=False), None, menu)
        w.action("Model &info…", w.show_model_info, None, menu)
        menu.addSeparator()
        menu.setToolTipsVisible(True)  # a disabled Improve… says why
        self.improve_action = w.action("&Improve on this folder…", w.open_improve_dialog, "Ctrl+Shift+M", menu)
        self._improve_timer = QTimer(w)
        self._improve_timer.setSingleShot(True)  # one check after a burst of file-list changes
        self._improve_timer.timeout.connect(self.update_improve)
        files = w.files.model()
        for signal in (files.modelReset, files.rowsInserted, files.rowsRemoved, files.dataChanged,
                       w.worker.modelLoaded, w.worker.modelFailed):
            signal.connect(lambda *_: self._improve_timer.start(0))
        menu.aboutToShow.connect(self.update_improve)
        self.update_improve()

    def update_improve(self) -> None:
        """Enable Improve on this folder… when it can run; otherwise its tooltip says why not."""
        reason = unavailable_reason(self.window)
        self.improve_action.setEnabled(reason is None)
        self.improve_action.setToolTip(reason or IMPROVE_TIP)
        self.improve_action.setStatusTip(reason or IMPROVE_TIP)

    # ------------------------------------------------------------------ discovery
    def refresh(self, load_defaults: bool = False) -> None:
        from models.discovery import TRAINING, discover_checkpoints

        try:
            self.entries = discover_checkpoints()
        except OSError as error:
            self.entries = []
            self.window.warn("Model discovery", str(error))
        for task, sub in self.menus.items():
            sub.clear()
            for old in sub.findChildren(QMenu):
                old.deleteLater()  # the last refresh's Training runs submenu
            group = QActionGroup(sub)
            group.setExclusive(True)
            self.groups[task] = group
            usable = [e for e in self.entries if e.loadable and e.task == task]
            broken = [e for e in self.entries if not e.loadable]
            runs = [e for e in usable if e.source == TRAINING]
            # Training output can be dozens of runs: they get a submenu of their own, so that the
            # menu stays on the screen and its first entries are the models one ships or keeps.
            runs_menu = QMenu(f"Training runs ({len(runs)})", sub) if runs else None
            for entry in usable:
                act = QAction(entry.describe(), sub)
                act.setCheckable(True)
                act.setData(str(entry.path))
                act.setToolTip(str(entry.path))
                act.setChecked(str(entry.path) == self._chosen[task])
                act.triggered.connect(lambda _=False, t=task, p=str(entry.path): self.choose(t, p))
                group.addAction(act)
                (runs_menu if entry.source == TRAINING else sub).addAction(act)
            if runs_menu is not None:
                sub.addMenu(runs_menu)  # below the others
            if not usable:
                none = sub.addAction("(no checkpoint found)")
                none.setEnabled(False)
                none.setToolTip(self.missing_text(task))
            for entry in broken:
                act = sub.addAction(entry.describe())
                act.setEnabled(False)
                act.setToolTip(entry.error or "")
            if load_defaults and self._chosen[task] is None:
                default = self._default(task, usable)
                if default:
                    self.choose(task, default)

    def _default(self, task: str, usable: list) -> str | None:
        remembered = self.window.settings.value(f"model/{task}", "")
        if remembered and any(str(e.path) == remembered for e in usable):
            return remembered
        if not usable:
            return None
        try:
            from models.predictor import find_checkpoint

            return str(find_checkpoint(task))
        except Exception:  # noqa: BLE001 - fall back to the first usable one
            return str(usable[0].path)

    def choose(self, task: str, path: str) -> None:
        """Switch ``task``'s model; the worker loads it (the GUI keeps running)."""
        self._chosen[task] = path
        for act in (self.groups[task].actions() if task in self.groups else []):
            act.setChecked(act.data() == path)
        self.window.worker.load_model(task, path)
        self.window.statusBar().showMessage(f"Loading {Path(path).name}…", 5000)

    # ------------------------------------------------------------------ state
    def selected(self, task: str) -> str | None:
        return self._chosen[task]

    def loaded_info(self, task: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
        return self._loaded[task]

    def missing_text(self, task: str) -> str:
        from models.discovery import search_folders

        folders = "\n".join(f"  {folder}" for _, folder in search_folders())
        return (
            f"No usable {task} checkpoint was found. Put a PetSeg .safetensors checkpoint in one of:\n"
            f"{folders}\nor train one with petseg-train, then use Model → Refresh model list."
        )

    def _on_loaded(self, task: str, path: str, metadata: dict, device: str) -> None:
        if path != self._chosen[task]:
            return  # superseded by a later choice
        self._loaded[task] = (path, metadata, device)
        self.window.settings.setValue(f"model/{task}", path)
        w = self.window
        if task == PROMPT:
            w.model_label.setText(f"{Path(path).name} ({metadata.get('arch', '?')})")
            w.device_label.setText(device)
        else:
            w.editor.semantic_model_changed(True)
            if not w.device_label.text():
                w.device_label.setText(device)
        w.statusBar().showMessage(f"Loaded {Path(path).name} on {device}", 5000)

    def _on_failed(self, task: str, path: str, reason: str) -> None:
        if path == self._chosen[task]:
            self._chosen[task] = None
            for act in (self.groups[task].actions() if task in self.groups else []):
                act.setChecked(False)
            if task == SEMANTIC:
                self.window.editor.semantic_model_changed(False)
        self.window.warn(f"Cannot load the {task} model", reason)
