"""The cleaning stage: decode, measure, filter and deduplicate stored images."""
