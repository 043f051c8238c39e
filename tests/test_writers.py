"""The transcript writers: files that other subtitle libraries parse back, sane times, atomic writes.

SubRip is written by pysubs2 and parsed here with ``srt``; WebVTT is parsed with ``webvtt-py``; JSON with the
standard library. The times checked are the parsed ones, not our own numbers.
"""

from __future__ import annotations

import dataclasses
import errno
import html
import io
import itertools
import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
import srt
import webvtt

from gpu_transcribe_engine import files, writers
from gpu_transcribe_engine.errors import BadOptionError, OutputWriteError
from gpu_transcribe_engine.options import FORMATS, TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Timings, Transcript, Word


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

    monkeypatch.setattr(files.os, failing, disk_full)  # the atomic write writers.write_atomic uses
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


# --- readable subtitles ------------------------------------------------------------------------------------

LONG_TEXT = (
    "Här är en ganska lång mening som fortsätter och fortsätter en bra stund, längre än två rader om "
    "fyrtiotvå tecken tillåter, och den slutar först här."
)


def timed(text: str, start_s: float, step_s: float) -> Segment:
    """A segment whose words are timed ``step_s`` apart from ``start_s``, each ``step_s * 0.8`` long."""
    words = tuple(
        Word(
            word=" " + w,
            start_s=start_s + i * step_s,
            end_s=start_s + i * step_s + step_s * 0.8,
            probability=0.9,
        )
        for i, w in enumerate(text.split())
    )
    return Segment(words[0].start_s, words[-1].end_s, text, words=words)


def parsed_srt(transcript: Transcript) -> list[srt.Subtitle]:
    """The SubRip file of ``transcript``, parsed back by ``srt``."""
    return list(srt.parse(writers.render(transcript, "srt")))


@pytest.mark.parametrize(("width", "lines"), [(42, 2), (20, 1), (32, 3)])
def test_subtitle_cues_keep_the_line_limits_and_every_word_in_order(width: int, lines: int) -> None:
    segment = timed(LONG_TEXT, 1.0, 0.3)
    options = TranscribeOptions(max_line_width=width, max_line_count=lines)
    transcript = dataclasses.replace(make_transcript([segment], duration_s=40.0), options=options)
    cues = parsed_srt(transcript)
    assert len(cues) > 1
    for cue in cues:
        cue_lines = cue.content.split("\n")
        assert 1 <= len(cue_lines) <= lines
        assert all(len(line) <= width for line in cue_lines), cue_lines
        assert (cue.end - cue.start).total_seconds() <= 7.0
    assert " ".join(c.content.replace("\n", " ") for c in cues) == LONG_TEXT
    # cues start at their first word's time and end at their last word's
    starts = {round(w.start_s, 3) for w in segment.words}
    ends = {round(w.end_s, 3) for w in segment.words}
    assert all(round(c.start.total_seconds(), 3) in starts for c in cues)
    assert all(round(c.end.total_seconds(), 3) in ends for c in cues)


def test_subtitle_cues_never_last_longer_than_the_set_duration() -> None:
    segment = timed(LONG_TEXT, 0.0, 0.9)  # slow speech: 42 characters take far more than 3 s
    options = TranscribeOptions(max_cue_s=3.0)
    transcript = dataclasses.replace(make_transcript([segment], duration_s=40.0), options=options)
    cues = parsed_srt(transcript)
    assert all((c.end - c.start).total_seconds() <= 3.0 for c in cues)
    assert all(len(line) <= 42 for c in cues for line in c.content.split("\n"))


def test_vtt_cues_follow_the_same_layout_and_are_escaped() -> None:
    segment = timed("räksmörgås & blåbärssoppa <nu> " + LONG_TEXT, 0.0, 0.3)
    options = TranscribeOptions(max_line_width=30, max_line_count=2)
    transcript = dataclasses.replace(make_transcript([segment], duration_s=40.0), options=options)
    cues = webvtt.from_buffer(io.StringIO(writers.render(transcript, "vtt")))
    assert len(cues) > 1
    assert all(len(html.unescape(line)) <= 30 for c in cues for line in c.lines)
    assert html.unescape(" ".join(c.text.replace("\n", " ") for c in cues)) == segment.text


def test_without_limits_every_segment_is_one_cue() -> None:
    segment = timed(LONG_TEXT, 1.0, 0.3)
    cues = parsed_srt(make_transcript([segment], duration_s=40.0))
    assert [c.content for c in cues] == [LONG_TEXT]


def test_untimed_segments_are_split_in_proportion_to_their_text() -> None:
    segment = Segment(2.0, 14.0, LONG_TEXT)
    options = TranscribeOptions(max_line_width=42, max_line_count=2)
    transcript = dataclasses.replace(make_transcript([segment], duration_s=40.0), options=options)
    cues = parsed_srt(transcript)
    assert len(cues) > 1
    assert cues[0].start.total_seconds() == 2.0 and cues[-1].end.total_seconds() == 14.0
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))


def test_json_has_words_only_when_asked_for() -> None:
    segment = timed("hej på dig", 0.0, 0.5)
    plain = json.loads(writers.render(make_transcript([segment]), "json"))
    assert "words" not in plain["segments"][0]
    asked = dataclasses.replace(make_transcript([segment]), options=TranscribeOptions(word_timestamps=True))
    words = json.loads(writers.render(asked, "json"))["segments"][0]["words"]
    assert [w["word"] for w in words] == [" hej", " på", " dig"]
    assert [(w["start_s"], w["end_s"]) for w in words] == [(0.0, 0.4), (0.5, 0.9), (1.0, 1.4)]
    assert all(w["probability"] == 0.9 for w in words)


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [("max_line_width", 0, "--max-line-width"), ("max_line_count", 21, "--max-line-count"),
     ("max_cue_s", 0.1, "--max-cue-duration"), ("max_cue_s", math.nan, "--max-cue-duration")],
)  # fmt: skip
def test_subtitle_limits_out_of_range_name_their_option(field: str, value: float, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        TranscribeOptions(**{field: value}).validated()  # type: ignore[arg-type]
