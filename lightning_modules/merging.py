"""What applying a LoRA adapter in 16-bit weights keeps of its update: measured, so rounding never silently erases it.

bfloat16 keeps 8 significant bits: ``bf16(W + dW) == W`` whenever ``|dW| < ulp(W) / 2``, which is 6.1e-5 at
``|W| = 0.02`` (float16: 7.6e-6; float32: 9.3e-10). A LoRA DPO at lr 5e-7 moves Mistral's weights by ~1e-5, so
merged into bf16 weights most of its update rounds away and the merged SFT+DPO model is nearly the SFT model: a
false "DPO does nothing". The same rounding meets a stacked adapter whose module carries no other one: peft adds
its output to the base layer's bf16 output (on the bf16 grid) and rounds the sum back to bf16. Stacked on another
adapter of the same module (DPO on SFT), the outputs are summed in float32 and rounded once; the SFT adapter's
large update moves the sum off the grid and the small one shifts the rounding in proportion: kept on average.

:func:`merge_retention` predicts what a merge, or a stacked adapter alone on its module, keeps (the measurement
that shows it, on a 2-layer Mistral in bf16, is in ``docs/gpu.md``, "Merging adapters").
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from common.errors import ConfigError

RETAINED_REFUSED_BELOW = 0.9
"""A merge whose median module keeps less than this share of its update is refused. The share scales the
adapter's first-order effect on every log-prob (``logp(W + r dW) - logp(W) ~ r <grad, dW>``): below 0.9 the
merged model shows more than 10 % less of the trained change than the model that was trained, a bias in the very
difference the evaluation measures (what updates of which size keep: ``docs/gpu.md``)."""
RETAINED_WARNED_BELOW = 0.99
"""A merge with any module below this share (the median above :data:`RETAINED_REFUSED_BELOW`) is made with a
one-line warning: a 1 % loss is small beside the evaluation's sampling error, but it is not the trained model."""


@dataclass(frozen=True)
class MergeRetention:
    """What merging one adapter into its weights' dtype keeps of the update, module by module.

    Attributes:
        adapter: the adapter's name in the peft model.
        dtype: the dtype of the weights it merges into (``bfloat16``, ``float16``, ``float32``).
        retained: per LoRA module, the share of its update along its own direction that the merge keeps
            (1: all of it; 0: rounding dropped it). Untrained modules (``dW == 0``) are left out.
        norm_ratio: per LoRA module, ``||merged_W - W|| / ||dW||``: the size of the change the merge makes over
            the update's size. Rounding can make it 1 or more while the direction is lost (an entry with
            ``ulp/2 < |dW| < ulp`` jumps a whole ulp), so the decision reads ``retained``.
    """

    adapter: str
    dtype: str
    retained: dict[str, float]
    norm_ratio: dict[str, float]

    @property
    def min(self) -> float:
        """The smallest module's retained share (``nan`` without a trained module)."""
        return min(self.retained.values(), default=float("nan"))

    @property
    def median(self) -> float:
        """The median module's retained share (``nan`` without a trained module)."""
        return statistics.median(self.retained.values()) if self.retained else float("nan")

    def below(self, threshold: float) -> list[str]:
        """The modules that keep less than ``threshold`` of their update, in model order."""
        return [name for name, share in self.retained.items() if share < threshold]

    def summary(self, threshold: float = RETAINED_WARNED_BELOW) -> dict:
        """The record for an export's or a results file's metadata: dtype, module count, min and median retained
        share, median norm ratio, and the modules below ``threshold``."""
        return {
            "dtype": self.dtype,
            "modules": len(self.retained),
            "retained_min": round(self.min, 4) if self.retained else None,
            "retained_median": round(self.median, 4) if self.retained else None,
            "norm_ratio_median": round(statistics.median(self.norm_ratio.values()), 4) if self.norm_ratio else None,
            "threshold": threshold,
            "below_threshold": self.below(threshold),
        }


@torch.no_grad()
def merge_retention(model: nn.Module, adapter: str, stacked_over: str | None = None) -> MergeRetention:
    """Measure, without merging, what merging ``adapter`` into the weights' dtype would keep of its update.

    For each LoRA-adapted module with base weight ``W`` (dtype ``d``) and update ``dW`` (peft's
    ``get_delta_weight(adapter)``, ``scaling * B @ A``, taken in float32)::

        merged_W   = d(W + dW)                                   # what peft's merge writes: one rounding to d
        retained   = <merged_W - W, dW> / ||dW||^2               # the update's share kept along its direction
        norm_ratio = ||merged_W - W|| / ||dW||                   # Frobenius norms

    Why the projection decides and not the norm ratio: rounding moves an entry by 0 or by whole ulps. With
    ``|dW| ~ ulp(W) / 2`` a third of the entries jump a full ulp and the rest stay, so the norm ratio reads ~1.0
    while the merged change points elsewhere (measured on ``W ~ N(0, 0.02)`` in bf16, ``dW ~ N(0, 3e-5)``: norm
    ratio 0.94, retained 0.70). ``retained`` is 1 for an exact merge, 0 when ``merged_W == W``, and rounding
    noise that is uncorrelated with ``dW`` does not inflate it. The same number is what a stacked adapter alone
    on its module keeps in a forward in ``d`` (the module docstring's table).

    Args:
        model: a peft model (or any module tree) holding LoRA layers with ``adapter``.
        adapter: the adapter's name (``default`` for a peft model loaded with one adapter).
        stacked_over: an adapter stacked under ``adapter`` in a forward: the modules that also carry it are left
            out (their outputs are summed before the one rounding, which keeps the small update on average).

    Raises:
        ValueError: no module carries ``adapter``, or it is a LoRA variant (DoRA...) whose merge is not ``W + dW``.
    """
    from peft.tuners.lora import LoraLayer

    retained: dict[str, float] = {}
    norm_ratio: dict[str, float] = {}
    dtypes: set[str] = set()
    adapted = 0
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        if adapter in getattr(module, "lora_variant", {}):
            raise ValueError(f"{name}: adapter {adapter!r} is a LoRA variant; its merge is not W + dW.")
        adapted += 1
        weight = module.get_base_layer().weight
        if not weight.dtype.is_floating_point:  # 4-bit NF4, packed: no merge; its forward is not measured here
            continue
        dtypes.add(str(weight.dtype).removeprefix("torch."))
        if stacked_over is not None and stacked_over in module.lora_A:
            continue
        before = weight.detach().float()
        delta = module.get_delta_weight(adapter).detach().float()
        total = float(delta.square().sum())
        if total == 0:  # lora_B starts at zero: nothing to keep
            continue
        change = (before + delta).to(weight.dtype).float() - before
        short = name.removeprefix("base_model.model.")
        retained[short] = float((change * delta).sum()) / total
        norm_ratio[short] = float(change.norm()) / total**0.5
    if not adapted:
        raise ValueError(f"No LoRA module carries the adapter {adapter!r}.")
    return MergeRetention(adapter, "/".join(sorted(dtypes)), retained, norm_ratio)


def check_retention(retention: MergeRetention, what: str, fix: str, refuse: bool = True) -> None:
    """Refuse an adapter whose update rounding erases, warn about one it trims (the thresholds above).

    Args:
        retention: :func:`merge_retention`'s measure.
        what: what is done, in the user's words (``merging the DPO adapter outputs/study/dpo``).
        fix: the settings that keep the update (``Set load.dtype: float32.``).
        refuse: ``False`` warns instead, with ``fix``, below :data:`RETAINED_REFUSED_BELOW`: for an adapter that
            is stacked already, where only float32 weights would do better (a 3-step dry run's adapter, say).

    Raises:
        ConfigError: the median module keeps less than :data:`RETAINED_REFUSED_BELOW` of its update (``refuse``).
    """
    if not retention.retained:
        return
    kept = (
        f"{what} in {retention.dtype} weights keeps {retention.median:.3f} of its update (median over "
        f"{len(retention.retained)} LoRA modules, min {retention.min:.3f})"
    )
    if retention.median < RETAINED_REFUSED_BELOW:
        lost = (
            f"{kept}: the update is below half a {retention.dtype} ulp of most weights and rounds away, so the model "
            f"would be nearly the one without the adapter. {fix}"
        )
        if refuse:
            raise ConfigError(f"Refused: {lost}")
        warnings.warn(f"{lost[0].upper()}{lost[1:]}", stacklevel=2)
        return
    low = retention.below(RETAINED_WARNED_BELOW)
    if low:
        low_share = f"{len(low)} modules keep less than {RETAINED_WARNED_BELOW}"
        warnings.warn(f"{kept[0].upper()}{kept[1:]}; {low_share}.", stacklevel=2)


def merge_lora(model: nn.Module, adapter: str, what: str, fix: str) -> tuple[nn.Module, MergeRetention]:
    """Merge a peft model's one adapter into its weights, measured and checked first (:func:`check_retention`).

    Args:
        what: the adapter in the user's words (``the SFT adapter outputs/study/sft``).
        fix: the settings that avoid the merge or make it exact, for the refusal.

    Returns:
        ``(the plain model with the adapter merged in, the measure)``.

    Raises:
        ConfigError: the merge would lose the update (:data:`RETAINED_REFUSED_BELOW`).
        ValueError: the model holds other adapters than ``adapter`` (``merge_and_unload`` would drop them).
    """
    others = set(model.peft_config) - {adapter}
    if others:
        raise ValueError(f"Merging {adapter!r} would drop the other adapters {sorted(others)}.")
    retention = merge_retention(model, adapter)
    check_retention(retention, f"merging {what}", fix)
    return model.merge_and_unload(), retention
