"""Build the study dry run's stand-ins: a Mistral-7B-shaped base and judge with 1-2 layers, and data files in the
real datasets' schemas (see :mod:`tiny_world.study_shaped`).

Usage::

    python scripts/build_study_dryrun.py --out artifacts/study-dryrun [--layers 1]
"""

from __future__ import annotations

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from common.cli import add_settings_options, settings_from
from tiny_world.study_shaped import StudyShapedSettings, build


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/study-dryrun"))
    add_settings_options(parser, StudyShapedSettings)
    args = parser.parse_args(argv)
    if not 1 <= args.layers <= 32:
        parser.error(f"--layers must be between 1 and 32 (Mistral-7B-v0.1 has 32), got {args.layers}")
    build(args.out, settings_from(args, StudyShapedSettings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
