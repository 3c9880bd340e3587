"""Train through LightningCLI: ``python train.py fit --config configs/tiny/sft.yaml`` (see ``study/cli.py``)."""

from scripts import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
from study.cli import main

if __name__ == "__main__":
    main()
