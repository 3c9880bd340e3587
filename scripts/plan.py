"""Predicted peak memory and time of training configs, and the time of the evaluation, offline.

The work and the full usage are in :mod:`planner.cli`::

    python scripts/plan.py plan --config configs/dpo.yaml --set model.init_args.load.load_in_4bit=true
    python scripts/plan.py plan --config configs/sft.yaml --config configs/dpo.yaml --config configs/evaluate.yaml
"""

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import sys

from planner.cli import main

if __name__ == "__main__":
    sys.exit(main())
