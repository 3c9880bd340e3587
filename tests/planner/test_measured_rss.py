"""The planner's peak against the resident memory of real LoRA SFT steps at Mistral-7B shapes, on this CPU.

A randomly initialised model with Mistral-7B-v0.1's architecture (configs/models/mistral-7b-v0.1.json) but
2 decoder layers, fp32 (a CPU without native bf16), trained for 2 steps by the project's SFTModule (LoRA
r=16 on all 7 projections, dropout 0.05, no gradient checkpointing, packed batches of 2 rows x 512 tokens).
Measured in a subprocess of its own (rss_probe.py): the peak RSS of the steps minus the RSS before the model
was loaded.

Measured on the 2-core AMD EPYC (Zen 3, AVX2), fp32: planned 4.32 GB; with glibc's default allocator the
increase was 5.21-5.52 GB in three runs (the planner 17-22 % below: glibc keeps freed blocks under its growing mmap
threshold, ~1.2 GB still held after the steps); with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed blocks go back
to the kernel, so RSS follows live tensors) it was 4.52 GB, the planner 4 % below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.devices import this_cpu
from planner.memory import plan_memory
from planner.settings import load_settings
from planner.shapes import read_architecture

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("rss_probe.py")
ROWS, LENGTH, LAYERS, STEPS = 2, 512, 2, 2


def run_probe(*args: str, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(PROBE), *args], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    """The 2-layer model folder and its config.json (the planner reads only the latter)."""
    folder = tmp_path_factory.mktemp("mistral7b-2layers") / "model"
    run_probe("build", str(folder), str(LAYERS))
    return folder, folder / "config.json"


def planned_peak(config_json: Path) -> int:
    settings = load_settings(
        REPO / "configs/sft.yaml",
        [
            "trainer.precision=32-true",
            "model.init_args.load.dtype=float32",
            "model.init_args.gradient_checkpointing=false",
            f"data.init_args.batch_size={ROWS}",
            f"data.init_args.max_length={LENGTH}",
        ],
    )
    return plan_memory(read_architecture(config_json), settings, this_cpu()).peak_bytes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("malloc", "tolerance"),
    # glibc's default allocator (within 25 %, above) is not run in CI: the strict case covers the planner, and
    # each run costs about a minute
    [({"MALLOC_MMAP_THRESHOLD_": "65536"}, 0.10)],
    ids=["fixed-mmap-threshold"],
)
def test_planned_peak_matches_measured_rss(shapes, malloc, tolerance):
    folder, config_json = shapes
    measured = json.loads(run_probe("measure", str(folder), str(ROWS), str(LENGTH), "0", str(STEPS), env=malloc))
    increase = measured["peak_rss_training"] - measured["rss_before_model"]
    predicted = planned_peak(config_json)
    print(f"predicted {predicted / 1e9:.2f} GB, measured {increase / 1e9:.2f} GB ({malloc or 'glibc default'})")
    assert predicted == pytest.approx(increase, rel=tolerance)
