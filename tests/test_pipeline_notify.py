"""Job events and signed webhooks (issue 13, "Notifications"), with real parts: the moto server, a loopback
HTTP receiver that checks every request with the ``standardwebhooks`` library's ``Webhook.verify``, and the
notifier's *Lambda code itself*, imported from the zip the deploy uploads (``notifier_zip()``), run in-process
on messages drained from the moto webhooks queue (moto cannot invoke a Lambda without docker; the drain plays
the event-source mapping: receive, call the handler, delete what it did not report as failed).

Tests:
- test_signatures_match_the_library: our hmac/base64 signer against ``standardwebhooks`` sign and verify.
- test_fails_twice_then_delivered_once_with_one_id: 500, 503 + Retry-After, then 200: one delivery, the
  same webhook-id on all three attempts, the Retry-After kept the message hidden.
- test_410_stops_after_one_attempt: one attempt, the message gone (and a message that is not an event in
  the same batch dropped without stopping it).
- test_private_address_refused_unless_allowed: the notifier refuses a loopback URL (nothing sent, message
  deleted) and sends with ALLOW_PRIVATE; URL checks for deploy.
- test_attempts_run_out_into_the_dead_letter_queue: after maxReceiveCount failed attempts SQS moves it.
- test_rotation_signs_with_both_and_verify_accepts_either: both secrets verify during a rotation,
  ``webhook verify`` accepts either, and after --finish-rotation only the new one.
- test_webhook_verify_cli_on_a_saved_request: a whole saved request, headers + body files, a tampered body.
- test_deploy_with_webhook_url_end_to_end: ``pipeline deploy --webhook-url`` makes the queues, the secret
  (through the Secrets Manager API: moto skips it in a stack), the notifier and its mapping; the worker's
  ``publish_job_event`` -> the notifier with the stack's environment -> the receiver; ``jobs watch --once``
  prints the event from the results queue; ``pipeline webhook-secret [--rotate]``; bad URLs refused;
  ``pipeline destroy`` deletes the secret at once.
- test_publishing_never_raises_for_sqs_trouble: an SQS error is logged, not raised; no webhook URL, no
  webhooks-queue message; the same change published twice has the same id.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from typer.testing import CliRunner

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.pipeline.webhook_secret import (
    WebhookSecret,
    ensure_pipeline_secret,
    read_webhook_secret,
)
from gpu_transcribe.cli.main import app
from gpu_transcribe.pipeline.results import ResultsChannel, publish_job_event
from gpu_transcribe.pipeline.webhooks import (
    WebhookUrlError,
    check_webhook_url,
    finish_rotation,
    rotate_webhook_secret,
)
from gpu_transcribe_api.webhook_common import generate_secret, sign_v1
from tests.fixtures.moto_aws import ACCOUNT_ID, REGION, MotoAws
from tests.fixtures.pipeline import wait_until
from tests.fixtures.webhooks import (
    SECRET_NAME,
    Receiver,
    ScriptedResolver,
    TlsReceiver,
    notifier_env,
    run_notifier,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


# --- queues --------------------------------------------------------------------------------------------


def make_webhooks_queue(aws: MotoAws, max_receive_count: int = 12) -> tuple[str, str]:
    """A webhooks queue and its dead-letter queue as the template makes them; their URLs."""
    sqs = aws.client("sqs")
    dlq = sqs.create_queue(QueueName="t-webhooks-dlq")["QueueUrl"]
    dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:t-webhooks-dlq"
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    queue = sqs.create_queue(
        QueueName="t-webhooks", Attributes={"VisibilityTimeout": "60", "RedrivePolicy": redrive}
    )["QueueUrl"]
    return queue, dlq


def publish(aws: MotoAws, queue_url: str, webhook_url: str, job_id: str = "job-1") -> dict[str, Any]:
    event = publish_job_event(
        AwsContext(REGION),
        ResultsChannel(results_queue_url="", webhooks_queue_url=queue_url),
        "job.succeeded",
        job_id=job_id,
        file_name="möte 1.wav",
        bucket="bucket-x",
        result_keys=[f"results/{job_id}/möte 1.txt"],
        duration_s=61.5,
        timings={"transcribe_s": 4.25},
        webhook_url=webhook_url,
    )
    assert event is not None
    return event


def visible(aws: MotoAws, queue_url: str) -> int:
    """Messages on the queue that a receive would get now."""
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def depth(aws: MotoAws, queue_url: str) -> int:
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def new_secret(aws: MotoAws) -> WebhookSecret:
    ctx = AwsContext(REGION)
    assert ensure_pipeline_secret(ctx, SECRET_NAME, [("gpu-transcribe:pipeline", "t")])
    assert not ensure_pipeline_secret(ctx, SECRET_NAME, [])  # already there: nothing written
    secret = read_webhook_secret(ctx, SECRET_NAME)
    assert secret is not None and secret.current.startswith("whsec_")
    return secret


# --- tests ----------------------------------------------------------------------------------------------


def test_signatures_match_the_library() -> None:
    secret = generate_secret()
    body = json.dumps({"type": "job.failed", "data": {"file": "å.wav"}}, ensure_ascii=False)
    now = int(time.time())
    ours = sign_v1(secret, "msg_1", now, body)
    library = standardwebhooks.Webhook(secret)
    assert ours == library.sign("msg_1", __import__("datetime").datetime.fromtimestamp(now), body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": ours}
    assert library.verify(body.encode(), headers) == json.loads(body)
    other = standardwebhooks.Webhook(generate_secret())
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        other.verify(body.encode(), headers)


def test_fails_twice_then_delivered_once_with_one_id(aws: MotoAws, receivers: list[Receiver]) -> None:
    secret = new_secret(aws)
    receiver = Receiver([secret.current], [(500, {}), (503, {"Retry-After": "2"})])
    receivers.append(receiver)
    queue, _ = make_webhooks_queue(aws)
    event = publish(aws, queue, receiver.url)
    env = notifier_env(queue)
    run_notifier(aws, queue, env)  # attempt 1 (500), attempt 2 (503, Retry-After: 2 s)
    assert len(receiver.received) == 2
    assert depth(aws, queue) == 1 and visible(aws, queue) == 0  # hidden for the Retry-After, not lost
    wait_until(lambda: visible(aws, queue) == 1, 10, "the message back after its Retry-After")
    run_notifier(aws, queue, env)
    assert len(receiver.received) == 3
    assert depth(aws, queue) == 0
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {event["id"]}  # the same id on every attempt: receivers dedupe on it
    assert all(r.verified_with == [0] for r in receiver.received)
    body = json.loads(receiver.received[-1].body)
    assert body == {"type": "job.succeeded", "timestamp": event["timestamp"], "data": event["data"]}
    assert body["data"]["outputs"] == ["s3://bucket-x/results/job-1/möte 1.txt"]
    assert body["data"]["status"] == "succeeded" and body["data"]["error"] is None


def test_410_stops_after_one_attempt(aws: MotoAws, receivers: list[Receiver]) -> None:
    secret = new_secret(aws)
    receiver = Receiver([secret.current], [(410, {}), (200, {})])
    receivers.append(receiver)
    queue, dlq = make_webhooks_queue(aws)
    aws.client("sqs").send_message(QueueUrl=queue, MessageBody="not an event")  # dropped, the batch goes on
    publish(aws, queue, receiver.url)
    answers = run_notifier(aws, queue, notifier_env(queue))
    assert answers == [{"batchItemFailures": []}]
    assert len(receiver.received) == 1
    assert depth(aws, queue) == 0 and depth(aws, dlq) == 0


def test_private_address_refused_unless_allowed(aws: MotoAws, receivers: list[Receiver]) -> None:
    secret = new_secret(aws)
    receiver = Receiver([secret.current])
    receivers.append(receiver)
    queue, _ = make_webhooks_queue(aws)
    publish(aws, queue, receiver.url)
    run_notifier(aws, queue, notifier_env(queue, ALLOW_PRIVATE="0"))
    assert receiver.received == [] and depth(aws, queue) == 0  # refused at delivery: dropped, logged
    publish(aws, queue, receiver.url)
    run_notifier(aws, queue, notifier_env(queue, ALLOW_PRIVATE="1"))
    assert len(receiver.received) == 1
    # The deploy's check: loopback, private, link-local (EC2's metadata service) refused; schemes too.
    for url in (
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://2852039166/latest",  # the same in decimal
        "http://0xa9fea9fe/latest",  # in hexadecimal
        "http://[::ffff:169.254.169.254]/latest",  # IPv4-mapped
        "http://[::1]/",
        "http://localhost/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",  # multicast
    ):
        with pytest.raises(WebhookUrlError, match="allow-private-webhooks"):
            check_webhook_url(url, allow_private=False)
    assert check_webhook_url(" http://127.0.0.1:8/x ", allow_private=True) == "http://127.0.0.1:8/x"
    with pytest.raises(WebhookUrlError, match="not an http"):
        check_webhook_url("ftp://example.com/x", allow_private=True)
    assert check_webhook_url("https://93.184.215.14/hook", allow_private=False)  # a public address


def test_delivery_connects_to_the_address_it_checked(
    aws: MotoAws, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notifier resolves the webhook's host once per attempt and connects to that answer: a second
    answer (127.0.0.2, where nothing listens) is never asked for; the Host header is the URL's."""
    secret = new_secret(aws)
    receiver = Receiver([secret.current])
    receivers.append(receiver)
    port = receiver.server.server_address[1]
    resolver = ScriptedResolver(monkeypatch, "hooks.test", "127.0.0.1", "127.0.0.2")
    queue, _ = make_webhooks_queue(aws)
    publish(aws, queue, f"http://hooks.test:{port}/hooks/transcripts?token=abc")
    run_notifier(aws, queue, notifier_env(queue))
    (got,) = receiver.received
    assert got.verified_with == [0] and got.headers["host"] == f"hooks.test:{port}"
    assert got.raw.startswith(b"POST /hooks/transcripts?token=abc HTTP/1.1\r\n")
    assert resolver.calls == 1 and depth(aws, queue) == 0


def test_https_delivery_keeps_the_name_for_tls(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Over https the notifier connects to the checked address and gives TLS the URL's name, as SNI and
    for the certificate check (the certificate names only ``hooks.test``); Host keeps it too."""
    new_secret(aws)
    ScriptedResolver(monkeypatch, "hooks.test", "127.0.0.1")
    queue, _ = make_webhooks_queue(aws)
    with TlsReceiver(tmp_path, "hooks.test") as receiver:
        trust = receiver.client_context()
        monkeypatch.setattr(ssl, "create_default_context", lambda *args, **kwargs: trust)
        publish(aws, queue, f"https://hooks.test:{receiver.port}/hooks")
        run_notifier(aws, queue, notifier_env(queue))
    assert receiver.sni == ["hooks.test"] and receiver.hosts == [f"hooks.test:{receiver.port}"]
    assert depth(aws, queue) == 0


def test_redirect_is_not_followed(aws: MotoAws, receivers: list[Receiver]) -> None:
    """A 302 is a failed attempt, retried at the same URL, never followed to its Location."""
    secret = new_secret(aws)
    receiver = Receiver([secret.current], [(302, {"Location": "/elsewhere"})])
    receivers.append(receiver)
    queue, _ = make_webhooks_queue(aws)
    publish(aws, queue, receiver.url)
    answers = run_notifier(aws, queue, notifier_env(queue))
    assert len(answers[0]["batchItemFailures"]) == 1  # the 302: to be retried
    time.sleep(1.1)  # the backoff (BASE_S 1)
    run_notifier(aws, queue, notifier_env(queue))
    assert [got.raw.split(b" ")[1] for got in receiver.received] == [b"/hooks/transcripts?token=abc"] * 2
    assert depth(aws, queue) == 0


def test_attempts_run_out_into_the_dead_letter_queue(aws: MotoAws, receivers: list[Receiver]) -> None:
    secret = new_secret(aws)
    receiver = Receiver([secret.current], [(500, {})] * 10)
    receivers.append(receiver)
    queue, dlq = make_webhooks_queue(aws, max_receive_count=3)
    publish(aws, queue, receiver.url)
    run_notifier(aws, queue, notifier_env(queue), rounds=6)
    assert len(receiver.received) == 3  # then SQS moved it on the 4th receive
    assert depth(aws, queue) == 0 and depth(aws, dlq) == 1


def test_rotation_signs_with_both_and_verify_accepts_either(
    aws: MotoAws, receivers: list[Receiver], tmp_path: Path
) -> None:
    ctx = AwsContext(REGION)
    old = new_secret(aws)
    rotated = rotate_webhook_secret(ctx, SECRET_NAME, keep_previous_s=3600)
    assert rotated.previous == old.current and rotated.current != old.current
    receiver = Receiver([old.current, rotated.current])
    receivers.append(receiver)
    queue, _ = make_webhooks_queue(aws)
    publish(aws, queue, receiver.url)
    run_notifier(aws, queue, notifier_env(queue))
    (got,) = receiver.received
    assert got.verified_with == [0, 1]  # each secret alone verifies it
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    saved = tmp_path / "request.http"
    saved.write_bytes(got.raw)
    cli = CliRunner()
    for index, secret in enumerate((old.current, rotated.current)):
        (tmp_path / f"s{index}").write_text(secret + "\n")
        result = cli.invoke(
            app, ["webhook", "verify", "--secret-file", str(tmp_path / f"s{index}"), str(saved)]
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"valid: {got.headers['webhook-id']} job.succeeded")
    # A rotation that has expired, then one finished: only the new secret signs.
    expired = WebhookSecret(rotated.current, old.current, previous_until=time.time() - 1)
    assert expired.signing(time.time()) == [rotated.current]
    assert finish_rotation(ctx, SECRET_NAME) == WebhookSecret(rotated.current)
    publish(aws, queue, receiver.url, job_id="job-2")
    run_notifier(aws, queue, notifier_env(queue))
    assert receiver.received[-1].verified_with == [1]


def test_webhook_verify_cli_on_a_saved_request(
    aws: MotoAws, receivers: list[Receiver], tmp_path: Path
) -> None:
    secret = new_secret(aws)
    receiver = Receiver([secret.current])
    receivers.append(receiver)
    queue, _ = make_webhooks_queue(aws)
    publish(aws, queue, receiver.url)
    run_notifier(aws, queue, notifier_env(queue))
    (got,) = receiver.received
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret.current + "\n")
    cli = CliRunner()
    saved = tmp_path / "request.http"
    saved.write_bytes(got.raw)
    assert (
        cli.invoke(app, ["webhook", "verify", "--secret-file", str(secret_file), str(saved)]).exit_code == 0
    )
    headers = tmp_path / "headers.txt"
    headers.write_text("".join(f"{k}: {v}\n" for k, v in got.headers.items()))
    body = tmp_path / "body.json"
    body.write_bytes(got.body)
    args = ["webhook", "verify", "--secret-file", str(secret_file), "--headers-file", str(headers)]
    assert cli.invoke(app, [*args, str(body)]).exit_code == 0
    assert cli.invoke(app, args, input=got.body).exit_code == 0  # the body on stdin
    body.write_bytes(got.body.replace(b"61.5", b"62.5"))
    tampered = cli.invoke(app, [*args, str(body)])
    assert tampered.exit_code == 1 and tampered.output.startswith("invalid: No matching signature")
    other = tmp_path / "other"
    other.write_text(generate_secret())
    assert cli.invoke(app, ["webhook", "verify", "--secret-file", str(other), str(saved)]).exit_code == 1


def test_deploy_with_webhook_url_end_to_end(
    aws: MotoAws, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("GPU_TRANSCRIBE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    cli = CliRunner()
    base = ["pipeline", "deploy", "--pipeline", "team-w", "--image", aws.image_id]
    refused = cli.invoke(app, [*base, "--webhook-url", "http://127.0.0.1:9/hook"])
    assert refused.exit_code == 2 and "--allow-private-webhooks" in refused.output
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []  # refused before the stack
    receiver = Receiver([])
    receivers.append(receiver)
    result = cli.invoke(app, [*base, "--webhook-url", receiver.url, "--allow-private-webhooks"])
    assert result.exit_code == 0, result.output
    assert "secret gpu-transcribe-team-w-webhook: a webhook signing secret written" in result.output

    # Through the services' APIs: the queues, the secret, the function and its mapping.
    sqs = aws.client("sqs")
    prefix = "gpu-transcribe-team-w"
    urls = {n: sqs.get_queue_url(QueueName=f"{prefix}-{n}")["QueueUrl"] for n in ("results", "webhooks")}
    attributes = sqs.get_queue_attributes(QueueUrl=urls["webhooks"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert (
        redrive["deadLetterTargetArn"].endswith(f"{prefix}-webhooks-dlq") and redrive["maxReceiveCount"] == 12
    )
    assert attributes["SqsManagedSseEnabled"] == "true"
    secret = read_webhook_secret(AwsContext(REGION), f"{prefix}-webhook")
    assert secret is not None and secret.previous is None
    receiver.secrets.append(secret.current)
    lam = aws.client("lambda")
    env = lam.get_function_configuration(FunctionName=f"{prefix}-notifier")["Environment"]["Variables"]
    assert env["WEBHOOK_URL"] == receiver.url and env["ALLOW_PRIVATE"] == "1"
    assert env["QUEUE_URL"].endswith(f"/{prefix}-webhooks") and env["SECRET_ID"] == f"{prefix}-webhook"
    (mapping,) = lam.list_event_source_mappings(FunctionName=f"{prefix}-notifier")["EventSourceMappings"]
    assert mapping["EventSourceArn"].endswith(f"{prefix}-webhooks")
    # moto would "invoke" the mapping on send (docker) and delete the message: play it ourselves instead.
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)

    # The worker's call, with the channel its pipeline.json describes (the pipeline has a webhook URL).
    channel = ResultsChannel(results_queue_url=urls["results"], webhooks_queue_url=urls["webhooks"])
    channel = ResultsChannel(channel.results_queue_url, channel.webhooks_queue_url, pipeline_webhook=True)
    event = publish_job_event(
        AwsContext(REGION),
        channel,
        "job.failed",
        job_id="j-9",
        file_name="bad.wav",
        bucket="b",
        error="bad.wav: not audio",
        occurred_at="2026-12-02T07:00:00.000Z",
    )
    assert event is not None and event["data"]["error"] == "bad.wav: not audio"
    run_notifier(aws, urls["webhooks"], {**env, "BASE_S": "1", "CAP_S": "1"})
    (got,) = receiver.received
    assert got.verified_with == [0] and got.headers["webhook-id"] == event["id"]

    watched = cli.invoke(app, ["jobs", "watch", "--pipeline", "team-w", "--once"])
    assert watched.exit_code == 0, watched.output
    assert [json.loads(line) for line in watched.stdout.splitlines()] == [event]
    assert depth(aws, urls["results"]) == 0

    shown = cli.invoke(app, ["pipeline", "webhook-secret", "--pipeline", "team-w"])
    assert shown.exit_code == 0 and shown.stdout.strip() == secret.current
    rotated = cli.invoke(app, ["pipeline", "webhook-secret", "--pipeline", "team-w", "--rotate"])
    assert rotated.exit_code == 0 and rotated.stdout.strip() != secret.current
    assert "the previous secret also signs until 20" in rotated.stderr

    status = cli.invoke(app, ["pipeline", "status", "--pipeline", "team-w"])
    assert status.exit_code == 0 and "webhooks: 0 to deliver or retry, 0 undelivered" in status.stdout

    destroyed = cli.invoke(app, ["pipeline", "destroy", "--pipeline", "team-w"])
    assert destroyed.exit_code == 0, destroyed.output
    assert read_webhook_secret(AwsContext(REGION), f"{prefix}-webhook") is None  # name free again


def test_publishing_never_raises_for_sqs_trouble(aws: MotoAws, caplog: pytest.LogCaptureFixture) -> None:
    sqs = aws.client("sqs")
    results = sqs.create_queue(QueueName="t-results")["QueueUrl"]
    gone = results.replace("t-results", "no-such-queue")
    channel = ResultsChannel(results_queue_url=gone)
    ctx = AwsContext(REGION)
    assert publish_job_event(ctx, channel, "job.failed", job_id="j", file_name="a.wav", bucket="b") is None
    assert "job j: job.failed not published" in caplog.text
    with pytest.raises(ValueError, match=r"job\.finished"):
        publish_job_event(ctx, channel, "job.finished", job_id="j", file_name="a.wav", bucket="b")
    # Only the results queue without a webhook URL anywhere; the same change twice has the same id.
    channel = ResultsChannel(results_queue_url=results, webhooks_queue_url=gone, pipeline_webhook=False)
    kwargs: dict[str, Any] = {
        "job_id": "j",
        "file_name": "a.wav",
        "bucket": "b",
        "occurred_at": "2026-12-02T07:00Z",
    }
    first = publish_job_event(ctx, channel, "job.dead_lettered", **kwargs)
    again = publish_job_event(ctx, channel, "job.dead_lettered", **kwargs)
    assert first is not None and first == again and first["data"]["status"] == "dead_lettered"
    assert depth(aws, results) == 2
