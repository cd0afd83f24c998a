"""PetSeg desktop annotator: segment pet photos into background / cat / dog."""
