"""The transcription options ``submit`` shares with ``run`` (``--word-timestamps``, ``--prompt``, the subtitle
limits): kept in the job's row, refused with ``run``'s error lines, and followed by a real worker (a
subprocess on moto in server mode, whisper-base on real speech), whose one engine call gives each job its
own options.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.fixtures import recordings_dir
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.pipeline.jobs_table import (
    QUEUED,
    SUCCEEDED,
    JobOptions,
    JobRecord,
    create_job,
    get_job,
)
from gpu_transcribe.cli.main import app
from gpu_transcribe_engine.utc import iso_utc
from tests.fixtures.cloud import FakeImds
from tests.fixtures.moto_aws import MotoAws
from tests.fixtures.pipeline import TABLE, PipelineBed, create_test_pipeline

REPO = Path(__file__).resolve().parents[1]
EN = recordings_dir() / "en_jfk.flac"
WORKER_TIMEOUT_S = 300
#: Characters per subtitle line asked of the worded job: well under the clip's segments' lengths.
WIDTH = 20


@pytest.fixture
def pipeline(aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    bed = create_test_pipeline(aws, tmp_path, monkeypatch)
    yield bed
    bed.stop_workers()


@pytest.fixture
def imds() -> Any:
    server = FakeImds()  # never the real 169.254.169.254, even where the tests run on EC2
    yield server
    server.stop()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.lower().startswith("error:")]


def _record(job_id: str, options: JobOptions) -> JobRecord:
    now = iso_utc(timespec="milliseconds")
    return JobRecord(
        job_id=job_id,
        status=QUEUED,
        file_name="a.wav",
        input_key=f"incoming/{job_id}/a.wav",
        options=options,
        created_at=now,
        updated_at=now,
    )


# --- the row and the command line (no model) ---------------------------------------------------------------


def test_job_options_round_trip_through_the_table_with_and_without_the_new_fields(
    pipeline: PipelineBed,
) -> None:
    """Through moto's DynamoDB: every option set comes back equal; none set writes none of their attributes;
    a row written before they existed (its ``options`` map without them) reads as their defaults."""
    ctx = AwsContext(region=pipeline.aws.region)
    full = JobOptions(
        language="en",
        formats=("json", "srt"),
        correct=True,
        word_timestamps=True,
        prompt="Kennedy, Ask not",
        max_line_width=20,
        max_line_count=1,
        max_cue_s=2.5,
    )
    plain = JobOptions(language="sv", formats=("txt",))
    assert create_job(ctx, TABLE, _record("full", full)) and create_job(ctx, TABLE, _record("plain", plain))
    got_full, got_plain = get_job(ctx, TABLE, "full"), get_job(ctx, TABLE, "plain")
    assert got_full is not None and got_full.options == full
    assert got_plain is not None and got_plain.options == plain

    items = {
        row["job_id"]["S"]: row["options"]["M"] for row in pipeline.table().scan(TableName=TABLE)["Items"]
    }
    stored = items["full"]
    assert stored["max_cue_s"] == {"N": "2.5"} and stored["word_timestamps"] == {"BOOL": True}
    assert stored["prompt"] == {"S": "Kennedy, Ask not"} and stored["max_line_width"] == {"N": "20"}
    new = {"word_timestamps", "prompt", "max_line_width", "max_line_count", "max_cue_s"}
    assert new <= set(stored) and not new & set(items["plain"]), items

    now = iso_utc(timespec="milliseconds")
    pipeline.table().put_item(
        TableName=TABLE,
        Item={
            "job_id": {"S": "old"},
            "status": {"S": QUEUED},
            "file_name": {"S": "a.wav"},
            "input_key": {"S": "incoming/old/a.wav"},
            "options": {"M": {"language": {"S": "sv"}, "formats": {"L": [{"S": "txt"}]}}},
            "attempts": {"N": "0"},
            "engine_failures": {"N": "0"},
            "interruptions": {"N": "0"},
            "result_keys": {"L": []},
            "created_at": {"S": now},
            "updated_at": {"S": now},
        },
    )
    got_old = get_job(ctx, TABLE, "old")
    assert got_old is not None and got_old.options == JobOptions(language="sv", formats=("txt",))


def test_submit_refuses_bad_transcription_options_with_runs_error_lines(
    pipeline: PipelineBed, tmp_path: Path
) -> None:
    """``--max-line-width 0`` (the option's range) and a prompt over the limit (``TranscribeOptions``'s own
    check): the same one error line as ``run`` gives, exit 2, and no job written."""
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"not checked before the options")
    long_prompt = "word " * 500
    for bad in (("--max-line-width", "0"), ("--max-cue-duration", "0.1"), ("--prompt", long_prompt)):
        ran = _cli("run", "--local", *bad, str(audio))
        submitted = _cli("submit", *bad, str(audio))
        assert ran.exit_code == 2 and submitted.exit_code == 2, (bad, ran.output, submitted.output)
        run_errors, submit_errors = _error_lines(ran.output), _error_lines(submitted.output)
        assert len(run_errors) == 1 and submit_errors == run_errors, (bad, ran.output, submitted.output)
        assert bad[0] in submit_errors[0], submit_errors
        assert submitted.stdout == "", "no job id printed"
    assert pipeline.jobs() == (), "nothing submitted"


# --- end to end with the real engine -----------------------------------------------------------------------


def _model_dir() -> Path:
    path = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (path / "config.json").is_file():
        pytest.skip(f"no test model at {path}: set GPU_TRANSCRIBE_TEST_MODEL")
    if not EN.is_file():
        pytest.skip(f"no test recording {EN}")
    return path


def _submit(*args: str) -> str:
    result = _cli("submit", "--language", "en", "--format", "json,srt,vtt", *args, str(EN))
    assert result.exit_code == 0, result.output
    (job_id,) = result.stdout.split()
    return job_id


def _cue_text_lines(subtitles: str) -> list[str]:
    """The text lines of SubRip or WebVTT cues (not the header, cue numbers, times or blank lines)."""
    lines = []
    for line in subtitles.splitlines():
        if not line.strip() or line.startswith("WEBVTT") or "-->" in line or line.strip().isdigit():
            continue
        lines.append(line)
    return lines


def test_worker_follows_each_jobs_word_timestamps_and_subtitle_layout(
    pipeline: PipelineBed, imds: FakeImds, tmp_path: Path
) -> None:
    """Two jobs of the same clip and language, received together: one plain, one with ``--word-timestamps
    --max-line-width 20 --prompt``. The worded job's JSON has words inside their segments and its SRT and
    VTT lines are at most 20 characters; the plain job's JSON has no words and its SRT one cue per segment.
    Both go to one engine call, which decodes each with its own options."""
    model = _model_dir()
    plain_id = _submit()
    worded_id = _submit(
        "--word-timestamps", "--max-line-width", str(WIDTH), "--prompt", "  Kennedy,\n  Ask not "
    )
    stored = pipeline.job(worded_id).options
    assert stored.word_timestamps and stored.max_line_width == WIDTH and stored.prompt == "Kennedy, Ask not"
    assert stored.max_line_count is None and stored.max_cue_s is None
    assert pipeline.job(plain_id).options == JobOptions(language="en", formats=("json", "srt", "vtt"))

    worker = pipeline.worker("--exit-when-idle", "5", imds_url=imds.url, model=str(model))
    assert worker.wait(WORKER_TIMEOUT_S) == 0, worker.stderr
    assert worker.stderr.count("loading ") == 1, worker.stderr
    claims = re.findall(r"worker: job \S+ \(\S+\): attempt 1", worker.stderr)
    calls = re.findall(r"worker: (\d+) file\(s\) in", worker.stderr)
    assert len(claims) == 2 and calls == ["2"], worker.stderr
    for job_id in (plain_id, worded_id):
        assert pipeline.job(job_id).status == SUCCEEDED, pipeline.job(job_id)

    out = tmp_path / "out"
    for job_id in (plain_id, worded_id):  # the same file name: a folder each
        got = _cli("jobs", "fetch", job_id, "-o", str(out / job_id))
        assert got.exit_code == 0, got.output

    worded = json.loads((out / worded_id / f"{EN.stem}.json").read_text())
    assert worded["options"]["word_timestamps"] and worded["options"]["max_line_width"] == WIDTH
    segments = [s for s in worded["segments"] if s["text"].strip()]
    assert segments, worded
    for segment in segments:
        words = segment["words"]
        assert words, segment
        for word in words:
            assert segment["start_s"] <= word["start_s"] <= word["end_s"] <= segment["end_s"], (segment, word)
            assert 0.0 <= word["probability"] <= 1.0
        assert re.findall(r"\w+", "".join(w["word"] for w in words)) == re.findall(r"\w+", segment["text"])
    words_said = [w["word"].strip().lower() for s in segments for w in s["words"]]
    assert "country" in " ".join(words_said), words_said
    for fmt in ("srt", "vtt"):
        lines = _cue_text_lines((out / worded_id / f"{EN.stem}.{fmt}").read_text())
        assert lines and all(len(line) <= WIDTH for line in lines), (fmt, lines)

    plain = json.loads((out / plain_id / f"{EN.stem}.json").read_text())
    assert not plain["options"]["word_timestamps"] and plain["options"]["max_line_width"] is None
    assert all("words" not in s for s in plain["segments"]), plain["segments"]
    plain_srt = (out / plain_id / f"{EN.stem}.srt").read_text()
    assert plain_srt.count("-->") == len(plain["segments"]), "one cue per segment"
    longest = max(len(line) for line in _cue_text_lines(plain_srt))
    assert longest > WIDTH, "the subtitle layout is the worded job's alone"
