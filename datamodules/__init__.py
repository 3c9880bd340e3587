"""LightningDataModules for instruction (SFT) and preference (DPO) data."""

from datamodules.instruction import InstructionDataModule

__all__ = ["InstructionDataModule"]
