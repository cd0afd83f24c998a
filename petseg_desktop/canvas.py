"""The image canvas: draws the photo, the overlays and the prompts, and emits what the user does.

It holds no annotation state of its own: the main window pushes the image, the objects' label
map, the current mask and the prompts in, and listens to ``pointClicked``, ``boxDrawn`` and
``strokeFinished``. Wheel zooms around the cursor; middle-drag or Space+drag pans.
``hoverChanged`` tells where the idle mouse is (for the hover preview), or None when the mouse
leaves, is pressed, drags, pans, paints or a key is pressed.
"""

from __future__ import annotations

import cv2
import numpy as np
from PyQt5.QtCore import QEvent, QPointF, QRect, QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPixmap, QPolygonF
from PyQt5.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QWidget,
)

from models.classes import CAT, DOG

RGB = tuple[int, int, int]
OVERLAY_COLOURS: dict[int, RGB] = {CAT: (255, 140, 0), DOG: (30, 144, 255)}  # accepted objects: orange cat, blue dog
CURRENT_COLOUR: RGB = (255, 230, 0)  # the object being edited: yellow
PREVIEW_COLOUR: RGB = (255, 255, 255)  # the hover preview: faint white with a dashed edge
PREVIEW_OPACITY = 0.3
OUTLINE_COLOUR: RGB = (255, 255, 255)  # the edge drawn around every overlay, at full opacity
OUTLINE_WIDTH = 1.5  # screen pixels (the edge keeps its width under zoom)
SMOOTH_FROM_ZOOM = 1.0  # overlays are interpolated (smooth edges) from this zoom up; below, nearest is cheaper
DRAG_THRESHOLD = 5  # screen pixels before a press becomes a box drag
POINT_RADIUS = 5  # screen pixels (dots keep their size under zoom)


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def indexed_qimage(index: np.ndarray, colours: dict[int, RGB]) -> QImage:
    """An 8-bit indexed QImage of ``index`` (a label map or a bool mask): ``colours`` opaque, the rest clear.

    One byte per pixel instead of four: a 24 MP overlay is built several times faster than as RGBA.
    """
    index = np.ascontiguousarray(index.view(np.uint8) if index.dtype == bool else index, dtype=np.uint8)
    h, w = index.shape
    image = QImage(index.data, w, h, w, QImage.Format_Indexed8)
    table = [0] * 256  # transparent
    for value, (r, g, b) in colours.items():
        table[value] = QColor(r, g, b).rgba()
    image.setColorTable(table)
    return image.copy()


def outline_path(index: np.ndarray, values) -> QPainterPath:
    """The edges of the regions of ``index`` (a label map or a bool mask) with each of ``values``, as one path.

    Contours are traced at full resolution through pixel centres, so the edge stays smooth under zoom.
    """
    path = QPainterPath()
    index = index.view(np.uint8) if index.dtype == bool else index
    for value in values:
        region = (index == value).view(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_TC89_L1)
        for contour in contours:
            points = contour.reshape(-1, 2) + 0.5
            polygon = QPolygonF([QPointF(x, y) for x, y in points])
            polygon.append(polygon.first())
            path.addPolygon(polygon)
    return path


class HintOverlay(QWidget):
    """A caption near the bottom of its parent (the canvas viewport); clicks go through it to the canvas."""

    PADDING = (14, 8)  # horizontal, vertical, in pixels

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WA_TransparentForMouseEvents, True)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.setFont(font)
        self.text = ""
        self.hide()

    def set_text(self, text: str | None) -> None:
        self.text = text or ""
        self.setVisible(bool(text))
        self.place()
        self.update()

    def _text_rect(self, room: int) -> QRect:
        return self.fontMetrics().boundingRect(QRect(0, 0, room, 10_000), Qt.AlignCenter | Qt.TextWordWrap, self.text)

    def place(self) -> None:
        """Centre on the bottom of the parent, wrapped only if one line does not fit."""
        area = self.parentWidget().rect()
        px, py = self.PADDING
        text = self._text_rect(max(80, area.width() - 40 - 2 * px))
        self.setFixedSize(text.width() + 2 * px, text.height() + 2 * py)
        self.move((area.width() - self.width()) // 2, max(0, area.height() - self.height() - 24))

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(0, 0, 0, 160))
        painter.drawRoundedRect(QRectF(self.rect()), 6, 6)
        painter.setPen(Qt.white)
        painter.drawText(self.rect(), Qt.AlignCenter | Qt.TextWordWrap, self.text)


class Canvas(QGraphicsView):
    """QGraphicsView showing one image; scene coordinates are image pixel coordinates."""

    pointClicked = pyqtSignal(int, int, bool)  # x, y, positive
    boxDrawn = pyqtSignal(int, int, int, int)  # x0, y0, x1, y1 (exclusive end)
    strokeFinished = pyqtSignal(object, int, bool)  # [(x, y)], radius in image px, erase
    cursorMoved = pyqtSignal(int, int)
    hoverChanged = pyqtSignal(object)  # (x, y) image pixel under the idle mouse, or None

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.SmoothPixmapTransform, False)  # per item: see _update_smoothing
        self.setRenderHint(QPainter.Antialiasing, True)  # the overlay outlines
        self.setTransformationAnchor(QGraphicsView.NoAnchor)  # zoom_by keeps its own anchor point
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setDragMode(QGraphicsView.NoDrag)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setBackgroundBrush(QColor(40, 40, 40))
        self._image_item = QGraphicsPixmapItem()
        self._objects_item = QGraphicsPixmapItem()
        self._current_item = QGraphicsPixmapItem()
        self._objects_edge = QGraphicsPathItem()
        self._current_edge = QGraphicsPathItem()
        self._preview_item = QGraphicsPixmapItem()
        self._preview_edge = QGraphicsPathItem()
        self._preview_edge.setPen(self._cosmetic_pen(QColor(*PREVIEW_COLOUR), Qt.DashLine, OUTLINE_WIDTH))
        layers = (self._image_item, self._objects_item, self._objects_edge, self._current_item, self._current_edge,
                  self._preview_item, self._preview_edge)
        for z, item in enumerate(layers):
            item.setZValue(z)
            self.scene().addItem(item)
        self.class_colours: dict[int, RGB] = dict(OVERLAY_COLOURS)
        self.set_outline_colour(OUTLINE_COLOUR)
        self._hint = HintOverlay(self.viewport())
        self._user_zoomed = False  # the user zoomed: keep their zoom on resize instead of refitting
        self._prompt_items: list = []
        self._rubber = QGraphicsRectItem()
        self._rubber.setPen(self._cosmetic_pen(QColor(0, 255, 255), Qt.DashLine))
        self._rubber.setZValue(10)
        self._rubber.hide()
        self.scene().addItem(self._rubber)
        self._image_size = (0, 0)
        self._opacity = 0.5
        self._overlay_visible = True
        self._press_pos = None  # view position of a left/right press
        self._press_button = Qt.NoButton
        self._press_shift = False
        self._dragging_box = False
        self._pan_last = None
        self._space = False
        self.brush_mode: str | None = None  # None, "brush" or "eraser"
        self.brush_radius = 8
        self._stroke: list[tuple[int, int]] = []

    @staticmethod
    def _cosmetic_pen(colour: QColor, style=Qt.SolidLine, width: float = 2) -> QPen:
        pen = QPen(colour, width, style)
        pen.setCosmetic(True)
        return pen

    # ------------------------------------------------------------------ content
    def set_image(self, rgb: np.ndarray | None) -> None:
        if rgb is None:
            self._image_item.setPixmap(QPixmap())
            self._image_size = (0, 0)
        else:
            self._image_item.setPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
            self._image_size = (rgb.shape[1], rgb.shape[0])
        self.set_objects(None)
        self.set_current_mask(None)
        self.set_preview_mask(None)
        self.set_prompts([], None)
        self.cancel_box()
        self.scene().setSceneRect(QRectF(0, 0, *self._image_size))
        self.fit()

    def has_image(self) -> bool:
        return self._image_size != (0, 0)

    def set_objects(self, labels: np.ndarray | None) -> None:
        """Show the accepted objects' label map, coloured by class (``class_colours``)."""
        self._objects_labels = labels
        self._show_overlay(self._objects_item, self._objects_edge, labels, self.class_colours)

    def set_current_mask(self, mask: np.ndarray | None) -> None:
        """Show the mask of the object being edited (yellow)."""
        self._show_overlay(self._current_item, self._current_edge, mask, {1: CURRENT_COLOUR})

    def set_preview_mask(self, mask: np.ndarray | None) -> None:
        """Show the hover preview (what a click would give) faintly, with a dashed edge; None hides it."""
        self._show_overlay(self._preview_item, self._preview_edge, mask, {1: PREVIEW_COLOUR})

    def preview_shown(self) -> bool:
        return not self._preview_item.pixmap().isNull()

    def set_class_colours(self, colours: dict[int, RGB]) -> None:
        """Recolour the accepted objects (View > Overlay colours…)."""
        self.class_colours = {**OVERLAY_COLOURS, **colours}
        self.set_objects(getattr(self, "_objects_labels", None))

    def set_outline_colour(self, colour: RGB) -> None:
        """The colour of the edge around every overlay (a contrast to both the fill and the photo)."""
        self.outline_colour = colour
        for edge in (self._objects_edge, self._current_edge):
            edge.setPen(self._cosmetic_pen(QColor(*colour), width=OUTLINE_WIDTH))

    def _show_overlay(self, fill: QGraphicsPixmapItem, edge: QGraphicsPathItem, index: np.ndarray | None,
                      colours: dict[int, RGB]) -> None:
        """Show ``index`` (labels or a mask) as a ``colours`` fill in ``fill`` with its outline in ``edge``.

        The fill is at the photo's resolution; an empty or missing ``index`` clears both.
        """
        if index is None or not index.any():
            fill.setPixmap(QPixmap())
            edge.setPath(QPainterPath())
        else:
            fill.setPixmap(QPixmap.fromImage(indexed_qimage(index, colours)))
            edge.setPath(outline_path(index, colours))
        self._apply_opacity()

    def set_prompts(self, points, box) -> None:
        for item in self._prompt_items:
            self.scene().removeItem(item)
        self._prompt_items = []
        if box is not None:
            x0, y0, x1, y1 = box
            rect = QGraphicsRectItem(QRectF(x0, y0, x1 - x0, y1 - y0))
            rect.setPen(self._cosmetic_pen(QColor(0, 255, 255)))
            rect.setZValue(11)
            self.scene().addItem(rect)
            self._prompt_items.append(rect)
        for x, y, positive in points:
            dot = QGraphicsEllipseItem(-POINT_RADIUS, -POINT_RADIUS, 2 * POINT_RADIUS, 2 * POINT_RADIUS)
            dot.setFlag(QGraphicsEllipseItem.ItemIgnoresTransformations, True)
            dot.setPos(x + 0.5, y + 0.5)
            dot.setBrush(QBrush(QColor(0, 200, 0) if positive else QColor(230, 0, 0)))
            dot.setPen(self._cosmetic_pen(QColor(255, 255, 255), width=1.5))
            dot.setZValue(12)
            self.scene().addItem(dot)
            self._prompt_items.append(dot)

    def set_overlay_opacity(self, opacity: float) -> None:
        self._opacity = max(0.0, min(1.0, opacity))
        self._apply_opacity()

    def set_overlay_visible(self, visible: bool) -> None:
        self._overlay_visible = visible
        self._apply_opacity()

    def _apply_opacity(self) -> None:
        for item in (self._objects_item, self._current_item):
            item.setVisible(self._overlay_visible)
            item.setOpacity(self._opacity)
        self._preview_item.setOpacity(PREVIEW_OPACITY)
        for edge in (self._objects_edge, self._current_edge):
            edge.setVisible(self._overlay_visible)

    # ------------------------------------------------------------------ first-run hint
    def set_hint(self, text: str | None) -> None:
        """Show ``text`` as a caption over the canvas (mouse events pass through), or hide it (None)."""
        self._hint.set_text(text)

    def hint(self) -> str | None:
        """The caption shown, or None."""
        return self._hint.text if self._hint.isVisible() else None

    # ------------------------------------------------------------------ view
    def fit(self) -> None:
        """Show the whole photo; the view then refits whenever it is resized, until the user zooms."""
        self._user_zoomed = False
        if self.has_image():
            self.fitInView(self.sceneRect(), Qt.KeepAspectRatio)
        self._update_smoothing()

    def user_zoomed(self) -> bool:
        return self._user_zoomed

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self._user_zoomed:
            self.fit()
        self._hint.place()

    def _update_smoothing(self) -> None:
        """Interpolate the overlays (smooth edges) when zoomed in; nearest pixels are enough below 1:1."""
        mode = Qt.SmoothTransformation if self.zoom() >= SMOOTH_FROM_ZOOM else Qt.FastTransformation
        for item in (self._objects_item, self._current_item, self._preview_item):
            item.setTransformationMode(mode)

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float, anchor=None) -> None:
        """Zoom by ``factor`` keeping the image point under ``anchor`` (view pos; default centre) still."""
        new = self.zoom() * factor
        if not 0.02 <= new <= 64:
            return
        anchor = anchor if anchor is not None else self.viewport().rect().center()
        fixed = self.mapToScene(anchor)
        self.scale(factor, factor)
        self._user_zoomed = True
        self._update_smoothing()
        moved = self.mapFromScene(fixed) - anchor
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())

    def wheelEvent(self, event) -> None:
        self.hoverChanged.emit(None)
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(1.0015 ** delta, event.pos())  # one notch (120) = x1.2, around the cursor
        event.accept()

    def image_pos(self, view_pos) -> QPointF:
        return self.mapToScene(view_pos)

    def _clamped_pixel(self, scene: QPointF) -> tuple[int, int]:
        w, h = self._image_size
        return int(min(max(np.floor(scene.x()), 0), w - 1)), int(min(max(np.floor(scene.y()), 0), h - 1))

    def _inside(self, scene: QPointF) -> bool:
        w, h = self._image_size
        return 0 <= scene.x() < w and 0 <= scene.y() < h

    # ------------------------------------------------------------------ mouse and keys
    def _idle(self) -> bool:
        """No button held, no pan, no brush tool: the mouse may rest for a hover preview."""
        return self._press_pos is None and self._pan_last is None and not self._stroke and not self._space \
            and not self.brush_mode

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.Leave:  # the mouse left the photo's area
            self.hoverChanged.emit(None)
        return super().viewportEvent(event)

    def keyPressEvent(self, event) -> None:
        self.hoverChanged.emit(None)
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.OpenHandCursor)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().unsetCursor()
            return
        super().keyReleaseEvent(event)

    def mousePressEvent(self, event) -> None:
        self.hoverChanged.emit(None)
        if not self.has_image():
            return
        button = event.button()
        if button == Qt.MiddleButton or (button == Qt.LeftButton and self._space):
            self._pan_last = event.pos()
            self.viewport().setCursor(Qt.ClosedHandCursor)
            return
        if button not in (Qt.LeftButton, Qt.RightButton):
            return
        if self.brush_mode and button == Qt.LeftButton:
            self._stroke = [self._clamped_pixel(self.image_pos(event.pos()))]
            return
        self._press_pos = event.pos()
        self._press_button = button
        self._press_shift = bool(event.modifiers() & Qt.ShiftModifier)
        self._dragging_box = False

    def mouseMoveEvent(self, event) -> None:
        scene = self.image_pos(event.pos())
        inside = self.has_image() and self._inside(scene)
        if inside:
            self.cursorMoved.emit(*self._clamped_pixel(scene))
        self.hoverChanged.emit(self._clamped_pixel(scene) if inside and self._idle() else None)
        if self._pan_last is not None:
            delta = event.pos() - self._pan_last
            self._pan_last = event.pos()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
            return
        if self._stroke:
            self._stroke.append(self._clamped_pixel(scene))
            return
        if self._press_pos is None or self._press_button != Qt.LeftButton:
            return
        if not self._dragging_box and (event.pos() - self._press_pos).manhattanLength() >= DRAG_THRESHOLD:
            self._dragging_box = True
            self._rubber.show()
        if self._dragging_box:
            start = self.image_pos(self._press_pos)
            self._rubber.setRect(QRectF(start, scene).normalized())

    def mouseReleaseEvent(self, event) -> None:
        if self._pan_last is not None:
            self._pan_last = None
            self.viewport().setCursor(Qt.OpenHandCursor) if self._space else self.viewport().unsetCursor()
            return
        if self._stroke:
            stroke, self._stroke = self._stroke, []
            stroke.append(self._clamped_pixel(self.image_pos(event.pos())))
            self.strokeFinished.emit(stroke, self.brush_radius, self.brush_mode == "eraser")
            return
        if self._press_pos is None:
            return
        press, button, shift, dragging = self._press_pos, self._press_button, self._press_shift, self._dragging_box
        self._press_pos = None
        self._dragging_box = False
        self._rubber.hide()
        if dragging:
            box = self._box_from(self.image_pos(press), self.image_pos(event.pos()))
            if box is not None:
                self.boxDrawn.emit(*box)
            return
        scene = self.image_pos(press)
        if self._inside(scene):
            x, y = self._clamped_pixel(scene)
            self.pointClicked.emit(x, y, button == Qt.LeftButton and not shift)

    def mouseDoubleClickEvent(self, event) -> None:
        self.mousePressEvent(event)  # a fast second click is just another click

    def _box_from(self, a: QPointF, b: QPointF) -> tuple[int, int, int, int] | None:
        w, h = self._image_size
        x0, x1 = sorted((a.x(), b.x()))
        y0, y1 = sorted((a.y(), b.y()))
        x0, y0 = int(max(0, np.floor(x0))), int(max(0, np.floor(y0)))
        x1, y1 = int(min(w, np.ceil(x1))), int(min(h, np.ceil(y1)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return x0, y0, x1, y1

    def cancel_box(self) -> bool:
        """Esc: drop a box being dragged; True if there was one."""
        was = self._dragging_box or self._press_pos is not None
        self._press_pos = None
        self._dragging_box = False
        self._rubber.hide()
        return was
