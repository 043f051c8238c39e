"""The JSON-lines protocol between the engine and the orchestrator.

``python -m gpu_transcribe_engine transcribe`` writes exactly one JSON object per line on stdout, and nothing
else there
(logs and warnings go to stderr). Every object has ``"event"`` and ``"time"`` (Unix seconds). Events, in
the order they can appear:

``model_loaded``  ``model``, ``revision``, ``device``, ``dtype``, ``decode_loop`` (resolved), ``load_s``,
                  ``algorithm`` (resolved), ``batch_size`` (resolved)
``file_started``  ``index`` (0-based), ``total``, ``audio`` (path as given)
``progress``      ``index``, ``audio``, ``done_s``, ``duration_s`` (seconds of audio transcribed so far)
``file_done``     ``index``, ``audio``, ``duration_s``, ``decode_s``, ``transcribe_s``, ``language``,
                  ``segments`` (count), ``outputs`` (format -> path written)
``file_failed``   ``index``, ``audio``, ``code`` (see :mod:`gpu_transcribe_engine.errors`), ``message`` (one
line)
``fatal``         ``code``, ``message``: the engine cannot go on (model not loadable, bad option)
``all_done``      ``files_ok``, ``files_failed``, ``elapsed_s``

Exit codes of ``python -m gpu_transcribe_engine transcribe``: ``0`` every file done; ``1`` some file failed
(the others
were written); ``2`` bad command line (argparse); ``3`` fatal: nothing was transcribed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

EXIT_OK = 0
EXIT_SOME_FAILED = 1
# 2 is argparse's own exit status for a bad command line; the engine never returns it itself.
EXIT_FATAL = 3

EVENTS: tuple[str, ...] = (
    "model_loaded",
    "file_started",
    "progress",
    "file_done",
    "file_failed",
    "fatal",
    "all_done",
)


def emit(event: str, stream: IO[str] | None = None, **fields: Any) -> dict[str, Any]:
    """Write one event as a JSON line and flush it; return the object written.

    Raises:
        ValueError: ``event`` is not one of :data:`EVENTS`.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    obj = {"event": event, "time": round(time.time(), 3), **fields}
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()
    return obj


def parse_line(line: str) -> dict[str, Any] | None:
    """Parse one stdout line of the engine; ``None`` for a line that is not a protocol event.

    Non-event lines can appear if a library prints to stdout; the orchestrator ignores them rather than
    failing the run.
    """
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("event") not in EVENTS:
        return None
    return obj
