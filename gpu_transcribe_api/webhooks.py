"""Signed job callbacks (Standard Webhooks), delivered with retries by one background thread.

Each delivery is a ``POST`` of a small JSON body::

    {"type": "job.succeeded", "timestamp": "2026-12-02T06:07:21.123Z",
     "data": {"id": "ID", "status": "succeeded", "duration": 11.0, "error": null,
              "result_path": "/v1/jobs/ID"}}

signed as the Standard Webhooks spec says (standardwebhooks.com; the spec authors' ``standardwebhooks``
library computes the signature): headers ``webhook-id`` (the same on every attempt, so receivers can dedupe),
``webhook-timestamp`` (Unix seconds of the attempt: a retry hours later is still within the receivers' 5 min
tolerance) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``). The body
carries a link to the result, not the transcript (pipeline notes: "send a link, not a big body").

Retries: any answer but 2xx, or no answer within ``timeout_s``, is retried after a "full jitter" exponential
wait (tenacity's ``wait_random_exponential``: uniform in ``[0, min(cap, base * 2**(n-1))]``), or after
the receiver's ``Retry-After`` if that is longer (capped at ``max_retry_after_s``). ``410 Gone`` stops at
once (the receiver says the endpoint is gone, as in the spec). After ``max_attempts`` the delivery is
dropped. Every failed attempt logs one line (the URL without its query, which may hold a token).

Where callbacks may go: :func:`check_callback_url` when the job is submitted, and :class:`PinnedTransport`
again at every attempt, resolve the host once and check every address it has
(:func:`gpu_transcribe_api.webhook_common.url_address`): loopback, private, link-local (on EC2 the instance
metadata
service), multicast, unspecified and IPv4-mapped forms of those are refused unless the operator allows
private targets (``serve --allow-private-callbacks``); decimal or hexadecimal IPv4 hosts are checked as
the address they mean. The attempt then connects to the address that was checked, not to the name (no second
DNS answer can differ). Redirects are not followed (one could lead to a private address).

Why not ``tenacity.Retrying``'s loop: it sleeps in the calling thread, so one dead receiver would hold back
every other job's callback for minutes. The thread instead keeps a heap of attempts ordered by due time and
sleeps only until the next one is due; tenacity supplies the wait schedule. Only one attempt runs at a time,
so a slow receiver delays the others by at most ``timeout_s`` per attempt (httpx applies it to connecting,
sending and each read).

:meth:`WebhookSender.submit` is a non-blocking put on a bounded queue: it never waits for the network, so
transcription is never held up by a callback; when the queue is full the callback is dropped and logged.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
import queue
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import standardwebhooks
import tenacity

from gpu_transcribe_api.webhook_common import (
    UNRESOLVED,
    check_secret,
    generate_secret,
    retry_after_s,
    url_address,
)
from gpu_transcribe_api.webhook_common import safe_url as _safe_url
from gpu_transcribe_engine.utc import iso_utc

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
"""Seconds per attempt (connect, send, each read). Receivers are told to answer fast and work later."""
DEFAULT_MAX_ATTEMPTS = 8
"""Attempts per callback, the first included. With the defaults below the last one comes at most about
4 min after the first (1 + 2 + ... + 64 s of waits): long enough for a receiver's restart, short enough to be
over before an idle server powers off (``idle_stop_s``)."""
DEFAULT_BACKOFF_BASE_S = 1.0
"""Upper end of the first jittered wait in seconds; it doubles per attempt."""
DEFAULT_BACKOFF_CAP_S = 120.0
"""Longest jittered wait in seconds."""
DEFAULT_MAX_RETRY_AFTER_S = 600.0
"""A receiver's ``Retry-After`` is honoured up to this many seconds (so a bogus value cannot park a
delivery for days)."""
DEFAULT_QUEUE_SIZE = 1000
"""Callbacks waiting for their first attempt at most; more are dropped (and logged)."""
USER_AGENT = "gpu-transcribe-webhooks"

EVENT_TYPES: tuple[str, ...] = ("job.succeeded", "job.failed")


def load_or_create_secret(path: Path) -> str:
    """The signing secret kept in ``path``: read it, or create the file (mode 0600) with a new one.

    This is how the secret reaches the receivers' owner without being printed or served: the operator
    reads the file (or puts a secret there before start-up). The file holds the secret and a new line.

    Raises:
        ValueError: the file exists but does not hold a usable secret (see :func:`check_secret`).
        OSError: the file can be neither read nor created.
    """
    try:
        return check_secret(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    secret = generate_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile: use theirs
        return check_secret(path.read_text(encoding="utf-8"))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def check_callback_url(url: str, allow_private: bool = False) -> str:
    """Return ``url`` stripped if a callback may be sent there now (blocks for a DNS lookup).

    Refused: not ``http``/``https`` with a host, a host that does not resolve, and, unless
    ``allow_private``, a host any of whose addresses is not public (loopback, private, link-local,
    multicast, unspecified, reserved, IPv4-mapped forms of those; see
    :func:`gpu_transcribe_api.webhook_common.url_address`).

    Raises:
        ValueError: why, in one line naming ``callback_url`` (and ``--allow-private-callbacks`` where it
            would help).
    """
    reason, _ = url_address(url, allow_private)
    if reason is not None:
        private = not allow_private and "not a public address" in reason
        hint = " (the server's --allow-private-callbacks allows private addresses)" if private else ""
        raise ValueError(f"callback_url: {reason}{hint}")
    return url.strip()


class CallbackRefusedError(httpx.TransportError):
    """The callback's host resolves to an address callbacks may not go to; not worth retrying."""


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that connects to the address it checked.

    For each request it resolves the URL's host once and checks every address
    (:func:`gpu_transcribe_api.webhook_common.url_address`), then sends the request to the first address: the
    URL's
    host is replaced by the address, the ``Host`` header keeps the name (httpx set it when the request was
    built) and TLS gets the name as SNI and for the certificate check (httpcore's ``sni_hostname`` request
    extension). Connections are not kept alive, so a connection made for one name is never reused for
    another name at the same address. Proxies from the environment are not used (a client given a transport
    mounts none; a proxy would resolve the name itself); ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are.

    Args:
        allow_private: let requests go to non-public addresses (loopback, private, link-local...).
        verify: as httpx's ``verify`` (``True``: the system's CA certificates; or an ``ssl.SSLContext``).

    Raises (from :meth:`handle_request`):
        CallbackRefusedError: the host resolves to an address that is refused.
        httpx.ConnectError: the host does not resolve (worth retrying), or the connection failed.
    """

    def __init__(self, allow_private: bool = False, verify: ssl.SSLContext | bool = True) -> None:
        self.allow_private = allow_private
        self._inner = httpx.HTTPTransport(verify=verify, limits=httpx.Limits(max_keepalive_connections=0))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Check the host's addresses and send ``request`` to the first one."""
        reason, address = url_address(str(request.url), self.allow_private)
        if reason is not None:
            error = httpx.ConnectError if UNRESOLVED in reason else CallbackRefusedError
            raise error(reason, request=request)
        name = request.url.raw_host.decode("ascii")
        request.url = request.url.copy_with(host=address.split("%")[0])
        request.extensions = {**request.extensions, "sni_hostname": name}
        return self._inner.handle_request(request)

    def close(self) -> None:
        """Close the connection pool."""
        self._inner.close()


@dataclass
class _Delivery:
    """One callback: its message id, target and body, and how many attempts were made."""

    msg_id: str
    url: str
    event_type: str
    body: str
    on_done: Callable[[bool], None] | None = None
    attempts: int = 0


class WebhookSender:
    """Delivers signed callbacks from one background daemon thread. Thread-safe.

    Call :meth:`start` once, :meth:`submit` from any thread, :meth:`close` at shutdown.

    Args:
        secret: the signing secret, ``whsec_`` + base64 (see :func:`generate_secret`).
        timeout_s: seconds per attempt (connect, send, each read).
        max_attempts: attempts per callback, the first included (>= 1).
        backoff_base_s, backoff_cap_s: the jittered exponential schedule, seconds.
        max_retry_after_s: the longest ``Retry-After`` honoured, seconds.
        queue_size: callbacks waiting for their first attempt at most.
        allow_private: let callbacks go to non-public addresses (``serve --allow-private-callbacks``).

    Raises:
        ValueError: an unusable secret or ``max_attempts`` below 1.
    """

    def __init__(
        self,
        secret: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        allow_private: bool = False,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: {max_attempts} is below 1")
        self._webhook = standardwebhooks.Webhook(check_secret(secret))
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_retry_after_s = max_retry_after_s
        self.allow_private = allow_private
        self._wait = tenacity.wait_random_exponential(multiplier=backoff_base_s, max=backoff_cap_s)
        self._queue: queue.Queue[_Delivery | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self.delivered = 0
        """Callbacks a receiver accepted (2xx), since start."""
        self.failed = 0
        """Callbacks given up on (410, attempts used up, or dropped at a full queue), since start."""

    # -- the public side -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread (once; later calls do nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
            self._thread.start()

    def submit(
        self,
        url: str,
        event_type: str,
        data: Mapping[str, Any],
        on_done: Callable[[bool], None] | None = None,
    ) -> str | None:
        """Queue a callback without blocking; it is signed and sent by the delivery thread.

        Args:
            url: the receiver, already checked by :func:`check_callback_url` (checked again at each attempt).
            event_type: ``job.succeeded`` or ``job.failed``.
            data: the event's ``data`` object (JSON values only).
            on_done: called once with True (delivered) or False (given up on, or dropped), on the delivery
                thread, or at once in this thread when the callback is dropped here; must not raise.

        Returns:
            The ``webhook-id`` every attempt will carry, or ``None`` if the queue was full or the sender is
            closed (the callback is then dropped and a warning logged).

        Raises:
            ValueError: ``data`` holds a value JSON cannot represent.
        """
        msg_id = "msg_" + secrets.token_urlsafe(16)
        timestamp = iso_utc(timespec="milliseconds")
        body = json.dumps(
            {"type": event_type, "timestamp": timestamp, "data": dict(data)},
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        )
        if self._stop.is_set():
            logger.warning(
                "webhook %s (%s) to %s dropped: the sender is closed", msg_id, event_type, _safe_url(url)
            )
            if on_done is not None:
                on_done(False)
            return None
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(
                _Delivery(msg_id=msg_id, url=url, event_type=event_type, body=body, on_done=on_done)
            )
        except queue.Full:
            self._done(delivered=False, on_done=on_done)
            logger.warning(
                "webhook %s (%s) to %s dropped: %d callbacks already wait",
                msg_id,
                event_type,
                _safe_url(url),
                self._queue.maxsize,
            )
            return None
        return msg_id

    @property
    def pending(self) -> int:
        """Callbacks submitted and not yet delivered or given up on."""
        with self._idle:
            return self._pending

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until no callback is pending; True if none is."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the delivery thread within about ``timeout_s`` seconds (plus one attempt in flight).

        Callbacks not yet delivered are dropped (their ``on_done`` gets False), with one warning giving
        their number. Callbacks submitted later are dropped at once. Safe to call twice.
        """
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wake the thread
        if self._thread is not None:
            self._thread.join(timeout=timeout_s + self.timeout_s)
            self._thread = None

    # -- the delivery thread ---------------------------------------------------------------------------

    def _done(self, delivered: bool, on_done: Callable[[bool], None] | None) -> None:
        """Count a callback as finished (delivered or given up) and tell its ``on_done``."""
        if on_done is not None:
            try:
                on_done(delivered)
            except Exception:
                logger.exception("webhooks: on_done failed")
        with self._idle:
            self._pending -= 1
            if delivered:
                self.delivered += 1
            else:
                self.failed += 1
            self._idle.notify_all()

    def _run(self) -> None:
        """The thread: take new callbacks, run the attempts that are due, sleep until the next one is."""
        heap: list[tuple[float, int, _Delivery]] = []
        order = itertools.count()  # ties in due time go first come, first served
        with httpx.Client(
            transport=PinnedTransport(allow_private=self.allow_private),
            timeout=self.timeout_s,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        ) as client:
            while not self._stop.is_set():
                wait_s = max(0.0, heap[0][0] - time.monotonic()) if heap else None
                try:
                    item = self._queue.get(timeout=wait_s) if wait_s != 0.0 else self._queue.get_nowait()
                except queue.Empty:
                    item = None
                if item is not None:
                    heapq.heappush(heap, (time.monotonic(), next(order), item))
                    continue  # drain the queue before attempting
                while heap and heap[0][0] <= time.monotonic() and not self._stop.is_set():
                    _, _, delivery = heapq.heappop(heap)
                    next_s = self._attempt(client, delivery)
                    if next_s is not None:
                        heapq.heappush(heap, (time.monotonic() + next_s, next(order), delivery))
        left = [delivery for _, _, delivery in heap]
        with contextlib.suppress(queue.Empty):
            while True:
                if (item := self._queue.get_nowait()) is not None:
                    left.append(item)
        for delivery in left:
            self._done(delivered=False, on_done=delivery.on_done)
        if left:
            logger.warning("webhooks: %d undelivered callback(s) dropped at shutdown", len(left))

    def _attempt(self, client: httpx.Client, delivery: _Delivery) -> float | None:
        """Make one attempt; return seconds until the next one, or ``None`` if the callback is finished."""
        delivery.attempts += 1
        now = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(delivery.msg_id, now, delivery.body),
        }
        retry_after: float | None = None
        try:
            response = client.post(delivery.url, content=delivery.body.encode("utf-8"), headers=headers)
        except CallbackRefusedError as exc:
            logger.warning(
                "webhook %s (%s) to %s: refused (%s), attempt %d; not retried",
                delivery.msg_id,
                delivery.event_type,
                _safe_url(delivery.url),
                exc,
                delivery.attempts,
            )
            self._done(delivered=False, on_done=delivery.on_done)
            return None
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {str(exc) or 'no answer'}"
        else:
            if response.is_success:
                self._done(delivered=True, on_done=delivery.on_done)
                return None
            reason = f"HTTP {response.status_code}"
            if response.status_code == 410:
                logger.warning(
                    "webhook %s (%s) to %s: HTTP 410 Gone, attempt %d; not retried",
                    delivery.msg_id,
                    delivery.event_type,
                    _safe_url(delivery.url),
                    delivery.attempts,
                )
                self._done(delivered=False, on_done=delivery.on_done)
                return None
            retry_after = retry_after_s(response.headers.get("retry-after"), time.time())
        where = f"webhook {delivery.msg_id} ({delivery.event_type}) to {_safe_url(delivery.url)}"
        if delivery.attempts >= self.max_attempts:
            logger.warning(
                "%s: attempt %d of %d failed (%s); giving up",
                where,
                delivery.attempts,
                self.max_attempts,
                reason,
            )
            self._done(delivered=False, on_done=delivery.on_done)
            return None
        state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = delivery.attempts
        wait_s = self._wait(state)
        if retry_after is not None:
            wait_s = max(wait_s, min(retry_after, self.max_retry_after_s))
        logger.warning(
            "%s: attempt %d of %d failed (%s); next in %.1f s",
            where,
            delivery.attempts,
            self.max_attempts,
            reason,
            wait_s,
        )
        return wait_s
