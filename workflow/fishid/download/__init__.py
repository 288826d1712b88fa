"""The download stage: fetch listed media into the content-addressed store."""
