"""scripts/evaluate.py: the command line (the engine is tested in tests/evaluation/test_engine.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("config", ["configs/tiny/evaluate.yaml", "configs/evaluate.yaml"])
def test_evaluate_configs_parse(repo, config):
    result = subprocess.run(
        [sys.executable, str(repo / "scripts/evaluate.py"), "--config", str(repo / config), "--print_config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sft_adapter: outputs/" in result.stdout
    assert "max_new_tokens:" in result.stdout
    # Both name a judge; parsing never needs it to exist (the tiny one is trained by the pipeline's reward stage).
    judge = "outputs/tiny/reward" if "tiny" in config else "Skywork/Skywork-Reward-V2-Llama-3.1-8B"
    assert f"judge:\n  model: {judge}\n" in result.stdout


def test_a_mistyped_config_key_is_rejected(repo, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text((repo / "configs/tiny/evaluate.yaml").read_text().replace("max_new_tokens", "max_new_token"))
    result = subprocess.run(
        [sys.executable, str(repo / "scripts/evaluate.py"), "--config", str(bad), "--print_config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "max_new_token" in result.stderr


def test_a_bad_prompt_row_is_one_error_line_naming_file_row_and_field(repo, tiny_sft_export, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"category": "x", "prompt": "Fine."}) + "\n" + json.dumps({"category": "x"}) + "\n")
    result = subprocess.run(
        [sys.executable, str(repo / "scripts/evaluate.py"), "--sft_adapter", str(tiny_sft_export),
         "--dpo_adapter", "null", "--variants", "[sft]", "--prompts", str(prompts), "--device", "cpu",
         "--results_dir", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {prompts}: row 2: field 'prompt': missing field")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_a_settings_check_is_one_error_line(repo, tmp_path):
    result = subprocess.run(
        [sys.executable, str(repo / "scripts/evaluate.py"), "--config", str(repo / "configs/tiny/evaluate.yaml"),
         "--load.load_in_4bit", "true"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr == "error: A LoRA cannot be merged into a 4-bit base: set load.merge_adapters: false.\n"


def test_a_missing_tiny_judge_is_one_error_line_and_judge_null_turns_it_off(repo, tiny_sft_export, tmp_path):
    """configs/tiny/evaluate.yaml names outputs/tiny/reward, which only the pipeline's reward stage writes:
    evaluating needs it (checked before any model loads); --judge null evaluates without a judge."""
    config = str(repo / "configs/tiny/evaluate.yaml")
    without = subprocess.run(
        [sys.executable, str(repo / "scripts/evaluate.py"), "--config", config, "--judge", "null", "--print_config"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert without.returncode == 0 and "\njudge: null\n" in without.stdout
    result = subprocess.run(
        [sys.executable, str(repo / "scripts/evaluate.py"), "--config", config, "--sft_adapter", str(tiny_sft_export),
         "--dpo_adapter", "null", "--variants", "[sft]", "--results_dir", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: judge.model: outputs/tiny/reward: not a model folder (no config.json).")
    assert "--judge null" in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()
