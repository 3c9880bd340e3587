"""Build the embedded tiny base model: a local BPE tokenizer and a few-million-parameter Mistral.

The work is :func:`tiny_world.base.build`; every option is a field of :class:`tiny_world.base.TinyBaseSettings`.

Usage::

    python scripts/build_tiny_model.py --out artifacts/tiny-base
"""

from __future__ import annotations

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import sys
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from common.cli import add_settings_options, settings_from
from common.errors import UserError
from tiny_world.base import TinyBaseSettings, build


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/tiny-base"))
    parser.add_argument("--data-dir", type=Path, default=Path("data/tiny"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_settings_options(parser, TinyBaseSettings)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args, TinyBaseSettings)
    try:
        build(args.out, args.data_dir, settings)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
