"""Public benchmarks through lm-evaluation-harness (``lm-eval`` 0.4), run on the variant the engine has loaded.

lm-eval scores each task the way the literature does (IFEval's rule checks, GSM8K's final-number match,
TruthfulQA MC2's probability mass, MMLU's log-likelihood choice); this module only runs it on a model
already in memory (no second load), keeps lm-eval's per-item outcomes (``log_samples``) so that the study's
own statistics can pair them between variants, and records what makes a number comparable with a published
one: lm-eval's version, each task's version, its few-shot count, filter and chat-template setting.

A task may be a group (``mmlu``): it is expanded to its leaf tasks, which run as one list, and their items
are pooled, so the group's score is the mean over all its items, the size-weighted mean that lm-eval
reports for MMLU. Offline (tests, the dry run) ``local_copies`` maps a task's Hub dataset id to a folder in
the Hub repository's layout (a ``README.md`` whose ``configs:`` header names the same configs and splits),
and the task reads that folder through the same ``datasets.load_dataset``: only ``dataset_path`` changes. A
group's leaf whose config the local copy lacks is left out and counted in one line.

IFEval counts sentences with nltk's Punkt tokenizer, whose data nltk downloads on first use. Where it is
not installed, :func:`ensure_sentence_tokenizer` adds the project's own Punkt parameters
(``evaluation/nltk_data``: a hand-written English abbreviation list, no learned collocations), so nothing is
downloaded; the results record which one was used, since sentence counts can differ on rare abbreviations.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from common.errors import EvaluationError

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
"""The project's own lm-eval tasks (``humaneval_sandboxed``), found beside lm-eval's."""
NLTK_DATA_DIR = Path(__file__).resolve().parent / "nltk_data"
"""The project's Punkt parameters for English, used only when nltk's own ``punkt_tab`` is not installed."""
CODE_TIMEOUT_ENV = "SFT_DPO_CODE_TIMEOUT_S"
"""How the sandboxed HumanEval task learns its per-program time limit."""
SCORE_METRICS = {("truthfulqa_mc2", "acc")}
"""(task, metric) pairs whose per-item outcome is a score in [0, 1], not pass / fail (MC2: the probability
mass on the true answers)."""

Outcome = Literal["pass_fail", "score"]


@dataclass
class HarnessTask:
    """One lm-eval task (or group) and the per-item metric the study tests.

    Attributes:
        task: an lm-eval task or group name (``ifeval``, ``gsm8k``, ``truthfulqa_mc2``, ``mmlu``,
            ``humaneval_sandboxed``...).
        metric: the per-item metric of lm-eval's samples (``prompt_level_strict_acc``, ``exact_match``,
            ``acc``, ``pass_at_1``).
        num_fewshot: few-shot examples (``null``: the task's default).
        filter: lm-eval's filter whose output is scored (``strict-match`` for GSM8K; ``none`` otherwise).
        outcome: ``pass_fail`` (exact McNemar between variants) or ``score`` (paired sign-flip); ``null``:
            ``score`` for TruthfulQA MC2's ``acc``, ``pass_fail`` otherwise.
        revision: the dataset commit to read (``null``: the task's own setting, lm-eval's default branch).
    """

    task: str
    metric: str
    num_fewshot: int | None = None
    filter: str = "none"
    outcome: Outcome | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.outcome is None:
            self.outcome = "score" if (self.task, self.metric) in SCORE_METRICS else "pass_fail"
        if self.outcome not in ("pass_fail", "score"):
            raise EvaluationError(
                f"benchmarks.harness.tasks[{self.task}].outcome: pass_fail or score, got {self.outcome!r}."
            )


@dataclass
class HarnessSettings:
    """lm-evaluation-harness on every variant.

    Attributes:
        tasks: the tasks, each with the metric the study tests.
        batch_size: requests per forward pass.
        apply_chat_template: format the prompts with the tokenizer's chat template (``false``: plain
            few-shot prompts, the protocol of the Open LLM Leaderboard's published numbers).
        limit: items per task (``null``: all; a number only for tests and the dry run: a partial task cannot
            be set beside a published number, and the report says so).
        max_gen_toks: a cap on generated tokens for every generation task (``null``: each task's own).
        local_copies: Hub dataset id -> local folder in the Hub layout, read instead (offline runs).
        execute_code: allow tasks that execute generated code (HumanEval); refused unless ``true``.
        code_timeout_s: wall-clock seconds per executed program.
        seed: lm-eval's random, numpy, torch and few-shot seeds.
    """

    tasks: list[HarnessTask] = field(default_factory=list)
    batch_size: int = 8
    apply_chat_template: bool = False
    limit: int | None = None
    max_gen_toks: int | None = None
    local_copies: dict[str, str] = field(default_factory=dict)
    execute_code: bool = False
    code_timeout_s: float = 10.0
    seed: int = 1234

    def __post_init__(self) -> None:
        self.tasks = [as_task(task) for task in self.tasks]
        names = [task.task for task in self.tasks]
        if len(set(names)) != len(names):
            raise EvaluationError(f"benchmarks.harness.tasks: a task is listed twice: {names}.")
        if self.batch_size < 1:
            raise EvaluationError(f"benchmarks.harness.batch_size must be >= 1, got {self.batch_size}.")
        if self.code_timeout_s <= 0:
            raise EvaluationError(f"benchmarks.harness.code_timeout_s must be > 0, got {self.code_timeout_s}.")


def as_task(entry: HarnessTask | dict) -> HarnessTask:
    """A ``tasks`` entry of the config as a :class:`HarnessTask`.

    Raises:
        EvaluationError: an unknown key, or no ``task`` / ``metric``.
    """
    if isinstance(entry, HarnessTask):
        return entry
    known = [item.name for item in fields(HarnessTask)]
    if not isinstance(entry, dict) or "task" not in entry or "metric" not in entry:
        raise EvaluationError(f"benchmarks.harness.tasks: each entry needs task and metric, got {entry!r}.")
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise EvaluationError(
            f"benchmarks.harness.tasks[{entry['task']}]: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(known)}."
        )
    return HarnessTask(**entry)


@dataclass
class TaskOutcomes:
    """One task's per-item outcomes on one variant, and what they were scored under.

    Attributes:
        items: ``"<leaf task>/<doc_id>"`` per item, in a fixed order (leaf tasks sorted, then doc ids), the
            same for every variant, so outcomes pair item by item.
        outcomes: the metric of each item (0.0 / 1.0 for ``pass_fail``).
        harness: lm-eval's own aggregate of each leaf (``{leaf: value}``), to check the pooled mean against.
        protocol: the task's version, few-shot count, filter, metric, chat template, dataset per leaf.
    """

    items: list[str]
    outcomes: list[float]
    harness: dict[str, float]
    protocol: dict[str, Any]


def lm_eval_version() -> str:
    """The installed lm-eval's version (``"not installed"``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return "not installed"


def ensure_sentence_tokenizer() -> str:
    """Make nltk's English Punkt tokenizer loadable without a download; return which one is used.

    Returns:
        ``"nltk punkt_tab"`` (nltk's own data was found) or ``"project punkt_tab (evaluation/nltk_data)"``.
    """
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "nltk punkt_tab"
    except LookupError:
        pass
    if str(NLTK_DATA_DIR) not in nltk.data.path:
        nltk.data.path.append(str(NLTK_DATA_DIR))  # last: an installed punkt_tab would win
    nltk.data.find("tokenizers/punkt_tab/english/")
    return "project punkt_tab (evaluation/nltk_data)"


@functools.cache
def task_manager(include: tuple[Path, ...] = ()):
    """lm-eval's task index with the project's tasks (and any override folders) after lm-eval's own.

    Built once per process and shared: indexing lm-eval's ~12,000 task files takes 10-25 s on a 2-core CPU, and an
    evaluation asks for it once to check the tasks and once per variant. The per-run overrides of local copies
    are passed to each run as YAML paths, not added to the index, so the shared index stays as built.
    """
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(TASKS_DIR), *map(str, include)])


def leaf_tasks(index: dict, name: str) -> list[str]:
    """The leaf tasks of an lm-eval task, group or tag, sorted (a task is its own leaf).

    Raises:
        EvaluationError: a name lm-eval does not know.
    """
    from lm_eval.tasks._index import Kind

    entry = index.get(name)
    if entry is None:
        raise EvaluationError(
            f"benchmarks.harness.tasks: lm-eval {lm_eval_version()} has no task, group or tag {name!r} "
            "(`lm-eval ls tasks` lists them)."
        )
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [name]
    if entry.kind == Kind.TAG:
        children = sorted(entry.tags)
    else:
        children = [
            child if isinstance(child, str) else child.get("task") for child in (entry.cfg or {}).get("task", [])
        ]
    return sorted({leaf for child in children if child for leaf in leaf_tasks(index, child)})


def local_configs(folder: Path) -> set[str] | None:
    """The config names a local copy's ``README.md`` header declares (``None``: no header, one default config)."""
    import yaml

    readme = folder / "README.md"
    if not readme.is_file():
        raise EvaluationError(
            f"benchmarks.harness.local_copies: {folder} has no README.md; a local copy is a folder in the Hub "
            "layout, its README.md header listing `configs:` with their data_files."
        )
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    header = yaml.safe_load(text.split("---", 2)[1]) or {}
    return {config["config_name"] for config in header.get("configs", [])}


@contextmanager
def prepared_tasks(settings: HarnessSettings) -> Iterator[tuple[Any, dict[str, list[str]], dict[str, str]]]:
    """The task manager, each configured task's leaf tasks and the spec lm-eval loads for each leaf.

    A leaf whose dataset has a local copy is loaded from a YAML written to a temporary folder that includes
    the task's own YAML and changes ``dataset_path`` (and ``dataset_kwargs.revision`` where one is pinned);
    a leaf whose config the local copy lacks is left out, counted in one line.

    Yields:
        ``(task_manager, {task: [leaves]}, {leaf: spec})``.
    """
    import yaml

    with tempfile.TemporaryDirectory(prefix="harness-tasks-") as overrides:
        manager = task_manager()
        leaves: dict[str, list[str]] = {}
        specs: dict[str, str] = {}
        for task in settings.tasks:
            kept, left_out = [], []
            for leaf in leaf_tasks(manager.task_index, task.task):
                entry = manager.task_index[leaf]
                config = entry.cfg or {}
                local = settings.local_copies.get(config.get("dataset_path", ""))
                if local is None and task.revision is None:
                    kept.append(leaf)
                    specs[leaf] = leaf
                    continue
                override: dict[str, Any] = {"include": str(entry.yaml_path), "task": leaf}
                if local is not None:
                    folder = Path(local).resolve()
                    configs = local_configs(folder)
                    if configs is not None and config.get("dataset_name") not in configs | {None}:
                        left_out.append(leaf)
                        continue
                    override["dataset_path"] = str(folder)
                if task.revision is not None:
                    override["dataset_kwargs"] = {**(config.get("dataset_kwargs") or {}), "revision": task.revision}
                path = Path(overrides) / f"{leaf}.yaml"
                path.write_text(yaml.safe_dump(override, sort_keys=False), encoding="utf-8")
                kept.append(leaf)
                specs[leaf] = str(path)
            if left_out:
                named = ", ".join(left_out[:3]) + (", ..." if len(left_out) > 3 else "")
                print(
                    f"[evaluate] {task.task}: the local copy holds {len(kept)} of {len(kept) + len(left_out)} leaf "
                    f"tasks; {len(left_out)} left out ({named})",
                    flush=True,
                )
            if not kept:
                raise EvaluationError(f"benchmarks.harness: {task.task}: the local copy holds none of its leaf tasks.")
            leaves[task.task] = kept
        yield manager, leaves, specs


def check_code_execution(settings: HarnessSettings, manager: Any, leaves: dict[str, list[str]]) -> None:
    """Refuse a task that executes generated code unless ``execute_code: true``.

    Raises:
        EvaluationError: naming the task and the key.
    """
    unsafe = [
        name
        for name, names in leaves.items()
        for leaf in names
        if (manager.task_index[leaf].cfg or {}).get("unsafe_code")
    ]
    if unsafe and not settings.execute_code:
        raise EvaluationError(
            f"benchmarks.harness.tasks: {', '.join(sorted(set(unsafe)))} executes the generated code; set "
            "benchmarks.harness.execute_code: true to allow it (each program runs in a subprocess with a time "
            "limit and no network: evaluation/code_execution.py), or remove the task."
        )


def run_harness(model: Any, tokenizer: Any, settings: HarnessSettings, *, max_length: int) -> dict[str, TaskOutcomes]:
    """Every configured task on ``model`` (already on its device), its per-item outcomes and protocol.

    One ``simple_evaluate`` call per distinct few-shot count (lm-eval takes one count per call).

    Args:
        model: the loaded variant (a ``PreTrainedModel``, or a ``PeftModel`` with stacked adapters).
        tokenizer: the study's tokenizer.
        max_length: the longest context lm-eval may build (prompt + continuation), in tokens.

    Returns:
        ``{task: TaskOutcomes}`` in the config's order.

    Raises:
        EvaluationError: lm-eval is not installed, a task is unknown, or a sample lacks the metric.
    """
    if lm_eval_version() == "not installed":
        raise EvaluationError("benchmarks.harness needs lm-eval: pip install 'lm-eval[ifeval]==0.4.13'.")
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    sentence_tokenizer = ensure_sentence_tokenizer()
    os.environ[CODE_TIMEOUT_ENV] = str(settings.code_timeout_s)
    language_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size, max_length=max_length)
    found: dict[str, TaskOutcomes] = {}
    with prepared_tasks(settings) as (manager, leaves, specs):
        check_code_execution(settings, manager, leaves)
        by_fewshot: dict[int | None, list[HarnessTask]] = {}
        for task in settings.tasks:
            by_fewshot.setdefault(task.num_fewshot, []).append(task)
        output: dict[str, Any] = {"samples": {}, "results": {}, "versions": {}, "n-shot": {}, "configs": {}}
        for num_fewshot, tasks in by_fewshot.items():
            print(f"[evaluate] lm-eval {', '.join(t.task for t in tasks)} ({num_fewshot}-shot)", flush=True)
            run = lm_eval.simple_evaluate(
                model=language_model,
                tasks=[specs[leaf] for task in tasks for leaf in leaves[task.task]],
                num_fewshot=num_fewshot,
                limit=settings.limit,
                log_samples=True,
                bootstrap_iters=0,  # the study computes its own intervals from the per-item outcomes
                apply_chat_template=settings.apply_chat_template,
                gen_kwargs={"max_gen_toks": settings.max_gen_toks} if settings.max_gen_toks else None,
                task_manager=manager,
                confirm_run_unsafe_code=settings.execute_code,
                random_seed=settings.seed,
                numpy_random_seed=settings.seed,
                torch_random_seed=settings.seed,
                fewshot_random_seed=settings.seed,
            )
            for key in output:
                output[key].update(run.get(key) or {})
        for task in settings.tasks:
            found[task.task] = task_outcomes(task, leaves[task.task], output, settings, sentence_tokenizer)
    return found


def check_tasks(settings: HarnessSettings) -> None:
    """Check the configured tasks before any model loads: each is known, its local copy holds a leaf, code
    execution is allowed where a task needs it, and each ``filter`` is one the task's YAML defines.

    A filter is checked where the leaf's own YAML says (its ``filter_list``, or none: only ``none``); a YAML that
    includes another without a ``filter_list`` of its own is left to :func:`task_outcomes`, after the run.

    Raises:
        EvaluationError: naming the task, the key and what there is.
    """
    if lm_eval_version() == "not installed":
        raise EvaluationError("benchmarks.harness needs lm-eval: pip install 'lm-eval[ifeval]==0.4.13'.")
    with prepared_tasks(settings) as (manager, leaves, _):
        check_code_execution(settings, manager, leaves)
        for task in settings.tasks:
            for leaf in leaves[task.task]:
                config = manager.task_index[leaf].cfg or {}
                if "filter_list" not in config and "include" in config:
                    continue
                filters = [entry.get("name") for entry in config.get("filter_list") or []] or ["none"]
                if task.filter not in filters:
                    raise EvaluationError(
                        f"benchmarks.harness.tasks[{task.task}].filter: {task.filter!r}, but {leaf} defines "
                        f"{', '.join(map(repr, filters))}; set filter: {filters[0]}."
                    )


def task_outcomes(
    task: HarnessTask, leaves: list[str], output: dict[str, Any], settings: HarnessSettings, sentence_tokenizer: str
) -> TaskOutcomes:
    """One task's items from lm-eval's samples: its metric under its filter, pooled over the leaves in order.

    Raises:
        EvaluationError: no sample of a leaf carries the metric under the filter (a wrong metric or filter
            name; the message lists the ones there are).
    """
    items: list[str] = []
    outcomes: list[float] = []
    harness: dict[str, float] = {}
    for leaf in leaves:
        samples = [s for s in output["samples"].get(leaf, []) if s.get("filter", "none") == task.filter]
        scored = [s for s in samples if task.metric in s]
        if not scored:
            available = sorted(
                {
                    f"{m} ({s.get('filter', 'none')})"
                    for s in output["samples"].get(leaf, [])
                    for m in s.get("metrics", [])
                }
            )
            raise EvaluationError(
                f"benchmarks.harness.tasks[{task.task}]: no sample of {leaf} has metric {task.metric!r} under "
                f"filter {task.filter!r}; lm-eval gave: {', '.join(available) or 'no samples'}."
            )
        for sample in sorted(scored, key=lambda s: s["doc_id"]):
            value = float(sample[task.metric])
            if task.outcome == "pass_fail" and value not in (0.0, 1.0):
                raise EvaluationError(
                    f"benchmarks.harness.tasks[{task.task}]: {leaf} item {sample['doc_id']} has {task.metric} = "
                    f"{value}, not pass / fail; set outcome: score."
                )
            items.append(f"{leaf}/{sample['doc_id']}")
            outcomes.append(value)
        aggregate = (output["results"].get(leaf) or {}).get(f"{task.metric},{task.filter}")
        if isinstance(aggregate, (int, float)):
            harness[leaf] = float(aggregate)
    configs = output["configs"]
    protocol = {
        "lm_eval": lm_eval_version(),
        "metric": task.metric,
        "filter": task.filter,
        "outcome": task.outcome,
        "num_fewshot": {leaf: output["n-shot"].get(leaf) for leaf in leaves},
        "version": {leaf: output["versions"].get(leaf) for leaf in leaves},
        "dataset": {
            leaf: {
                "path": (configs.get(leaf) or {}).get("dataset_path"),
                "name": (configs.get(leaf) or {}).get("dataset_name"),
                "revision": ((configs.get(leaf) or {}).get("dataset_kwargs") or {}).get("revision"),
            }
            for leaf in leaves
        },
        "leaves": len(leaves),
        "apply_chat_template": settings.apply_chat_template,
        "limit": settings.limit,
        "max_gen_toks": settings.max_gen_toks,
        **({"sentence_tokenizer": sentence_tokenizer} if task.task.startswith("ifeval") else {}),
    }
    return TaskOutcomes(items, outcomes, harness, protocol)
