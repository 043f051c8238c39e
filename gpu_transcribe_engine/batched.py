"""The ``batched`` long-form algorithm: the speech Silero VAD finds is grouped into windows of at most
:data:`~gpu_transcribe_engine.decoding_rules.MAX_SPEECH_PER_WINDOW_S` cut at pauses
(:mod:`gpu_transcribe_engine.vad`), each window decoded once with OpenAI's temperature fallback, and the
windows of every request with the same language, task and beam size decoded in shared batches
(:mod:`gpu_transcribe_engine.whisper_model`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu_transcribe_engine import decoding_rules as rules
from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ
from gpu_transcribe_engine.device import CPU_BATCH_SIZE
from gpu_transcribe_engine.engine_core import (
    MODEL_FAILURES,
    EngineCore,
    cancelled_error,
    is_cancelled,
)
from gpu_transcribe_engine.engine_types import AudioRequest, BatchCallback, BatchInfo, Results
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Decoding, Segment

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("gpu_transcribe_engine.engine")


@dataclass
class Pending:
    """A ``batched`` request in :meth:`BatchedDecoding._pooled`: its windows, and what is decoded so far."""

    slot: int
    request: AudioRequest
    options: TranscribeOptions
    samples: np.ndarray
    windows: list[Any]
    language: str = ""
    by_window: dict[int, list[Segment]] = field(default_factory=dict)
    done_speech_s: float = 0.0
    fallback_windows: int = 0
    vad_probabilities: np.ndarray | None = None
    """Silero VAD's per-frame speech probabilities of :attr:`samples`, computed once per request."""
    tail_windows: int = 0
    """Windows whose tail was decoded once more (:meth:`BatchedDecoding._decode_tails`)."""
    failed: bool = False
    delivered: int = 0
    """Windows handed to ``request.on_segments`` so far (a prefix, in time order)."""
    language_s: dict[str, float] = field(default_factory=dict)
    """Seconds of windows with text per language they were decoded in."""
    stages_from: dict[str, float] = field(default_factory=dict)
    """The engine's :class:`~gpu_transcribe_engine.stages.StageClock` totals when its call began."""

    @property
    def duration_s(self) -> float:
        """The recording's duration in seconds."""
        return self.samples.shape[0] / SAMPLE_RATE_HZ

    @property
    def speech_s(self) -> float:
        """Seconds of audio inside its windows."""
        return sum(w.end_s - w.start_s for w in self.windows)


class BatchedDecoding(EngineCore):
    """The ``batched`` algorithm on the engine's model, over several requests at once (:meth:`_pooled`)."""

    def _pooled(
        self,
        pending: list[Pending],
        results: Results,
        started: float,
        on_batch: BatchCallback | None,
    ) -> None:
        """The ``batched`` algorithm over several requests: Silero VAD windows of at most
        :data:`~gpu_transcribe_engine.decoding_rules.MAX_SPEECH_PER_WINDOW_S`, each decoded once, in batches
        shared across requests.

        Windows are batched longest first, so a batch holds windows of similar length and few rows idle
        while the longest finishes (a batch decodes until its longest window ends); each request's
        segments are put back in time order. Fills ``results`` at each request's slot.
        """
        from gpu_transcribe_engine.vad import merge_into_windows, speech_probabilities, speech_timestamps

        # Requests share a batch only when every option the batch's decode reads is the same: the prompt
        # and word timing are read once per batch (from its first request), like language, task and beams.
        groups: dict[tuple[str, str, int, str, bool], list[Pending]] = {}
        clock = self.clock
        for item in pending:
            item.stages_from = clock.totals()
        for item in pending:
            request = item.request
            if self._stopis_cancelled(item, results):
                continue
            try:
                with clock.stage("vad"):
                    if item.samples.shape[0]:
                        item.vad_probabilities = speech_probabilities(item.samples)
                    speech = speech_timestamps(item.samples, probabilities=item.vad_probabilities)
                    item.windows = merge_into_windows(speech, max_window_s=rules.MAX_SPEECH_PER_WINDOW_S)
                if item.options.language == "auto" and item.windows:
                    item.language = "auto"  # detected per window (:meth:`_decode_windows`)
                else:
                    with clock.stage("language"):
                        item.language = self._window_language(item)
            except MODEL_FAILURES as exc:
                results[item.slot] = self._generation_error(exc, request.audio, item.options)
                continue
            if not item.windows:
                self._finish(item, results, started)
                continue
            opts = item.options
            key = (item.language, opts.task, opts.beam_size, opts.prompt or "", opts.word_timestamps)
            groups.setdefault(key, []).append(item)
        for (language, *_same), items in groups.items():
            rows = [(item, index) for item in items for index in range(len(item.windows))]
            rows.sort(
                key=lambda row: row[0].windows[row[1]].end_s - row[0].windows[row[1]].start_s, reverse=True
            )
            batch_size = min(item.options.batch_size or CPU_BATCH_SIZE for item in items)
            while rows:
                batch, rows = rows[:batch_size], rows[batch_size:]
                self._decode_batch(batch, language, results, started, on_batch)
                rows = [row for row in rows if not self._stopis_cancelled(row[0], results)]

    def _stopis_cancelled(self, item: Pending, results: Results) -> bool:
        """True when ``item`` failed or was cancelled; a newly cancelled one gets its error now, once."""
        if not item.failed and is_cancelled(item.request):
            item.failed = True
            results[item.slot] = cancelled_error(item.request)
        return item.failed

    def _window_language(self, item: Pending) -> str:
        """The language to decode ``item`` with: asked for, or detected from its longest window (from its
        first 30 s when VAD found no speech, as OpenAI's ``transcribe()`` detects it on the first window;
        ``""`` for audio under one 10 ms frame)."""
        if item.options.language != "auto":
            return item.options.language
        if item.windows:
            longest = max(item.windows, key=lambda w: w.end_s - w.start_s)
            piece = item.samples[longest.start_sample : longest.end_sample]
        else:
            piece = item.samples[: rules.FRAMES_PER_WINDOW * SAMPLE_RATE_HZ // 100]
            if piece.shape[0] < SAMPLE_RATE_HZ // 100:
                return ""
        return self._language(self._features([piece], full_windows=True)["input_features"], item.options)

    def _decode_batch(
        self,
        batch: list[tuple[Pending, int]],
        language: str,
        results: Results,
        started: float,
        on_batch: BatchCallback | None,
    ) -> None:
        """Decode one batch of (request, window index) rows; finish every request whose last window it held.

        A model failure fails every request with a window in the batch (their other windows are dropped).
        """
        windows = [item.windows[index] for item, index in batch]
        pieces = [
            item.samples[w.start_sample : w.end_sample] for (item, _), w in zip(batch, windows, strict=True)
        ]
        opts = batch[0][0].options
        frames = [piece.shape[0] // rules.HOP_LENGTH for piece in pieces]
        try:
            with self.clock.stage("features"):
                features = self._features(pieces, full_windows=True)["input_features"]
            decoded, fell_back, no_speech, alignments, languages = self._decode_windows(
                features, language, opts, frames
            )
            tails = self._decode_tails(batch, windows, decoded, languages, opts)
        except MODEL_FAILURES as exc:
            for item in {id(item): item for item, _ in batch}.values():
                item.failed = True
                results[item.slot] = self._generation_error(exc, item.request.audio, item.options)
            return
        if on_batch is not None:
            on_batch(BatchInfo(windows=len(batch), requests=len({id(item) for item, _ in batch})))
        touched: dict[int, Pending] = {}
        finished = zip(batch, windows, decoded, fell_back, no_speech, alignments, languages, strict=True)
        for row, ((item, index), window, result, fallback, no_speech_prob, alignment, code) in enumerate(
            finished
        ):
            previous_end_s = item.windows[index - 1].end_s if index > 0 else 0.0
            segments = self._window_segments(
                result, window.start_s, window.end_s, no_speech_prob, alignment, code, previous_end_s
            )
            if row in tails:
                tail, (tail_result, tail_fallback, tail_no_speech, tail_alignment, tail_code) = tails[row]
                # the main text ends at the tail's start: word timing may have stretched its last words
                # over the tail's audio, which the tail's own words now cover
                segments = [_ended_by(segment, tail.start_s) for segment in segments]
                segments += self._window_segments(
                    tail_result,
                    tail.start_s,
                    tail.end_s,
                    tail_no_speech,
                    tail_alignment,
                    tail_code,
                    segments[-1].end_s if segments else previous_end_s,
                )
                item.tail_windows += 1
                fallback = fallback or tail_fallback  # counted once per window
            item.by_window[index] = segments
            if result is not None:
                item.language_s[code] = item.language_s.get(code, 0.0) + window.end_s - window.start_s
            item.done_speech_s += window.end_s - window.start_s
            item.fallback_windows += int(fallback)
            touched[id(item)] = item
        for item in touched.values():
            self._deliver(item)
            progress = item.request.progress
            if len(item.by_window) == len(item.windows):
                self._finish(item, results, started)
            elif progress is not None:
                progress(
                    min(item.duration_s, item.duration_s * item.done_speech_s / item.speech_s),
                    item.duration_s,
                )

    def _decode_tails(
        self,
        batch: list[tuple[Pending, int]],
        windows: Sequence[Any],
        decoded: Sequence[Any],
        languages: Sequence[str],
        opts: TranscribeOptions,
    ) -> dict[int, tuple[Any, tuple[Any, bool, float, Any, str]]]:
        """Decode once more the tail of every window of the batch whose text closed with a timestamp at
        least :data:`~gpu_transcribe_engine.decoding_rules.TAIL_MIN_S` before its audio ended: from that
        timestamp to the window's end, each tail in its window's language (the tails of one language in one
        batch; :meth:`_decode_windows`, fallback and silence rules included; a tail's own tail is not
        decoded).

        Returns:
            Per batch row with a tail: the tail's :class:`~gpu_transcribe_engine.vad.SpeechWindow` and its
            ``(decoding, fell back, no-speech probability, alignment, language)``.
        """
        from gpu_transcribe_engine.vad import SpeechWindow
        from gpu_transcribe_engine.whisper_model import split_segments

        if rules.TAIL_MIN_S is None:
            return {}
        tails: dict[int, Any] = {}
        for row, (window, result) in enumerate(zip(windows, decoded, strict=True)):
            if result is None:
                continue
            segments = split_segments(result.tokens, self._timestamp_begin)
            covered_s = segments[-1][1] if segments else None
            if covered_s is None or window.end_s - window.start_s - covered_s < rules.TAIL_MIN_S:
                continue
            start = window.start_sample + round(covered_s * SAMPLE_RATE_HZ)
            tails[row] = SpeechWindow(start, window.end_sample)
        if not tails:
            return {}
        rows = list(tails)
        pieces = [batch[row][0].samples[tails[row].start_sample : tails[row].end_sample] for row in rows]
        frames = [piece.shape[0] // rules.HOP_LENGTH for piece in pieces]
        with self.clock.stage("features"):
            features = self._features(pieces, full_windows=True)["input_features"]
        decoded_tails: dict[int, Any] = {}
        for code in dict.fromkeys(languages[row] for row in rows):  # each tail in its window's language
            picked = [i for i, row in enumerate(rows) if languages[row] == code]
            kept, fell_back, no_speech, alignments, found = self._decode_windows(
                features[picked], code, opts, [frames[i] for i in picked]
            )
            for j, i in enumerate(picked):
                decoded_tails[rows[i]] = (
                    tails[rows[i]],
                    (kept[j], fell_back[j], no_speech[j], alignments[j], found[j]),
                )
        return decoded_tails

    def _deliver(self, item: Pending) -> None:
        """Hand ``item``'s decoded windows that follow the ones already handed, in time order, to its
        ``on_segments`` callback (see :data:`SegmentsCallback`)."""
        callback = item.request.on_segments
        while callback is not None and item.delivered in item.by_window:
            segments = item.by_window[item.delivered]
            item.delivered += 1
            if segments:
                try:
                    callback(list(segments))
                except Exception:  # a listener's failure must not fail the other requests of the call
                    logger.exception("%s: the on_segments callback failed", item.request.audio or "audio")

    def _finish(self, item: Pending, results: Results, started: float) -> None:
        """Put ``item``'s transcript (segments in time order) in its slot and report it complete."""
        if item.request.progress is not None:
            item.request.progress(item.duration_s, item.duration_s)
        segments = [segment for index in range(len(item.windows)) for segment in item.by_window[index]]
        if item.options.word_timestamps and segments:
            from gpu_transcribe_engine.vad import WORD_VAD, speech_timestamps
            from gpu_transcribe_engine.words import snap_starts_to_speech

            with self.clock.stage("align"):
                speech = [
                    (start / SAMPLE_RATE_HZ, end / SAMPLE_RATE_HZ)
                    for start, end in speech_timestamps(item.samples, WORD_VAD, item.vad_probabilities)
                ]
                segments = snap_starts_to_speech(segments, speech)
        extra = {
            "windows": len(item.windows),
            "fallback_windows": item.fallback_windows,
            "tail_windows": item.tail_windows,
            "stages_s": self.clock.since(item.stages_from),
        }
        language = item.language
        if language == "auto":  # detected per window: the transcript's is the one of most speech
            language = max(item.language_s, key=lambda code: item.language_s[code], default="")
        language = language or self._fixed_language(item.options)
        results[item.slot] = self._transcript(item.request, item.options, segments, language, started, extra)

    def _decode_windows(
        self, features: torch.Tensor, language: str, opts: TranscribeOptions, frames: Sequence[int]
    ) -> tuple[list[Any], list[bool], list[float], list[Any], list[str]]:
        """Decode a batch of windows with OpenAI's temperature fallback, per window.

        The encoder runs once over the batch; one decoder step after ``<|startoftranscript|>`` gives each
        window's ``<|nospeech|>`` probability and, for ``language == "auto"``, its language (the most
        probable language token, OpenAI's ``detect_language``), so a recording that changes language is
        decoded window by window in each window's own language. The windows are then decoded together,
        each with its own language token in its prompt (:meth:`_decode_with_fallback`).

        Args:
            features: ``(windows, n_mels, 3000)`` log-mel inputs.
            language: language code to decode with, or ``auto`` to detect it per window.
            opts: the resolved options.
            frames: per window, the log-mel frames holding its audio (the rest is padding).

        Returns:
            Per window, the kept :class:`gpu_transcribe_engine.whisper_model.Decoded` (or ``None`` for
            silence), whether it needed a temperature fallback, its ``<|nospeech|>`` probability, its
            alignment (``None`` without word timestamps) and the language it was decoded in.
        """
        decoder = self.decoder
        clock = self.clock
        count = features.shape[0]
        with clock.stage("encoder"):
            encoder_output = decoder.encode(features)
            cross = decoder.cross_cache(encoder_output)
        with clock.stage("decoder"):
            no_speech, detected = decoder.first_step(encoder_output, cross)
        languages = detected if language == "auto" else [language] * count
        kept, fell_back, alignments = self._decode_with_fallback(
            encoder_output, cross, languages, opts, frames, no_speech
        )
        return kept, fell_back, no_speech, alignments, languages

    def _decode_with_fallback(
        self,
        encoder_output: torch.Tensor,
        cross: Any,
        languages: Sequence[str],
        opts: TranscribeOptions,
        frames: Sequence[int],
        no_speech: Sequence[float],
    ) -> tuple[list[Any], list[bool], list[Any]]:
        """Decode windows, each in its language (``languages``, one per window), with the temperature
        fallback of ``rules.FALLBACK``.

        Each window is decoded with beam search at temperature 0. With ``rules.FALLBACK == "all"`` (OpenAI's
        rule) a window whose text is too repetitive (compression ratio above
        ``rules.COMPRESSION_RATIO_THRESHOLD``) or too unsure (average log-probability below
        ``rules.LOGPROB_THRESHOLD``) is decoded again by sampling at the next temperature of
        ``rules.TEMPERATURES``, alone with the others that failed (of a round's samples, the most probable
        that is not a loop is kept, ``rules.SAMPLES_SKIP_LOOPS``); with ``loops`` only a repetitive one;
        with ``never`` none. A window that is unsure and probably silent (no-speech probability above
        ``rules.NO_SPEECH_THRESHOLD``) is not retried and gives no text (``rules``:
        :mod:`gpu_transcribe_engine.decoding_rules`). When every temperature fails, the attempt with the
        highest average log-probability among those under the compression threshold is kept
        (faster-whisper's rule; OpenAI keeps the last).

        With ``opts.word_timestamps`` the kept texts are then aligned to the audio in one more batched
        decoder pass over the same encoder output
        (:meth:`gpu_transcribe_engine.whisper_model.WindowDecoder.align`).

        Returns:
            Three lists, one entry per window: the kept decoding (``None`` for silence), whether it fell
            back, its alignment (``None`` without word timestamps).
        """
        decoder = self.decoder
        clock = self.clock
        count = encoder_output.shape[0]
        previous = self._prompt_tokens(opts)
        prompts = {code: decoder.prompt(code, opts.task, previous) for code in set(languages)}
        attempts: list[list[Any]] = [[] for _ in range(count)]
        pending = list(range(count))
        kept: list[Any] = [None] * count
        temperatures = rules.TEMPERATURES if rules.FALLBACK != "never" else rules.TEMPERATURES[:1]
        loop_threshold = rules.COMPRESSION_RATIO_THRESHOLD if rules.STOP_LOOPS else None
        sampling_threshold = rules.SAMPLING_LOOP_THRESHOLD if rules.STOP_LOOPS else None
        for temperature in temperatures:
            rows = pending if len(pending) < count else None
            with clock.stage("decoder" if temperature == rules.TEMPERATURES[0] else "fallback"):
                results = decoder.decode(
                    encoder_output if rows is None else encoder_output[rows],
                    [prompts[languages[window]] for window in pending],
                    num_beams=opts.beam_size,
                    temperature=temperature,
                    max_new_tokens=rules.MAX_NEW_TOKENS,
                    best_of=opts.beam_size,
                    cross=cross if rows is None else decoder.select(cross, rows),
                    loop_threshold=loop_threshold if temperature == 0.0 else sampling_threshold,
                    loop_min_tokens=0 if temperature == 0.0 else rules.SAMPLING_LOOP_MIN_TOKENS,
                    loop_rank_threshold=rules.COMPRESSION_RATIO_THRESHOLD
                    if rules.SAMPLES_SKIP_LOOPS
                    else None,
                )
            still: list[int] = []
            for window, result in zip(pending, results, strict=True):
                attempts[window].append(result)
                unsure = result.avg_logprob < rules.LOGPROB_THRESHOLD
                if unsure and no_speech[window] > rules.NO_SPEECH_THRESHOLD:
                    kept[window] = None  # silence: no text, no retry
                elif result.compression_ratio > rules.COMPRESSION_RATIO_THRESHOLD or (
                    unsure and rules.FALLBACK == "all"
                ):
                    still.append(window)
                else:
                    kept[window] = result
            pending = still
            if not pending:
                break
        from gpu_transcribe_engine.whisper_model import best_sample

        for window in pending:  # every temperature failed: the most probable attempt that is not a loop
            kept[window] = best_sample(attempts[window], rules.COMPRESSION_RATIO_THRESHOLD)
        alignments: list[Any] = [None] * count
        if opts.word_timestamps:
            texts = [[t for t in d.tokens if t < decoder.eos_id] if d is not None else [] for d in kept]
            for code in dict.fromkeys(languages):  # the alignment pass takes one start sequence
                sot = decoder.prompt(code, opts.task)
                only = [[] if languages[w] != code else texts[w] for w in range(count)]
                with clock.stage("align"):
                    aligned = decoder.align(encoder_output, cross, sot, only, frames)
                for window in range(count):
                    if languages[window] == code:
                        alignments[window] = aligned[window]
        return kept, [len(tries) > 1 for tries in attempts], alignments

    def _window_segments(
        self,
        decoded: Any,
        start_s: float,
        end_s: float,
        no_speech_prob: float,
        alignment: Any = None,
        language: str = "",
        previous_end_s: float = 0.0,
    ) -> list[Segment]:
        """Segments of one decoded window, times offset by its start and kept inside it; each carries the
        window's decode statistics and its own tokens (:class:`~gpu_transcribe_engine.transcript.Decoding`).

        With an ``alignment`` (:meth:`gpu_transcribe_engine.whisper_model.WindowDecoder.align`) each segment
        gets its words
        (:func:`gpu_transcribe_engine.words.add_words_to_segments`); ``previous_end_s`` is where the previous
        window's
        audio ended (for OpenAI's rule on the first word after a pause).
        """
        from gpu_transcribe_engine.whisper_model import split_segments

        if decoded is None:
            return []
        tokenizer = self.processor.tokenizer
        eos_id = self.decoder.eos_id
        out: list[Segment] = []
        token_lists: list[list[int]] = []
        for rel_start, rel_end, tokens in split_segments(decoded.tokens, self._timestamp_begin):
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            seg_start = min(start_s + rel_start, end_s)
            seg_end = end_s if rel_end is None else min(start_s + rel_end, end_s)
            decoding = Decoding(
                tokens=tuple(int(t) for t in tokens),
                temperature=float(decoded.temperature),
                avg_logprob=float(decoded.avg_logprob),
                compression_ratio=float(decoded.compression_ratio),
                no_speech_prob=float(no_speech_prob),
            )
            out.append(Segment(seg_start, max(seg_start, seg_end), text, decoding=decoding))
            token_lists.append([t for t in tokens if t < eos_id])
        if alignment is not None:
            from gpu_transcribe_engine.words import add_words_to_segments, word_timings

            matrix, probs = alignment
            texts = [t for tokens in token_lists for t in tokens]
            timings = word_timings(matrix, texts, probs, language, self._decode_raw, eos_id)
            out = add_words_to_segments(out, token_lists, timings, start_s, previous_end_s)
        return [segment for segment in out if segment.text]


def _ended_by(segment: Segment, end_s: float) -> Segment:
    """``segment`` with its end, and its words' starts and ends, at most ``end_s`` (seconds)."""
    if segment.end_s <= end_s and all(word.end_s <= end_s for word in segment.words):
        return segment
    words = tuple(
        replace(word, start_s=min(word.start_s, end_s), end_s=min(word.end_s, end_s))
        for word in segment.words
    )
    start_s = min(segment.start_s, end_s)
    return replace(segment, start_s=start_s, end_s=max(start_s, min(segment.end_s, end_s)), words=words)
