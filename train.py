"""Train through LightningCLI: ``python train.py fit --config configs/tiny/sft.yaml`` (see ``study/cli.py``)."""

from study.cli import main

if __name__ == "__main__":
    main()
