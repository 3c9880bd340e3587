"""``python scripts/plan.py plan``: configs and overrides read, the model followed, time by hand, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner.cli import main
from planner.settings import PlanError, load_settings, parse_settings
from planner.shapes import resolve_model
from planner.timing import plan_time

REPO = Path(__file__).resolve().parents[2]


def run_plan(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dpo_config_follows_the_sft_export_to_mistral(monkeypatch):
    monkeypatch.chdir(REPO)
    settings = load_settings("configs/dpo.yaml", ["model.init_args.load.load_in_4bit=true"])
    model = resolve_model(settings)
    assert "configs/sft.yaml" in model.source and "mistral-7b-v0.1.json" in model.source
    arch = model.architecture
    assert (arch.hidden, arch.intermediate, arch.layers, arch.heads, arch.kv_heads, arch.head_dim, arch.vocab) == (
        4096, 14336, 32, 32, 8, 128, 32000,
    )
    assert arch.total_params == 7_241_732_096  # Mistral-7B-v0.1's published count
    assert settings.load_in_4bit and settings.stacked_sft_adapter
    assert model.sft_adapter.r == 16  # from configs/sft.yaml's lora


def test_load_section_defaults_are_the_modules():
    """No ``load:`` section and a section without ``dtype`` alike: ``LoadSettings``' float32 weights."""
    config = yaml.safe_load((REPO / "configs/tiny/sft.yaml").read_text())
    assert "load" not in config["model"]["init_args"]
    settings = parse_settings(config, "configs/tiny/sft.yaml")
    assert (settings.dtype, settings.load_in_4bit) == ("float32", False)
    config["model"]["init_args"]["load"] = {"load_in_4bit": True}
    settings = parse_settings(config, "configs/tiny/sft.yaml")
    assert (settings.dtype, settings.load_in_4bit) == ("float32", True)


def test_what_a_config_leaves_out_is_planned_at_the_constructors_defaults():
    """The keys a config omits take the classes' defaults (read from their signatures), not copies the planner keeps:
    it once assumed ``pack: false`` where the DataModules pack by default."""
    config = {
        "trainer": {"max_epochs": 1},
        "model": {
            "class_path": "lightning_modules.sft.SFTModule",
            "init_args": {"model_name_or_path": "m", "lora": {}},
        },
        "data": {"class_path": "datamodules.InstructionDataModule"},
    }
    settings = parse_settings(config, "c.yaml")
    assert settings.pack is True and settings.batch_size == 8 and settings.max_length == 1024
    assert (settings.lora.r, settings.lora.alpha, settings.lora.dropout) == (16, 32, 0.05)
    assert settings.gradient_checkpointing is False and settings.train_files == ("vicgalle/alpaca-gpt4",)
    config["data"]["init_args"] = {"pack": False, "batch_size": 2}
    assert (parse_settings(config, "c.yaml").pack, parse_settings(config, "c.yaml").batch_size) == (False, 2)
    config["data"]["class_path"] = "datamodules.NoSuchDataModule"
    with pytest.raises(PlanError, match="c.yaml: class_path 'datamodules.NoSuchDataModule' names no importable class"):
        parse_settings(config, "c.yaml")


def test_study_qlora_dpo_fits_in_24_gb(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    code, out, _ = run_plan(
        capsys, "--config", "configs/dpo.yaml", "--set", "model.init_args.load.load_in_4bit=true",
        "--set", "model.init_args.gradient_checkpointing=true", "--gpu-memory-gb", "24", "--json",
    )
    plan = json.loads(out)
    assert code == 0 and plan["fits"] and plan["peak_bytes"] < 24e9
    # configs/dpo.yaml turns checkpointing off for one 80 GB H100: QLoRA on 24 GB needs it back on
    _, without, _ = run_plan(
        capsys, "--config", "configs/dpo.yaml", "--set", "model.init_args.load.load_in_4bit=true",
        "--gpu-memory-gb", "24", "--json",
    )
    assert not json.loads(without)["fits"]
    assert plan["breakdown"]["base weights"] < 4.5e9  # 7B in NF4, not 14.5 GB of bf16
    assert set(plan["stage_seconds"]) == {"training", "validation", "reference pass (precomputed, once)"}


def test_text_output_says_fits_or_not(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    _, fits, _ = run_plan(capsys, "--config", "configs/sft.yaml", "--gpu", "A100")
    _, too_small, _ = run_plan(capsys, "--config", "configs/sft.yaml", "--gpu-memory-gb", "12")
    assert "fits in 80 GB" in fits and "does not fit in 12 GB" in too_small


def test_every_training_config_plans(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    model_config = str(REPO / "configs/models/mistral-7b-v0.1.json")
    tiny = [str(path) for path in REPO.glob("configs/tiny/*.yaml") if path.name != "evaluate.yaml"]
    for config in ("configs/sft.yaml", "configs/dpo.yaml", "configs/sft.yaml+configs/fsdp/sft.yaml", *tiny):
        code, out, err = run_plan(capsys, "--config", config, "--model-config", model_config, "--mean-tokens", "200")
        assert code == 0, err
        assert "peak memory per device" in out


def test_fsdp_shards_weights_over_devices(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    _, out, _ = run_plan(capsys, "--config", "configs/sft.yaml+configs/fsdp/sft.yaml", "--json")
    plan = json.loads(out)
    # bf16 weights (load.dtype: auto on a bf16 GPU; FSDP2 keeps them in it) of 7.24B over 4 GPUs
    assert plan["breakdown"]["base weights"] == pytest.approx(7_241_732_096 * 2 / 4, rel=1e-6)


@pytest.mark.parametrize("last_layer", [False, True], ids=["default", "every-layer"])
def test_time_by_hand(monkeypatch, last_layer):
    """LoRA SFT with checkpointing: per token 4N (forward, activation gradients) + the head at response positions
    (forward and backward) + attention (forward, backward twice) + adapters (forward, activation and weight
    gradients) + the recomputation of the checkpointed layers (31 of Mistral-7B's 32 by default: forward 2N,
    attention and adapters again)."""
    monkeypatch.chdir(REPO)
    overrides = ["model.init_args.gradient_checkpointing=true"]
    overrides.append(f"model.init_args.checkpoint_last_layer={str(last_layer).lower()}")
    settings = load_settings("configs/sft.yaml", overrides)
    arch = resolve_model(settings).architecture
    time = plan_time(arch, settings, peak_flops=1e15, mfu=0.5)
    s, rho = time.row_tokens, time.response_share
    assert (s, round(rho, 3)) == (232, round(162 / 232, 3))
    attention = 2 * 32 * 4096 * s
    lora = arch.lora_params(settings.lora)
    recomputed = (32 if last_layer else 31) / 32
    per_token = 4 * arch.body_linear_params + 4 * rho * arch.head_params + 3 * attention + 6 * lora
    per_token += recomputed * (2 * arch.body_linear_params + attention + 2 * lora)
    tokens = 9500 * 3 * s  # 10,000 rows less 5 % validation, 3 epochs
    training = time.stages[0]
    assert training.tokens == tokens
    assert training.flops == pytest.approx(tokens * per_token, rel=1e-9)
    assert training.seconds == pytest.approx(tokens * per_token / 5e14, rel=1e-9)
    assert time.validations == 12 and time.stages[1].tokens == 500 * s * 12


def test_precomputed_reference_is_one_forward_over_the_data(monkeypatch):
    monkeypatch.chdir(REPO)
    settings = load_settings("configs/dpo.yaml")
    time = plan_time(resolve_model(settings).architecture, settings, peak_flops=1e15, mfu=0.5)
    reference = time.stages[2]
    assert reference.tokens == (61_135 + 1_000) * 2 * time.row_tokens  # chosen and rejected rows, train + val


def test_a_reference_free_run_plans_no_reference_pass_or_copy(monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = ["model.init_args.reference=separate", "model.init_args.losses=[{name: simpo}, {name: sft}]"]
    settings = load_settings("configs/dpo.yaml", overrides)
    assert settings.reference == "none"
    time = plan_time(resolve_model(settings).architecture, settings, peak_flops=1e15, mfu=0.5)
    assert [stage.name for stage in time.stages] == ["training", "validation"]
    dpo = load_settings("configs/dpo.yaml", ["model.init_args.reference=separate"])
    assert dpo.reference == "separate"  # sigmoid reads the reference
    with pytest.raises(PlanError, match="unknown loss 'dpo'"):
        load_settings("configs/dpo.yaml", ["model.init_args.losses=[{name: dpo}]"])


def test_unknown_model_is_one_error_line(tmp_path, capsys):
    config = yaml.safe_load((REPO / "configs/dpo.yaml").read_text())
    config["model"]["init_args"]["model_name_or_path"] = str(tmp_path / "no-such-export")
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = run_plan(capsys, "--config", str(path))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "--model-config" in err


def test_bad_override_is_one_error_line(capsys):
    code, _, err = run_plan(capsys, "--config", str(REPO / "configs/sft.yaml"), "--set", "model.nope.r=4")
    assert code == 2 and err == "error: --set 'model.nope.r=4': the config has no section model.nope.\n"
    with pytest.raises(PlanError, match="expected dotted.key=value"):
        load_settings(REPO / "configs/sft.yaml", ["load.load_in_4bit"])


def test_entry_point_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plan.py"), "plan", "--config", str(tmp_path / "missing.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --config") and result.stderr.count("\n") == 1
