"""Reporting and publishing, one layer above the evaluation: the report and its plots, the study across
training seeds, the training logs read back, and the Hub upload with the study's model card."""
