"""The whole study, stage by stage: [tiny base -> reward model] -> SFT -> DPO -> evaluate -> report.

The stages, every option and the resume rules are in :mod:`study.pipeline`::

    python scripts/run_study.py tiny                  # the embedded CPU study (what `make demo` runs)
    python scripts/run_study.py study                 # the real study on a GPU (Mistral-7B-v0.1)
    python scripts/run_study.py tiny --seeds 0 1 2    # once per training seed, then across seeds
    python scripts/run_study.py --help
"""

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import os
import sys
from pathlib import Path

from study.pipeline import main

if __name__ == "__main__":
    # The stages' paths (configs/, runs/, outputs/, results/) are the checkout's, wherever it is started from.
    os.chdir(Path(__file__).resolve().parents[1])
    sys.exit(main())
