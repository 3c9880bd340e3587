"""Train through LightningCLI: ``python train.py fit --config configs/sft.yaml``."""

from lightning.pytorch.cli import LightningCLI


class StudyCLI(LightningCLI):
    """LightningCLI whose data module uses the model's tokenizer unless told otherwise."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer_name_or_path")


def cli_main() -> None:
    StudyCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    cli_main()
