"""common/cli.py: a settings dataclass's fields as command-line options and back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from common.cli import add_settings_options, settings_from


@dataclass
class Example:
    num_layers: int = 2
    rate: float = 0.5
    name: str = "tiny"


def test_each_field_is_an_option_with_its_type_and_default():
    parser = argparse.ArgumentParser()
    add_settings_options(parser, Example)
    assert settings_from(parser.parse_args([]), Example) == Example()
    args = parser.parse_args(["--num-layers", "4", "--rate", "0.25", "--name", "big"])
    assert settings_from(args, Example) == Example(num_layers=4, rate=0.25, name="big")
    assert isinstance(args.num_layers, int) and isinstance(args.rate, float)
