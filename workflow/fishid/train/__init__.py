"""The training stage: the image cache, augmentation and the one training loop."""
