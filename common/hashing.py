"""Short stable hashes of settings and data, for cache keys (tokenised data, the precomputed reference)."""

from __future__ import annotations

import hashlib
import json


def content_hash(*parts) -> str:
    """A short stable hash of JSON-able parts: dict keys sorted, anything else by its ``str``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
