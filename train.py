"""Train through LightningCLI: ``python train.py fit --config configs/sft.yaml``."""

import sys

from lightning.pytorch.cli import LightningCLI

from callbacks.checkpoint_io import NonFiniteCheckpointError
from callbacks.nan_guard import NonFiniteLossError
from datamodules.sources import DataError
from lightning_modules.loading import CUDARequiredError, ModelLoadError

# Problems the user fixes in the data or the config: their message says what and where, a traceback adds nothing.
USER_ERRORS = (DataError, ModelLoadError, CUDARequiredError, NonFiniteLossError, NonFiniteCheckpointError)


class StudyCLI(LightningCLI):
    """LightningCLI whose data module uses the model's tokenizer unless told otherwise."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer_name_or_path")


def user_error(error: BaseException | None) -> BaseException | None:
    """The data or config problem behind ``error``: jsonargparse wraps what a constructor raises."""
    while error is not None and not isinstance(error, USER_ERRORS):
        error = error.__cause__ or error.__context__
    return error


def cli_main() -> None:
    try:
        StudyCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_kwargs={"overwrite": True})
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        sys.exit(f"error: {problem}")


if __name__ == "__main__":
    cli_main()
