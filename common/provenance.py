"""Which exact inputs a run used: Hub commits for models and datasets, content hashes for local files.

A study that loads ``mistralai/Mistral-7B-v0.1`` or ``HuggingFaceH4/ultrafeedback_binarized`` "at whatever
the Hub serves today" cannot be rerun on the same inputs next month. So every Hub source is resolved once,
before loading, from its requested ``revision`` (a branch, tag or commit; ``None``: the default branch) to
the commit it points at now, and that commit is what gets loaded and recorded. A local path records the
SHA-256 of its files instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from common.errors import HubAccessError, RevisionError

RepoType = Literal["model", "dataset"]
# Files that define a saved model; optimiser states or caches beside them do not change what is loaded.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja")


def is_local(name_or_path: str, repo_type: RepoType = "model") -> bool:
    """A path on this machine rather than a Hub id (one rule for every loader).

    An existing path, or one starting with ``.``, ``/`` or ``~``. For data, a name with a file extension
    (``rows.jsonl``) is a local file too, even a missing one, so it is reported as "file not found" rather
    than looked up on the Hub; a model id may contain a dot (``mistralai/Mistral-7B-v0.1``), so not for models.
    """
    if Path(name_or_path).exists() or name_or_path.startswith((".", "/", "~")):
        return True
    return repo_type == "dataset" and Path(name_or_path).suffix != ""


def files_sha256(path: str | Path, suffixes: tuple[str, ...] | None = None) -> str:
    """SHA-256 over a file, or over a folder's files (their relative names and contents, in sorted order)."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        if suffixes is not None and file.suffix not in suffixes:
            continue
        if root.is_dir():
            digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_revision(repo_id: str, revision: str | None, repo_type: RepoType) -> str | None:
    """The commit that ``revision`` of a Hub repository points at now (``None`` for a local path).

    Offline (``HF_HUB_OFFLINE=1``) nothing can be asked: the requested revision is returned as it is and
    loading then uses the local cache.

    Raises:
        RevisionError: the Hub answered that the repository or revision does not exist.
        HubAccessError: the repository is gated, or the Hub refused the token (:func:`hub_access_error`).
    """
    if is_local(repo_id, repo_type) or _offline():
        return None if is_local(repo_id, repo_type) else revision
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()
    info = api.model_info if repo_type == "model" else api.dataset_info
    try:
        return info(repo_id, revision=revision).sha
    except Exception as error:
        denied = hub_access_error(error, repo_id, repo_type)
        if denied is not None:
            raise denied from None
        if not isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError)):
            return revision  # unreachable Hub: load what the cache has, as transformers and datasets would
        private = "" if isinstance(error, RevisionNotFoundError) else " If it is private, set HF_TOKEN."
        raise RevisionError(
            f"{repo_id}: {repo_type} revision {revision or 'main'!r} not found on the Hub "
            f"({type(error).__name__}). Check the id and the revision (a branch, tag or commit hash).{private}"
        ) from None


def hub_access_error(error: BaseException, repo_id: str, repo_type: RepoType) -> HubAccessError | None:
    """The one-line advice for a Hub refusal found in ``error`` or the errors it wraps; ``None`` for any other.

    A refusal is a gated repository (huggingface_hub's ``GatedRepoError``, a ``RepositoryNotFoundError``
    subclass, or the ``OSError`` "You are trying to access a gated repo" that transformers turns it into) or an
    HTTP 401 / 403 answer to the token (invalid, or without read access). Without this, a gated model such as
    ``mistralai/Mistral-7B-v0.1`` reads as a missing revision or an unloadable model.
    """
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    fix = (f"accept its license on {page} (signed in to the Hub), then set HF_TOKEN to a read token of that "
           "account (or run `hf auth login`, formerly `huggingface-cli login`) and rerun.")
    seen: BaseException | None = error
    while seen is not None:
        # transformers' own OSError says "gated repo"; huggingface_hub's not-found text mentions gated repos too
        said_gated = not isinstance(seen, HfHubHTTPError) and "gated repo" in str(seen).lower()
        if isinstance(seen, GatedRepoError) or (isinstance(seen, OSError) and said_gated):
            return HubAccessError(f"{repo_id}: the {repo_type} is gated on the Hub and this machine has no access; "
                                  f"{fix}")
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(seen, HfHubHTTPError) and not isinstance(seen, RepositoryNotFoundError) and status in (401, 403):
            return HubAccessError(
                f"{repo_id}: the Hub refused this machine's token (HTTP {status}: invalid, or without access to the "
                f"{repo_type}). If the {repo_type} is gated, {fix}"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def as_list(value: str | Iterable[str] | None) -> list[str]:
    """A config value that may name one source or several, as a list of strings (the data modules, the cards)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


def source_record(name_or_path: str, revision: str | None, commit: str | None, repo_type: RepoType) -> dict:
    """One source, as recorded in ``export_info.json``, the saved config and the model card."""
    if is_local(name_or_path, repo_type):
        suffixes = MODEL_FILE_SUFFIXES if repo_type == "model" else None
        return {"path": name_or_path, "sha256": files_sha256(name_or_path, suffixes)}
    return {"hub_id": name_or_path, "revision": revision or "main", "commit": commit or "unresolved (offline)"}


def run_provenance(module: object, datamodule: object) -> dict:
    """The model and data a run used, as the module and data module recorded them (``provenance``)::

        {"model": {...}, "data": [{...}, ...], "data_fingerprint": {"train": ..., "val": ...}}
    """
    recorded = dict(getattr(module, "provenance", None) or {})
    for key, value in (getattr(datamodule, "provenance", None) or {}).items():
        recorded[key if key == "data" else f"data_{key}"] = value
    return recorded
