"""The shared helpers of ``gpu_transcribe_engine.files`` (atomic writes), ``gpu_transcribe_engine.utc`` (time
stamps) and the strict transcript reader: real files in a temporary directory, no mocks."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gpu_transcribe_engine.files import replace_atomically, write_atomic
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Timings, Transcript, Word, transcript_from_dict
from gpu_transcribe_engine.utc import iso_utc


def test_write_atomic_replaces_the_file_whole_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomic(path, b"new contents", 0o644)
    assert path.read_bytes() == b"new contents"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_atomic(path, b"private")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), replace_atomically(path) as (handle, _tmp):
        handle.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_writer_may_fill_the_temporary_file_by_name(tmp_path: Path) -> None:
    path = tmp_path / "download.wav"
    with replace_atomically(path, 0o644, suffix=".part") as (_handle, tmp):
        assert tmp.parent == tmp_path and tmp.name.startswith(".download.wav.") and tmp.suffix == ".part"
        tmp.write_bytes(b"RIFF")
    assert path.read_bytes() == b"RIFF"
    assert [p.name for p in tmp_path.iterdir()] == ["download.wav"]


def test_write_atomic_into_a_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing" / "x.json", b"{}")


def test_iso_utc_to_the_second_and_to_the_millisecond() -> None:
    moment = datetime(2026, 11, 22, 5, 26, 41, 123_900, tzinfo=timezone(timedelta(hours=1)))
    assert iso_utc(moment) == "2026-11-22T04:26:41Z"
    assert iso_utc(moment, "milliseconds") == "2026-11-22T04:26:41.123Z"
    assert iso_utc(moment.timestamp(), "milliseconds") == "2026-11-22T04:26:41.123Z"
    before = datetime.now(UTC).replace(microsecond=0)
    now = datetime.fromisoformat(iso_utc(timespec="milliseconds").replace("Z", "+00:00"))
    assert before <= now <= datetime.now(UTC)


def _transcript(word_timestamps: bool) -> Transcript:
    words = (Word(" Hej", 0.0, 0.4, 0.9), Word(" där.", 0.4, 0.9, 0.8)) if word_timestamps else ()
    return Transcript(
        segments=(Segment(0.0, 0.9, "Hej där.", words=words),),
        language="sv",
        duration_s=1.5,
        timings=Timings(1.0, 0.1, 0.2),
        model="whisper-test",
        revision=None,
        device="cpu",
        dtype="float32",
        options=TranscribeOptions(language="sv", word_timestamps=word_timestamps),
        audio="a.wav",
        extra={"windows": 1},
    )


@pytest.mark.parametrize("word_timestamps", [False, True])
def test_transcript_from_dict_reads_back_what_to_dict_wrote(word_timestamps: bool) -> None:
    transcript = _transcript(word_timestamps)
    assert transcript_from_dict(transcript.to_dict()) == transcript


@pytest.mark.parametrize("missing", ["segments", "language", "duration_s", "timings", "model", "options"])
def test_transcript_from_dict_is_strict(missing: str) -> None:
    data = _transcript(False).to_dict()
    del data[missing]
    with pytest.raises(ValueError, match=r"^not a transcript: KeyError"):
        transcript_from_dict(data)
    data = _transcript(False).to_dict()
    data["options"]["no_such_option"] = 1
    with pytest.raises(ValueError, match=r"^not a transcript: TypeError"):
        transcript_from_dict(data)
