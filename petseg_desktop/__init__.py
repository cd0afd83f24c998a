"""PetSeg desktop annotator: segment pet photos into background / cat / dog."""

__version__ = "0.1.0"
