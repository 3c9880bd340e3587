"""Train through LightningCLI: ``python train.py fit --config configs/sft.yaml``."""

import json
import pydoc
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from common.errors import UserError
from common.precision import AUTO, detect_hardware, resolve_precision
from common.provenance import run_provenance
from lightning_modules.sharding import check_strategy
from lightning_modules.trainer import StudyTrainer


class SaveResolvedConfig(SaveConfigCallback):
    """Save the run's config with ``precision: auto`` replaced by what it resolved to, and say why."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.config.trainer.precision = trainer.precision_choice.precision
        # log_dir is a broadcast under DDP: every rank asks here, not only rank 0 in save_config.
        self._log_dir = None if self.already_saved else trainer.log_dir
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        choice = trainer.precision_choice
        path = Path(self._log_dir or "") / self.config_filename
        if self._log_dir and path.is_file():
            # What `auto` and the Hub revisions resolved to: rerunning this file on other hardware or another
            # day must not silently train on other inputs.
            header = [f"# precision: {choice.requested} -> {choice}"]
            provenance = run_provenance(pl_module, trainer.datamodule)
            header += [f"# {key}: {json.dumps(value)}" for key, value in provenance.items()]
            path.write_text("\n".join(header) + "\n" + path.read_text())


class StudyCLI(LightningCLI):
    """LightningCLI whose data module uses the model's tokenizer unless told otherwise, and whose
    ``precision: auto`` and ``dtype: auto`` follow the hardware (``common.precision``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer_name_or_path")

    def before_instantiate_classes(self) -> None:
        # The model is built before the Trainer: its `dtype: auto` must follow the precision the Trainer
        # will resolve (the same rule, the same answer).
        # Resolving first also rejects an unknown precision (or FSDP1 without a GPU) before minutes are spent
        # loading a model.
        config = self.config[self.subcommand] if self.subcommand else self.config
        hardware = detect_hardware(config.trainer.accelerator)
        choice = resolve_precision(config.trainer.precision, hardware)
        strategy = config.trainer.strategy
        check_strategy(pydoc.locate(strategy.class_path) if isinstance(strategy, Namespace) else strategy, hardware)
        model = config.model.init_args
        data = config.data.init_args
        if model.get("revision") and data.get("tokenizer_name_or_path") == model.get("model_name_or_path"):
            data.tokenizer_revision = data.get("tokenizer_revision") or model.revision
        if model.get("dtype") == AUTO:
            frozen = model.get("lora") is not None or bool(model.get("load_in_4bit"))
            model.dtype = choice.weight_dtype(frozen)


def user_error(error: BaseException | None) -> BaseException | None:
    """The data or config problem behind ``error``: jsonargparse wraps what a constructor raises."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    return error


def cli_main() -> None:
    try:
        StudyCLI(
            trainer_class=StudyTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveResolvedConfig,
            save_config_kwargs={"overwrite": True},
        )
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        sys.exit(f"error: {problem}")


if __name__ == "__main__":
    cli_main()
