"""The training runs' logged scalars, read back from their TensorBoard event files for the report."""

from __future__ import annotations

from pathlib import Path

Curve = list[tuple[int, float]]


def read_scalars(run_dir: str | Path) -> dict[str, Curve]:
    """Every scalar of a run's TensorBoard event files, as ``{tag: [(step, value), ...]}``.

    Looks in ``<run_dir>/tensorboard`` (the configs' fixed logger version) or ``run_dir`` itself.
    When a step was logged twice (a resumed run), the later value is kept. A missing folder gives ``{}``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir)
    if (folder / "tensorboard").is_dir():
        folder = folder / "tensorboard"
    if not any(folder.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        by_step: dict[int, tuple[float, float]] = {}
        for event in accumulator.Scalars(tag):
            if event.step not in by_step or event.wall_time >= by_step[event.step][0]:
                by_step[event.step] = (event.wall_time, event.value)
        scalars[tag] = [(step, value) for step, (_, value) in sorted(by_step.items())]
    return scalars
