"""An idempotency key as the stores keep it (table ``idempotency_keys``): the key a client sent
with a report (``Idempotency-Key`` or ``event_id``), a hash of the report's body, and the answer
the report got, written in the same commit as the report's occurrence, so that a retry of a
stored report is answered from here and never counted twice, across restarts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """``answer`` None: the key is claimed by a fleet ``member`` whose report is not stored yet."""

    key: str
    body_hash: str
    answer: Mapping[str, Any] | None
    created_at: datetime
    expires_at: datetime
    member: str | None = None
