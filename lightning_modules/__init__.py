"""LightningModules of the study, their losses and model loading."""
