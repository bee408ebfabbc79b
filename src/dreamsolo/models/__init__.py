"""Base models: the tiny preset built locally, hub / folder / single-file models loaded alike."""
