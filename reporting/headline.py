"""The report's headline metrics: where each one is in a variant's ``metrics`` of the results file, and how to
show it (the metric table, the seeds section and the Hub card all read this one list)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Headline:
    """One headline metric of the report: where it is in a variant's ``metrics`` and how to show it.

    Attributes:
        label: the row's name in the report.
        path: keys into ``metrics[variant]``.
        kind: ``pct`` (a rate), ``float`` or ``int``.
        better: ``higher``, ``lower`` or ``-``.
        interval: keys into ``metrics[variant]`` of its 95 % interval (``None``: no interval is computed).
    """

    label: str
    path: tuple[str, ...]
    kind: str
    better: str
    interval: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """The metric's name in :func:`reporting.seeds.across_seeds`: its path, dotted."""
        return ".".join(self.path)


HEADLINE: tuple[Headline, ...] = (
    Headline(
        "Held-out preference accuracy (log p chosen > rejected)",
        ("preference", "accuracy"),
        "pct",
        "higher",
        ("ci95", "preference_accuracy"),
    ),
    Headline(
        "Mean log-prob margin, chosen - rejected (nats)",
        ("preference", "mean_margin"),
        "float",
        "higher",
        ("ci95", "mean_margin"),
    ),
    Headline(
        "Implicit-reward accuracy vs SFT reference",
        ("implicit_reward", "accuracy"),
        "pct",
        "higher",
        ("ci95", "implicit_reward_accuracy"),
    ),
    Headline(
        "Mean implicit-reward margin vs SFT (beta x nats)",
        ("implicit_reward", "mean_margin"),
        "float",
        "higher",
        ("ci95", "implicit_reward_margin"),
    ),
    Headline(
        "Perplexity on held-out instruction responses",
        ("perplexity", "value"),
        "float",
        "lower",
        ("ci95", "perplexity"),
    ),
    Headline("Checked score, all prompts", ("checked_score", "overall"), "pct", "higher", ("ci95", "checked_score")),
    Headline("Judge's mean reward of the responses", ("judge", "mean_reward"), "float", "higher", ("judge", "ci95")),
    Headline(
        "Refusal rate on harmful prompts", ("generation", "refusal_rate"), "pct", "higher", ("ci95", "refusal_rate")
    ),
    Headline(
        "Over-refusal rate on benign prompts",
        ("generation", "over_refusal_rate"),
        "pct",
        "lower",
        ("ci95", "over_refusal_rate"),
    ),
    Headline(
        "Mean response length (tokens)",
        ("generation", "mean_response_tokens"),
        "float",
        "-",
        ("ci95", "mean_response_tokens"),
    ),
    Headline("Responses ending with EOS", ("generation", "finished_rate"), "pct", "-", ("ci95", "finished_rate")),
    Headline("Distinct-2 of the responses", ("generation", "distinct_2"), "float", "-", ("ci95", "distinct_2")),
)
