"""Lightning's Trainer with ``precision: auto``: the precision that fits the hardware (``common.precision``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from common.precision import AUTO, PrecisionChoice, announce, detect_hardware, resolve_precision


class StudyTrainer(L.Trainer):
    """A ``lightning.Trainer`` whose ``precision`` may be ``auto``.

    ``auto`` is resolved here, before Lightning sees it, by the project's one rule: ``bf16-mixed`` on a
    GPU or CPU with native bf16, ``16-mixed`` on an older GPU, ``32-true`` on any other CPU. The choice
    and its reason are printed once and kept as :attr:`precision_choice` (the export and the saved
    config record them). An explicit precision is kept, with one warning line when this CPU would
    emulate it.

    Args:
        precision: ``auto`` or any of Lightning's precision names (``bf16-mixed``, ``32-true``...).
        **kwargs: every other ``lightning.Trainer`` argument; ``accelerator`` also decides which device the
            rule looks at.
    """

    def __init__(self, *, precision: str | int | None = AUTO, **kwargs: Any) -> None:
        accelerator = kwargs.get("accelerator", "auto")
        hardware = detect_hardware(accelerator if isinstance(accelerator, str) else "auto")
        self.precision_choice: PrecisionChoice = resolve_precision(precision, hardware)
        rank_zero_only(announce)(self.precision_choice, "trainer")
        super().__init__(precision=self.precision_choice.precision, **kwargs)
