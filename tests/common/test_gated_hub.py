"""A gated or unauthorised Hub repository is one `error:` line that says what to do (accept the license, set
HF_TOKEN), not "revision 'main' not found" nor a transformers traceback. The Hub is stood in: its answers are
built as huggingface_hub builds them, from an HTTP response through ``hf_raise_for_status``."""

from __future__ import annotations

import httpx2
import pytest
import transformers.utils.hub as transformers_hub
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError
from huggingface_hub.utils import hf_raise_for_status

from common.errors import HubAccessError, RevisionError
from common.provenance import resolve_revision
from lightning_modules.loading import load_causal_lm

MODEL_ID = "mistralai/Mistral-7B-v0.1"
GATED = {"X-Error-Code": "GatedRepo"}


def hub_answer(status: int, url: str, headers: dict[str, str]) -> HfHubHTTPError:
    """The error huggingface_hub raises for this HTTP answer of the Hub."""
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("GET", url))
    with pytest.raises(HfHubHTTPError) as raised:
        hf_raise_for_status(response)
    return raised.value


def hub_refuses(monkeypatch, status: int, headers: dict[str, str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def model_info(self, repo_id, revision=None, **kwargs):
        raise hub_answer(status, f"https://huggingface.co/api/models/{repo_id}/revision/main", headers)

    monkeypatch.setattr(HfApi, "model_info", model_info)


def assert_one_line_advice(message: str) -> None:
    assert "\n" not in message
    assert message.startswith(f"{MODEL_ID}: ")
    assert f"accept its license on https://huggingface.co/{MODEL_ID}" in message
    assert "HF_TOKEN" in message and "hf auth login" in message


def test_a_gated_model_names_the_license_page_and_the_token(monkeypatch):
    hub_refuses(monkeypatch, 401, GATED)
    assert isinstance(hub_answer(401, "https://huggingface.co/api/models/x/y", GATED), GatedRepoError)
    with pytest.raises(HubAccessError) as raised:
        resolve_revision(MODEL_ID, None, "model")
    assert_one_line_advice(str(raised.value))
    assert "is gated on the Hub" in str(raised.value) and "not found" not in str(raised.value)


@pytest.mark.parametrize("status, headers", [
    (401, {"X-Error-Message": "Invalid credentials in Authorization header"}),  # a wrong or expired token
    (403, {"X-Error-Message": "Forbidden"}),  # a token without read access
])
def test_a_refused_token_is_the_same_advice_not_an_unreachable_hub(monkeypatch, status, headers):
    hub_refuses(monkeypatch, status, headers)
    with pytest.raises(HubAccessError, match=f"refused this machine's token \\(HTTP {status}") as raised:
        resolve_revision(MODEL_ID, None, "model")
    assert_one_line_advice(str(raised.value))


def test_a_missing_repository_is_still_not_found(monkeypatch):
    hub_refuses(monkeypatch, 404, {"X-Error-Code": "RepoNotFound"})
    with pytest.raises(RevisionError, match=r"revision 'main' not found on the Hub .* If it is private, set HF_TOKEN"):
        resolve_revision(MODEL_ID, None, "model")


def test_transformers_gated_oserror_gives_the_same_line(monkeypatch):
    """transformers (5.x, ``utils/hub.py``) turns the download's GatedRepoError into an OSError "You are trying to
    access a gated repo"; load_causal_lm gives the same advice instead of "could not be loaded as a causal LM"."""

    def download(repo_id, *args, **kwargs):
        raise hub_answer(401, f"https://huggingface.co/{repo_id}/resolve/main/config.json", GATED)

    monkeypatch.setattr(transformers_hub, "hf_hub_download", download)
    monkeypatch.setattr(transformers_hub, "snapshot_download", download)
    with pytest.raises(HubAccessError) as raised:
        load_causal_lm(MODEL_ID, dtype="float32")
    assert_one_line_advice(str(raised.value))
    assert isinstance(raised.value.__context__, OSError) and "gated repo" in str(raised.value.__context__)
