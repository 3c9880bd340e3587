"""Per-seed and overridden copies of the stage configs, as the pipeline writes them (to read before a run).

The work and the full usage are in :mod:`study.pipeline_configs`::

    python scripts/pipeline_configs.py SFT.yaml DPO.yaml EVALUATE.yaml [--reward R.yaml] --seed 1 --out DIR
    python scripts/pipeline_configs.py SFT.yaml DPO.yaml EVALUATE.yaml [--reward R.yaml] --overrides DIR [DIR ...]
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from study.pipeline_configs import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
