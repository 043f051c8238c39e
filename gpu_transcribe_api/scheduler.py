"""A bounded queue in front of one consumer thread that hands several requests at once to the engine.

Why one consumer: the engine is not thread-safe and a GPU runs one model call at a time anyway (threads on
one GPU serialize, faster-whisper#723); what concurrency can buy is *batching*. So every request is put in a
bounded queue, and the consumer takes every request queued at that moment (at most ``max_batch_requests``)
and calls :meth:`gpu_transcribe_engine.engine.WhisperEngine.transcribe_many` once for them, which decodes the
windows of
several requests in the same batches. While it runs, new requests queue up and form the next call: under
load, calls grow by themselves; an idle server answers a lone request at once (``batch_wait_s`` 0).

A full queue raises :class:`QueueFullError` (the HTTP layer answers 429 with ``Retry-After``). A request
whose client went away is cancelled with :meth:`Ticket.cancel`: it leaves the queue, the consumer skips
it if it was already taken but not started, and a running one's remaining windows are dropped by the
engine (``AudioRequest.cancel``) while the other requests of the call go on. Results travel in
:class:`concurrent.futures.Future` objects, so both the event loop (``asyncio.wrap_future``) and plain
threads (async jobs) can wait on them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ
from gpu_transcribe_engine.engine import AudioRequest, BatchCallback, DoneCallback, SegmentsCallback
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Transcript

logger = logging.getLogger(__name__)

DEFAULT_BATCH_ESTIMATE_S = 5.0
"""What one engine call is assumed to take before one has been measured (for ``Retry-After``)."""
EWMA_WEIGHT = 0.3
"""Weight of the newest engine call in the moving average of call seconds."""


class QueueFullError(Exception):
    """The queue holds ``max_queue`` requests already.

    Attributes:
        retry_after_s: whole seconds after which a retry has a fair chance (:meth:`BatchScheduler.
            retry_after_s`).
    """

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class SchedulerStoppedError(Exception):
    """The server is shutting down; the request was not transcribed."""


class ManyEngine(Protocol):
    """What the scheduler needs of an engine:
    :meth:`gpu_transcribe_engine.engine.WhisperEngine.transcribe_many`."""

    def transcribe_many(
        self,
        requests: Sequence[AudioRequest],
        on_batch: BatchCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> list[Transcript | Exception]:
        """One result per request, in order: its transcript, or the exception it failed with; ``on_done``
        is called with each as soon as it is known."""
        ...


@dataclass
class _Item:
    """One queued request and the future its result goes to."""

    samples: np.ndarray
    options: TranscribeOptions
    audio: str
    decode_s: float
    future: Future[Transcript]
    on_segments: SegmentsCallback | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Ticket:
    """A submitted request: wait on :attr:`future`; :meth:`cancel` it when nobody waits any more."""

    def __init__(self, scheduler: BatchScheduler, item: _Item) -> None:
        """Created by :meth:`BatchScheduler.submit`."""
        self._scheduler = scheduler
        self._item = item
        self.future: Future[Transcript] = item.future

    def cancel(self) -> bool:
        """Nobody waits for this request any more: drop it, or stop its transcription.

        Returns:
            True if it had not started (it leaves the queue and is never transcribed); False if it is being
            transcribed (the engine drops its windows not yet decoded, after the batch decoding now; the
            other requests of the call go on) or is done.
        """
        self._item.cancel.set()
        return self._scheduler._cancel(self._item)


class BatchScheduler:
    """A bounded queue and one consumer thread calling ``engine.transcribe_many`` for what is queued.

    Thread-safe: :meth:`submit` and :meth:`Ticket.cancel` may be called from any thread.

    Args:
        engine: a :class:`ManyEngine` (a loaded ``WhisperEngine``); only the consumer thread calls it.
        max_queue: requests waiting at most (those being transcribed are not counted).
        max_batch_requests: requests per engine call at most.
        max_call_audio_s: audio seconds per engine call at most (a longer lone request still goes alone):
            a request that arrives during a call waits for all of it, so calls are kept short enough.
        batch_wait_s: how long the consumer waits, after finding the queue non-empty, for more requests to
            share the call (0: take what is there).
        on_batch: called on the consumer thread with each ``BatchInfo`` the engine reports.
    """

    def __init__(
        self,
        engine: ManyEngine,
        max_queue: int,
        max_batch_requests: int = 16,
        max_call_audio_s: float = 1800.0,
        batch_wait_s: float = 0.0,
        on_batch: BatchCallback | None = None,
    ) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.max_batch_requests = max_batch_requests
        self.max_call_audio_s = max_call_audio_s
        self.batch_wait_s = batch_wait_s
        self.on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._running = 0
        self._stopping = False
        self._call_s: float | None = None
        """Moving average of engine-call seconds; ``None`` until the first call ends."""
        self._thread = threading.Thread(target=self._consume, name="batch-scheduler", daemon=True)
        self.calls = 0
        """Engine calls made so far."""

    def start(self) -> BatchScheduler:
        """Start the consumer thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new requests, fail the queued ones with :class:`SchedulerStoppedError`, and wait up to
        ``timeout_s`` for the consumer to finish its current engine call."""
        with self._cond:
            self._stopping = True
            waiting = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in waiting:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(SchedulerStoppedError("the server is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the engine (not counting the ones it is transcribing)."""
        with self._cond:
            return len(self._queue)

    @property
    def busy(self) -> int:
        """Requests in the engine call running now (0 when idle)."""
        with self._cond:
            return self._running

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely drained by one call: the calls ahead (queue depth over
        ``max_batch_requests``, plus the running one) times the moving average of call seconds; at least 1."""
        with self._cond:
            calls_ahead = math.ceil(len(self._queue) / self.max_batch_requests) + (1 if self._running else 0)
            return self._seconds_for(calls_ahead)

    def _seconds_for(self, calls: int) -> int:
        call_s = DEFAULT_BATCH_ESTIMATE_S if self._call_s is None else self._call_s
        return max(1, math.ceil(calls * call_s))

    def submit(
        self,
        samples: np.ndarray,
        options: TranscribeOptions,
        audio: str = "",
        decode_s: float = 0.0,
        on_segments: SegmentsCallback | None = None,
    ) -> Ticket:
        """Queue one decoded file.

        Args:
            samples: 1-D float32 16 kHz samples.
            options: how to transcribe it.
            audio: a name for the transcript and errors (the upload's file name).
            decode_s: seconds spent decoding it, recorded in the transcript's timings.
            on_segments: called on the consumer thread with each decoded window's segments, in time order
                (:data:`gpu_transcribe_engine.engine.SegmentsCallback`); for streamed answers.

        Returns:
            A :class:`Ticket`; its future gets the :class:`Transcript`, or the exception the engine gave
            for this request (``ValueError`` for bad options, ``GenerationError``), or
            :class:`SchedulerStoppedError`.

        Raises:
            QueueFullError: ``max_queue`` requests are waiting already.
            SchedulerStoppedError: the scheduler is stopping.
        """
        item = _Item(samples, options, audio, decode_s, Future(), on_segments)
        with self._cond:
            if self._stopping:
                raise SchedulerStoppedError("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                calls_ahead = math.ceil(len(self._queue) / self.max_batch_requests) + 1
                retry = self._seconds_for(calls_ahead)
                raise QueueFullError(
                    f"the transcription queue is full ({self.max_queue} requests waiting); "
                    f"retry in {retry} s",
                    retry,
                )
            self._queue.append(item)
            self._cond.notify_all()
        return Ticket(self, item)

    def _cancel(self, item: _Item) -> bool:
        with self._cond:
            if not item.future.cancel():
                return False
            with contextlib.suppress(ValueError):  # taken by the consumer already, which skips it
                self._queue.remove(item)
            return True

    def _take(self) -> list[_Item] | None:
        """Block until requests are queued; take live ones in order, up to ``max_batch_requests`` and
        ``max_call_audio_s`` of audio (at least one, however long). ``None``: stop."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
        if self.batch_wait_s > 0:
            time.sleep(self.batch_wait_s)
        with self._cond:
            items: list[_Item] = []
            audio_s = 0.0
            while self._queue and len(items) < self.max_batch_requests:
                next_s = self._queue[0].samples.shape[0] / SAMPLE_RATE_HZ
                if items and audio_s + next_s > self.max_call_audio_s:
                    break  # the next call takes it: a call's length bounds what arrivals behind it wait
                item = self._queue.popleft()
                if item.future.set_running_or_notify_cancel():
                    items.append(item)
                    audio_s += next_s
            self._running = len(items)
            return items

    def _consume(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            if not items:
                continue
            requests = [
                AudioRequest(
                    samples=item.samples,
                    options=item.options,
                    audio=item.audio,
                    decode_s=item.decode_s,
                    on_segments=item.on_segments,
                    cancel=item.cancel,
                )
                for item in items
            ]
            started = time.perf_counter()

            def answer(index: int, result: Transcript | Exception, items: list[_Item] = items) -> None:
                _settle(items[index].future, result)

            try:
                results: Sequence[Transcript | BaseException] = self.engine.transcribe_many(
                    requests, on_batch=self.on_batch, on_done=answer
                )
                if len(results) != len(items):
                    raise RuntimeError(f"the engine gave {len(results)} results for {len(items)} requests")
            except BaseException as exc:  # the whole call failed: every request in it gets the error
                logger.error(
                    "engine call for %d requests failed: %s: %s", len(items), type(exc).__name__, exc
                )
                results = [exc] * len(items)
            elapsed_s = time.perf_counter() - started
            with self._cond:
                self.calls += 1
                previous_s = elapsed_s if self._call_s is None else self._call_s
                self._call_s = (1 - EWMA_WEIGHT) * previous_s + EWMA_WEIGHT * elapsed_s
                self._running = 0
            del requests
            for item, result in zip(items, results, strict=True):
                _settle(item.future, result)


def _settle(future: Future[Transcript], result: Transcript | BaseException) -> None:
    """Give ``future`` its result or exception, unless it has one already (each request is answered as soon
    as the engine finishes it, and again, harmlessly, when the call returns)."""
    if future.done():
        return
    with contextlib.suppress(InvalidStateError):
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
