"""What the instruction and preference DataModules share: tokenizer, caching, loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
from datasets import Dataset
from torch.utils.data import DataLoader

from common.errors import ConfigError
from common.hashing import content_hash
from common.provenance import resolve_revision, source_record
from datamodules.resumable import eval_loader, train_loader
from datamodules.tokenizer import load_tokenizer


class TokenizedDataModule(L.LightningDataModule):
    """Base class: subclasses fill ``self.train_dataset`` / ``self.val_dataset`` in ``setup``.

    Args:
        tokenizer_name_or_path: tokenizer to use; the CLI links it to the model's path.
        batch_size: rows (instruction examples or preference pairs) per training batch.
        eval_batch_size: rows per validation batch; defaults to ``batch_size``.
        num_workers: DataLoader worker processes.
        seed: seed of the example selection and of the shuffling.
        group_by_length: batch rows of similar length together (less padding), still visiting
            every row once per epoch in a seeded random order of batches. Padded batches only: a
            packed batch has no padding to save, and grouping would only gather the longest rows
            into one batch, raising the peak memory (by a quarter on the benchmark's data).
        pack: pack each batch's rows into one padding-free sequence (``position_ids`` restart per
            row, no attention across rows) instead of right-padding.
        cache_dir: folder for the tokenised ``datasets`` cache; ``None`` keeps it in memory.
        trust_remote_code: allow tokenizer code shipped with the checkpoint.
        revision: for Hub datasets in the data files, the branch, tag or commit to read (``None``: the
            default branch); resolved once to a commit, which is read and recorded.
        tokenizer_revision: the tokenizer's Hub revision; ``train.py`` sets it to the model's ``revision``
            when both come from the same place.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        group_by_length: bool = True,
        pack: bool = True,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
    ) -> None:
        super().__init__()
        self.revision = revision
        self.tokenizer_revision = tokenizer_revision
        self.provenance: dict = {}
        self.tokenizer_name_or_path = tokenizer_name_or_path
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_length = group_by_length
        self.pack = pack
        self.cache_dir = cache_dir
        self.trust_remote_code = trust_remote_code
        self.tokenizer = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def load_tokenizer(self):
        if self.tokenizer is None:
            tokenizer = load_tokenizer(
                self.tokenizer_name_or_path, self.trust_remote_code, revision=self.tokenizer_revision
            )
            template = getattr(self, "template", None)
            if template == "chat" and not getattr(tokenizer, "chat_template", None):
                # checked here, once, not as a ValueError from the first row's rendering
                raise ConfigError(
                    f"data.template: chat needs a tokenizer with a chat template, and {self.tokenizer_name_or_path}'s "
                    "has none (base models such as Mistral-7B-v0.1 ship without one): set data.template: alpaca, or "
                    "point tokenizer_name_or_path at a tokenizer that has one."
                )
            self.tokenizer = tokenizer
        return self.tokenizer

    def resolve_sources(self, sources: list[str]) -> dict[str, str | None]:
        """The commit of each Hub dataset among ``sources``, resolved once; recorded in :attr:`provenance`."""
        commits = {source: resolve_revision(source, self.revision, "dataset") for source in sources}
        self.provenance["data"] = [
            source_record(source, self.revision, commits[source], "dataset") for source in dict.fromkeys(sources)
        ]
        return commits

    def tokenize(self, examples: list[dict], function: Callable[[dict], dict], settings: dict) -> Dataset:
        """Tokenise once through ``datasets.map``; with ``cache_dir`` the result is cached on disk.

        The cache key hashes the examples, the tokenizer's vocabulary and ``settings`` (template,
        max lengths), so changing any of them tokenises again.
        """
        dataset = Dataset.from_list(examples)
        # The chat template is part of the key: editing it changes every chat row's ids.
        chat_template = getattr(self.tokenizer, "chat_template", None)
        fingerprint = content_hash(examples, self.tokenizer.get_vocab(), chat_template, settings)
        cache_file = None
        if self.cache_dir:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
            cache_file = str(Path(self.cache_dir) / f"tokenized-{fingerprint}.arrow")
        return dataset.map(
            function,
            remove_columns=dataset.column_names,
            cache_file_name=cache_file,
            load_from_cache_file=cache_file is not None,
            new_fingerprint=fingerprint,
            desc="Tokenising",
        )

    def _loader(self, dataset: Dataset, batch_size: int, train: bool, collate: Callable) -> DataLoader:
        """Training: resumable mid-epoch, this rank's share; evaluation: in order, split by rank."""
        if train:
            return train_loader(
                dataset,
                batch_size,
                collate,
                group_by_length=self.group_by_length and not self.pack,
                seed=self.seed,
                num_workers=self.num_workers,
                trainer=self.trainer,
            )
        return eval_loader(dataset, batch_size, collate, num_workers=self.num_workers)
