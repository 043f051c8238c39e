"""UTC time stamps as text, the one helper the engine, the HTTP API and the client share (the client imports
it from here; this module imports nothing of either).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal


def iso_utc(
    moment: datetime | float | None = None, timespec: Literal["seconds", "milliseconds"] = "seconds"
) -> str:
    """``moment`` as UTC ISO 8601 with a ``Z``: ``2026-11-22T04:26:41Z``, or with ``timespec``
    ``milliseconds`` ``2026-11-22T04:26:41.123Z`` (truncated, not rounded; sorts as text).

    Args:
        moment: a timezone-aware datetime, Unix seconds, or ``None`` for now.
        timespec: ``seconds`` or ``milliseconds``.
    """
    if moment is None:
        when = datetime.now(UTC)
    elif isinstance(moment, datetime):
        when = moment.astimezone(UTC)
    else:
        when = datetime.fromtimestamp(moment, tz=UTC)
    return when.isoformat(timespec=timespec).replace("+00:00", "Z")
