"""Lightning's Trainer with ``precision: auto`` (``common.precision``) and a progress bar that names the run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from common.precision import AUTO, PrecisionChoice, announce, detect_hardware, resolve_precision
from lightning_modules.sharding import check_strategy


class RunNameInProgressBar:
    """Show ``run=<logger name>`` (``sft``, ``dpo``) instead of Lightning's ``v_num``, which prints the last four
    characters of a string version: ``v_num=oard`` for the configs' fixed ``version: tensorboard``."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if trainer.logger is not None and trainer.logger.name:
            items = {"run": trainer.logger.name, **items}
        return items


class RichRunProgressBar(RunNameInProgressBar, RichProgressBar):
    """Lightning's rich progress bar, with the run's name."""


class TQDMRunProgressBar(RunNameInProgressBar, TQDMProgressBar):
    """Lightning's tqdm progress bar, with the run's name."""


class StudyTrainer(L.Trainer):
    """A ``lightning.Trainer`` whose ``precision`` may be ``auto``.

    ``auto`` is resolved here, before Lightning sees it, by the project's one rule: ``bf16-mixed`` on a
    GPU or CPU with native bf16, ``16-mixed`` on an older GPU, ``32-true`` on any other CPU. The choice
    and its reason are printed once and kept as :attr:`precision_choice` (the export, the saved config
    and the TensorBoard hparams record them). An explicit precision is kept, with one warning line
    when this CPU would emulate it. The progress bar, unless one is given, shows the run's name.

    Args:
        precision: ``auto`` or any of Lightning's precision names (``bf16-mixed``, ``32-true``...).
        **kwargs: every other ``lightning.Trainer`` argument; ``accelerator`` also decides which device the
            rule looks at, and Lightning's FSDP1 (``strategy: fsdp``) is refused with what to use instead
            (:func:`~lightning_modules.sharding.check_strategy`).
    """

    def __init__(self, *, precision: str | int | None = AUTO, **kwargs: Any) -> None:
        accelerator = kwargs.get("accelerator", "auto")
        hardware = detect_hardware(accelerator if isinstance(accelerator, str) else "auto")
        self.precision_choice: PrecisionChoice = resolve_precision(precision, hardware)
        check_strategy(kwargs.get("strategy", "auto"), hardware)
        rank_zero_only(announce)(self.precision_choice, "trainer")
        callbacks = kwargs.get("callbacks")
        callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if kwargs.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(RichRunProgressBar() if _RICH_AVAILABLE else TQDMRunProgressBar())
        kwargs["callbacks"] = callbacks
        super().__init__(precision=self.precision_choice.precision, **kwargs)
