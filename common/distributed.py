"""Which process this is among how many: the one rank helper for samplers, loaders and callbacks."""

from __future__ import annotations

import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
