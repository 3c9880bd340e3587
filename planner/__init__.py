"""Memory and time planner: predicted peak accelerator memory and run time of a training config, offline.

``python scripts/plan.py plan --config configs/dpo.yaml`` reads the config and the model's ``config.json`` only
(no weights): :mod:`planner.settings` (the config), :mod:`planner.shapes` (the architecture),
:mod:`planner.devices` (GPUs), :mod:`planner.memory`, :mod:`planner.timing`, :mod:`planner.report`.
"""
