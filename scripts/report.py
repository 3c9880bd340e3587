"""Turn the evaluation results and the training logs into a report a person can read.

Writes ``<results-dir>/report.md`` (or ``--out PATH``) and ``plots/*.png`` beside it (:mod:`reporting.report`).
With ``--seed-results``, the results folders of runs that differ only in their training seed, the report adds
the section "Across training seeds"; ``--out`` keeps such a report apart from the one run's own report.

Usage::

    python scripts/report.py --results-dir results --sft-run runs/tiny/sft --dpo-run runs/tiny/dpo
    python scripts/report.py --results-dir results/seed0 --out results/seeds/report.md \\
        --seed-results results/seed0 results/seed1 results/seed2
"""

from __future__ import annotations

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from evaluation.results import ResultsError
from reporting.report import DEFAULT_TARGETED, PLOTS_DIR, write_report


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="folder of evaluation_results.json")
    out_help = "the report's path (default: <results-dir>/report.md); its plots go to plots/ beside it"
    parser.add_argument("--out", metavar="PATH", help=out_help)
    parser.add_argument("--sft-run", default="runs/tiny/sft", help="the SFT run folder (holds tensorboard/)")
    parser.add_argument("--dpo-run", default="runs/tiny/dpo", help="the DPO run folder (holds tensorboard/)")
    targeted_help = "categories the preference pairs are meant to improve (compared SFT+DPO vs SFT)"
    parser.add_argument("--targeted", nargs="*", default=list(DEFAULT_TARGETED), help=targeted_help)
    seeds_help = "results folders of runs that differ only in their training seed (--results-dir may be one of them)"
    parser.add_argument("--seed-results", nargs="+", default=[], metavar="DIR", help=seeds_help)
    args = parser.parse_args(argv)
    if args.out is not None and (Path(args.out).is_dir() or args.out.endswith(("/", "\\"))):
        parser.error(f"--out {args.out} is a folder; give the report's file path, e.g. {Path(args.out) / 'report.md'}")
    try:
        report = write_report(
            args.results_dir, args.sft_run, args.dpo_run, tuple(args.targeted), args.seed_results, args.out
        )
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"[report] wrote {report} and its plots in {report.parent / PLOTS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
