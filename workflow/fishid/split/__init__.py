"""The split stage: balanced, leak-free train/validation/test datasets."""
