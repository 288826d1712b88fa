"""Finding the fish first: boxes of the fish in each photo (a detector's or known ones), how
good they are, and crops of the photos to them that keep their provenance.

boxes: the boxes table, IoU, mAP@0.5. crops: a photo cut to its chosen box. detectors: the
detectors, declared in one table. infer: a detector over a list of photos, as boxes rows.
"""
