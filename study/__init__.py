"""Assembling a study run: the training CLI (``train.py``) and, for the pipeline, where each stage writes."""
