"""QLoRA under DDP: each process quantises its base onto its own GPU, named by the launcher's ``LOCAL_RANK``.

The module is built before Lightning's strategy sets each process's device, so ``torch.cuda.current_device()`` is 0
in every process then. No GPU here: CUDA's presence and device count are faked, and the load is stopped at
transformers' ``from_pretrained`` to read the device bitsandbytes would quantise onto.
"""

from __future__ import annotations

import pytest
import torch

from common.errors import ConfigError
from common.settings import LoadSettings, LoraSettings
from lightning_modules import loading
from lightning_modules.sft import SFTModule


class StoppedAtLoad(Exception):
    """Raised by the stand-in ``from_pretrained`` with the keyword arguments it was given."""

    def __init__(self, kwargs: dict) -> None:
        super().__init__("stopped at from_pretrained")
        self.kwargs = kwargs


class RecordingAutoModel:
    @staticmethod
    def from_pretrained(name_or_path, **kwargs):
        raise StoppedAtLoad(kwargs)


@pytest.fixture
def two_fake_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # as in every rank before the strategy's setup
    monkeypatch.setattr(loading, "AutoModelForCausalLM", RecordingAutoModel)


@pytest.mark.parametrize(("local_rank", "device"), [("1", "cuda:1"), ("0", "cuda:0"), (None, "cuda:0")])
def test_a_qlora_module_quantises_onto_its_ranks_gpu(two_fake_gpus, monkeypatch, tiny_model_dir, local_rank, device):
    pytest.importorskip("bitsandbytes")
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    with pytest.raises(StoppedAtLoad) as stopped:
        SFTModule(str(tiny_model_dir), lora=LoraSettings(r=4), load=LoadSettings(dtype="float32", load_in_4bit=True))
    assert stopped.value.kwargs["device_map"] == {"": device}
    assert stopped.value.kwargs["quantization_config"].load_in_4bit


def test_a_local_rank_past_the_visible_gpus_is_a_config_error(two_fake_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match="LOCAL_RANK=2, but 2 CUDA GPU"):
        loading.four_bit_device()


def test_without_cuda_the_4bit_base_stays_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loading.four_bit_device() == "cpu"
