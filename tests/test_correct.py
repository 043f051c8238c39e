"""The correction stage (``gpu_transcribe.correct``, ``gpu_transcribe.aws.bedrock``, ``run
--correct``)
against a loopback server that speaks Bedrock's wire format (``tests/fixtures/bedrock.py``), reached by the
real botocore client, which signs real requests. Nothing here talks to the real Bedrock service.

- the pure rules: word edit distance, the safety rail, pieces, the answer's strict format;
- the request carries the segments, the context and the prompt (asserted on what the server received);
- a good answer becomes ``.corrected.{txt,json,srt,vtt}`` with the raw times, the raw files untouched;
- an answer that drops a sentence is refused (the segment kept raw and counted); bad ids keep a piece raw;
  when every answer is refused, nothing is written;
- throttling (429) is retried with backoff, then succeeds;
- an outage (500s, or nothing listening) keeps the raw transcript with a recorded reason;
- a long transcript goes in several pieces, each with its neighbours as context;
- the model check: absent in the region -> skipped; present -> corrected;
- ``run``'s step after the pull; the ``correct_*`` settings;
- ``run --local --correct`` end to end with the real whisper-base model (a subprocess).

About 20 s on 2 shared cores, 11 s of it the end-to-end run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.fixtures import clip_path
from gpu_transcribe.correct.config import CorrectionConfig
from gpu_transcribe.correct.correct import correct_file, correct_transcript
from gpu_transcribe.correct.files import carry_word_times
from gpu_transcribe.correct.prompt import AnswerError, parse_answer, split_pieces
from gpu_transcribe.correct.rail import refused_change, word_edit_distance, words
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Timings, Transcript, Word
from gpu_transcribe_engine.writers import write_outputs
from tests.fixtures.bedrock import LoopbackBedrock

REPO = Path(__file__).resolve().parent.parent
SV_CLIP = clip_path("sv_nst_se10x016_u0016004.wav")
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"

RAW = (
    "vi åkte till stokholm i går",
    "där träffade vi ana och peter",
    "sen gick vi hem. det var kallt ute.",
)
FIXES = {"stokholm": "Stockholm", "ana": "Anna", "peter": "Peter", "vi": "Vi", "där": "Där", "sen": "Sen"}


def fix_words(text: str) -> str:
    """A model that fixes names and capitals of :data:`RAW` and ends each segment with a full stop."""
    out = " ".join(
        FIXES.get(w, w) if i == 0 or w in ("stokholm", "ana", "peter") else w
        for i, w in enumerate(text.split())
    )
    return out if out.endswith(".") else out + "."


def fixing_answer(segments: dict[str, str]) -> str:
    return json.dumps({k: fix_words(v) for k, v in segments.items()}, ensure_ascii=False)


def transcript(texts: tuple[str, ...] = RAW, language: str = "sv") -> Transcript:
    segments = tuple(
        Segment(start_s=2.0 * i + 0.25, end_s=2.0 * i + 1.75, text=t) for i, t in enumerate(texts)
    )
    return Transcript(
        segments=segments,
        language=language,
        duration_s=2.0 * len(texts) + 1,
        timings=Timings(1.0, 0.1, 0.5),
        model="whisper-test",
        revision=None,
        device="cpu",
        dtype="float32",
        options=TranscribeOptions(language=language),
        audio="talk.wav",
    )


def config(**overrides: object) -> CorrectionConfig:
    """A config for the loopback server: no real sleeping between retries."""
    values: dict[str, object] = {"model_id": MODEL_ID, "region": "eu-north-1", "concurrency": 2}
    values |= {"backoff_base_s": 0.01, "backoff_cap_s": 0.02}
    values |= overrides
    return CorrectionConfig(**values)  # type: ignore[arg-type]


def srt_times(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if "-->" in line]


# --- pure rules ------------------------------------------------------------------------------------------


def test_word_rules() -> None:
    assert words("Hej, Anna!  Hur mår du?") == ["hej", "anna", "hur", "mår", "du"]
    assert word_edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert word_edit_distance(["a", "b"], ["b", "a"]) == 2
    assert word_edit_distance([], ["x", "y"]) == 2
    # Punctuation and capitalisation are free; one fixed word of ten is within 0.3.
    assert not refused_change("vi åkte till stokholm", "Vi åkte till Stockholm.", 0.3)
    # A one-word segment may have its word fixed (the floor of one word) but not emptied.
    assert not refused_change("stokholm", "Stockholm", 0.3)
    assert refused_change("stokholm", "", 0.3)
    # A dropped sentence is more than 0.3 of the words.
    assert refused_change("sen gick vi hem. det var kallt ute.", "Sen gick vi hem.", 0.3)


def test_pieces_fit_the_budget_and_carry_context() -> None:
    texts = [f"segment nummer {i} " + "ord " * 10 for i in range(20)]  # about 20 approximate tokens each
    pieces = split_pieces(texts, budget_tokens=60, context_segments=2)
    assert [i for p in pieces for i in p.ids] == list(range(20))
    assert all(len(p.ids) <= 3 for p in pieces) and len(pieces) >= 7
    second = pieces[1]
    assert second.before == (second.ids[0] - 2, second.ids[0] - 1)
    assert second.after == (second.ids[-1] + 1, second.ids[-1] + 2)
    assert pieces[0].before == () and pieces[-1].after == ()
    # A segment larger than the budget is a piece of its own.
    assert [p.ids for p in split_pieces(["x" * 1000, "y"], 10, 1)] == [(0,), (1,)]


def test_answer_must_have_the_same_ids_in_order() -> None:
    assert parse_answer('{"3": "a", "4": "b"}', [3, 4]) == ["a", "b"]
    assert parse_answer('```json\n{"3": "a"}\n```', [3]) == ["a"]
    for bad, why in [
        ('{"3": "a"}', "missing"),
        ('{"3": "a", "4": "b", "5": "c"}', "extra"),
        ('{"4": "b", "3": "a"}', "reordered"),
        ("Here you go: {}", "not JSON"),
        ('{"3": 1, "4": "b"}', "not a string"),
    ]:
        with pytest.raises(AnswerError, match=why):
            parse_answer(bad, [3, 4])


# --- against the loopback server -------------------------------------------------------------------------


def test_request_carries_segments_context_and_prompt(loopback_bedrock: LoopbackBedrock) -> None:
    loopback_bedrock.corrector = fixing_answer
    result = correct_transcript(transcript(), config())
    assert result.status == "corrected", result.reason
    [check] = [r for r in loopback_bedrock.received if r.method == "GET"]
    assert check.path == f"/foundation-models/{MODEL_ID.replace(':', '%3A')}"
    [call] = loopback_bedrock.converse_requests()
    assert call.path == f"/model/{MODEL_ID.replace(':', '%3A')}/converse"
    assert call.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIATESTTESTTESTTEST/")
    assert "/eu-north-1/bedrock/aws4_request" in call.headers["authorization"]
    assert call.body["messages"][0]["role"] == "user"
    assert call.body["inferenceConfig"] == {"maxTokens": 4096, "temperature": 0.0}
    system = call.body["system"][0]["text"]
    assert "svenska" in system and "Lägg aldrig till, ta bort" in system and "JSON" in system
    assert call.document == {
        "context_before": {},
        "segments": {str(i): text for i, text in enumerate(RAW)},
        "context_after": {},
    }
    assert result.texts == tuple(fix_words(t) for t in RAW)
    assert (result.segments, result.segments_changed, result.segments_refused) == (3, 3, 0)
    assert result.input_tokens > 0 and result.output_tokens > 0
    expected = (result.input_tokens * 0.00025 + result.output_tokens * 0.00125) / 1000
    assert result.cost_usd == pytest.approx(expected, abs=1e-6)


def test_english_transcript_gets_an_english_prompt(loopback_bedrock: LoopbackBedrock) -> None:
    correct_transcript(transcript(("we went to lundon",), language="en"), config())
    [call] = loopback_bedrock.converse_requests()
    assert "speech in English" in call.body["system"][0]["text"]


def test_good_answer_becomes_corrected_files_beside_the_raw(
    loopback_bedrock: LoopbackBedrock, tmp_path: Path
) -> None:
    loopback_bedrock.corrector = fixing_answer
    formats = ("txt", "json", "srt", "vtt")
    raw = write_outputs(transcript(), tmp_path / "talk", formats)
    before = {fmt: path.read_bytes() for fmt, path in raw.items()}
    result = correct_file(raw["json"], formats, config())
    assert result.status == "corrected", result.reason
    assert {fmt: p.name for fmt, p in result.outputs.items()} == {f: f"talk.corrected.{f}" for f in formats}
    assert {fmt: path.read_bytes() for fmt, path in raw.items()} == before  # the raw files are untouched
    lines = (tmp_path / "talk.corrected.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [fix_words(t) for t in RAW]
    assert lines[0] == "Vi åkte till Stockholm i går."
    assert srt_times(tmp_path / "talk.corrected.srt") == srt_times(tmp_path / "talk.srt")
    assert srt_times(tmp_path / "talk.corrected.vtt") == srt_times(tmp_path / "talk.vtt")
    data = json.loads((tmp_path / "talk.corrected.json").read_text(encoding="utf-8"))
    raw_data = json.loads(raw["json"].read_text(encoding="utf-8"))
    assert [(s["start_s"], s["end_s"]) for s in data["segments"]] == [
        (s["start_s"], s["end_s"]) for s in raw_data["segments"]
    ]
    assert data["extra"]["correction"]["model_id"] == MODEL_ID
    assert data["extra"]["correction"]["segments_changed"] == 3


def test_corrected_segments_carry_the_raw_word_times(
    loopback_bedrock: LoopbackBedrock, tmp_path: Path
) -> None:
    """A raw transcript with word timestamps: the corrected JSON's segments carry the corrected words, each
    timed from the raw word it corrects (the corrections here change spelling and case, not word counts)."""
    loopback_bedrock.corrector = fixing_answer
    plain = transcript()
    timed = replace(
        plain,
        options=replace(plain.options, word_timestamps=True),
        segments=tuple(
            replace(
                s,
                words=tuple(
                    Word(" " + w, s.start_s + 0.1 * k, s.start_s + 0.1 * (k + 1), 0.9)
                    for k, w in enumerate(s.text.split())
                ),
            )
            for s in plain.segments
        ),
    )
    raw = write_outputs(timed, tmp_path / "talk", ("json",))
    raw_segments = json.loads(raw["json"].read_text(encoding="utf-8"))["segments"]
    result = correct_file(raw["json"], ("json",), config())
    assert result.status == "corrected", result.reason
    data = json.loads((tmp_path / "talk.corrected.json").read_text(encoding="utf-8"))
    assert [s["text"] for s in data["segments"]] == [fix_words(t) for t in RAW]
    for segment, raw_segment in zip(data["segments"], raw_segments, strict=True):
        assert [w["word"].strip() for w in segment["words"]] == segment["text"].split()
        assert [(w["start_s"], w["end_s"]) for w in segment["words"]] == [
            (w["start_s"], w["end_s"]) for w in raw_segment["words"]
        ]


def test_word_times_follow_the_corrected_words() -> None:
    raw = (
        Word(" vi", 0.0, 0.2, 0.9),
        Word(" eh", 0.2, 0.4, 0.3),
        Word(" åkte", 0.4, 0.6, 0.8),
        Word(" till", 0.6, 0.8, 0.7),
        Word(" baka", 0.8, 1.0, 0.5),
        Word(" hem.", 1.0, 1.4, 0.9),
    )
    carried = carry_word_times(raw, "Vi åkte tillbaka hem, sen.")
    assert [w.word for w in carried] == [" Vi", " åkte", " tillbaka", " hem,", " sen."]
    assert (carried[0].start_s, carried[0].end_s, carried[0].probability) == (0.0, 0.2, 0.9)
    assert (carried[1].start_s, carried[1].end_s) == (0.4, 0.6)  # "eh" dropped
    assert (carried[2].start_s, carried[2].end_s) == (0.6, 1.0)  # "till baka" merged: their span
    assert carried[2].probability == pytest.approx(0.6)
    assert (carried[3].start_s, carried[3].end_s) == (1.0, 1.4)  # "hem." -> "hem,"
    assert (carried[4].start_s, carried[4].end_s, carried[4].probability) == (1.4, 1.4, 0.0)  # added
    split = carry_word_times(raw[2:4], "å kte till")
    assert [(w.word, w.start_s, w.end_s) for w in split[:2]] == [(" å", 0.4, 0.5), (" kte", 0.5, 0.6)]
    assert carry_word_times((), "Vi åkte.") == () and carry_word_times(raw, "  ") == ()


def test_answer_that_drops_a_sentence_is_refused(loopback_bedrock: LoopbackBedrock, tmp_path: Path) -> None:
    def drops_a_sentence(segments: dict[str, str]) -> str:
        fixed = {k: fix_words(v) for k, v in segments.items()}
        fixed["2"] = "Sen gick vi hem."  # "det var kallt ute." is gone
        return json.dumps(fixed, ensure_ascii=False)

    loopback_bedrock.corrector = drops_a_sentence
    raw = write_outputs(transcript(), tmp_path / "talk", ("txt", "json"))
    result = correct_file(raw["json"], ("txt", "json"), config())
    assert result.status == "corrected"
    assert (result.segments_changed, result.segments_refused) == (2, 1)
    lines = (tmp_path / "talk.corrected.txt").read_text(encoding="utf-8").splitlines()
    assert lines[2] == RAW[2]  # kept raw
    assert lines[0] == "Vi åkte till Stockholm i går."


def test_answer_with_wrong_ids_keeps_the_piece_raw(loopback_bedrock: LoopbackBedrock) -> None:
    def loses_an_id_in_the_middle_piece(segments: dict[str, str]) -> str:
        if "1" in segments:
            return json.dumps({"0": "Bara ett."})
        return fixing_answer(segments)

    loopback_bedrock.corrector = loses_an_id_in_the_middle_piece
    result = correct_transcript(transcript(), config(piece_budget_tokens=5))  # one segment a piece
    assert result.status == "corrected"
    assert (result.pieces, result.pieces_kept_raw, result.segments_changed) == (3, 1, 2)
    assert result.texts == (fix_words(RAW[0]), RAW[1], fix_words(RAW[2]))
    assert result.notes[0].startswith("segments 1-1: kept raw") and "segment ids differ" in result.notes[0]


def test_every_answer_refused_writes_nothing(loopback_bedrock: LoopbackBedrock, tmp_path: Path) -> None:
    loopback_bedrock.corrector = lambda segments: "Sure! Here is the corrected text."
    raw = write_outputs(transcript(), tmp_path / "talk", ("txt", "json"))
    result = correct_file(raw["json"], ("txt", "json"), config())
    assert result.status == "failed" and "every answer was refused" in result.reason
    assert "not JSON" in result.reason
    assert result.input_tokens > 0  # paid for, and recorded
    assert not (tmp_path / "talk.corrected.txt").exists()


def test_throttling_is_retried_with_backoff(loopback_bedrock: LoopbackBedrock) -> None:
    loopback_bedrock.corrector = fixing_answer
    loopback_bedrock.fail("ThrottlingException", times=2)
    sleeps: list[float] = []
    result = correct_transcript(transcript(), config(sleep=sleeps.append))
    assert result.status == "corrected", result.reason
    assert len(loopback_bedrock.converse_requests()) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 0.02 for s in sleeps)
    assert result.segments_changed == 3


def test_throttling_that_never_ends_keeps_the_raw_transcript(loopback_bedrock: LoopbackBedrock) -> None:
    loopback_bedrock.fail("ServiceUnavailableException", times=10)
    result = correct_transcript(transcript(), config(converse_attempts=3, sleep=lambda s: None))
    assert result.status == "failed"
    assert "ServiceUnavailableException" in result.reason
    assert len(loopback_bedrock.converse_requests()) == 3


def test_outage_keeps_the_raw_transcript_with_a_reason(
    loopback_bedrock: LoopbackBedrock, tmp_path: Path
) -> None:
    loopback_bedrock.fail("InternalServerException", times=10)
    raw = write_outputs(transcript(), tmp_path / "talk", ("txt", "json"))
    result = correct_file(raw["json"], ("txt", "json"), config())
    assert result.status == "failed"
    assert "InternalServerException" in result.reason and "raw transcript kept" in result.reason
    assert len(loopback_bedrock.converse_requests()) == 1  # a server error is not retried
    assert result.outputs == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.json", "talk.txt"]


def test_nothing_listening_keeps_the_raw_transcript(
    loopback_bedrock: LoopbackBedrock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", f"http://127.0.0.1:{port}")
    raw = write_outputs(transcript(), tmp_path / "talk", ("txt", "json"))
    result = correct_file(raw["json"], ("txt", "json"), config())
    assert result.status == "failed"
    assert "EndpointConnectionError" in result.reason
    assert not (tmp_path / "talk.corrected.txt").exists()


def test_long_transcript_goes_in_pieces_with_context(loopback_bedrock: LoopbackBedrock) -> None:
    texts = tuple(f"det här är mening nummer {i} om stokholm" for i in range(30))
    loopback_bedrock.corrector = lambda segments: json.dumps(
        {k: v.replace("stokholm", "Stockholm") for k, v in segments.items()}, ensure_ascii=False
    )
    result = correct_transcript(transcript(texts), config(piece_budget_tokens=50, context_segments=1))
    calls = loopback_bedrock.converse_requests()
    assert result.pieces == len(calls) >= 8
    sent = sorted(int(k) for call in calls for k in call.segments)
    assert sent == list(range(30))  # every segment once
    for call in calls:
        ids = [int(k) for k in call.segments]
        document = call.document
        assert list(document["context_before"]) == ([str(ids[0] - 1)] if ids[0] > 0 else [])
        assert list(document["context_after"]) == ([str(ids[-1] + 1)] if ids[-1] < 29 else [])
        assert all(document["context_before"][k] == texts[int(k)] for k in document["context_before"])
    assert result.texts == tuple(t.replace("stokholm", "Stockholm") for t in texts)
    assert result.segments_changed == 30


def test_model_not_offered_in_the_region_is_skipped(loopback_bedrock: LoopbackBedrock) -> None:
    loopback_bedrock.model_status = None  # GetFoundationModel answers 404
    result = correct_transcript(transcript(), config())
    assert result.status == "skipped"
    assert "not offered in eu-north-1" in result.reason
    assert loopback_bedrock.converse_requests() == []


def test_model_offered_only_through_a_profile(loopback_bedrock: LoopbackBedrock) -> None:
    loopback_bedrock.model_kinds = ("INFERENCE_PROFILE",)
    result = correct_transcript(transcript(), config())
    assert result.status == "skipped" and "eu.anthropic" in result.reason
    # The inference profile's id passes the check and goes to Converse as given.
    result = correct_transcript(transcript(), config(model_id="eu." + MODEL_ID))
    assert result.status == "corrected"
    assert (
        loopback_bedrock.converse_requests()[0].path == f"/model/eu.{MODEL_ID.replace(':', '%3A')}/converse"
    )
    assert result.cost_usd is not None  # priced as its foundation model


def test_check_can_be_turned_off(loopback_bedrock: LoopbackBedrock) -> None:
    loopback_bedrock.model_status = None
    result = correct_transcript(transcript(), config(check_model=False))
    assert result.status == "corrected"
    assert [r.method for r in loopback_bedrock.received] == ["POST"]


def test_empty_transcript_is_skipped(loopback_bedrock: LoopbackBedrock) -> None:
    result = correct_transcript(transcript(()), config())
    assert result.status == "skipped" and loopback_bedrock.received == []


# --- run --local --correct ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (path / "config.json").exists():
        pytest.skip(f"no offline model at {path}: run `make offline-model`")
    if not SV_CLIP.exists():
        pytest.skip(f"no recording at {SV_CLIP}")
    return path


def test_run_local_correct_end_to_end(
    loopback_bedrock: LoopbackBedrock, model_dir: Path, tmp_path: Path
) -> None:
    def capitalise(segments: dict[str, str]) -> str:
        return json.dumps({k: v[:1].upper() + v[1:] for k, v in segments.items()}, ensure_ascii=False)

    loopback_bedrock.corrector = capitalise
    out = tmp_path / "out"
    env = dict(
        os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1", GPU_TRANSCRIBE_MODEL=str(model_dir)
    )
    env.pop("GPU_TRANSCRIBE_REGION", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpu_transcribe",
            "run",
            "--local",
            "--correct",
            "--device",
            "cpu",
            "--format",
            "txt,srt",
            "-o",
            str(out),
            str(SV_CLIP),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    stem = SV_CLIP.stem
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{stem}.{ext}" for ext in ("txt", "srt", "json", "corrected.txt", "corrected.srt", "corrected.json")
    )
    assert srt_times(out / f"{stem}.corrected.srt") == srt_times(out / f"{stem}.srt")
    raw_lines = (out / f"{stem}.txt").read_text(encoding="utf-8").splitlines()
    corrected_lines = (out / f"{stem}.corrected.txt").read_text(encoding="utf-8").splitlines()
    assert corrected_lines == [line[:1].upper() + line[1:] for line in raw_lines]
    assert str(out / f"{stem}.corrected.txt") in proc.stdout.splitlines()
    assert re.search(rf"corrected {stem}\.json with {re.escape(MODEL_ID)}: \d+ segments", proc.stderr)
    [call] = loopback_bedrock.converse_requests()
    assert list(call.segments.values()) == raw_lines


def test_run_corrects_after_the_pull_and_lists_the_corrected_files(
    loopback_bedrock: LoopbackBedrock, tmp_path: Path
) -> None:
    """``run`` / ``run --host``'s step (``run.host.correct_finished``): the corrected files join the file's
    outputs (so they are uploaded and listed) and the result is recorded; a file without JSON is skipped."""
    from types import SimpleNamespace

    from gpu_transcribe.run.host import RunState, correct_finished
    from gpu_transcribe.run.request import RunCallbacks

    loopback_bedrock.corrector = fixing_answer
    state = RunState()
    state.outputs[0] = write_outputs(transcript(), tmp_path / "a", ("txt", "json"))
    state.outputs[1] = write_outputs(transcript(), tmp_path / "b", ("txt",))
    steps: list[str] = []
    callbacks = RunCallbacks(on_progress=lambda event: steps.append(event.stage))
    correct_finished(config(), SimpleNamespace(formats=("txt", "json")), state, callbacks)  # type: ignore[arg-type]
    assert state.corrections[0].status == "corrected"
    assert state.outputs[0]["corrected.txt"] == tmp_path / "a.corrected.txt"
    assert state.outputs[0]["corrected.json"] == tmp_path / "a.corrected.json"
    assert state.corrections[1].status == "skipped" and "no JSON" in state.corrections[1].reason
    assert set(state.outputs[1]) == {"txt"}
    assert steps == ["correct"]
    correct_finished(None, SimpleNamespace(formats=("txt",)), RunState(), callbacks)  # type: ignore[arg-type]


def test_settings_feed_the_config(tmp_path: Path) -> None:
    from gpu_transcribe.errors import SettingsError
    from gpu_transcribe.settings import load_settings

    env = {"GPU_TRANSCRIBE_CORRECT_MAX_CHANGE_FRACTION": "0.5", "GPU_TRANSCRIBE_CORRECT_CONCURRENCY": "2"}
    settings = load_settings(env=env | {"GPU_TRANSCRIBE_REGION": "eu-west-1"}, config_files=[])
    cfg = CorrectionConfig.from_settings(settings)
    assert (cfg.model_id, cfg.region, cfg.max_change_fraction, cfg.concurrency) == (
        MODEL_ID,
        "eu-west-1",
        0.5,
        2,
    )
    settings = load_settings(env={"GPU_TRANSCRIBE_CORRECT_REGION": "us-east-1"}, config_files=[])
    assert CorrectionConfig.from_settings(settings).region == "us-east-1"
    for name, bad in [
        ("CORRECT_MAX_CHANGE_FRACTION", "1.5"),
        ("CORRECT_CONCURRENCY", "0"),
        ("CORRECT_MODEL_ID", "a b"),
    ]:
        with pytest.raises(SettingsError, match=name.lower()):
            load_settings(env={f"GPU_TRANSCRIBE_{name}": bad}, config_files=[])
