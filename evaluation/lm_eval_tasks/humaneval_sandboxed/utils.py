"""The functions of the ``humaneval_sandboxed`` lm-eval task: lm-eval's filter, and pass@1 scored in a subprocess.

lm-eval 0.4.13's ``tasks/humaneval/utils.py`` cannot be imported offline (it calls ``evaluate.load("code_eval")``
at import), so its filter :func:`build_predictions` is repeated here unchanged and its metric is replaced by
:func:`pass_at_1`, which executes the same program through :mod:`evaluation.code_execution`.

How lm-eval 0.4.13 calls the metric (``ConfigurableTask.process_results``, ``generate_until`` branch): once per
problem, as ``pass_at_1(references=[gold], predictions=[result])``, where ``gold`` is the problem's
``doc_to_target`` (its ``test``, a newline and ``check(<entry_point>)``) and ``result`` is the problem's
filtered response: after ``build_predictions``, a list of its ``repeats`` candidates, each prompt + completion.
The float returned is the problem's per-item outcome: ``log_samples`` records it under ``pass_at_1``, and the
task's ``pass_at_1,create_test`` is its mean. If the call raises ``TypeError``, lm-eval silently calls the
function again as ``pass_at_1([gold, result])``, which hides the first error; malformed inputs therefore raise
``ValueError`` here.

lm-eval loads this file by path, not as part of the ``evaluation`` package; it imports the project's
``evaluation.code_execution``, so the project must be importable (installed, as ``make venv`` does).
"""

from __future__ import annotations

from evaluation.code_execution import code_eval_outcome, code_timeout_s


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's ``humaneval`` filter: each completion prefixed by its problem's prompt (the function's head)."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs, strict=True)]


def pass_at_1(references: list[str], predictions: list[list[str]]) -> float:
    """One problem's pass@1: the share of its candidates whose program passes the problem's tests.

    With greedy decoding and ``repeats: 1`` there is one candidate, so the outcome is 1.0 or 0.0; with ``n``
    sampled candidates it is ``c / n``, the unbiased pass@1 estimator of Chen et al. 2021 (``code_eval``'s).
    Each program runs under :func:`evaluation.code_execution.run_python` with the wall-clock limit
    ``SFT_DPO_CODE_TIMEOUT_S`` (:func:`evaluation.code_execution.code_timeout_s`, default 10 s).
    """
    if len(references) != 1 or len(predictions) != 1 or not isinstance(predictions[0], list) or not predictions[0]:
        raise ValueError(
            "pass_at_1 scores one problem at a time: references=[test case], predictions=[[candidate, ...]] "
            f"(the task's build_predictions filter makes the list); got {len(references)} reference(s) and "
            f"predictions of type {type(predictions[0]).__name__ if predictions else 'none'}"
        )
    (test_case,), (candidates,) = references, predictions
    timeout_s = code_timeout_s()
    outcomes = [code_eval_outcome(candidate, test_case, timeout_s).passed for candidate in candidates]
    return sum(outcomes) / len(outcomes)
