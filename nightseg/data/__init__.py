"""Datasets (one file per family), their shared catalog format and the LightningDataModules."""
