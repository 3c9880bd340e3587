"""One default per loading field: ``load: null``, no ``load`` and a ``load:`` section without a field all give
``LoadSettings``' value (float32 weights unless ``dtype: auto`` or a dtype is asked for)."""

from __future__ import annotations

from common.settings import LoadSettings, LoraSettings
from lightning_modules.loading import training_load_settings


def test_null_and_a_section_without_dtype_both_load_float32():
    assert LoadSettings().dtype == "float32"  # not auto, which resolves per machine
    for lora in (None, LoraSettings()):
        assert training_load_settings(None, lora) == LoadSettings(dtype="float32")
        section = training_load_settings(LoadSettings(attn_implementation="eager"), lora)
        assert (section.dtype, section.attn_implementation) == ("float32", "eager")


def test_an_asked_dtype_is_kept():
    assert training_load_settings(LoadSettings(dtype="bfloat16"), LoraSettings()).dtype == "bfloat16"
