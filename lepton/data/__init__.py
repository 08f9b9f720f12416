"""Data the trainer, evaluator and SDK share: the dataset catalog and its tables, modelling,
artifacts, samples."""
