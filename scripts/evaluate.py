"""Evaluate the study's three models side by side: base, base + SFT adapter, SFT + DPO adapter.

Writes ``<results_dir>/evaluation_results.json`` and ``<results_dir>/side_by_side_comparison.txt``; the
settings are :class:`evaluation.config.EvaluationConfig` (``--print_config`` prints them, documented), the
work is :func:`evaluation.engine.evaluate`.

Usage::

    python scripts/evaluate.py --config configs/tiny/evaluate.yaml
    python scripts/evaluate.py --config configs/evaluate.yaml --generation.max_new_tokens 256
    python scripts/evaluate.py --config configs/tiny/evaluate.yaml --print_config
"""

from __future__ import annotations

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import signal
import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from common.errors import UserError
from evaluation.config import EvaluationConfig


def interrupt_on_sigterm(signum: int, frame) -> None:
    """SIGTERM (a scheduler's stop, ``kill``) ends the evaluation as Ctrl-C does, with the same message, instead
    of Python's silent default."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
    parser.add_class_arguments(EvaluationConfig, as_positional=False)
    values = parser.parse_args(argv).as_dict()
    values.pop("config", None)
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        from evaluation.engine import evaluate

        evaluate(EvaluationConfig.from_dict(values))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # The variants finished before the interruption are kept (evaluation.partial); say so, without a traceback.
        from evaluation.partial import PARTIAL_DIR

        kept = Path(values["results_dir"]) / PARTIAL_DIR
        what = str(interrupt) or "Ctrl-C"
        print(f"error: interrupted ({what}); the variants it finished are kept in {kept}: rerun the same command "
              "to compute only the rest", file=sys.stderr)  # fmt: skip
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
