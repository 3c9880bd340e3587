"""Reading rows from the Hub or local files, and the bad-row policy.

Every row is checked before anything is tokenised. A bad row either stops preparation with an
error naming the file, the row and the field (``on_bad_row="error"``), or is skipped and counted in
one summary printed at the end of preparation (``on_bad_row="skip"``). Nothing is dropped silently. Under
``skip``, a ceiling (``max_skipped_fraction``) turns a share of bad rows too large to be stray rows (the wrong
file, schema or template) into an error.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info

from common.errors import ConfigError, DataError
from common.provenance import is_local

BadRowPolicy = Literal["error", "skip"]
LOCAL_EXTENSIONS = (".json", ".jsonl", ".parquet", ".csv")
MAX_ROWS_LISTED = 5


class BadRow(Exception):
    """Raised by a row parser: ``field`` is the offending field, ``reason`` a short category."""

    def __init__(self, field: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{field + ': ' if field else ''}{reason}{f' ({detail})' if detail else ''}")
        self.field = field
        self.reason = reason
        self.detail = detail


@dataclass
class Row:
    """One raw record and where it came from (``number`` is 1-based; the line number in JSONL).

    ``problem`` is set, and ``data`` is ``None``, when the line itself could not be read (invalid
    JSON, bytes that are not UTF-8): such a row goes through the bad-row policy like any other.
    """

    source: str
    number: int
    data: Any
    problem: BadRow | None = None


def check_max_skipped_fraction(max_skipped_fraction: float | None) -> None:
    """A data module's bad-row ceiling, checked when the module is built.

    Raises:
        ConfigError: a ceiling outside [0, 1).
    """
    if max_skipped_fraction is not None and not 0.0 <= max_skipped_fraction < 1.0:
        raise ConfigError(
            f"data: max_skipped_fraction must be in [0, 1) (a share of the rows read) or null, "
            f"got {max_skipped_fraction}."
        )


@dataclass
class PreparationReport:
    """Counts of the rows read and of the skipped rows per reason, with the first few row numbers of each.

    ``max_skipped_fraction``: under the ``skip`` policy, :meth:`finish` refuses more than this share of the rows
    read skipped (``None``: any share).
    """

    name: str
    policy: BadRowPolicy = "error"
    max_skipped_fraction: float | None = None
    kept: int = 0
    read: int = 0
    sources: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def reject(self, row: Row, field_name: str, reason: str, detail: str = "") -> None:
        """Record a bad row, or raise :class:`DataError` under the ``error`` policy.

        ``field_name`` empty means the row as a whole (e.g. a line that is not valid JSON).
        """
        where = f"{row.source}: row {row.number}" + (f": field '{field_name}'" if field_name else "")
        if self.policy == "error":
            raise DataError(
                f"{where}: {reason}{f' ({detail})' if detail else ''}. "
                "Fix the row, or set on_bad_row: skip to drop such rows and count them."
            )
        self.skipped[reason] += 1
        if len(self.examples[reason]) < MAX_ROWS_LISTED:
            self.examples[reason].append(f"{row.source}:{row.number}")

    def reasons(self) -> str:
        """Each reason's count with its first rows: ``missing field: 2 (e.g. a.jsonl:3, a.jsonl:9); ...``."""
        counts = self.skipped.most_common()
        return "; ".join(f"{reason}: {count} (e.g. {', '.join(self.examples[reason])})" for reason, count in counts)

    def summary(self) -> str:
        """One line: how many rows were kept and how many skipped for which reason."""
        total_skipped = sum(self.skipped.values())
        line = f"[{self.name}] kept {self.kept} rows, skipped {total_skipped}"
        if total_skipped:
            line += f" -- {self.reasons()}"
        return line

    def log(self) -> None:
        """Print the summary once (rank 0 only under DDP)."""
        rank_zero_info(self.summary())

    def finish(self) -> None:
        """The end of preparation: refuse a share of skipped rows above the ceiling, else print the summary.

        Raises:
            DataError: more than ``max_skipped_fraction`` of the rows read were skipped; the one line gives the
                counts per reason and the files read.
        """
        total_skipped = sum(self.skipped.values())
        ceiling = self.max_skipped_fraction
        if ceiling is not None and self.read and total_skipped / self.read > ceiling:
            raise DataError(
                f"[{self.name}] skipped {total_skipped} of the {self.read} rows read "
                f"({total_skipped / self.read:.2%}), above max_skipped_fraction {ceiling} -- {self.reasons()} -- "
                f"in {', '.join(dict.fromkeys(self.sources))}. So many bad rows point to the wrong file, schema or "
                "template: check them, or raise max_skipped_fraction."
            )
        self.log()


def read_rows(source: str, split: str | None = None, revision: str | None = None) -> Iterator[Row]:
    """Yield the records of a local file, or of a Hub dataset split.

    Local files: ``.jsonl`` (one object per line), ``.json`` (a list of objects, or an object whose
    ``data`` / ``rows`` key holds the list), ``.parquet`` and ``.csv``. Anything else that does not
    exist locally is taken as a Hub dataset id and loaded with ``datasets.load_dataset`` at ``revision``
    (a branch, tag or commit; ``None``: the default branch).

    Raises:
        DataError: a missing local file, an unknown extension, or a ``.json`` / ``.parquet`` /
            ``.csv`` file that cannot be parsed at all. A ``.jsonl`` line that is not valid JSON or
            not UTF-8 is yielded as a row with ``problem`` set, so the bad-row policy decides.
    """
    if not is_local(source, "dataset"):
        yield from _read_hub(source, split, revision)
        return
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: file not found. Check the path in the data section of your config.")
    if path.suffix not in LOCAL_EXTENSIONS:
        raise DataError(f"{source}: unknown extension {path.suffix!r}; use one of {', '.join(LOCAL_EXTENSIONS)}.")
    if path.suffix in (".jsonl", ".json"):
        yield from _read_json(path)
    else:
        yield from _read_tabular(path)


def _read_json(path: Path) -> Iterator[Row]:
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not data
    if path.suffix == ".jsonl":
        yield from _read_jsonl_lines(path, raw)
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: bytes that are not UTF-8 (at byte {error.start}).") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: line {error.lineno}: invalid JSON ({error.msg}).") from None
    if isinstance(document, dict):
        document = document.get("data", document.get("rows"))
    if not isinstance(document, list):
        raise DataError(f"{path}: a .json file must hold a list of rows (or {{'data': [...]}}).")
    for number, record in enumerate(document, start=1):
        yield Row(str(path), number, record)


def _read_jsonl_lines(path: Path, raw: bytes) -> Iterator[Row]:
    """One row per non-blank line. Split on bytes, not ``str.splitlines``: JSON strings may hold
    U+2028 and friends, which ``splitlines`` would take for line breaks."""
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            problem = BadRow("", "bytes that are not UTF-8", f"at byte {error.start} of the line")
            yield Row(str(path), number, None, problem)
            continue
        try:
            yield Row(str(path), number, json.loads(text))
        except json.JSONDecodeError as error:
            yield Row(str(path), number, None, BadRow("", "invalid JSON", f"{error.msg} at column {error.colno}"))


def _read_tabular(path: Path) -> Iterator[Row]:
    """Parquet keeps its column types; every CSV cell is text (a CSV has no types: an answer ``4`` is the
    string ``"4"``, not a number to refuse). Row 1 is the first row after the CSV header."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if path.suffix == ".parquet":
            table = pyarrow.parquet.read_table(path)
        else:
            header = pyarrow.csv.open_csv(path).schema.names
            as_text = pyarrow.csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()))
            table = pyarrow.csv.read_csv(path, convert_options=as_text)
    except Exception as error:  # pyarrow raises many types; the user needs the file and the cause
        raise DataError(f"{path}: cannot be read as {path.suffix[1:]}: {error}") from None
    for number, record in enumerate(table.to_pylist(), start=1):
        yield Row(str(path), number, record)


def _read_hub(dataset_id: str, split: str | None, revision: str | None = None) -> Iterator[Row]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split or "train", revision=revision)
    except Exception as error:  # offline, unknown id, private repo...: say which and why
        raise DataError(
            f"{dataset_id} (split {split or 'train'}): not a local file and could not be loaded from the "
            f"Hugging Face Hub: {type(error).__name__}: {error}"
        ) from None
    name = f"{dataset_id}[{split or 'train'}]"
    for number, record in enumerate(dataset, start=1):
        yield Row(name, number, record)


def require_text(record: Any, name: str, *, allow_empty: bool = False, label: str | None = None) -> str:
    """The string field ``name`` of ``record``, or :class:`BadRow` saying what is wrong with it.

    ``label`` is the field's name in messages when it differs from ``name`` (e.g. ``chosen[1].content``).
    """
    label = label or name
    if not isinstance(record, dict):
        where = label.rsplit(".", 1)[0] if "." in label else "<row>"
        raise BadRow(where, "wrong type", f"{type(record).__name__} where an object is expected")
    if name not in record:
        raise BadRow(label, "missing field")
    value = record[name]
    if value is None:
        raise BadRow(label, "wrong type", "null where a string is expected")
    if not isinstance(value, str):
        raise BadRow(label, "wrong type", f"{type(value).__name__} where a string is expected")
    if not allow_empty and not value.strip():
        raise BadRow(label, "empty string")
    return value


def optional_score(record: dict, name: str) -> None:
    """Check an optional numeric score field (UltraFeedback's ``score_chosen`` / ``score_rejected``)."""
    if name not in record or record[name] is None:
        return
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRow(name, "wrong type", f"{type(value).__name__} where a number is expected")
    if math.isnan(value) or math.isinf(value):
        raise BadRow(name, "score is not finite", str(value))


@dataclass
class Conversation:
    """A chat split the way the trainers use it: everything before the final assistant turn is the prompt.

    Attributes:
        system: the system turn's content, or ``None``.
        history: earlier ``{role, content}`` user / assistant turns, before the final user turn.
        user: the final user turn's content.
        assistant: the final assistant turn's content (the response that is trained or compared).
    """

    system: str | None
    history: list[dict[str, str]]
    user: str
    assistant: str

    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the final assistant turn, as chat-template messages."""
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*system, *self.history, {"role": "user", "content": self.user}]


def conversation(messages: Any, name: str) -> Conversation:
    """Check a message list ``[system?, user, assistant, (user, assistant)...]`` and split it.

    One optional system turn first, then user and assistant turns alternating, ending with the assistant.

    Raises:
        BadRow: not a list of message objects, a role out of place, no assistant turn, or a content that is
            missing, empty or not a string (the field is named, e.g. ``chosen[3].content``).
    """
    if not isinstance(messages, list):
        raise BadRow(name, "wrong type", f"{type(messages).__name__} where a message list is expected")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRow(f"{name}[{i}]", "wrong type", f"{type(message).__name__} where a message object is expected")
    roles = [message.get("role") for message in messages]
    start = 1 if roles[:1] == ["system"] else 0
    turns = roles[start:]
    alternating = all(role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(turns))
    if not alternating or len(turns) < 2 or len(turns) % 2:
        if "assistant" not in roles:
            raise BadRow(name, "no assistant turn", f"roles {roles}")
        raise BadRow(
            name,
            "roles out of order",
            f"roles {roles}; expected an optional system turn, then user and assistant alternating, "
            "ending with assistant",
        )
    contents = [require_text(m, "content", label=f"{name}[{i}].content") for i, m in enumerate(messages)]
    history = [{"role": role, "content": text} for role, text in zip(roles[start:-2], contents[start:-2], strict=True)]
    return Conversation(
        system=contents[0] if start else None, history=history, user=contents[-2], assistant=contents[-1]
    )


def collect(
    sources: list[str],
    parse: Callable[[dict], dict],
    report: PreparationReport,
    split: str | None = None,
    revisions: dict[str, str | None] | None = None,
    check: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Parse every row of every source with ``parse``; bad rows go to ``report``.

    ``revisions`` maps a Hub dataset id to the commit to read it at (:mod:`common.provenance`). ``check`` looks at
    each parsed example for what the run cannot use although the row is well-formed (e.g. a multi-turn chat and a
    template that holds one exchange: :func:`datamodules.instruction.template_check`) and raises
    :class:`BadRow`: such a row takes the same path as a malformed one (the policy, the counts, the "no usable
    rows" error when none is left), not a second one after tokenisation.

    Each kept example carries ``_source`` and ``_row`` so later stages (e.g. truncation) can still
    name where a row came from.

    Raises:
        DataError: a bad row under the ``error`` policy, or no usable row at all.
    """
    if not sources:
        raise DataError(f"[{report.name}] no data source given: set train_files (a local file or a Hub dataset id).")
    examples = []
    for source in sources:
        before = len(examples)
        seen = 0
        report.sources.append(source)
        for row in read_rows(source, split, (revisions or {}).get(source)):
            seen += 1
            report.read += 1
            if row.problem is not None:
                report.reject(row, row.problem.field, row.problem.reason, row.problem.detail)
                continue
            try:
                example = parse(row.data)
                if check is not None:
                    check(example)
            except BadRow as bad:
                report.reject(row, bad.field, bad.reason, bad.detail)
                continue
            example["_source"], example["_row"] = row.source, row.number
            examples.append(example)
        if len(examples) == before:
            what = "is empty" if seen == 0 else f"has no usable rows ({seen} rows, all bad)"
            raise DataError(f"{source} {what}. {report.summary()}")
    return examples
