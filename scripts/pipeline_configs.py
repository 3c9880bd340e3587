"""Per-seed and overridden copies of the stage configs, as the pipeline writes them (to read before a run).

The work and the full usage are in :mod:`study.pipeline_configs`::

    python scripts/pipeline_configs.py SFT.yaml DPO.yaml EVALUATE.yaml [--reward R.yaml] --seed 1 --out DIR
    python scripts/pipeline_configs.py SFT.yaml DPO.yaml EVALUATE.yaml [--reward R.yaml] --overrides DIR [DIR ...]
"""

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import sys

from study.pipeline_configs import main

if __name__ == "__main__":
    sys.exit(main())
