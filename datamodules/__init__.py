"""LightningDataModules for instruction (SFT) and preference (DPO) data."""

from datamodules.instruction import InstructionDataModule
from datamodules.preference import PreferenceDataModule

__all__ = ["InstructionDataModule", "PreferenceDataModule"]
