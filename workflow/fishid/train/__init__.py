"""The training stage: stage (the entry points) runs a recipe (recipes), which hands the one
training loop (loop) augmented images (data) or cached features (features); record writes
what every run keeps. The image cache and augmentation are below them all."""
