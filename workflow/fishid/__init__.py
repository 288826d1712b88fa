"""fishid: species photos from public collections to trained, audited classifiers."""

__version__ = "0.1.0"
