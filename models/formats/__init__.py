"""Annotation formats: PetSeg's objects to and from other tools' files (no Qt, no torch).

Every format converts between the neutral :class:`PhotoObjects` (one photo's size and its objects,
each a class id and a boolean mask) and files: :mod:`.png` (index / instance PNGs, plain mask
folders), :mod:`.coco` (COCO instances, RLE or polygons), :mod:`.yolo` (Ultralytics YOLO
segmentation), :mod:`.labelme` (labelme JSON) and :mod:`.cutout` (RGBA cut-outs, export only).

Exporters return :class:`OutputFile` lists (a path relative to the output folder and a function
that writes the content), so the caller decides where and whether files may be written. Importers
raise :class:`FormatError`, one line naming the file, for malformed input.
"""

from models.formats.core import FormatError, LabelledMask, OutputFile, PhotoObjects

__all__ = ["FormatError", "LabelledMask", "OutputFile", "PhotoObjects"]
