"""Generate the tiny study suite.

Writes ``sft_{train,val,test}.jsonl``, ``prefs_{train,val,test}.jsonl``, ``eval_prompts.jsonl`` and
``pretrain.txt`` under ``--out``, printing one summary line per file. The shipped files come from::

    python scripts/make_tiny_suite.py --out data/tiny

(The real study's prompts, ``data/study_prompts.jsonl``, are written by hand: that file is their only copy.)

The output is a pure function of the arguments (see :mod:`tiny_world.suite`), so running this again
with the same arguments rewrites identical files.
"""

from __future__ import annotations

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
from dataclasses import fields
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from tiny_world.files import file_summary, write_suite
from tiny_world.suite import DEFAULT_FLAWED_FRACTION, SuiteSizes, generate_suite


def parse_args(argv: list[str] | None = None) -> Namespace:
    """The command line: output folder, seed, split sizes, flawed fraction."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/tiny"), help="folder for the suite's files")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    for item in fields(SuiteSizes):
        option, default = "--" + item.name.replace("_", "-"), getattr(SuiteSizes(), item.name)
        parser.add_argument(option, type=int, default=default, help="size (default %(default)s)")
    flawed = "fraction of SFT train/val rows of the flawed categories that are flawed (default %(default)s)"
    parser.add_argument("--flawed-fraction", type=float, default=DEFAULT_FLAWED_FRACTION, help=flawed)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate and write the suite, then print a summary line per file."""
    args = parse_args(argv)
    sizes = SuiteSizes(**{item.name: getattr(args, item.name) for item in fields(SuiteSizes)})
    suite = generate_suite(seed=args.seed, sizes=sizes, flawed_fraction=args.flawed_fraction)
    for path in write_suite(suite, args.out):
        print(file_summary(path))


if __name__ == "__main__":
    main()
