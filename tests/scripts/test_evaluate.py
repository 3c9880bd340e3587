"""scripts/evaluate.py: the command line (the engine is tested in tests/evaluation/test_engine.py).

Every command below stops before a model loads; they run one after the other in one process
(tests/cli_batch.py), in an empty folder, where the tiny config's relative paths (``outputs/tiny/...``) lead
nowhere."""

from __future__ import annotations

import json

import pytest

CONFIGS = ["configs/tiny/evaluate.yaml", "configs/evaluate.yaml"]


@pytest.fixture(scope="module")
def ran(repo, tiny_sft_export, tmp_path_factory, cli_batch) -> dict:
    cwd = tmp_path_factory.mktemp("evaluate_cli")
    evaluate, tiny = repo / "scripts/evaluate.py", str(repo / "configs/tiny/evaluate.yaml")
    typo = cwd / "typo.yaml"
    typo.write_text((repo / "configs/tiny/evaluate.yaml").read_text().replace("max_new_tokens", "max_new_token"))
    prompts = cwd / "prompts.jsonl"
    prompts.write_text(json.dumps({"category": "x", "prompt": "Fine."}) + "\n" + json.dumps({"category": "x"}) + "\n")
    sft_only = ["--sft_adapter", str(tiny_sft_export), "--dpo_adapter", "null", "--variants", "[sft]"]
    commands = {config: [evaluate, "--config", repo / config, "--print_config"] for config in CONFIGS}
    commands |= {
        "typo": [evaluate, "--config", typo, "--print_config"],
        "bad prompt": [evaluate, *sft_only, "--prompts", prompts, "--device", "cpu", "--results_dir", cwd / "r1"],
        "settings": [evaluate, "--config", tiny, "--load.load_in_4bit", "true"],
        "judge null": [evaluate, "--config", tiny, "--judge", "null", "--print_config"],
        "missing judge": [evaluate, "--config", tiny, *sft_only, "--results_dir", cwd / "r2"],
    }
    return cli_batch(commands, cwd) | {"folder": cwd, "prompts": prompts}


@pytest.mark.parametrize("config", CONFIGS)
def test_evaluate_configs_parse(ran, config):
    result = ran[config]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sft_adapter: outputs/" in result.stdout
    assert "max_new_tokens:" in result.stdout
    # Both name a judge; parsing never needs it to exist (the tiny one is trained by the pipeline's reward stage).
    judge = "outputs/tiny/reward" if "tiny" in config else "Skywork/Skywork-Reward-V2-Llama-3.1-8B"
    assert f"judge:\n  model: {judge}\n" in result.stdout


def test_a_mistyped_config_key_is_rejected(ran):
    assert ran["typo"].returncode != 0
    assert "max_new_token" in ran["typo"].stderr


def test_a_bad_prompt_row_is_one_error_line_naming_file_row_and_field(ran):
    result = ran["bad prompt"]
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {ran['prompts']}: row 2: field 'prompt': missing field")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (ran["folder"] / "r1").exists()


def test_a_settings_check_is_one_error_line(ran):
    assert ran["settings"].returncode == 2
    assert (
        ran["settings"].stderr == "error: A LoRA cannot be merged into a 4-bit base: set load.merge_adapters: false.\n"
    )


def test_a_missing_tiny_judge_is_one_error_line_and_judge_null_turns_it_off(ran):
    """configs/tiny/evaluate.yaml names outputs/tiny/reward, which only the pipeline's reward stage writes:
    evaluating needs it (checked before any model loads); --judge null evaluates without a judge."""
    without = ran["judge null"]
    assert without.returncode == 0 and "\njudge: null\n" in without.stdout
    result = ran["missing judge"]
    assert result.returncode == 2
    assert result.stderr.startswith("error: judge.model: outputs/tiny/reward: not a model folder (no config.json).")
    assert "--judge null" in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (ran["folder"] / "r2").exists()
