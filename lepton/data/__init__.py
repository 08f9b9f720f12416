"""Data the trainer, evaluator and SDK share: the dataset catalog, modelling, artifacts, samples."""
