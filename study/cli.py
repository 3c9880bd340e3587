"""The training CLI behind ``python train.py fit --config configs/tiny/sft.yaml``: LightningCLI, plus

* ``precision: auto`` / ``load.dtype: auto`` resolved by the hardware before any model loads (``common.precision``);
* a ``run:`` section (:class:`~common.settings.RunSettings`): the run folder and export folder, from which the
  logger, the always-on callbacks and the checkpoint plugin are built (``callbacks.run``), so a stage's YAML
  says only what varies;
* ``--print_paths``: print where the run writes, as JSON, and exit without loading anything (the pipeline
  asks this instead of reading YAML);
* one ``fit`` per run folder (``common.run_lock``): a second one stops before loading anything;
* a resume (``--ckpt_path``) with changed training settings refused, key by key (``study.resume_config``);
* any user error (data, config, model path, a constructor's argument check) as one ``error:`` line, a mistyped
  option too (``study.cli_errors``: the key's full path and the closest accepted option, not the usage).
"""

from __future__ import annotations

import json
import pydoc
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO

from callbacks.run import run_callbacks, run_logger, run_plugins
from common.errors import UserError
from common.precision import AUTO, detect_hardware, resolve_precision
from common.provenance import run_provenance
from common.run_lock import lock_run_folder, release_run_folders
from common.settings import RunSettings
from lightning_modules.sharding import check_strategy
from lightning_modules.trainer import StudyTrainer
from study.cli_errors import ShortErrorParser
from study.resume_config import check_resume


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
    """LightningCLI with the ``run:`` section, ``--print_paths``, the model's tokenizer for the data module
    unless told otherwise, and ``precision: auto`` / ``load.dtype: auto`` that follow the hardware."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_dataclass_arguments(RunSettings, "run")
        parser.add_argument(
            "--print_paths", action="store_true", help="Print where this run writes (JSON) and exit; loads nothing."
        )
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer_name_or_path")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # Checked here, not when the trainer is built: a bad run: value fails before minutes of model loading.
        run = RunSettings(**config.run.as_dict())
        if config.get("print_paths"):
            print(json.dumps({**run.paths(), "model": config.model.init_args.model_name_or_path}))
            sys.exit(0)
        if self.subcommand == "fit" and run.dir is not None:
            lock_run_folder(run.dir)  # before minutes of model loading: a second run of this folder stops here
        # The model is built before the Trainer: its `load.dtype: auto` must follow the precision the Trainer
        # will resolve (the same rule, the same answer). Resolving first also rejects an unknown precision
        # (or FSDP1 without a GPU) before minutes are spent loading a model.
        hardware = detect_hardware(config.trainer.accelerator)
        choice = resolve_precision(config.trainer.precision, hardware)
        strategy = config.trainer.strategy
        check_strategy(pydoc.locate(strategy.class_path) if isinstance(strategy, Namespace) else strategy, hardware)
        model = config.model.init_args
        data = config.data.init_args
        if model.get("revision") and data.get("tokenizer_name_or_path") == model.get("model_name_or_path"):
            data.tokenizer_revision = data.get("tokenizer_revision") or model.revision
        load = model.get("load")  # None: the module's float32 default, nothing to resolve
        if load is not None and load.get("dtype") == AUTO:
            frozen = model.get("lora") is not None or bool(load.get("load_in_4bit"))
            load.dtype = choice.weight_dtype(frozen)
        if self.subcommand == "fit" and config.get("ckpt_path") and run.dir and not run.allow_config_change:
            current = config.as_dict()
            current["trainer"]["precision"] = choice.precision  # as the run's saved config records it
            check_resume(Path(run.paths()["tensorboard"]) / "config.yaml", current)  # SaveResolvedConfig's file

    def instantiate_trainer(self, **kwargs):
        """The trainer of the config, plus what the ``run:`` section gives every run (``callbacks.run``)."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run: RunSettings = config.run
        if run.dir is not None:
            trainer = config.trainer
            given = trainer.get("callbacks") or []
            kwargs.setdefault("callbacks", [*run_callbacks(run), *(given if isinstance(given, list) else [given])])
            if trainer.get("logger") in (None, True):
                kwargs.setdefault("logger", run_logger(run))
            plugins = trainer.get("plugins") or []
            plugins = plugins if isinstance(plugins, list) else [plugins]
            if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
                kwargs.setdefault("plugins", [*plugins, *run_plugins()])
        return super().instantiate_trainer(**kwargs)


def user_error(error: BaseException | None) -> BaseException | None:
    """The data or config problem behind ``error``: jsonargparse wraps what a constructor raises."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    return error


def main(args: list[str] | None = None) -> None:
    """Run the CLI; a user error ends it with one ``error:`` line and status 1."""
    try:
        StudyCLI(
            trainer_class=StudyTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveResolvedConfig,
            save_config_kwargs={"overwrite": True},
            parser_class=ShortErrorParser,
            args=args,
        )
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        sys.exit(f"error: {problem}")
    finally:
        release_run_folders()  # in-process callers (tests) run the next fit on the same folder
