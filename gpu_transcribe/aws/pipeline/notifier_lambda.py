"""The pipeline's notifier: the Lambda that delivers job events from the webhooks queue as signed POSTs.

Runs as the stack's notifier Lambda (stdlib and boto3 only), from a zip of this file (handler
``notifier_lambda.handler``) and :mod:`gpu_transcribe_api.webhook_common` under its own path, so the import
below is the same here and in Lambda (``gpu_transcribe.pipeline.lambda_code.notifier_zip``; the deploy
uploads it to the region's assets bucket). Why not the ``standardwebhooks`` library: the signature is a dozen
lines of the spec, shared with the HTTP API's callbacks, checked against the library's ``verify`` in the
tests.

One SQS message = one event (format: ``gpu_transcribe.pipeline.results``). Per message:

- the URL is the job's ``webhook_url`` or else the pipeline's (``WEBHOOK_URL``); none: nothing to do;
- the URL is checked now (``url_address``: its host resolved once, every address checked): a refused
  address (private, loopback, link-local, multicast unless ``ALLOW_PRIVATE`` = ``1``, or not http(s))
  stops, logged; a host that does not resolve is retried;
- the body ``{"type", "timestamp", "data"}`` is POSTed once with ``webhook-id`` = the event's ``id`` (the same
  on every attempt), ``webhook-timestamp`` = now, ``webhook-signature`` = ``v1,...`` for the current secret
  and, during a rotation, also for the previous one (space-separated, as the spec allows), over a connection
  to the address that was checked (no second DNS lookup that could answer differently; the ``Host``
  header, TLS SNI and the certificate check use the URL's host); ``http.client`` follows no redirects (one
  could lead to a private address); ``TIMEOUT_S`` seconds per attempt;
- a message that is not an event (not JSON, no ``id``...) is logged and dropped, not retried; the others of
  the batch go on. Logs name the event, the host and the attempt, never the URL's path or query (tokens);
- 2xx: done. 410: done (the receiver said stop), logged. Anything else, or no answer: the message is made
  invisible for a backoff with jitter (``BASE_S * 2**(n-1)`` capped at ``CAP_S``, half of it fixed and half
  random, ``n`` = the message's receive count), or the receiver's ``Retry-After`` if longer (at most 6 h), and
  reported as a batch item failure, so SQS hands it back then; after the queue's ``maxReceiveCount`` SQS
  moves it to the webhooks dead-letter queue.

Environment: ``QUEUE_URL``, ``SECRET_ID``, ``WEBHOOK_URL`` (may be empty), ``ALLOW_PRIVATE``, ``TIMEOUT_S``,
``BASE_S``, ``CAP_S``. The secret (Secrets Manager) is JSON ``{"current": "whsec_...", "previous": "whsec_..."
or null, "previous_until": Unix seconds or null}``.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import boto3

from gpu_transcribe_api.webhook_common import UNRESOLVED, retry_after_s, sign_v1, url_address

MAX_RETRY_AFTER_S = 21_600
"""The longest ``Retry-After`` honoured, seconds (6 h; SQS allows a message 12 h of invisibility)."""


def signing_secrets(secret: dict[str, Any], now_s: float) -> list[str]:
    """The secrets to sign with now: the current one, and the previous one while its rotation lasts."""
    keys = [secret["current"]]
    if secret.get("previous") and now_s < (secret.get("previous_until") or float("inf")):
        keys.append(secret["previous"])
    return keys


def backoff_s(attempt: int, base_s: float, cap_s: float, retry_after: float | None) -> int:
    """Seconds before the next attempt after ``attempt`` (1-based) failed: half fixed, half random."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return int(max(ceiling * random.uniform(0.5, 1), min(retry_after or 0, MAX_RETRY_AFTER_S)))


def deliver(event: dict[str, Any], attempt: int, keys: list[str], env: Any) -> int | None:
    """Make one attempt at delivering ``event`` (a results message); return seconds until the next
    attempt, or ``None`` when it is finished (delivered, 410, refused, or no URL). Logs each outcome."""
    url = event.get("webhook_url") or env.get("WEBHOOK_URL")
    if not url:
        return None
    where = f"{event['id']} {event['type']} to {urlsplit(url).hostname} attempt {attempt}:"
    reason, address = url_address(url, env.get("ALLOW_PRIVATE") == "1")
    retry_after = None
    if reason and UNRESOLVED not in reason:
        print(where, "refused:", reason)
        return None
    if not reason:
        body = json.dumps({k: event[k] for k in ("type", "timestamp", "data")}, separators=(",", ":"))
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event["id"],
            "webhook-timestamp": f"{now}",
        }
        headers["webhook-signature"] = " ".join(sign_v1(key, event["id"], now, body) for key in keys)
        parts = urlsplit(url)
        timeout_s = float(env["TIMEOUT_S"])
        https = parts.scheme == "https"
        # "[::1]:8080" or "host": http.client reads the port from it and strips the brackets
        c = (http.client.HTTPSConnection if https else http.client.HTTPConnection)(
            parts.netloc.rpartition("@")[2], timeout=timeout_s
        )
        try:
            c.sock = socket.create_connection((address, c.port), timeout_s)  # the checked address
            if https:
                c.sock = ssl.create_default_context().wrap_socket(c.sock, server_hostname=c.host)
            target = (parts.path or "/") + (parts.query and "?" + parts.query)
            c.request("POST", target, body.encode(), headers)
            response = c.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            reason = repr(exc)
        else:
            if response.status // 100 == 2:
                print(where, "delivered")
                return None
            if response.status == 410:
                print(where, "410 Gone: stop")
                return None
            reason = f"HTTP {response.status}"
            retry_after = retry_after_s(response.getheader("retry-after"), time.time())
    wait = backoff_s(attempt, float(env["BASE_S"]), float(env["CAP_S"]), retry_after)
    print(where, "failed:", reason, "; retry in", wait)
    return wait


def handler(event: dict[str, Any], context: Any, env: Any = os.environ) -> dict[str, Any]:
    """The Lambda entry point for an SQS batch; returns the batch item failures (messages to retry)."""
    sqs = boto3.client("sqs")
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=env["SECRET_ID"])
    keys = signing_secrets(json.loads(secret["SecretString"]), time.time())
    failures = []
    for record in event["Records"]:
        attempt = int(record["attributes"]["ApproximateReceiveCount"])
        try:
            wait = deliver(json.loads(record["body"]), attempt, keys, env)
        except (ValueError, KeyError, TypeError) as exc:  # not our message: dropped, not retried
            print(record["messageId"], "unreadable:", repr(exc))
            wait = None
        if wait is not None:
            sqs.change_message_visibility(
                QueueUrl=env["QUEUE_URL"], ReceiptHandle=record["receiptHandle"], VisibilityTimeout=wait
            )
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
