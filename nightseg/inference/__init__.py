"""Inference: the segmentation pipeline and its day/night gate, loading trained models, scoring them,
metrics.json, and reading and writing frames for prediction."""
