"""The pipeline's jobs against moto in server mode: the table's conditional writes, the queue's messages, and
end to end with the real whisper-base engine: ``submit`` (in process), ``worker`` as a real subprocess,
``jobs``/``jobs fetch``/``jobs retry``; faults: a duplicate delivery, bad audio, a plain ``put_object``, a
worker killed with SIGKILL mid-job, a spot interruption notice from a fake IMDS on loopback.

Each worker subprocess loads whisper-base once (a few seconds on CPU); the tests keep those loads few.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.fixtures import recordings_dir
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.pipeline.jobs_table import (
    DEAD_LETTERED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobOptions,
    JobRecord,
    claim_job,
    create_job,
    extend_lease,
    finish_job,
    get_job,
    list_jobs,
    release_job,
    requeue_job,
)
from gpu_transcribe.aws.pipeline.queue import event_body, parse_event_body
from gpu_transcribe.cli.main import app
from gpu_transcribe_engine.utc import iso_utc
from tests.fixtures.bedrock import LoopbackBedrock
from tests.fixtures.cloud import FakeImds
from tests.fixtures.moto_aws import MotoAws
from tests.fixtures.pipeline import (
    TABLE,
    PipelineBed,
    WorkerProcess,
    create_test_pipeline,
    drain,
    job_events,
    wait_until,
)
from tests.fixtures.webhooks import Receiver, notifier_env, run_notifier

REPO = Path(__file__).resolve().parents[1]
AUDIO = recordings_dir()
EN = AUDIO / "en_jfk.flac"
SV = AUDIO / "sv_nst_se10x016_u0016004.wav"
LONG = AUDIO / "en_swc_william-shakespeare-part1.ogg"
"""170 s of speech: a job that is still being transcribed several seconds after it is claimed (about 15 s
of work on 2 cores), where the 7-s clips can finish before a spot notice is read (every 5 s)."""
WORKER_TIMEOUT_S = 240


def _model_dir() -> Path:
    path = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (path / "config.json").is_file():
        pytest.skip(f"no test model at {path}: set GPU_TRANSCRIBE_TEST_MODEL")
    if not EN.is_file() or not SV.is_file():
        pytest.skip(f"no test recordings in {AUDIO}")
    return path


@pytest.fixture
def pipeline(aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    bed = create_test_pipeline(aws, tmp_path, monkeypatch)
    yield bed
    bed.stop_workers()


@pytest.fixture
def bedrock_on_moto(aws: MotoAws, loopback_bedrock: LoopbackBedrock, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The loopback Bedrock beside moto: ``loopback_bedrock`` clears ``AWS_ENDPOINT_URL``, so it is put back
    (the Bedrock services' own endpoint variables win over it in botocore)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
    return loopback_bedrock


def _upper_answer(segments: dict[str, str]) -> str:
    """A corrector that capitalises every segment (free under the safety rail: case does not count)."""
    return json.dumps({k: v.upper() for k, v in segments.items()}, ensure_ascii=False)


@pytest.fixture
def imds() -> Any:
    server = FakeImds()  # never the real 169.254.169.254, even where the tests run on EC2
    yield server
    server.stop()


def _ctx(aws: MotoAws) -> AwsContext:
    return AwsContext(region=aws.region)


def _record(job_id: str, status: str = QUEUED) -> JobRecord:
    now = iso_utc(timespec="milliseconds")
    return JobRecord(
        job_id=job_id,
        status=status,
        file_name="a.wav",
        input_key=f"incoming/{job_id}/a.wav",
        options=JobOptions(language="sv", formats=("txt",)),
        created_at=now,
        updated_at=now,
    )


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


# --- the table and the queue (no model) ----------------------------------------------------------------


def test_jobs_table_every_change_is_conditional(pipeline: PipelineBed) -> None:
    ctx = _ctx(pipeline.aws)
    assert create_job(ctx, TABLE, _record("j1"))
    assert not create_job(ctx, TABLE, _record("j1")), "a second create of the same id must be refused"

    claimed = claim_job(ctx, TABLE, "j1", "w1", 60)
    assert claimed is not None and claimed.status == RUNNING and claimed.attempts == 1
    assert claimed.owner == "w1" and claimed.lease_expires_at is not None
    assert claim_job(ctx, TABLE, "j1", "w2", 60) is None, "a live lease must refuse another claim"
    assert not extend_lease(ctx, TABLE, "j1", "w2", 60), "only the owner extends the lease"
    assert extend_lease(ctx, TABLE, "j1", "w1", 60)
    assert finish_job(ctx, TABLE, "j1", "w2", status=SUCCEEDED) is None, "only the owner finishes"

    released = release_job(ctx, TABLE, "j1", "w1", interrupted=True)
    assert released is not None and released.status == INTERRUPTED and released.interruptions == 1
    assert released.owner == "" and released.lease_expires_at is None
    again = claim_job(ctx, TABLE, "j1", "w2", 0)  # a lease of 0 s: expired at once
    assert again is not None and again.attempts == 2 and again.owner == "w2"
    time.sleep(1.1)
    rescued = claim_job(ctx, TABLE, "j1", "w3", 60)
    assert rescued is not None and rescued.owner == "w3", "a running job whose lease expired is claimable"

    failed = finish_job(ctx, TABLE, "j1", "w3", status=FAILED, error="bad\naudio", engine_failure=True)
    assert failed is not None and failed.status == FAILED and failed.error == "bad audio"
    assert failed.engine_failures == 1 and failed.owner == "w3" and failed.lease_expires_at is None
    assert finish_job(ctx, TABLE, "j1", "w3", status=SUCCEEDED) is None, "an ended job is not ended again"
    assert release_job(ctx, TABLE, "j1", "w3", interrupted=True) is None, "nor released"
    assert claim_job(ctx, TABLE, "j1", "w4", 60) is None, "a failed job is not claimable"
    assert requeue_job(ctx, TABLE, "j1") is not None
    requeued = get_job(ctx, TABLE, "j1")
    assert requeued is not None and requeued.status == QUEUED and requeued.engine_failures == 0
    assert requeue_job(ctx, TABLE, "j1") is None, "only failed or dead-lettered jobs are requeued"

    assert create_job(ctx, TABLE, _record("j2", DEAD_LETTERED))
    assert [r.job_id for r in list_jobs(ctx, TABLE, status=DEAD_LETTERED)] == ["j2"]
    assert [r.job_id for r in list_jobs(ctx, TABLE)] == ["j1", "j2"]


def test_event_bodies_decode_keys_and_skip_test_events() -> None:
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "b"},
                        "object": {"key": "incoming%2Fx%2Fmy+talk%C3%A5.wav", "size": 5, "eTag": "abc"},
                    },
                }
            ]
        }
    )
    objects, test_event = parse_event_body(body)
    assert not test_event and objects[0].key == "incoming/x/my talkå.wav" and objects[0].etag == "abc"
    assert parse_event_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == ((), True)
    assert parse_event_body("not json") == ((), False)
    again, _ = parse_event_body(event_body("b", "incoming/x/my talk+1.wav"))
    assert again[0].key == "incoming/x/my talk+1.wav", "our own messages round-trip"


def test_put_object_notification_reaches_the_queue(pipeline: PipelineBed) -> None:
    pipeline.s3().put_object(Bucket=pipeline.config.resources.bucket, Key="incoming/a b.wav", Body=b"x")
    messages = wait_until(lambda: drain(pipeline.sqs(), pipeline.config.resources.queue_url), 10, "an event")
    objects, _ = parse_event_body(messages[0]["Body"])
    assert objects[0].key == "incoming/a b.wav"


# --- end to end with the real engine -----------------------------------------------------------------------


def _submit(*paths: Path, extra: tuple[str, ...] = ()) -> list[str]:
    result = _cli("submit", "--language", "auto", *extra, *(str(p) for p in paths))
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == len(paths)
    return ids


def _one_event(events: list[dict[str, Any]], job_id: str) -> dict[str, Any]:
    (event,) = [e for e in events if e["data"]["job_id"] == job_id]
    return event


def test_submit_worker_jobs_fetch_end_to_end(
    pipeline: PipelineBed, imds: FakeImds, tmp_path: Path, aws: MotoAws, bedrock_on_moto: LoopbackBedrock
) -> None:
    """Also the job events: one ``job.succeeded`` per job on the results queue; the job submitted with
    ``--webhook-url`` also on the webhooks queue, which the notifier (in-process) delivers, signed, to a
    loopback receiver that verifies it with ``standardwebhooks``. And the correction: both jobs are submitted
    with ``--correct`` against the loopback Bedrock, whose first Converse answer is an outage
    (``AccessDeniedException``): whichever job comes first keeps its raw transcript and succeeds with the
    reason recorded, the other gets its ``.corrected.*`` files under ``results/``."""
    from gpu_transcribe.aws.pipeline.webhook_secret import ensure_pipeline_secret, read_webhook_secret
    from tests.fixtures.webhooks import SECRET_NAME

    model = _model_dir()
    ensure_pipeline_secret(_ctx(aws), SECRET_NAME, [])
    secret = read_webhook_secret(_ctx(aws), SECRET_NAME)
    assert secret is not None
    receiver = Receiver([secret.current])
    (en_id,) = _submit(EN, extra=("--webhook-url", receiver.url, "--correct"))
    (sv_id,) = _submit(SV, extra=("--correct",))
    assert pipeline.job(sv_id).options.correct
    bedrock_on_moto.corrector = _upper_answer
    bedrock_on_moto.fail("AccessDeniedException")  # the first correction's only piece: an outage
    pipeline.env.update(
        AWS_ENDPOINT_URL=aws.url,
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME=bedrock_on_moto.url,
        AWS_ENDPOINT_URL_BEDROCK=bedrock_on_moto.url,
    )
    assert pipeline.job(en_id).webhook_url == receiver.url and pipeline.job(sv_id).webhook_url == ""
    s3 = pipeline.s3()
    for job_id, path in ((en_id, EN), (sv_id, SV)):
        head = s3.head_object(Bucket=pipeline.config.resources.bucket, Key=f"incoming/{job_id}/{path.name}")
        assert head["ServerSideEncryption"] == "AES256"
        assert pipeline.job(job_id).status == QUEUED
    # A duplicate delivery: the same event once more (S3 delivers at least once).
    pipeline.sqs().send_message(
        QueueUrl=pipeline.config.resources.queue_url,
        MessageBody=event_body(pipeline.config.resources.bucket, f"incoming/{en_id}/{EN.name}"),
    )

    started = time.monotonic()
    worker = pipeline.worker("--exit-when-idle", "5", imds_url=imds.url, model=str(model))
    assert worker.wait(WORKER_TIMEOUT_S) == 0, worker.stderr
    print(f"worker ran {time.monotonic() - started:.1f} s")
    assert worker.stderr.count("loading ") == 1, "one model load for the worker's life"
    assert "duplicate" in worker.stderr, worker.stderr

    listed = _cli("jobs", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["job_id"]: row for row in json.loads(listed.stdout)}
    for job_id in (en_id, sv_id):
        assert rows[job_id]["status"] == SUCCEEDED, rows[job_id]
        assert rows[job_id]["attempts"] == 1, "the duplicate delivery must not start a second attempt"
        assert rows[job_id]["duration_s"] > 0
    table = _cli("jobs", en_id)
    assert en_id in table.stdout and SUCCEEDED in table.stdout

    out = tmp_path / "out"
    fetched = _cli("jobs", "fetch", en_id, sv_id, "-o", str(out))
    assert fetched.exit_code == 0, fetched.output
    corrections = {job_id: pipeline.job(job_id).correction for job_id in (en_id, sv_id)}
    statuses = sorted(c["status"] for c in corrections.values())
    assert statuses == ["corrected", "failed"], corrections
    (good_id,) = [j for j, c in corrections.items() if c["status"] == "corrected"]
    (out_id,) = [j for j, c in corrections.items() if c["status"] == "failed"]
    assert "AccessDenied" in corrections[out_id]["reason"] and corrections[out_id]["outputs"] == {}
    good_stem = (EN if good_id == en_id else SV).stem
    good_keys = {f"results/{good_id}/{good_stem}.corrected.{fmt}" for fmt in ("txt", "json")}
    assert set(corrections[good_id]["outputs"].values()) == good_keys, corrections[good_id]
    assert good_keys <= set(pipeline.job(good_id).result_keys)
    assert not any(".corrected." in key for key in pipeline.job(out_id).result_keys)
    bucket = pipeline.config.resources.bucket
    raw = pipeline.s3().get_object(Bucket=bucket, Key=f"results/{good_id}/{good_stem}.txt")["Body"].read()
    corrected = pipeline.s3().get_object(Bucket=bucket, Key=f"results/{good_id}/{good_stem}.corrected.txt")
    assert corrected["Body"].read().decode() == raw.decode().upper()
    names = [Path(p).name for p in fetched.stdout.split()]
    assert sorted(n for n in names if ".corrected." not in n) == sorted(
        [f"{EN.stem}.txt", f"{EN.stem}.json", f"{SV.stem}.txt", f"{SV.stem}.json"]
    )
    assert sorted(n for n in names if ".corrected." in n) == [
        f"{good_stem}.corrected.{f}" for f in ("json", "txt")
    ]
    again = _cli("jobs", "fetch", en_id, "-o", str(out))
    assert again.exit_code == 1 and "--overwrite" in again.output, "fetch must not overwrite by default"
    assert _cli("jobs", "fetch", en_id, "-o", str(out), "--overwrite").exit_code == 0

    from gpu_transcribe_engine.engine import WhisperEngine
    from gpu_transcribe_engine.options import TranscribeOptions

    engine = WhisperEngine.load(str(model), device="cpu")
    for path in (EN, SV):
        expected = engine.transcribe_file(path, TranscribeOptions(language="auto")).text
        got = (out / f"{path.stem}.txt").read_text()
        assert _words(got) == _words(expected), f"{path.name}: {got!r} != {expected!r}"
    assert pipeline.queue_counts() == (0, 0), "every message, the duplicate too, deleted"

    resources = pipeline.config.resources
    events = job_events(pipeline.sqs(), resources.results_queue_url)
    assert len(events) == 2, events
    for job_id, path in ((en_id, EN), (sv_id, SV)):
        event = _one_event(events, job_id)
        assert event["type"] == "job.succeeded" and event["data"]["status"] == SUCCEEDED, event
        bucket = resources.bucket
        assert event["data"]["outputs"] == [
            f"s3://{bucket}/{key}" for key in pipeline.job(job_id).result_keys
        ]
        assert event["data"]["outputs"][:2] == [
            f"s3://{bucket}/results/{job_id}/{path.stem}.txt",
            f"s3://{bucket}/results/{job_id}/{path.stem}.json",
        ]
        assert event["data"]["duration_s"] == pytest.approx(rows[job_id]["duration_s"], abs=0.01)
        assert event["data"]["timings"]["transcribe_s"] > 0 and event["data"]["error"] is None
        assert "webhook_url" not in event, "the job's URL (it may hold a token) stays off the results queue"
    peeked = pipeline.sqs().receive_message(
        QueueUrl=resources.webhooks_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )["Messages"]
    (hook,) = [json.loads(m["Body"]) for m in peeked]
    assert hook["webhook_url"] == receiver.url and hook["data"]["job_id"] == en_id
    try:
        answers = run_notifier(aws, resources.webhooks_queue_url, notifier_env(resources.webhooks_queue_url))
    finally:
        receiver.close()
    assert answers == [{"batchItemFailures": []}], answers
    (delivered,) = receiver.received
    assert delivered.verified_with == [0], "signed with the pipeline's secret (standardwebhooks verifies)"
    assert delivered.headers["webhook-id"] == hook["id"]
    body = json.loads(delivered.body)
    assert body == {k: _one_event(events, en_id)[k] for k in ("type", "timestamp", "data")}


def test_end_to_end_through_the_deployed_stack_found_by_name(
    aws: MotoAws, imds: FakeImds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two halves together: ``pipeline deploy`` makes the stack in moto; ``submit --pipeline NAME`` finds
    it by name from the stack's outputs (no description file anywhere), queues one real recording and wakes
    the group through the scaler in-process; ``worker --pipeline NAME --exit-when-idle`` as a real
    subprocess (one model load) transcribes it; ``jobs`` shows it succeeded and ``jobs fetch`` gets it."""
    model = _model_dir()
    for variable in list(os.environ):
        if variable.startswith("GPU_TRANSCRIBE_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    name = "e2e"
    deployed = _cli("pipeline", "deploy", "--pipeline", name, "--image", aws.image_id)
    assert deployed.exit_code == 0, deployed.output

    submitted = _cli("submit", "--pipeline", name, "--language", "en", str(EN))
    assert submitted.exit_code == 0, submitted.output
    (job_id,) = submitted.stdout.split()
    assert "workers: desired 0 -> 1" in submitted.stderr, "submit runs the scaler: one job wakes one worker"

    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_TRANSCRIBE_")}
    env.update(
        PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", COLUMNS="200", GPU_TRANSCRIBE_IMDS_ENDPOINT=imds.url
    )
    argv = [sys.executable, "-m", "gpu_transcribe", "worker", "--pipeline", name]
    argv += ["--model", str(model), "--device", "cpu", "--exit-when-idle", "5"]
    worker = WorkerProcess(argv, env)
    try:
        assert worker.wait(WORKER_TIMEOUT_S) == 0, worker.stderr
    finally:
        worker.kill()
    assert worker.stderr.count("loading ") == 1, worker.stderr

    listed = _cli("jobs", "--pipeline", name, "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["job_id"], row["status"], row["attempts"]) == (job_id, SUCCEEDED, 1), row
    out = tmp_path / "out"
    fetched = _cli("jobs", "fetch", "--pipeline", name, job_id, "-o", str(out))
    assert fetched.exit_code == 0, fetched.output
    assert sorted(Path(p).name for p in fetched.stdout.split()) == [f"{EN.stem}.json", f"{EN.stem}.txt"]
    words = _words((out / f"{EN.stem}.txt").read_text())
    assert {"ask", "not", "what", "your", "country"} <= set(words), words

    from gpu_transcribe.pipeline.config import find_pipeline

    found = find_pipeline(_ctx(aws), name)
    assert (found.pipeline_webhook, found.allow_private_webhooks) == (False, False), "the notifier's env"
    events = job_events(aws.client("sqs"), found.resources.results_queue_url)
    assert [(e["type"], e["data"]["job_id"]) for e in events] == [("job.succeeded", job_id)]
    refused = _cli("submit", "--pipeline", name, "--webhook-url", "http://127.0.0.1:9/hook", str(EN))
    assert refused.exit_code == 2 and "--webhook-url" in refused.output, refused.output
    assert "private" in refused.output, "the stack's pipeline refuses private webhook URLs"


def test_bad_audio_fails_at_once_and_a_plain_upload_becomes_a_job(
    pipeline: PipelineBed, imds: FakeImds, tmp_path: Path
) -> None:
    model = _model_dir()
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    bucket = pipeline.config.resources.bucket
    pipeline.s3().put_object(Bucket=bucket, Key="incoming/from-elsewhere/jfk talk.flac", Body=EN.read_bytes())
    worker = pipeline.worker("--exit-when-idle", "5", imds_url=imds.url, model=str(model))

    waited = _cli("submit", "--wait", "-o", str(tmp_path / "out"), str(bad))
    assert waited.exit_code == 1, waited.output
    bad_id = waited.stdout.split()[0]
    assert f"{bad_id}  failed" in waited.stderr and "broken.wav" in waited.stderr
    assert "1 of 1 job(s) did not succeed" in waited.stderr
    assert worker.wait(WORKER_TIMEOUT_S) == 0, worker.stderr
    failed = pipeline.job(bad_id)
    assert failed.status == FAILED and failed.attempts == 1 and failed.engine_failures == 0
    assert "broken.wav" in failed.error and "\n" not in failed.error
    assert "/tmp" not in failed.error, "the reason names the object, not the worker's temporary file"
    events = job_events(pipeline.sqs(), pipeline.config.resources.results_queue_url)
    bad_event = _one_event(events, bad_id)
    assert bad_event["type"] == "job.failed" and bad_event["data"]["error"] == failed.error
    assert bad_event["data"]["outputs"] == [] and bad_event["timestamp"] == failed.updated_at

    others = [r for r in pipeline.jobs() if r.job_id != bad_id]
    assert len(others) == 1, others
    plain = others[0]
    assert plain.job_id.startswith("x-") and plain.input_key == "incoming/from-elsewhere/jfk talk.flac"
    assert plain.status == SUCCEEDED and plain.file_name == "jfk talk.flac"
    assert plain.result_keys == (
        f"results/{plain.job_id}/jfk talk.txt",
        f"results/{plain.job_id}/jfk talk.json",
    )
    text = pipeline.s3().get_object(Bucket=bucket, Key=plain.result_keys[0])["Body"].read().decode()
    assert "country" in text.lower()
    assert pipeline.queue_counts() == (0, 0)

    retried = _cli("jobs", "retry", bad_id)
    assert retried.exit_code == 0 and retried.stdout.split() == [bad_id], retried.output
    assert pipeline.job(bad_id).status == QUEUED
    assert pipeline.queue_counts()[0] == 1, "retry sends the job's message again"
    refused = _cli("jobs", "retry", plain.job_id)
    assert refused.exit_code == 1 and "succeeded" in refused.output


def _running(pipeline: PipelineBed, job_id: str) -> Any:
    record = pipeline.job(job_id)
    return record if record is not None and record.status == RUNNING else None


def test_worker_killed_mid_job_the_job_completes_on_another(
    aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imds: FakeImds
) -> None:
    model = _model_dir()
    pipeline = create_test_pipeline(aws, tmp_path, monkeypatch, visibility_timeout_s=6)
    try:
        (job_id,) = _submit(EN)
        first = pipeline.worker(imds_url=imds.url, model=str(model))
        held = wait_until(lambda: _running(pipeline, job_id), 60, "the first worker's claim")
        first.kill()  # SIGKILL: no goodbye, the lease and the message simply run out
        killed_at = time.monotonic()
        second = pipeline.worker("--exit-when-idle", "12", imds_url=imds.url, model=str(model))
        assert second.wait(WORKER_TIMEOUT_S) == 0, second.stderr
        done = pipeline.job(job_id)
        assert done.status == SUCCEEDED, (done, second.stderr)
        assert done.attempts == 2 and done.owner not in ("", held.owner), (held.owner, done.owner)
        assert f"worker {done.owner} waiting" in second.stderr
        print(f"killed -> succeeded on the second worker: {time.monotonic() - killed_at:.1f} s")
        assert pipeline.queue_counts() == (0, 0)
    finally:
        pipeline.stop_workers()


def test_spot_notice_releases_the_job_at_once_and_it_completes_elsewhere(
    aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imds: FakeImds
) -> None:
    model = _model_dir()
    pipeline = create_test_pipeline(aws, tmp_path, monkeypatch, visibility_timeout_s=120)
    doomed_imds = FakeImds()
    try:
        (job_id,) = _submit(LONG)
        first = pipeline.worker(imds_url=doomed_imds.url, model=str(model))
        wait_until(lambda: _running(pipeline, job_id), 60, "the first worker's claim")
        doomed_imds.announce()
        noticed_at = time.monotonic()
        released = wait_until(
            lambda: (r := pipeline.job(job_id)) is not None and r.status == INTERRUPTED and r,
            15,
            "the job handed back",
        )
        release_s = time.monotonic() - noticed_at
        assert release_s < 5 + 3, f"released {release_s:.1f} s after the notice (read every 5 s)"
        assert released.interruptions == 1 and released.engine_failures == 0 and released.owner == ""
        # The row changes first, the message's visibility after it: wait for the message itself, with a
        # deadline far below the 120-s visibility that would bring it back without the hand-back.
        wait_until(lambda: pipeline.queue_counts()[0] == 1, 10, "the message visible again, not after 120 s")
        assert first.wait(60) == 0, first.stderr
        assert "spot-notice" in first.stderr

        second = pipeline.worker("--exit-when-idle", "5", imds_url=imds.url, model=str(model))
        assert second.wait(WORKER_TIMEOUT_S) == 0, second.stderr
        done = pipeline.job(job_id)
        assert done.status == SUCCEEDED and done.interruptions == 1 and done.attempts == 2, done
        print(f"notice -> released in {release_s:.1f} s")
    finally:
        doomed_imds.stop()
        pipeline.stop_workers()


def _broken_model(model: Path, folder: Path) -> Path:
    """whisper-base with a start token outside its vocabulary: it loads, and every decode fails inside the
    model (IndexError in the embedding), which the engine reports as a GenerationError: a real engine that
    keeps crashing."""
    folder.mkdir()
    for item in model.iterdir():
        (folder / item.name).symlink_to(item)
    generation = json.loads((model / "generation_config.json").read_text())
    generation["decoder_start_token_id"] = generation["bos_token_id"] = 10**7
    (folder / "generation_config.json").unlink()
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def test_engine_that_keeps_crashing_dead_letters_then_retry_brings_it_back(
    aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imds: FakeImds
) -> None:
    model = _model_dir()
    pipeline = create_test_pipeline(aws, tmp_path, monkeypatch, max_attempts=2)
    try:
        (job_id,) = _submit(EN, extra=("--language", "en"))
        broken = _broken_model(model, tmp_path / "broken-model")
        crashing = pipeline.worker("--exit-when-idle", "5", imds_url=imds.url, model=str(broken))
        assert crashing.wait(WORKER_TIMEOUT_S) == 0, crashing.stderr
        dead = pipeline.job(job_id)
        assert dead.status == DEAD_LETTERED, (dead, crashing.stderr)
        assert dead.engine_failures == 2 and dead.attempts == 2 and dead.interruptions == 0
        assert "IndexError" in dead.error and "\n" not in dead.error
        assert pipeline.queue_counts() == (0, 0)
        assert pipeline.queue_counts(pipeline.config.resources.dead_letter_queue_url)[0] == 1
        events = job_events(pipeline.sqs(), pipeline.config.resources.results_queue_url)
        assert [(e["type"], e["data"]["job_id"]) for e in events] == [("job.dead_lettered", job_id)]
        assert events[0]["data"]["error"] == dead.error
        shown = _cli("jobs", "--status", DEAD_LETTERED)
        assert job_id in shown.stdout

        retried = _cli("jobs", "retry", job_id)
        assert retried.exit_code == 0 and retried.stdout.split() == [job_id], retried.output
        healthy = pipeline.worker("--exit-when-idle", "5", imds_url=imds.url, model=str(model))
        assert healthy.wait(WORKER_TIMEOUT_S) == 0, healthy.stderr
        done = pipeline.job(job_id)
        assert done.status == SUCCEEDED and done.attempts == 3 and done.error == "", done
    finally:
        pipeline.stop_workers()


def _group_of_one(aws: MotoAws) -> Any:
    """A moto Auto Scaling group ``workers`` of one instance (0..2); a function that describes it."""
    ec2, autoscaling = aws.ec2(), aws.client("autoscaling")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    ec2.create_launch_template(
        LaunchTemplateName="workers",
        LaunchTemplateData={"ImageId": aws.image_id, "InstanceType": "g4dn.xlarge"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="workers",
        LaunchTemplate={"LaunchTemplateName": "workers"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        VPCZoneIdentifier=subnet,
    )

    def group() -> Any:
        return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])[
            "AutoScalingGroups"
        ][0]

    return group


def test_idle_worker_in_the_group_leaves_it_with_the_desired_capacity_decremented(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dataclasses import replace

    from gpu_transcribe.aws.pipeline.fleet_member import set_scale_in_protection
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions

    aws = pipeline.aws
    group = _group_of_one(aws)
    instance_id = group()["Instances"][0]["InstanceId"]
    ctx = _ctx(aws)
    set_scale_in_protection(ctx, "workers", instance_id, True)
    assert group()["Instances"][0]["ProtectedFromScaleIn"] is True
    set_scale_in_protection(ctx, "workers", instance_id, False)
    assert group()["Instances"][0]["ProtectedFromScaleIn"] is False

    # A job that needs no model (bad audio) shows the protection around a batch.
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio" * 50)
    (bad_id,) = _submit(bad)
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    monkeypatch.setenv("GPU_TRANSCRIBE_WORKER_INSTANCE_ID", instance_id)
    config = replace(pipeline.config, resources=replace(pipeline.config.resources, group="workers"))
    before = len(aws.calls("SetInstanceProtection"))
    worker = Worker(ctx, config, WorkerOptions(model="unused", exit_when_idle_s=2, wait_s=1))
    assert worker.in_group
    report = worker.run()
    assert report.reason == "idle" and report.left_group and report.failed == (bad_id,)
    protection = [c["ProtectedFromScaleIn"] for c in aws.calls("SetInstanceProtection")[before:]]
    assert protection == ["true", "false"], "protected while holding the job, unprotected after"
    assert group()["DesiredCapacity"] == 0, "the group must not replace a worker that left"


def test_at_its_maximum_lifetime_the_worker_stops_receiving_and_leaves_the_group(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``worker --max-lifetime-h 0.0005`` (1.8 s) through the CLI, in process, as the only instance of a moto
    group and without ``--exit-when-idle`` (so only the lifetime can end it): it finishes the job it holds
    (bad audio: failed once, not handed back; no model needed), then stops with reason ``max-lifetime``,
    exit status 0, and leaves the group with the desired capacity decremented (1 -> 0)."""
    import signal

    group = _group_of_one(pipeline.aws)
    instance_id = group()["Instances"][0]["InstanceId"]
    pipeline.config_path.write_text(json.dumps(pipeline.config.to_document() | {"group": "workers"}))
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio" * 50)
    (bad_id,) = _submit(bad)
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    monkeypatch.setenv("GPU_TRANSCRIBE_WORKER_INSTANCE_ID", instance_id)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:  # the worker command installs its own SIGINT/SIGTERM handlers: pytest's come back after
        result = _cli("worker", "--model", "unused", "--device", "cpu", "--max-lifetime-h", "0.0005")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    elapsed_s = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "1 failed, 0 handed back; stopped: max-lifetime" in result.stderr, result.stderr
    assert "left group workers" in result.stderr, result.stderr
    job = pipeline.job(bad_id)
    assert job.status == FAILED and job.attempts == 1, job
    assert group()["DesiredCapacity"] == 0, "the group must not replace a worker that left"
    assert 1.8 <= elapsed_s < 15, elapsed_s


def test_every_s3_request_of_submit_the_worker_and_fetch_names_the_buckets_owner(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``submit`` (upload), the worker (download of the audio; bad audio, so no model is loaded) and the
    results' upload and download (``job_objects``, what the worker and ``jobs fetch`` call) send
    ``ExpectedBucketOwner`` = the caller's account on every request, so S3 refuses a bucket of the
    pipeline's name that another account owns. moto ignores the header: the fixture's request log reads it."""
    from gpu_transcribe.aws.pipeline import job_objects
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions
    from tests.fixtures.moto_aws import ACCOUNT_ID

    aws = pipeline.aws
    bucket = pipeline.config.resources.bucket
    before = len(aws.s3_requests(bucket))
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio" * 50)
    (bad_id,) = _submit(bad)
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    report = Worker(
        _ctx(aws), pipeline.config, WorkerOptions(model="unused", exit_when_idle_s=2, wait_s=1)
    ).run()
    assert report.failed == (bad_id,), report
    result = tmp_path / "a.txt"
    result.write_text("hej")
    key = job_objects.result_key(bad_id, "a.txt")
    job_objects.upload(_ctx(aws), bucket, key, result)
    assert job_objects.download(_ctx(aws), bucket, key, tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "hej"

    requests = aws.s3_requests(bucket)[before:]
    actions = {action for action, _ in requests}
    assert {"PutObject", "GetObject"} <= actions, actions
    unowned = [(a, p["key"], p["query"]) for a, p in requests if p["expected_owner"] != ACCOUNT_ID]
    assert unowned == []


def test_a_worker_that_cannot_leave_the_group_exits_1_for_systemd_to_restart_it(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``worker --exit-when-idle 1`` through the CLI, in process, as the only instance of a moto group that
    refuses ``TerminateInstanceInAutoScalingGroup`` (AWS's ValidationError, as at the group's minimum): it
    goes idle, cannot leave, says so and exits 1, so that the unit's ``Restart=on-failure`` starts it
    again; exit 0 would leave a billed instance that nothing restarts. The group is unchanged."""
    import signal

    group = _group_of_one(pipeline.aws)
    instance_id = group()["Instances"][0]["InstanceId"]
    pipeline.config_path.write_text(json.dumps(pipeline.config.to_document() | {"group": "workers"}))
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    monkeypatch.setenv("GPU_TRANSCRIBE_WORKER_INSTANCE_ID", instance_id)
    pipeline.aws.fail(
        "TerminateInstanceInAutoScalingGroup",
        "ValidationError",
        message="Currently, desiredSize equals minSize (1). Terminating instance without replacement will "
        "violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or "
        "lower group's min size.",
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = _cli("worker", "--model", "unused", "--device", "cpu", "--exit-when-idle", "1")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert result.exit_code == 1, result.output
    assert "could not leave the Auto Scaling group" in result.stderr, result.stderr
    assert "stopped: idle" in result.stderr and "exiting 1 so that systemd" in result.stderr, result.stderr
    assert group()["DesiredCapacity"] == 1 and group()["Instances"][0]["InstanceId"] == instance_id


def test_a_batch_still_running_past_the_lifetimes_grace_is_handed_back(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, real whisper-base: a 170-s recording, a lifetime of 1 s and a grace of 2 s. The batch is
    still in hand (the model loading or decoding) when the grace ends, so the watcher hands it back as on a
    spot notice: the job ``interrupted``, its message visible again at once, the report's reason
    ``max-lifetime``."""
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions

    model = _model_dir()
    long_file = AUDIO / "en_swc_william-shakespeare-part1.ogg"
    if not long_file.is_file():
        pytest.skip(f"no {long_file}")
    (job_id,) = _submit(long_file)
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    options = WorkerOptions(
        model=str(model), device="cpu", max_lifetime_s=1.0, lifetime_grace_s=2.0, wait_s=1
    )
    report = Worker(_ctx(pipeline.aws), pipeline.config, options).run()
    assert report.reason == "max-lifetime" and report.released == (job_id,) and not report.succeeded, report
    job = pipeline.job(job_id)
    assert job.status == INTERRUPTED and job.interruptions == 1 and job.owner == "", job
    assert pipeline.queue_counts()[0] == 1, "the message is visible again at once"


def test_a_pipeline_is_found_from_its_stack_outputs_without_a_description_file(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpu_transcribe.errors import PipelineNotFoundError
    from gpu_transcribe.pipeline.config import find_pipeline

    monkeypatch.delenv("GPU_TRANSCRIBE_PIPELINE_CONFIG", raising=False)
    outputs = {
        "BucketName": "b",
        "JobsQueueUrl": {"Ref": "JobsQueue"},
        "DeadLetterQueueUrl": "https://dlq",
        "JobsTableName": "t",
        "WorkerGroupName": "g",
    }
    template = {
        "Resources": {"JobsQueue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 77}}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.client("cloudformation").create_stack(
        StackName="gpu-transcribe-pipeline-team-a", TemplateBody=json.dumps(template)
    )
    ctx = _ctx(aws)
    found = find_pipeline(ctx, "team-a")
    assert found.name == "team-a" and found.region == aws.region
    assert (found.resources.bucket, found.resources.table, found.resources.group) == ("b", "t", "g")
    assert found.resources.queue_url.endswith("/JobsQueue") or "sqs" in found.resources.queue_url
    assert found.visibility_timeout_s == 77
    with pytest.raises(PipelineNotFoundError, match="pipeline deploy --pipeline other"):
        find_pipeline(ctx, "other")


def test_sigterm_hands_the_job_back_at_once_and_exits_143(
    aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imds: FakeImds
) -> None:
    import signal

    model = _model_dir()
    pipeline = create_test_pipeline(aws, tmp_path, monkeypatch, visibility_timeout_s=120)
    try:
        (job_id,) = _submit(SV)
        worker = pipeline.worker(imds_url=imds.url, model=str(model))
        wait_until(lambda: _running(pipeline, job_id), 60, "the worker's claim")
        worker.proc.send_signal(signal.SIGTERM)  # what systemd sends on stop
        released = wait_until(
            lambda: (r := pipeline.job(job_id)) is not None and r.status == INTERRUPTED and r,
            10,
            "the hand-back",
        )
        assert released.engine_failures == 0 and released.owner == ""
        # The row changes first, the message's visibility after it: wait for the message itself, with a
        # deadline far below the 120-s visibility that would bring it back without the hand-back.
        wait_until(lambda: pipeline.queue_counts()[0] == 1, 10, "the message visible again, not after 120 s")
        assert worker.wait(60) == 143, worker.stderr
    finally:
        pipeline.stop_workers()


def test_duplicates_of_finished_and_held_jobs_need_no_model(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gpu_transcribe.pipeline.jobs import parse_since
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions

    ctx, bucket, url = (
        _ctx(pipeline.aws),
        pipeline.config.resources.bucket,
        pipeline.config.resources.queue_url,
    )
    done_id, held_id = "20261202T000000Z-0000000a", "20261202T000000Z-0000000b"
    for job_id in (done_id, held_id):
        record = _record(job_id)
        assert create_job(
            ctx, TABLE, JobRecord(**{**record.__dict__, "input_key": f"incoming/{job_id}/a.wav"})
        )
    assert claim_job(ctx, TABLE, done_id, "earlier-worker", 60) is not None
    assert finish_job(ctx, TABLE, done_id, "earlier-worker", status=SUCCEEDED) is not None
    assert claim_job(ctx, TABLE, held_id, "busy-worker", 60) is not None
    sqs = pipeline.sqs()
    for job_id in (done_id, held_id):
        sqs.send_message(QueueUrl=url, MessageBody=event_body(bucket, f"incoming/{job_id}/a.wav"))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    sqs.send_message(QueueUrl=url, MessageBody=event_body(bucket, "incoming/a folder/"))  # the S3 console's

    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    events: list[str] = []
    worker = Worker(
        ctx,
        pipeline.config,
        WorkerOptions(model="never-loaded", exit_when_idle_s=2, wait_s=1),
        on_event=lambda event: events.append(event.message),
    )
    report = worker.run()
    text = "\n".join(events)
    assert report.reason == "idle" and not report.succeeded and "loading" not in text
    assert f"job {done_id} is succeeded: deleting a duplicate delivery" in text
    assert f"job {held_id} is held by busy-worker" in text and "S3's test event" in text
    assert "incoming/a folder/: a folder marker" in text and len(pipeline.jobs()) == 2
    assert pipeline.queue_counts() == (0, 1), "the held job's duplicate waits, hidden, for the lease to end"
    assert pipeline.job(held_id).owner == "busy-worker" and pipeline.job(done_id).attempts == 1
    assert (
        parse_since("2h") < iso_utc(timespec="milliseconds")
        and parse_since("2026-12-01T00:00:00Z") == "2026-12-01T00:00:00.000Z"
    )


def test_a_failed_upload_marks_its_job_failed_not_queued_forever(pipeline: PipelineBed) -> None:
    pipeline.aws.fail("PutObject", "AccessDenied", status=403, message="no s3:PutObject here")
    result = _cli("submit", str(SV if SV.is_file() else __file__))
    assert result.exit_code == 1 and "AccessDenied" in result.output, result.output
    (job,) = pipeline.jobs()
    assert job.status == FAILED and job.attempts == 0 and "upload failed" in job.error
    assert result.stdout.strip() == "", "no id is printed for a file that was not submitted"
    assert "not permitted" in result.stderr and "uploading" in result.stderr, result.stderr


def test_local_file_name_keeps_only_the_base_name() -> None:
    from gpu_transcribe.pipeline.job_ids import UnsafeFileNameError, local_file_name

    assert local_file_name("a b.wav") == "a b.wav"
    assert local_file_name("../../x.wav") == "x.wav"
    assert local_file_name("..\\..\\x.wav") == "x.wav"
    assert local_file_name("/etc/passwd") == "passwd"
    assert local_file_name("results/j/a.txt") == "a.txt"
    for bad in ("", ".", "..", "a/..", "x/../..", "/", "a\x00b.wav", "a\nb.wav"):
        with pytest.raises(UnsafeFileNameError, match="is not a file name"):
            local_file_name(bad, "the test's name")


def test_a_file_name_from_the_table_never_leads_the_worker_out_of_its_folder(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Rows whose ``file_name`` climbs out (``../../escape.wav``) or has no base name (``..``): the first is
    downloaded into its job's folder as ``escape.wav`` (and then fails on its model, so no model loads), the
    second fails at once naming the file name; nothing is written outside the worker's temporary folder."""
    import tempfile

    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions

    ctx, bucket, url = (
        _ctx(pipeline.aws),
        pipeline.config.resources.bucket,
        pipeline.config.resources.queue_url,
    )
    temp_root = tmp_path / "temp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    climbing, dotted = "20261202T000000Z-0000000c", "20261202T000000Z-0000000d"
    for job_id, name in ((climbing, "../../escape.wav"), (dotted, "..")):
        key = f"incoming/{job_id}/a.wav"
        pipeline.s3().put_object(Bucket=bucket, Key=key, Body=b"RIFF not really audio")
        record = JobRecord(
            **{
                **_record(job_id).__dict__,
                "file_name": name,
                "input_key": key,
                "options": JobOptions(model="another-model"),
            }
        )
        assert create_job(ctx, TABLE, record)
    drain(pipeline.sqs(), url)  # the uploads' own notifications: one message per job, sent below
    for job_id in (climbing, dotted):
        pipeline.sqs().send_message(QueueUrl=url, MessageBody=event_body(bucket, f"incoming/{job_id}/a.wav"))
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    report = Worker(
        ctx, pipeline.config, WorkerOptions(model="never-loaded", exit_when_idle_s=2, wait_s=1)
    ).run()
    assert list(temp_root.iterdir()) == [], "nothing outside the worker's folder (which it removed)"
    assert sorted(report.failed) == [climbing, dotted], report
    assert "another-model" in pipeline.job(climbing).error, pipeline.job(climbing)
    assert pipeline.job(dotted).error.startswith(f"job {dotted}'s file name: '..' is not a file name")


def test_jobs_fetch_refuses_a_result_key_without_a_base_name(pipeline: PipelineBed, tmp_path: Path) -> None:
    from gpu_transcribe.pipeline.job_ids import UnsafeFileNameError
    from gpu_transcribe.pipeline.jobs import fetch_outputs

    ctx, bucket = _ctx(pipeline.aws), pipeline.config.resources.bucket
    job_id = "20261202T000000Z-0000000e"
    keys = [f"results/{job_id}/a.txt", f"results/{job_id}/.."]
    for key in keys:
        pipeline.s3().put_object(Bucket=bucket, Key=key, Body=b"words")
    assert create_job(ctx, TABLE, _record(job_id))
    assert claim_job(ctx, TABLE, job_id, "w", 60) is not None
    assert finish_job(ctx, TABLE, job_id, "w", status=SUCCEEDED, result_keys=keys) is not None
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeFileNameError, match=f"job {job_id}'s result key"):
        fetch_outputs(ctx, pipeline.config, [job_id], out, overwrite=True)
    assert list(out.iterdir()) == [] and [p.name for p in out.parent.iterdir()] == ["out"], "nothing written"
    shown = _cli("jobs", "fetch", job_id, "--output-dir", str(out), "--overwrite")
    assert shown.exit_code == 1 and "is not a file name" in shown.stderr, shown.output


def test_a_worker_killed_between_the_final_write_and_the_event_has_it_published_on_redelivery(
    aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imds: FakeImds
) -> None:
    """A worker subprocess fails a job (bad audio: no model needed) and is SIGKILLed while its publish of
    ``job.failed`` is held in moto: the row is final, no event, the message still in the queue. The next
    worker, given the redelivery, publishes the event with the id the first would have used (derived from
    the row) and deletes the message."""
    from gpu_transcribe.pipeline.results import build_job_event

    pipeline = create_test_pipeline(aws, tmp_path, monkeypatch, visibility_timeout_s=4)
    results_url = pipeline.config.resources.results_queue_url
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    release = aws.hold("SendMessage", QueueUrl=results_url)
    try:
        submitted = _cli("submit", str(bad))
        assert submitted.exit_code == 0, submitted.output
        job_id = submitted.stdout.split()[0]
        first = pipeline.worker(imds_url=imds.url, model="never-loaded")
        wait_until(
            lambda: any(c.get("QueueUrl") == results_url for c in aws.calls("SendMessage")),
            60,
            "the first worker's publish, held",
        )
        assert pipeline.job(job_id).status == FAILED, "the row is final before the publish"
        first.kill()
        assert first.proc.wait(10) == -9
        release.set()  # the held call is answered with an error to a dead process: nothing is published
        assert job_events(pipeline.sqs(), results_url) == [], "the first worker died before publishing"
        assert sum(pipeline.queue_counts()) == 1, "its message was not deleted"

        second = pipeline.worker("--exit-when-idle", "8", imds_url=imds.url, model="never-loaded")
        assert second.wait(60) == 0, second.stderr
        row = pipeline.job(job_id)
        events = job_events(pipeline.sqs(), results_url)
        expected = build_job_event(
            "job.failed", job_id=job_id, file_name="broken.wav", bucket="b", occurred_at=row.updated_at
        )
        assert [(e["type"], e["id"]) for e in events] == [("job.failed", expected["id"])], events
        assert events[0]["data"]["error"] == row.error and events[0]["timestamp"] == row.updated_at
        assert f"job {job_id} is failed" in second.stderr and "loading" not in second.stderr
        assert pipeline.queue_counts() == (0, 0)
    finally:
        release.set()
        pipeline.stop_workers()


def _exhaust_receives(pipeline: PipelineBed, count: int) -> None:
    """Receive every message of the jobs queue (visibility 0) until SQS's redrive has moved ``count`` to the
    dead-letter queue: what workers killed on every receive amount to."""
    from tests.fixtures.pipeline import MAX_RECEIVE_COUNT

    sqs, url = pipeline.sqs(), pipeline.config.resources.queue_url
    for _ in range(MAX_RECEIVE_COUNT + 2):
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
    assert pipeline.queue_counts(pipeline.config.resources.dead_letter_queue_url)[0] == count


def test_jobs_whose_messages_sqs_dead_lettered_are_reconciled_published_and_retried(
    pipeline: PipelineBed, tmp_path: Path
) -> None:
    """Four jobs whose messages SQS's redrive moved to the dead-letter queue (received maxReceiveCount times,
    as by workers killed each time): one ``running`` whose worker's lease is over, one ``interrupted``, one
    ``running`` held by a live worker, one already ``succeeded``. ``jobs`` marks the first two
    ``dead_lettered`` with the reason and publishes their events, leaves the live one's message, deletes the
    succeeded one's; a second reconciliation changes nothing; a reconciliation that died before its publish
    is completed by the next; ``jobs retry`` requeues a reconciled job."""
    from gpu_transcribe.aws.pipeline.jobs_table import dead_letter_stuck_job
    from gpu_transcribe.aws.pipeline.queue import DEAD_LETTERED_BY, send
    from gpu_transcribe.pipeline.dead_letters import reconcile_dead_letters
    from gpu_transcribe.pipeline.results import build_job_event

    ctx, config = _ctx(pipeline.aws), pipeline.config
    bucket, url = config.resources.bucket, config.resources.queue_url
    dlq_url, results_url = config.resources.dead_letter_queue_url, config.resources.results_queue_url
    killed, interrupted, held, done = (f"20261202T000000Z-0000001{n}" for n in range(4))
    for job_id in (killed, interrupted, held, done):
        assert create_job(ctx, TABLE, _record(job_id))
        pipeline.sqs().send_message(QueueUrl=url, MessageBody=event_body(bucket, f"incoming/{job_id}/a.wav"))
    assert claim_job(ctx, TABLE, killed, "killed-worker", 0) is not None  # its lease is over at once
    assert claim_job(ctx, TABLE, interrupted, "spot-worker", 60) is not None
    assert release_job(ctx, TABLE, interrupted, "spot-worker", interrupted=True) is not None
    assert claim_job(ctx, TABLE, held, "live-worker", 600) is not None
    assert claim_job(ctx, TABLE, done, "good-worker", 60) is not None
    assert finish_job(ctx, TABLE, done, "good-worker", status=SUCCEEDED) is not None
    _exhaust_receives(pipeline, 4)
    time.sleep(1.1)  # the killed worker's lease (0 s) is in the past by a whole second
    # A job a worker dead-lettered itself (its copy on the dead-letter queue), then queued again by a retry
    # that ran no reconciliation: the copy is removed and the queued job left alone.
    requeued = "20261202T000000Z-00000015"
    assert create_job(ctx, TABLE, _record(requeued))
    assert claim_job(ctx, TABLE, requeued, "w", 60) is not None
    assert finish_job(ctx, TABLE, requeued, "w", status=DEAD_LETTERED) is not None
    body = event_body(bucket, f"incoming/{requeued}/a.wav")
    send(ctx, dlq_url, body, attributes={DEAD_LETTERED_BY: "worker"})
    assert requeue_job(ctx, TABLE, requeued) is not None

    listed = _cli("jobs")
    assert listed.exit_code == 0, listed.output
    assert "marked dead_lettered" in listed.stderr and killed in listed.stderr, listed.stderr
    for job_id in (killed, interrupted):
        row = pipeline.job(job_id)
        assert row.status == DEAD_LETTERED and row.owner == "" and row.lease_expires_at is None, row
        assert "maxReceiveCount" in row.error and f"jobs retry {job_id}" in row.error, row.error
    assert pipeline.job(held).status == RUNNING and pipeline.job(held).owner == "live-worker"
    assert pipeline.job(requeued).status == QUEUED, "a worker's copy never marks a row"
    assert pipeline.job(done).status == SUCCEEDED
    assert pipeline.queue_counts(dlq_url) == (0, 1), "only the live worker's job's message is left"
    events = job_events(pipeline.sqs(), results_url)
    expected = {
        build_job_event(
            "job.dead_lettered",
            job_id=j,
            file_name="a.wav",
            bucket=bucket,
            occurred_at=pipeline.job(j).updated_at,
        )["id"]
        for j in (killed, interrupted)
    }
    assert {e["id"] for e in events} == expected and {e["type"] for e in events} == {"job.dead_lettered"}
    assert {e["data"]["error"] for e in events} == {
        pipeline.job(killed).error,
        pipeline.job(interrupted).error,
    }

    again = reconcile_dead_letters(ctx, config)
    assert again.dead_lettered == () and again.removed == () and job_events(pipeline.sqs(), results_url) == []
    assert dead_letter_stuck_job(ctx, TABLE, killed, "twice") is None, "a final row is never rewritten"

    # A reconciliation that died after its write, before its publish and delete: the message is still there.
    pipeline.sqs().send_message(QueueUrl=dlq_url, MessageBody=event_body(bucket, f"incoming/{killed}/a.wav"))
    finished = reconcile_dead_letters(ctx, config)
    assert finished.removed == (killed,) and finished.dead_lettered == ()
    (republished,) = job_events(pipeline.sqs(), results_url)
    assert republished["id"] in expected and republished["data"]["job_id"] == killed

    retried = _cli("jobs", "retry", killed)
    assert retried.exit_code == 0 and retried.stdout.split() == [killed], retried.output
    assert pipeline.job(killed).status == QUEUED and pipeline.queue_counts()[0] == 1

    # A caller who may not read the dead-letter queue still gets the list, with a note.
    pipeline.aws.fail(
        "ReceiveMessage", "AccessDenied", status=403, message="no sqs:ReceiveMessage", QueueUrl=dlq_url
    )
    listed = _cli("jobs")
    assert listed.exit_code == 0 and killed in listed.stdout, listed.output
    assert "dead-letter queue was not reconciled" in listed.stderr and "AccessDenied" in listed.stderr


def test_submit_wait_ends_on_a_dead_lettered_message_and_has_a_timeout(pipeline: PipelineBed) -> None:
    """``submit --wait`` with no worker: ``--timeout`` ends it (exit 1, the job named with its status). Its
    message then dead-lettered by SQS: ``jobs retry`` takes the job (it reconciles first); dead-lettered
    again, ``wait_for_jobs`` ends with it ``dead_lettered``."""
    from gpu_transcribe.pipeline.jobs import wait_for_jobs

    if not SV.is_file():
        pytest.skip(f"no {SV}")
    started = time.monotonic()
    waited = _cli("submit", "--wait", "--timeout", "3", str(SV))
    assert waited.exit_code == 1, waited.output
    (job_id,) = waited.stdout.split()
    assert f"not finished after --timeout 3 s: {job_id} (queued)" in waited.stderr, waited.stderr
    assert time.monotonic() - started < 60, "it stopped waiting"
    refused = _cli("submit", "--timeout", "3", str(SV))
    assert refused.exit_code == 2 and "--timeout applies only with --wait" in refused.output

    _exhaust_receives(pipeline, 1)
    retried = _cli("jobs", "retry", job_id)  # reconciles first: the stuck job is dead_lettered, so retried
    assert retried.exit_code == 0 and retried.stdout.split() == [job_id], retried.output
    assert pipeline.job(job_id).status == QUEUED and pipeline.job(job_id).engine_failures == 0
    _exhaust_receives(pipeline, 1)
    (record,) = wait_for_jobs(_ctx(pipeline.aws), pipeline.config, [job_id], poll_s=0.2, timeout_s=30)
    assert record.status == DEAD_LETTERED and "maxReceiveCount" in record.error, record


def test_a_job_a_worker_was_lost_on_is_transcribed_alone_after_the_others(
    pipeline: PipelineBed, imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, real whisper-base: a job whose earlier worker vanished holding it (claimed, never handed
    back: a suspect) and a fresh job, received together. The fresh one is transcribed and finished first, in
    a batch of its own, then the suspect alone, so a suspect that kills the worker again costs the fresh job
    no receive."""
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions, lost_attempts

    model = _model_dir()
    ctx, bucket, url = (
        _ctx(pipeline.aws),
        pipeline.config.resources.bucket,
        pipeline.config.resources.queue_url,
    )
    suspect, fresh = "20261202T000000Z-00000030", "20261202T000000Z-00000031"
    for job_id, audio in ((suspect, SV), (fresh, EN)):
        key = f"incoming/{job_id}/{audio.name}"
        record = JobRecord(**{**_record(job_id).__dict__, "file_name": audio.name, "input_key": key})
        assert create_job(
            ctx, TABLE, JobRecord(**{**record.__dict__, "options": JobOptions(formats=("txt",))})
        )
        pipeline.s3().put_object(Bucket=bucket, Key=key, Body=audio.read_bytes())
    drain(pipeline.sqs(), url)
    assert claim_job(ctx, TABLE, suspect, "vanished-worker", 0) is not None  # never handed back
    time.sleep(1.1)  # its lease is over
    for job_id, audio in ((suspect, SV), (fresh, EN)):
        pipeline.sqs().send_message(
            QueueUrl=url, MessageBody=event_body(bucket, f"incoming/{job_id}/{audio.name}")
        )
    monkeypatch.setenv("GPU_TRANSCRIBE_IMDS_ENDPOINT", imds.url)
    events: list[str] = []
    worker = Worker(
        ctx,
        pipeline.config,
        WorkerOptions(model=str(model), device="cpu", exit_when_idle_s=3, wait_s=1),
        on_event=lambda event: events.append(f"{event.stage}: {event.message}"),
    )
    report = worker.run()
    assert report.succeeded == (fresh, suspect), (report, events)
    assert lost_attempts(pipeline.job(suspect)) == 1 and lost_attempts(pipeline.job(fresh)) == 0
    claims = [e for e in events if e.startswith("claim:")]
    assert len(claims) == 2, "both were received, and claimed, together"
    transcribed = [e for e in events if e.startswith("transcribed:")]
    assert transcribed and all(e.startswith("transcribed: 1 file(s)") for e in transcribed), events
    order = [e for e in events if e.startswith(("transcribed:", "succeeded:"))]
    assert [e.split()[1] for e in order] == ["1", "job", "1", "job"] and fresh in order[1], order
