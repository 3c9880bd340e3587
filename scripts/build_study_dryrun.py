"""Build the study dry run's stand-ins: a Mistral-7B-shaped base and judge with 1-2 layers, and data files in the
real datasets' schemas (see :mod:`tiny_world.study_shaped`).

Usage::

    python scripts/build_study_dryrun.py --out artifacts/study-dryrun [--layers 1]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tiny_world.study_shaped import StudyShapedSettings, build  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/study-dryrun"))
    defaults = StudyShapedSettings()
    for item in fields(StudyShapedSettings):
        default = getattr(defaults, item.name)
        parser.add_argument(
            "--" + item.name.replace("_", "-"), type=type(default), default=default, help="(default: %(default)s)"
        )
    args = parser.parse_args(argv)
    if not 1 <= args.layers <= 32:
        parser.error(f"--layers must be between 1 and 32 (Mistral-7B-v0.1 has 32), got {args.layers}")
    build(
        args.out, StudyShapedSettings(**{item.name: getattr(args, item.name) for item in fields(StudyShapedSettings)})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
