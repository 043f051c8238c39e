"""The transcript writers: files that other subtitle libraries parse back, sane times, atomic writes.

SubRip is written by pysubs2 and parsed here with ``srt``; WebVTT is parsed with ``webvtt-py``; JSON with the
standard library. The times checked are the parsed ones, not our own numbers.
"""

from __future__ import annotations

import errno
import html
import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
import srt
import webvtt

from remote import writers
from remote.errors import BadOptionError, OutputWriteError
from remote.options import FORMATS, TranscribeOptions
from remote.transcript import Segment, Timings, Transcript


def make_transcript(segments: list[Segment], duration_s: float = 12.0) -> Transcript:
    """A transcript around the given segments, with the other fields filled in plausibly."""
    return Transcript(
        segments=tuple(segments),
        language="sv",
        duration_s=duration_s,
        timings=Timings(load_s=0.5, decode_s=0.1, transcribe_s=1.2),
        model="KBLab/kb-whisper-small",
        revision=None,
        device="cpu",
        dtype="float32",
        options=TranscribeOptions(),
        audio="intervju.wav",
    )


SWEDISH = [
    Segment(0.0, 2.48, "Hej och välkommen till Göteborg."),
    Segment(2.48, 5.2, "Här är det kallt på vintern, så ta på dig mössan."),
    Segment(5.2, 8.04, "Åäö ÅÄÖ: räksmörgås & blåbärssoppa <nu>."),
]

# Unsorted, overlapping, out of range, inverted, NaN, zero-length and empty segments (duration 10 s).
MESSY = [
    Segment(6.0, 7.5, "sjätte"),
    Segment(-0.7, 1.2, "före noll"),
    Segment(4.0, 3.0, "omvänd"),
    Segment(1.0, 4.5, "överlappar"),
    Segment(9.5, 14.0, "efter slutet"),
    Segment(12.0, 13.0, "helt utanför"),
    Segment(5.0, 5.0, "noll längd"),
    Segment(float("nan"), 2.0, "okänd start"),
    Segment(2.0, float("inf"), "oändligt slut"),
    Segment(3.0, 3.5, "   \n  "),
    Segment(3.5, 4.0, "rad ett\n\nrad två"),
]
MESSY_DURATION_S = 10.0


def parse_srt(path: Path) -> list[tuple[float, float, str]]:
    """(start_s, end_s, text) of every cue, read by the ``srt`` library (raises on malformed input)."""
    return [
        (cue.start.total_seconds(), cue.end.total_seconds(), cue.content)
        for cue in srt.parse(path.read_text("utf-8"))
    ]


def parse_vtt(path: Path) -> list[tuple[float, float, str]]:
    """(start_s, end_s, text) of every cue, read by ``webvtt-py``; entities such as ``&amp;`` decoded."""
    return [
        (
            cue.start_time.in_milliseconds() / 1000,
            cue.end_time.in_milliseconds() / 1000,
            html.unescape(cue.text),
        )
        for cue in webvtt.read(str(path)).captions
    ]


def flat_times(cues: Sequence[tuple[float, ...] | tuple[float, float, str]]) -> list[float]:
    """[start, end, start, end, ...] of (start_s, end_s, ...) tuples, for ``pytest.approx``."""
    return [float(t) for cue in cues for t in cue[:2]]


def assert_sane_times(cues: list[tuple[float, float, str]], duration_s: float) -> None:
    """Starts non-decreasing, each end at or after its start, all within [0, duration_s]."""
    previous_start_s = 0.0
    for start_s, end_s, _ in cues:
        assert 0.0 <= start_s <= end_s <= duration_s
        assert start_s >= previous_start_s
        previous_start_s = start_s


def test_swedish_transcript_in_every_format(tmp_path: Path) -> None:
    transcript = make_transcript(SWEDISH)
    paths = writers.write_outputs(transcript, tmp_path / "intervju", FORMATS)
    assert paths == {fmt: tmp_path / f"intervju.{fmt}" for fmt in FORMATS}
    texts = [s.text for s in SWEDISH]
    times = [(s.start_s, s.end_s) for s in SWEDISH]

    assert paths["txt"].read_text("utf-8") == "".join(f"{t}\n" for t in texts)

    data = json.loads(paths["json"].read_bytes().decode("utf-8"))
    assert [s["text"] for s in data["segments"]] == texts
    assert [(s["start_s"], s["end_s"]) for s in data["segments"]] == times
    assert data["language"] == "sv" and data["duration_s"] == 12.0
    assert "räksmörgås" in paths["json"].read_text("utf-8")  # not \u escapes
    assert data == json.loads(json.dumps(transcript.to_dict()))  # every field of the transcript, as is

    for fmt, parse in (("srt", parse_srt), ("vtt", parse_vtt)):
        cues = parse(paths[fmt])
        assert [c[2] for c in cues] == texts, fmt
        assert flat_times(cues) == pytest.approx(flat_times(times), abs=1e-9), fmt
        assert_sane_times(cues, transcript.duration_s)

    vtt_text = paths["vtt"].read_text("utf-8")
    assert vtt_text.startswith("WEBVTT")
    assert "&amp; blåbärssoppa &lt;nu&gt;" in vtt_text  # escaped as the WebVTT spec requires
    assert "00:00:02,480 --> 00:00:05,200" in paths["srt"].read_text("utf-8")
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_messy_times_are_sanitized_the_same_way_in_every_format(tmp_path: Path) -> None:
    transcript = make_transcript(MESSY, duration_s=MESSY_DURATION_S)
    paths = writers.write_outputs(transcript, tmp_path / "rörigt", FORMATS)
    kept = {" ".join(s.text.split()) for s in MESSY if s.text.strip()}

    srt_cues = parse_srt(paths["srt"])
    vtt_cues = parse_vtt(paths["vtt"])
    json_segments = json.loads(paths["json"].read_text("utf-8"))["segments"]
    json_cues = [(s["start_s"], s["end_s"], s["text"]) for s in json_segments]
    txt_lines = paths["txt"].read_text("utf-8").splitlines()
    assert len(srt_cues) == len(vtt_cues) == len(json_cues) == len(txt_lines) == len(kept) == 10
    assert {c[2] for c in srt_cues} == kept
    for cues in (srt_cues, vtt_cues, json_cues):
        assert_sane_times(cues, MESSY_DURATION_S)
        assert [c[2] for c in cues] == txt_lines
        assert all(end_s > start_s for start_s, end_s, _ in cues)  # WebVTT wants end after start
    assert flat_times(srt_cues) == pytest.approx(flat_times(json_cues), abs=1e-9)
    assert flat_times(vtt_cues) == pytest.approx(flat_times(json_cues), abs=1e-9)

    by_text = {text: (start_s, end_s) for start_s, end_s, text in json_cues}
    assert by_text["före noll"] == (0.0, 1.2)
    assert by_text["efter slutet"] == (9.5, 10.0)
    assert by_text["helt utanför"] == (9.999, 10.0)
    assert by_text["omvänd"] == (4.0, 4.001)
    assert by_text["noll längd"] == (5.0, 5.001)
    assert by_text["okänd start"] == (0.0, 2.0)
    assert by_text["oändligt slut"] == (2.0, 10.0)
    assert "rad ett rad två" in by_text  # a blank line would end an SRT cue early


def test_sanitize_is_idempotent_and_keeps_other_fields() -> None:
    transcript = make_transcript(MESSY, duration_s=MESSY_DURATION_S)
    once = writers.sanitize(transcript)
    assert writers.sanitize(once) == once
    assert once.model == transcript.model and once.options == transcript.options
    assert once.duration_s == MESSY_DURATION_S


def test_unknown_duration_uses_the_last_segment_end(tmp_path: Path) -> None:
    transcript = make_transcript(SWEDISH, duration_s=float("nan"))
    clean = writers.sanitize(transcript)
    assert clean.duration_s == SWEDISH[-1].end_s
    assert [s.text for s in clean.segments] == [s.text for s in SWEDISH]
    json.loads(writers.render(transcript, "json"))  # valid JSON: no NaN


def test_empty_transcript_gives_valid_empty_files(tmp_path: Path) -> None:
    transcript = make_transcript([], duration_s=4.0)
    paths = writers.write_outputs(transcript, tmp_path / "tystnad", FORMATS)
    assert paths["txt"].read_bytes() == b""
    assert parse_srt(paths["srt"]) == []
    assert parse_vtt(paths["vtt"]) == []
    assert paths["vtt"].read_text("utf-8").startswith("WEBVTT")
    data = json.loads(paths["json"].read_text("utf-8"))
    assert data["segments"] == [] and data["text"] == ""


def test_stem_with_a_dot_and_repeated_formats(tmp_path: Path) -> None:
    paths = writers.write_outputs(make_transcript(SWEDISH), tmp_path / "möte.v2", ["srt", "txt", "srt"])
    assert list(paths) == ["srt", "txt"]
    assert paths["srt"] == tmp_path / "möte.v2.srt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["möte.v2.srt", "möte.v2.txt"]


def test_unknown_format_is_a_bad_option(tmp_path: Path) -> None:
    with pytest.raises(BadOptionError, match="docx"):
        writers.write_outputs(make_transcript(SWEDISH), tmp_path / "x", ["txt", "docx"])
    assert list(tmp_path.iterdir()) == []  # rendered everything before writing anything


def test_unwritable_directory_raises_one_line_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("a regular file, not a directory")
    stem = tmp_path / "file.txt" / "x"
    with pytest.raises(OutputWriteError) as info:
        writers.write_outputs(make_transcript(SWEDISH), stem, ["txt", "srt"])
    message = str(info.value)
    assert str(stem) + ".txt" in message and "\n" not in message
    assert info.value.code == "output_error"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_keeps_the_existing_good_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    stem = tmp_path / "intervju"
    good = writers.write_outputs(make_transcript(SWEDISH), stem, ["srt", "txt"])
    before = {fmt: path.read_bytes() for fmt, path in good.items()}

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writers.os, failing, disk_full)
    replacement = make_transcript([Segment(0.0, 1.0, "ny text som inte får hamna i filen")])
    with pytest.raises(OutputWriteError, match=r"intervju\.srt: No space left on device"):
        writers.write_outputs(replacement, stem, ["srt", "txt"])
    monkeypatch.undo()

    assert {fmt: path.read_bytes() for fmt, path in good.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intervju.srt", "intervju.txt"]  # no temp file


def test_render_matches_what_is_written(tmp_path: Path) -> None:
    transcript = make_transcript(MESSY, duration_s=MESSY_DURATION_S)
    paths = writers.write_outputs(transcript, tmp_path / "x", FORMATS)
    for fmt, path in paths.items():
        assert path.read_text("utf-8") == writers.render(transcript, fmt)
    assert not math.isnan(writers.sanitize(transcript).segments[0].start_s)
