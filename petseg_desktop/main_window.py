"""The main window: wires the canvas, the panels, the editor, the worker and the menus together.

The canvas only draws and emits; the editor (Qt-light, no widgets) owns the annotation and the
undo stack; the worker (own thread) owns the models. Everything that can fail shows a dialog.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PyQt5 import sip
from PyQt5.QtCore import QSettings, Qt, QTimer
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import QAction, QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox

from models.classes import PROMPT, SEMANTIC
from models.version import __version__
from petseg_desktop.canvas import Canvas
from petseg_desktop.dialogs import InfoDialog, ModelInfoDialog, ShortcutsDialog, about_html, describe_model, keep_open
from petseg_desktop.docks import make_collapsible
from petseg_desktop.elide import ElidedLabel, elide_list, tooltips_from_text
from petseg_desktop.editor import Editor
from petseg_desktop.folder import list_images
from petseg_desktop.folder_lock import FolderLock
from petseg_desktop.folder_watch import FolderWatcher
from petseg_desktop.mask_files import UNSAVED, MaskNotOurs, mask_state, save_photo_mask
from petseg_desktop.hover_preview import HoverPreview
from petseg_desktop.model_menu import ModelMenus
from petseg_desktop.overlay_colours import OUTLINE, OverlayColoursDialog, load_colours, save_colours
from petseg_desktop.panels import FAILED, Controls, FileList, ObjectPanel
from petseg_desktop.worker import WorkerHost

MAX_RECENT = 8


DEFAULT_SIZE = (1280, 840)
MIN_RESTORED_SIZE = (800, 560)
DOCK_WIDTHS = {"Files": 150, "Objects": 220}  # first start: the canvas keeps most of a small window
OPEN_HINT = "Open a folder (Ctrl+Shift+O) or a photo (Ctrl+O)"
PROMPT_HINT = "Click the pet, or drag a box around it"
UNREADABLE_HINT = "This photo cannot be read: pick another in the Files list (A / D)"


def default_settings() -> QSettings:
    return QSettings(QSettings.IniFormat, QSettings.UserScope, "PetSeg", "petseg")


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, device: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle(f"PetSeg {__version__}")
        self.settings = settings or default_settings()
        self.host = WorkerHost(device, self)
        self.worker = self.host.worker
        self.editor = Editor(self.worker, self)
        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas)
        self.hover_preview = HoverPreview(self.canvas, self.editor, self.worker, self.settings, self)
        self.files = FileList()
        self.objects = ObjectPanel()
        self.controls = Controls()
        self.docks = {
            "Files": self._dock("Files", self.files, Qt.LeftDockWidgetArea),
            "Objects": self._dock("Objects", self.objects, Qt.RightDockWidgetArea),
            "View": self._dock("View", self.controls, Qt.RightDockWidgetArea),
        }
        self.view_title = make_collapsible(self.docks["View"])
        elide_list(self.objects.list)
        elide_list(self.files)  # the full path is each row's tooltip
        self._acted = False  # the user has prompted once: the first-run hint is not shown again
        self.watcher = FolderWatcher(self)
        self.watcher.changed.connect(self.rescan_folder)
        self._status_labels()
        self.folder: Path | None = None
        self.image_path: Path | None = None
        self.lock: FolderLock | None = None  # held while this window writes the folder's annotations
        self.read_only_dialog: QMessageBox | None = None
        self._row = -1
        self.models = ModelMenus(self)
        self._build_actions()
        self._connect()
        self._restore_settings()
        self.models.refresh(load_defaults=True)
        self.refresh()

    # ------------------------------------------------------------------ construction
    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _status_labels(self) -> None:
        self.size_label, self.model_label = ElidedLabel("Image and its size"), ElidedLabel("Prompt model")
        self.device_label, self.latency_label, self.cursor_label = QLabel(), QLabel(), QLabel()
        for label in (self.cursor_label, self.size_label, self.model_label, self.device_label, self.latency_label):
            label.setContentsMargins(6, 0, 6, 0)
            self.statusBar().addPermanentWidget(label)
        self.device_label.setToolTip("Device the models run on")
        self.latency_label.setToolTip("Time of the last model run")
        self.model_label.setText("no prompt model")
        self.read_only_label = QLabel("Read-only")
        self.read_only_label.setStyleSheet("color: #b00; font-weight: bold")
        self.read_only_label.setToolTip("Another PetSeg is annotating this folder: nothing is saved here")
        self.read_only_label.hide()
        self.statusBar().addPermanentWidget(self.read_only_label)
        self.tool_label = QLabel()  # while the brush or the eraser is on: clicks and drags paint, not prompt
        self.tool_label.setStyleSheet("font-weight: bold")
        self.tool_label.hide()
        self.statusBar().addPermanentWidget(self.tool_label)

    def action(self, text: str, slot, shortcut=None, menu=None, checkable=False, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(s) for s in shortcuts])
        act.setCheckable(checkable)
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip)
        act.triggered.connect(slot)
        self.addAction(act)  # shortcuts work even when the menu bar is hidden
        if menu is not None:
            menu.addAction(act)
        return act

    def _build_actions(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        self.action("&Open image…", self.choose_image, "Ctrl+O", m)
        self.action("Open &folder…", self.choose_folder, "Ctrl+Shift+O", m)
        self.recent_menu = m.addMenu("Recent folders")
        m.addSeparator()
        self.edit_actions: list[QAction] = []  # disabled while the folder is read-only
        self.save_action = self.action("&Save mask", self.save_mask, "Ctrl+S", m, tip="Index PNG 0/1/2 at full size")
        self.colour_action = self.action("Also save colour PNG", self._remember_colour, None, m, checkable=True)
        self.auto_write_action = self.action(
            "Write masks automatically", self._set_auto_write, None, m, checkable=True,
            tip="Rewrite <photo>_mask.png whenever the accepted objects change; off: Ctrl+S, asked on quit")
        self.action("Output folder…", self.choose_output_folder, None, m)
        self.beside_action = self.action("Save masks beside the images", self.masks_beside, None, m)
        m.addSeparator()
        self.action("&Batch export…", self.open_export_dialog, "Ctrl+E", m)
        self.action("Export &annotations…", self.open_annotation_export, "Ctrl+Shift+E", m,
                    tip="The folder's accepted objects as PNG, COCO, YOLO, labelme or cut-outs")
        self.import_action = self.action("&Import annotations…", self.open_annotation_import, "Ctrl+Shift+I", m,
                                         tip="COCO, labelme, YOLO or mask PNGs become objects of this folder's photos")
        self.edit_actions.append(self.import_action)
        m.addSeparator()
        self.action("&Quit", self.close, "Ctrl+Q", m)

        m = bar.addMenu("&Edit")
        self.undo_action = self.editor.stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo_action = self.editor.stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for act in (self.undo_action, self.redo_action):
            m.addAction(act)
            self.addAction(act)
        m.addSeparator()
        self.edit_actions += [
            self.save_action,
            self.action("&Accept object", self.accept_object, ["Return", "Enter"], m, tip="The mask becomes an object"),
            self.action("Cancel box / clear prompts", self.escape, "Esc", m),
            self.action("&Delete object", self.delete_object, ["Del", "Backspace"], m),
            self.action("Toggle &class cat/dog", self.toggle_class, "C", m),
            self.action("Re-edit selected object", self.edit_selected, "R", m),
            self.action("Bring object forward", lambda: self.move_object(1), "Ctrl+Up", m,
                        tip="Up the Objects list: painted over the objects below it"),
            self.action("Send object back", lambda: self.move_object(-1), "Ctrl+Down", m),
        ]
        self.overlap_action = self.action(
            "New objects may &overlap accepted ones", self.set_allow_overlap, None, m, True,
            tip="Off: a new object's mask leaves out accepted objects (brush strokes still take them)")
        m.addSeparator()
        self.brush_action = self.action("&Brush", lambda on: self.set_tool("brush" if on else None), "B", m, True)
        self.eraser_action = self.action("&Eraser", lambda on: self.set_tool("eraser" if on else None), "E", m, True)
        self.edit_actions += [self.brush_action, self.eraser_action]
        self.action("Smaller brush", lambda: self.controls.brush.stepBy(-2), "[", m)
        self.action("Larger brush", lambda: self.controls.brush.stepBy(2), "]", m)

        m = bar.addMenu("&View")
        self.action("&Fit to window", self.canvas.fit, "F", m)
        self.action("Zoom in", lambda: self.canvas.zoom_by(1.25), ["Ctrl++", "Ctrl+="], m)
        self.action("Zoom out", lambda: self.canvas.zoom_by(0.8), "Ctrl+-", m)
        self.overlay_action = self.action("Show &overlay", self.canvas.set_overlay_visible, "O", m, True)
        self.overlay_action.setChecked(True)
        self.hover_action = self.action("&Hover preview", self.hover_preview.set_enabled, None, m, True,
                                        tip="A faint mask of what a click would give, as the mouse rests on the photo")
        self.hover_action.setChecked(self.hover_preview.enabled())
        self.hover_preview.enabledChanged.connect(self.hover_action.setChecked)
        self.action("Overlay &colours…", self.choose_overlay_colours, None, m,
                    tip="Fill colour of cats and dogs, and of the outline around every mask")
        panels = m.addMenu("Panels")
        for dock in self.docks.values():
            panels.addAction(dock.toggleViewAction())

        m = bar.addMenu("&Navigate")
        self.action("&Next image", lambda: self.step(1), "D", m)
        self.action("&Previous image", lambda: self.step(-1), "A", m)
        self.action("Next &unannotated image", self.next_unannotated, "Shift+D", m)

        self.model_menu = bar.addMenu("&Model")
        self.models.build(self.model_menu)
        self.edit_actions.append(self.models.auto_action)

        m = bar.addMenu("&Help")
        self.action("&Shortcuts", self.show_shortcuts, "F1", m)
        self.action("&About PetSeg", self.show_about, None, m)

    def _connect(self) -> None:
        c, e = self.canvas, self.editor
        c.pointClicked.connect(self.on_point)
        c.boxDrawn.connect(self.on_box)
        c.strokeFinished.connect(e.brush)
        c.cursorMoved.connect(lambda x, y: self.cursor_label.setText(f"({x}, {y})"))
        e.changed.connect(self.refresh)
        e.mask_target = lambda: (self.output_dir(), self.colour_action.isChecked())
        e.stateChanged.connect(self.files.set_state)
        e.maskRefused.connect(lambda path: QTimer.singleShot(0, lambda: self._ask_overwrite(path)))
        e.predictionShown.connect(lambda s: self.latency_label.setText(f"mask {s * 1000:.0f} ms"))
        e.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        e.error.connect(self.warn)
        self.worker.failed.connect(lambda what, text: self.warn(f"Model error ({what})", text))
        self.worker.imageReady.connect(lambda i, s: self.latency_label.setText(f"encode {s * 1000:.0f} ms"))
        self.files.fileActivated.connect(self.open_row)
        self.objects.editRequested.connect(e.edit_object)
        self.objects.deleteRequested.connect(e.delete_object)
        self.objects.moveRequested.connect(self._move_object_to)
        self.objects.classChosen.connect(self.choose_class)
        self.controls.thresholdChanged.connect(e.set_threshold)
        self.controls.opacityChanged.connect(c.set_overlay_opacity)
        self.controls.brushChanged.connect(lambda r: setattr(c, "brush_radius", r))

    # ------------------------------------------------------------------ dialogs
    def warn(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    def show_shortcuts(self) -> ShortcutsDialog:
        rows = []
        for act in self.actions():
            keys = ", ".join(s.toString(QKeySequence.NativeText) for s in act.shortcuts())
            if keys:
                text = {self.undo_action: "Undo", self.redo_action: "Redo"}.get(act, act.text())
                rows.append((keys, text.replace("&", "")))
        self.shortcuts_dialog = keep_open(ShortcutsDialog(rows, self))
        return self.shortcuts_dialog

    def _model_paragraphs(self) -> list[str]:
        return [describe_model(task, *self.models.loaded_info(task)) for task in (PROMPT, SEMANTIC)]

    def show_about(self) -> InfoDialog:
        self.about_dialog = keep_open(InfoDialog("About PetSeg", about_html(self._model_paragraphs()), self))
        return self.about_dialog

    def show_model_info(self) -> ModelInfoDialog:
        models = [(task, *self.models.loaded_info(task)) for task in (PROMPT, SEMANTIC)]
        self.model_dialog = keep_open(ModelInfoDialog(models, self))
        return self.model_dialog

    def choose_overlay_colours(self) -> OverlayColoursDialog:
        """View > Overlay colours…: applied and saved when the dialog is accepted."""
        dialog = OverlayColoursDialog(load_colours(self.settings), self)
        dialog.accepted.connect(lambda: (save_colours(self.settings, dialog.colours), self._apply_colours()))
        self.colours_dialog = keep_open(dialog)
        return dialog

    def _apply_colours(self) -> None:
        colours = load_colours(self.settings)
        self.canvas.set_outline_colour(colours.pop(OUTLINE))
        self.canvas.set_class_colours(colours)

    def open_export_dialog(self):
        from petseg_desktop.export_dialog import ExportDialog

        dialog = ExportDialog(self.settings, folder=self.folder, parent=self)
        dialog.exported.connect(lambda _summary: self.reread_states())
        self.export_dialog = keep_open(dialog)
        return dialog

    def reread_states(self) -> None:
        """Read the listed photos' states again (something else wrote masks)."""
        paths = self.files.paths()
        for path, state in zip(paths, self._states(paths)):
            self.files.set_state(path, state)

    def _states(self, paths: list[Path]) -> list[str]:
        """The file-list state of each of ``paths``: the open photo's from the editor, the others'
        from disk; photos that failed to open keep saying so."""
        failed, out = set(self.files.rows_in(FAILED)), self.output_dir()
        return [FAILED if path in failed else self.editor.mask_state() if path == self.image_path
                else mask_state(path, out) for path in paths]

    def _folder_for(self, what: str) -> Path | None:
        """The open folder, or None after telling that ``what`` needs one."""
        if self.folder is None:
            self.warn(what, "Open a folder of photos first (File > Open folder…)")
        return self.folder

    def open_annotation_export(self):
        """File > Export annotations…: the open folder's accepted objects in another format."""
        from petseg_desktop.annotation_dialogs import AnnotationExportDialog

        if (folder := self._folder_for("Export annotations")) is None:
            return None
        self.editor.flush()  # the open photo's last edits are in its sidecar before anything is read
        dialog = AnnotationExportDialog(self.settings, folder, self.editor.flush, parent=self)
        self.annotation_dialog = keep_open(dialog)
        return dialog

    def open_improve_dialog(self):
        """Model > Improve on this folder…: one dialog at a time (a running one is brought forward, an
        idle one replaced by one that counts the photos again)."""
        from petseg_desktop.improve_dialog import ImproveDialog

        if self._folder_for("Improve on this folder") is None:
            return None
        dialog = getattr(self, "improve_dialog", None)
        if dialog is not None and not sip.isdeleted(dialog):
            if dialog.running():
                dialog.raise_()
                dialog.activateWindow()
                return dialog
            dialog.close()
        self.improve_dialog = keep_open(ImproveDialog(self))
        return self.improve_dialog

    def open_annotation_import(self):
        """File > Import annotations…: another tool's objects into this folder's photos."""
        from petseg_desktop.annotation_dialogs import AnnotationImportDialog

        if (folder := self._folder_for("Import annotations")) is None or self.editor.refuses_edits():
            return None
        dialog = AnnotationImportDialog(self.settings, folder, self.files.paths(), self.apply_import, parent=self)
        dialog.setWindowModality(Qt.WindowModal)  # the folder and the open photo stay put until it is closed
        self.annotation_dialog = keep_open(dialog)
        return dialog

    def apply_import(self, plan, replace: bool):
        """Give the matched photos their imported objects (the open one undoably, through the editor)."""
        from petseg_desktop.annotation_import import ImportSummary, apply_plan
        from petseg_desktop.sidecar import has_objects

        if self.editor.refuses_edits():  # the folder became read-only meanwhile
            return ImportSummary(failed=[(self.folder.name if self.folder else "", "the folder is read-only")])
        self.editor.flush()
        doc = self.editor.doc
        summary = apply_plan(plan, replace, doc.image_path if doc else None,
                             lambda objects: self.editor.import_objects(objects, replace))
        if self.editor.auto_write:
            self.write_photo_masks([p for p in plan.matched if has_objects(p) and p != self.image_path])
        out = self.output_dir()
        for photo in plan.matched:
            self.files.set_state(photo, mask_state(photo, out))
        self.refresh()
        self.statusBar().showMessage(summary.lines()[0], 8000)
        return summary

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        e, doc = self.editor, self.editor.doc
        self._refresh_hint_and_class()
        if doc is None:
            self.objects.set_objects([], None)
            self.canvas.set_prompts([], None)
            return
        key = (doc.image_path, tuple(id(o) for o in doc.objects), doc.editing)
        if key != getattr(self, "_objects_key", None):  # recolour objects only when they change
            self._objects_key = key
            self.canvas.set_objects(e.shown_labels())
        self.canvas.set_current_mask(e.current_mask())
        self.canvas.set_prompts(doc.prompts.points, doc.prompts.box)
        self.objects.set_objects(doc.objects, doc.editing, select=getattr(self, "_select_next", None))
        tooltips_from_text(self.objects.list)  # rows are elided to the dock's width
        self._select_next = None

    def _refresh_hint_and_class(self) -> None:
        """The first-run hint for what to do next, and a Class box that is empty without objects."""
        doc = self.editor.doc
        fresh = doc is not None and not doc.objects and doc.prompts.is_empty() and self.editor.current_mask() is None
        if doc is None:
            unreadable = 0 <= self._row < self.files.count() and self.files.state(self._row) == FAILED
            self.canvas.set_hint(UNREADABLE_HINT if unreadable else OPEN_HINT)
        else:
            self.canvas.set_hint(PROMPT_HINT if fresh and not self._acted else None)
        has_objects = doc is not None and bool(doc.objects)
        self.objects.combo.setEnabled(has_objects)
        if not has_objects:
            self.objects.combo.setCurrentIndex(-1)  # no leftover class of another photo's object

    # ------------------------------------------------------------------ prompts and objects
    def _prompt_model_ready(self) -> bool:
        if self.models.selected(PROMPT):
            return True
        self.warn("No prompt model", self.models.missing_text(PROMPT))
        return False

    def _may_prompt(self) -> bool:
        e = self.editor
        return e.doc is not None and not e.refuses_edits() and self._prompt_model_ready()

    def on_point(self, x: int, y: int, positive: bool) -> None:
        if self._may_prompt():
            self._acted = True
            self.editor.add_point(x, y, positive)

    def on_box(self, x0: int, y0: int, x1: int, y1: int) -> None:
        if self._may_prompt():
            self._acted = True
            self.editor.set_box(x0, y0, x1, y1)

    def accept_object(self) -> None:
        index = self.editor.accept()
        if index is not None:
            self._select_next = index
            self.refresh()

    def escape(self) -> None:
        if not self.canvas.cancel_box():
            self.editor.clear_prompts()

    def _target_object(self) -> int:
        doc = self.editor.doc
        if doc is None or not doc.objects:
            return -1
        row = self.objects.selected()
        return row if 0 <= row < len(doc.objects) else len(doc.objects) - 1

    def delete_object(self) -> None:
        self.editor.delete_object(self._target_object())

    def toggle_class(self) -> None:
        self.editor.toggle_class(self._target_object())

    def edit_selected(self) -> None:
        self.editor.edit_object(self._target_object())

    def move_object(self, step: int) -> None:
        """Move the selected object ``step`` places toward the front (+) or the back (-)."""
        index = self._target_object()
        if index >= 0:
            self._move_object_to(index, max(0, min(index + step, len(self.editor.doc.objects) - 1)))

    def _move_object_to(self, index: int, to: int) -> None:
        self._select_next = to  # the moved object stays selected
        self.editor.move_object(index, to)

    def choose_class(self, class_id: int) -> None:
        index = self._target_object()
        if index >= 0:
            self.editor.set_object_class(index, class_id)
        else:
            self.editor.default_class = class_id

    def set_tool(self, tool: str | None) -> None:
        """Brush, eraser or prompts (None); a tool with nothing in the editor re-edits the selected object."""
        doc = self.editor.doc
        idle = doc is not None and doc.editing is None and self.editor.current_mask() is None and doc.prompts.is_empty()
        note = ""
        if tool is not None and idle and doc.objects and not self.editor.read_only:
            self.edit_selected()  # the strokes then apply to that object
            note = f" on object {doc.editing + 1} (re-edit; Enter accepts, Esc cancels)" if doc.editing is not None else ""
        self.brush_action.setChecked(tool == "brush")
        self.eraser_action.setChecked(tool == "eraser")
        self.canvas.brush_mode = tool
        self.tool_label.setText(f"{tool.capitalize()} on ({tool[0].upper()}: back to prompts)" if tool else "")
        self.tool_label.setVisible(tool is not None)
        self.statusBar().showMessage(f"Tool: {tool or 'prompts'}{note}", 5000)

    # ------------------------------------------------------------------ files
    def open_path(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            self.open_folder(path)
        else:
            self.open_image(path)

    def choose_image(self) -> None:
        start = str(self.folder or self.settings.value("lastFolder", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Open image", start, "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp)")
        if path:
            self.open_image(Path(path))

    def choose_folder(self) -> None:
        start = str(self.folder or self.settings.value("lastFolder", str(Path.home())))
        path = QFileDialog.getExistingDirectory(self, "Open folder", start)
        if path:
            self.open_folder(Path(path))

    def _load_folder(self, folder: Path) -> bool:
        if self.folder is not None and self.folder.resolve() != folder.resolve() and not self.settle_unsaved():
            return False
        try:
            paths = list_images(folder)
        except OSError as error:
            self.warn("Cannot open folder", f"{folder}: {error.strerror or error}")
            return False
        self._lock_folder(folder)
        self.folder = folder
        out = self.output_dir()
        self.files.set_files(paths, [mask_state(p, out) for p in paths])
        self.watcher.watch(folder)
        self._add_recent(folder)
        return True

    def rescan_folder(self) -> None:
        """The open folder changed on disk: list its photos again, keeping states and the selection."""
        if self.folder is None:
            return
        try:
            paths = list_images(self.folder)
        except OSError:
            return  # gone or unreadable: the list stays as it was
        if paths == self.files.paths():
            return
        old = self.files.paths()
        self.files.set_files(paths, self._states(paths))
        self._row = self.files.row_of(self.image_path) if self.image_path is not None else -1
        self.files.select_row(self._row)
        added, removed = len(set(paths) - set(old)), len(set(old) - set(paths))
        self.statusBar().showMessage(f"{self.folder.name}: {added} photo(s) added, {removed} removed", 5000)

    # ------------------------------------------------------------------ one writer per folder
    def _lock_folder(self, folder: Path) -> None:
        """Take ``folder``'s annotation lock (kept while it stays open), or open it read-only.

        Reopening a read-only folder tries again, so it becomes writable once the other instance
        has closed it.
        """
        if self.lock is not None and self.lock.folder.resolve() == folder.resolve():
            return
        self.editor.flush()  # the open photo's last edits belong to the folder being left
        self.release_folder()
        lock = FolderLock(folder, self)
        taken = lock.acquire()
        if taken:
            self.lock = lock
        elif taken is None:  # cannot lock there: autosave reports the unwritable folder itself
            where = lock.path.parent
            self.statusBar().showMessage(f"Annotations of {folder.name} are not locked: {where} is not writable", 8000)
        self._set_read_only(f"{lock.holder()} is annotating {folder}" if taken is False else None)

    def release_folder(self) -> None:
        """Give up the annotation lock of the open folder (after the last autosave)."""
        if self.lock is not None:
            self.lock.release()
            self.lock.deleteLater()
            self.lock = None

    def _set_read_only(self, reason: str | None) -> None:
        """Read-only (no edits, no autosave, no masks) with ``reason`` told in one line, or writable."""
        self.editor.read_only = reason is not None
        self.read_only_label.setVisible(reason is not None)
        for act in self.edit_actions:
            act.setEnabled(reason is None)
        if self.read_only_dialog is not None:
            self.read_only_dialog.close()  # about the folder opened before
        if reason is None:
            return
        self.set_tool(None)
        text = (f"Opened read-only: {reason}; you can look at photos and annotations, nothing is saved here "
                "(reopen the folder once it is closed there)")
        self.statusBar().showMessage(text)
        title = "Folder opened read-only"
        self.read_only_dialog = QMessageBox(QMessageBox.Information, title, text, QMessageBox.Ok, self)
        self.read_only_dialog.setWindowModality(Qt.NonModal)
        self.read_only_dialog.show()

    def open_folder(self, folder: Path) -> None:
        folder = Path(folder)
        if not self._load_folder(folder):
            return
        if self.files.count() == 0:
            self.statusBar().showMessage(f"No images in {folder}", 5000)
            return
        last = self.settings.value(_last_photo_key(folder), "")
        self.open_row(max(0, self.files.row_of(folder / str(last))) if last else 0)  # where the user left off

    def open_image(self, path: Path) -> None:
        path = Path(path)
        if self.folder != path.parent or self.files.row_of(path) < 0:
            if not self._load_folder(path.parent):
                return
        row = self.files.row_of(path)
        if row < 0:  # e.g. an image type the folder listing skips: open it alone
            return self._open(path, -1)
        self.open_row(row)

    def open_row(self, row: int) -> None:
        if 0 <= row < self.files.count():
            self._open(self.files.paths()[row], row)

    def _open(self, path: Path, row: int) -> None:
        from models.images import ImageLoadError

        self._row = row
        self.files.select_row(row)
        try:
            self.editor.open_image(path)
        except (ImageLoadError, OSError) as error:
            self.files.set_state(path, FAILED)  # first: closing the image shows the hint that goes with it
            self.editor.close_image()
            self.canvas.set_image(None)
            self.image_path = None
            self.size_label.setText("")
            self.warn("Cannot open image", str(error))
            return
        self.image_path = path
        if self.folder == path.parent:
            self.settings.setValue(_last_photo_key(path.parent), path.name)
        self.latency_label.setText("")  # the timing of the previous photo's model runs no longer applies
        self.cursor_label.setText("")
        rgb = self.editor.rgb
        self.canvas.set_image(rgb)
        self._objects_key = None
        self.refresh()
        self.size_label.setText(f"{path.name}  {rgb.shape[1]}×{rgb.shape[0]}")
        suffix = " [read-only]" if self.editor.read_only else ""
        self.setWindowTitle(f"{path.name}{suffix} — PetSeg {__version__}")
        if 0 <= row < self.files.count() - 1:
            self.editor.prefetcher.prefetch(self.files.paths()[row + 1])  # D (next) opens without waiting

    def step(self, delta: int) -> None:
        n = self.files.count()
        if n:
            self.open_row(min(max(self._row + delta, 0), n - 1))

    def next_unannotated(self) -> None:
        n = self.files.count()
        for k in range(1, n + 1):
            row = (self._row + k) % n
            if self.files.state(row) == "todo":
                return self.open_row(row)
        self.statusBar().showMessage("Every image is annotated", 5000)

    def output_dir(self) -> Path | None:
        value = self.settings.value("output/folder", "")
        return Path(value) if value else None

    def choose_output_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for saved masks", str(self.output_dir() or self.folder or ""))
        if path:
            self.settings.setValue("output/folder", path)

    def masks_beside(self) -> None:
        self.settings.setValue("output/folder", "")

    def _remember_colour(self, on: bool) -> None:
        self.settings.setValue("output/colour", bool(on))

    def save_mask(self) -> list[Path]:
        if self.editor.doc is None or self.editor.refuses_edits():
            return []
        try:
            written = self.editor.save_mask(self.output_dir(), self.colour_action.isChecked())
        except MaskNotOurs as refusal:
            return self.save_mask() if self._ask_overwrite(refusal.path) else []
        except (OSError, ValueError) as error:
            self.warn("Cannot save the mask", f"{error}\nChoose another output folder (File menu).")
            return []
        current = self.editor.current_mask()
        pending = current is not None and current.any()
        if not self.editor.doc.objects:  # nothing is written for a photo without objects
            why = "press Enter to accept the object first" if pending else "this photo has no objects"
            self.statusBar().showMessage(f"Nothing saved: {why}", 8000)
        else:
            note = "the current object is not accepted yet (press Enter, then save again): " if pending else ""
            self.statusBar().showMessage("Saved " + note + ", ".join(str(p) for p in written), 8000)
        return written

    def _set_auto_write(self, on: bool) -> None:
        """File > Write masks automatically: remembered; turning it on writes the open photo's mask now."""
        self.settings.setValue("output/autoWrite", bool(on))
        self.editor.auto_write = bool(on)
        self.editor.flush(force=True)

    def _ask_overwrite(self, path: Path) -> bool:
        """Ask once whether the mask ``path``, which PetSeg did not write, may be replaced."""
        if path in self.editor.overwrite_ok:
            return True
        answer = QMessageBox.question(
            self, "Replace a mask?", f"{path} exists and was not written by PetSeg.\nReplace it with this "
            "photo's objects? (No: it is kept and this photo's mask is not written)",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer != QMessageBox.Yes:
            self.editor.refused.add(path)
            return False
        self.editor.overwrite_ok.add(path)
        self.editor.refused.discard(path)
        self.editor.flush(force=True)
        return True

    def write_photo_masks(self, photos: list[Path]) -> list[str]:
        """Write the masks of ``photos`` from their saved annotations (the open one through the editor);
        returns one line per photo that failed (a mask PetSeg did not write is kept, and listed)."""
        out, colour = self.output_dir(), self.colour_action.isChecked()
        failed = []
        for photo in photos:
            try:
                if photo == self.image_path and self.editor.doc is not None:
                    self.editor.save_mask(out, colour)
                else:
                    save_photo_mask(photo, out, colour, tuple(self.editor.overwrite_ok))
            except (OSError, ValueError) as error:  # SidecarError is a ValueError
                failed.append(f"{photo.name}: {error}")
            self.files.set_state(photo, mask_state(photo, out))
        return failed

    def settle_unsaved(self) -> bool:
        """Before the folder is left with masks not written automatically: with photos whose mask is missing
        or stale, ask Save all / Discard / Cancel. Returns False when the folder must stay open (Cancel, or
        a mask could not be written)."""
        self.editor.flush()
        unsaved = self.files.rows_in(UNSAVED)
        if not unsaved or self.editor.read_only or self.editor.auto_write:
            return True
        answer = QMessageBox.question(
            self, "Masks not saved", _unsaved_question(len(unsaved), self.folder.name),
            QMessageBox.SaveAll | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.SaveAll)
        if answer == QMessageBox.Discard:
            return True
        if answer != QMessageBox.SaveAll:
            return False
        failed = self.write_photo_masks(unsaved)
        if failed:
            self.warn("Masks not written", "\n".join(failed))
        return not failed

    def _add_recent(self, folder: Path) -> None:
        recent = [str(folder), *[f for f in self._recent() if f != str(folder)]][:MAX_RECENT]
        self.settings.setValue("recentFolders", recent)
        self.settings.setValue("lastFolder", str(folder))
        self._rebuild_recent()

    def _recent(self) -> list[str]:
        value = self.settings.value("recentFolders", []) or []
        return [value] if isinstance(value, str) else list(value)

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for folder in self._recent():
            act = self.recent_menu.addAction(folder)
            act.triggered.connect(lambda _=False, f=folder: self.open_folder(Path(f)))
        self.recent_menu.setEnabled(bool(self._recent()))

    # ------------------------------------------------------------------ settings and closing
    def set_allow_overlap(self, on: bool) -> None:
        """Edit > New objects may overlap accepted ones (remembered)."""
        self.settings.setValue("edit/allowOverlap", bool(on))
        self.editor.set_allow_overlap(on)

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        restored = geometry is not None and self.restoreGeometry(geometry)
        if not restored or self.width() < MIN_RESTORED_SIZE[0] or self.height() < MIN_RESTORED_SIZE[1]:
            self.resize(*DEFAULT_SIZE)  # first start, or a saved size too small to work in
        state = self.settings.value("window/state")
        if state is None or not self.restoreState(state):
            docks = [self.docks[title] for title in DOCK_WIDTHS]
            self.resizeDocks(docks, list(DOCK_WIDTHS.values()), Qt.Horizontal)
        self.view_title.set_expanded(self.settings.value("window/viewExpanded", True) in (True, "true", "1", 1))
        self._apply_colours()
        colour = self.settings.value("output/colour", False)
        self.colour_action.setChecked(colour in (True, "true", "1", 1))
        self.editor.auto_write = self.settings.value("output/autoWrite", True) in (True, "true", "1", 1)
        self.auto_write_action.setChecked(self.editor.auto_write)
        overlap = self.settings.value("edit/allowOverlap", False) in (True, "true", "1", 1)
        self.overlap_action.setChecked(overlap)
        self.editor.set_allow_overlap(overlap)
        self._rebuild_recent()

    def closeEvent(self, event) -> None:
        if not self.settle_unsaved():
            event.ignore()
            return
        self.release_folder()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/viewExpanded", self.view_title.expanded())
        self.settings.sync()
        for name in ("export_dialog", "annotation_dialog", "improve_dialog"):
            dialog = getattr(self, name, None)
            if dialog is not None:
                try:
                    dialog.close()
                except RuntimeError:  # already deleted
                    pass
        self.editor.prefetcher.shutdown()
        self.host.shutdown()
        super().closeEvent(event)


def _unsaved_question(count: int, folder: str) -> str:
    """The close question for ``count`` photos of ``folder`` whose mask file is missing or stale."""
    if count == 1:
        return (f"1 photo in {folder} has objects whose mask file is missing or older than the annotation. "
                "Write its mask?")
    return (f"{count} photos in {folder} have objects whose mask file is missing or older than the annotation. "
            "Write their masks?")


def _last_photo_key(folder: Path) -> str:
    """The settings key of the photo last open in ``folder`` (a digest: paths make poor keys)."""
    return "lastPhoto/" + hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]
