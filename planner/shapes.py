"""The model's architecture, read from its ``config.json`` only (no weights, no network).

Where the ``config.json`` comes from, for ``model.init_args.model_name_or_path``:

1. ``--model-config PATH.json``, when given;
2. a local folder: its ``config.json``; a LoRA export: its base (``adapter_config.json``'s
   ``base_model_name_or_path``); a DPO export: its source (``export_info.json``'s ``source_model``);
3. a path that does not exist yet (``outputs/study/sft`` before the SFT stage has run): the training config
   in the same folder whose ``HFExportCallback`` writes there, and that config's model, followed the same way;
4. a Hub id: the offline Hugging Face cache's ``config.json`` when present, else the one shipped in
   ``configs/models/<name>.json`` (``mistralai/Mistral-7B-v0.1`` -> ``mistral-7b-v0.1.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from planner.settings import Lora, PlanError, PlannedRun, export_dir, parse_lora

SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models"
REQUIRED_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer of the Llama / Mistral family (gated MLP, RMSNorm, rotary positions, GQA).

    Attributes:
        hidden: model width ``h``.
        intermediate: MLP width ``i``.
        layers: decoder layers ``L``.
        heads / kv_heads / head_dim: query heads, key/value heads, and their width.
        vocab: vocabulary size ``V``.
        tied: the LM head shares the embedding matrix.
        attention_bias: q/k/v/o projections carry a bias.
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    attention_bias: bool = False

    @classmethod
    def from_config(cls, config: dict, where: str = "config.json") -> Architecture:
        """Read a Hugging Face ``config.json`` dict (Llama / Mistral keys)."""
        missing = [key for key in REQUIRED_KEYS if key not in config]
        if missing:
            raise PlanError(
                f"{where}: not a Llama/Mistral-style model config (missing {', '.join(missing)}); pass "
                "--model-config PATH/config.json of the model to plan."
            )
        heads = int(config["num_attention_heads"])
        return cls(
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
        )

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``(in_features, out_features)`` of each projection of one decoder layer, by its module name."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_width),
            "k_proj": (h, self.kv_width),
            "v_proj": (h, self.kv_width),
            "o_proj": (self.q_width, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's seven projections (biases included): what 4-bit quantises."""
        bias = (self.q_width + 2 * self.kv_width + self.hidden) if self.attention_bias else 0
        return sum(n_in * n_out for n_in, n_out in self.linear_shapes().values()) + bias

    @property
    def body_linear_params(self) -> int:
        """``N_body``: the projections of all layers, the weights every token multiplies by."""
        return self.layers * self.layer_linear_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """The LM head's own weights (0 when tied to the embeddings)."""
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        """Two RMSNorms per layer and the final one."""
        return (2 * self.layers + 1) * self.hidden

    @property
    def total_params(self) -> int:
        return self.body_linear_params + self.embedding_params + self.head_params + self.norm_params

    def lora_params(self, lora: Lora) -> int:
        """Weights of a LoRA adapter: ``r * (in + out)`` per targeted projection per layer (lm_head once)."""
        shapes = self.linear_shapes()
        per_layer = sum(lora.r * sum(shapes[name]) for name in lora.target_modules if name in shapes)
        head = lora.r * (self.hidden + self.vocab) if "lm_head" in lora.target_modules else 0
        return self.layers * per_layer + head


@dataclass(frozen=True)
class ResolvedModel:
    """The architecture to plan, where it was read, and the frozen SFT adapter DPO stacks (if known)."""

    architecture: Architecture
    source: str
    sft_adapter: Lora | None = None


def resolve_model(settings: PlannedRun, model_config: str | Path | None = None) -> ResolvedModel:
    """Find and read the ``config.json`` of ``settings.model`` (see the module docstring for the order).

    Raises:
        PlanError: no readable config.json; the message names ``--model-config``.
    """
    return resolve_model_name(settings.model, settings.config_path.parent, model_config)


def resolve_model_name(
    model: str,
    search_dir: Path,
    model_config: str | Path | None = None,
    key: str = "model.init_args.model_name_or_path",
) -> ResolvedModel:
    """:func:`resolve_model` for a model named by ``key`` of a config in ``search_dir`` (an evaluation config's
    ``sft_adapter`` or ``judge.model``, say)."""
    sft_adapter = None
    if model_config is not None:
        path = Path(model_config)
        return ResolvedModel(read_architecture(path), f"{path} (--model-config)", adapter_of(model, search_dir))
    chain: list[str] = []
    name = model
    for _ in range(8):  # export -> SFT export -> base: a short chain; the bound stops a loop of configs
        chain.append(name)
        folder = Path(name)
        if (folder / "config.json").is_file():
            return ResolvedModel(read_architecture(folder / "config.json"), _describe(chain), sft_adapter)
        if (folder / "adapter_config.json").is_file():
            adapter = json.loads((folder / "adapter_config.json").read_text())
            sft_adapter = sft_adapter or _lora_from_adapter_config(adapter)
            name = str(adapter["base_model_name_or_path"])
            continue
        info = folder / "export_info.json"
        if info.is_file() and json.loads(info.read_text()).get("source_model"):
            name = str(json.loads(info.read_text())["source_model"])
            continue
        producer = _config_exporting_to(name, search_dir)
        if producer is not None:
            config_path, config = producer
            chain[-1] += f" (not there yet: written by {config_path})"
            lora = parse_lora((config["model"].get("init_args") or {}).get("lora"))
            sft_adapter = sft_adapter or lora
            name = str(config["model"]["init_args"]["model_name_or_path"])
            continue
        cached = _hub_config(name)
        if cached is not None:
            chain[-1] += f" ({_display(cached)})"
            return ResolvedModel(read_architecture(cached), _describe(chain), sft_adapter)
        break
    raise PlanError(
        f"{key} {model!r}: no config.json found (followed: "
        f"{' -> '.join(chain)}; not a local model folder, not in the offline Hugging Face cache, no "
        f"configs/models/<name>.json). Pass --model-config PATH/config.json, e.g. "
        f"--model-config configs/models/mistral-7b-v0.1.json."
    )


def read_architecture(path: Path) -> Architecture:
    try:
        config = json.loads(Path(path).read_text())
    except OSError as error:
        raise PlanError(f"--model-config {path}: cannot be read ({error.strerror}).") from None
    except json.JSONDecodeError as error:
        raise PlanError(f"--model-config {path}: not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise PlanError(f"--model-config {path}: not a model config (a JSON object).")
    return Architecture.from_config(config, str(path))


def _display(path: Path) -> str:
    """``path`` relative to the working folder when it lies under it (shorter, and the same on every clone)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _describe(chain: list[str]) -> str:
    return " -> ".join(chain)


def _lora_from_adapter_config(adapter: dict) -> Lora:
    return Lora(
        r=int(adapter.get("r", 16)),
        alpha=int(adapter.get("lora_alpha", 32)),
        dropout=float(adapter.get("lora_dropout", 0.0)),
        target_modules=tuple(adapter.get("target_modules") or ()),
    )


def _config_exporting_to(path: str, search_dir: Path) -> tuple[Path, dict] | None:
    """A training config beside the planned one whose ``HFExportCallback`` writes ``path``."""
    wanted = Path(path)
    for candidate in sorted(search_dir.glob("*.yaml")):
        try:
            config = yaml.safe_load(candidate.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(config, dict) or "model" not in config:
            continue
        target = export_dir(config)
        if target is not None and Path(target) == wanted:
            return candidate, config
    return None


def adapter_of(name: str, search_dir: Path) -> Lora | None:
    """The LoRA adapter's shape of an export (the SFT adapter behind a DPO start point, the DPO adapter an
    evaluation stacks), when the export's ``adapter_config.json`` or the config that writes it says it."""
    folder = Path(name)
    if (folder / "adapter_config.json").is_file():
        return _lora_from_adapter_config(json.loads((folder / "adapter_config.json").read_text()))
    producer = _config_exporting_to(name, search_dir)
    if producer is not None:
        return parse_lora((producer[1]["model"].get("init_args") or {}).get("lora"))
    return None


def _hub_config(repo_id: str) -> Path | None:
    """``config.json`` of a Hub model from the offline cache, else the shipped copy (``None``: neither)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the cache cannot even look up is simply not cached
        cached = None
    if isinstance(cached, str):
        return Path(cached)
    shipped = SHIPPED_CONFIGS / f"{repo_id.split('/')[1].lower()}.json"
    return shipped if shipped.is_file() else None
