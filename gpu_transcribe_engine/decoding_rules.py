"""OpenAI's decoding rules and Whisper's fixed sizes, shared by the two long-form algorithms
(:mod:`gpu_transcribe_engine.batched`, :mod:`gpu_transcribe_engine.sequential`) and the engine.

The algorithms read these as ``rules.NAME`` at call time, so a test can change one for a run.
"""

from __future__ import annotations

TEMPERATURES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Temperature fallback schedule of OpenAI's ``transcribe()`` (Radford et al. 2022, section 4.5)."""
COMPRESSION_RATIO_THRESHOLD = 2.4
"""OpenAI's (and faster-whisper's) threshold on the zlib compression ratio of a window's decoded text;
above it the decoding counts as a repetition loop and is redone hotter (``batched``; the ratio is computed
on the text as OpenAI does, :func:`gpu_transcribe_engine.logits_rules.compression_ratio`)."""
TOKEN_COMPRESSION_RATIO_THRESHOLD = 1.35
"""The ``sequential`` algorithm's threshold: transformers' ``generate`` computes the compression ratio on
the token ids (2 bytes each), for which its documentation gives 1.35 as the equivalent of OpenAI's 2.4."""
FALLBACK = "all"
"""Which windows are decoded again at the next temperature: ``all`` (OpenAI's rule: a repetition loop or
an unsure decoding), ``loops`` (only a repetition loop) or ``never`` (temperature 0 only, as faster-whisper's
batched pipeline). Measured with ``bench/engine.py``'s corpus (whisper-base, 2 CPU cores; fallback samples
then ended by a loop at 40 tokens, see :data:`SAMPLING_LOOP_MIN_TOKENS`), word error rate
``all`` / ``loops`` / ``never``: disfluent English 0.317 / 0.317 / 0.381, the Swedish-English-Spanish
recording decoded as Swedish 0.530 / 0.649 / 0.649 (its fallbacks were unsure windows, not loops), English
under music 0.340 for all three; the other three recordings had no window fall back. ``all`` is kept: it
is the only rule that never lost accuracy, and :data:`STOP_LOOPS` removes most of what a loop cost.

Each fallback round draws as many samples per window as the beam size (OpenAI's ``best_of``, 5 by
default) and keeps the most probable. Fewer were measured (whisper-base, 2 CPU cores, seeds 0-7 or 0-3
of :data:`SAMPLING_SEED`, mean word error rate and fallback seconds, 5 against 3 samples): the disfluent
corpus recording 0.270 / 9.0 s against 0.264 / 4.6 s (2 samples: 0.276 / 6.0 s); the mixed-language one
0.329 / 4.4 s against 0.330 / 3.5 s; then on three recordings assembled from the same clips in other
orders (not the benchmark's files): disfluent 0.245 / 8.2 s against 0.251 / 6.1 s, disfluent under music
0.242 / 0.5 s against 0.239 / 1.0 s, mixed-language 0.348 / 15.9 s against 0.354 / 18.1 s. The same
accuracy within the seeds' spread, and time saved only on the files it was first tried on, so the
number of samples stays OpenAI's.

Sampling all later temperatures of a falling-back window in one ``generate`` (25 rows for 5 temperatures,
keeping the first that passes, OpenAI's decision) was measured too, seeds 0-2, mean fallback seconds one
round a temperature against all at once: disfluent corpus recording 9.4 against 13.7, mixed-language 5.1
against 5.2, the reordered disfluent one 9.3 against 3.6 and the reordered mixed-language one 16.2 against
11.3 s. All at once pays every round's longest row (high-temperature samples rarely end before
:data:`MAX_NEW_TOKENS`) even where 0.2 passes, so it is not used."""
SAMPLES_SKIP_LOOPS = True
"""In a fallback round, a sample whose text is a repetition loop (compression ratio above
:data:`COMPRESSION_RATIO_THRESHOLD`) ranks below every sample that is not, whatever their average
log-probabilities; OpenAI's ``best_of`` keeps the most probable sample, and a loop is often the most
probable, so the round failed on it and the window went on to a hotter temperature although a sample of
this one passed. Measured (whisper-base, 2 CPU cores, seeds 0-2, mean fallback seconds and word error
rate, OpenAI's rank against this one): corpus disfluent 7.3 s / 0.282 against 4.6 s / 0.270, corpus
mixed-language 4.1 s / 0.328 against 2.8 s / 0.333; and on the corpus rebuilt with ``--seed-offset 1000``
(the same clips in other orders, recordings no rule was tried on before): telephone 4.4 s / 0.322 against
2.1 s / 0.322, mixed-language 13.9 s / 0.358 against 7.9 s / 0.340, disfluent 8.0 s / 0.242 against
4.0 s / 0.239. About half the fallback time, the same accuracy within the seeds' spread."""
STOP_LOOPS = True
"""End a window's beam search (temperature 0) as soon as its text exceeds ``COMPRESSION_RATIO_THRESHOLD``
rather than at ``MAX_NEW_TOKENS`` (:class:`gpu_transcribe_engine.logits_rules.LoopStop`); the window
then falls back as it would have at the end. Disfluent English corpus recording: decoding at temperature
0 took 8.0 s instead of 21.1 s, word error rate 0.288 both ways. ``False`` turns off this and
:data:`SAMPLING_LOOP_THRESHOLD`."""
SAMPLING_LOOP_THRESHOLD: float | None = COMPRESSION_RATIO_THRESHOLD
"""The same early end for the fallback's sampling, with ``None`` to let samples run to their end; applied
only once a sample has :data:`SAMPLING_LOOP_MIN_TOKENS` tokens."""
SAMPLING_LOOP_MIN_TOKENS = 96
"""Tokens a fallback sample has before a loop ends it (about 350 characters). Disfluent English corpus
recording, word error rate and fallback seconds by this minimum: 40 tokens 0.317 (8.4 s), 64 0.282 (9.7 s),
96 0.272 (13.3 s), 128 0.308 (16.2 s), never stopped 0.288 (25.5 s); English under music and the
mixed-language recording were the same for every value. Sampled speech that repeats itself for a while
("no, no, no, I mean") and then goes on is cut at 40 tokens; from 64 on, the differences are those of
the sampling of two windows (noise), and 96 keeps the middle."""
LOGPROB_THRESHOLD = -1.0
"""OpenAI's threshold on the average token log-probability; below it a window is decoded again."""
NO_SPEECH_THRESHOLD = 0.6
"""OpenAI's threshold on the ``<|nospeech|>`` probability; above it (and below the log-prob threshold)
a window is skipped as silence."""

SAMPLING_SEED = 0
"""Seed of the sampling in temperature-fallback rounds, so transcripts are reproducible. Where windows fall
back, the seed moves the word error rate: the disfluent English corpus recording (whisper-base, 3 of 9
windows falling back) gave 0.240-0.288 over seeds 0-7 (mean 0.270) and its fallback took 4.1-11.6 s; a
figure from one seed on such a recording is one draw."""
MAX_NEW_TOKENS = 220
"""Tokens generated per 30 s window at most. OpenAI's decoder stops at 224 (``n_text_ctx // 2``); 220 keeps
prompt (at most 223 previous tokens + 3 start tokens) plus new tokens within Whisper's 448 positions, which
transformers enforces. A loop on silence then stops after 220 tokens, not 448 (transformers' default)."""

MAX_SPEECH_PER_WINDOW_S = 29.0
"""Speech put in one 30 s Whisper window by the ``batched`` algorithm at most, so at least 1 s of silence
follows it. Decoded once, a window filled to 29.8 s lost its last words ("...behind the curtain on", without
"the left", on the long English test file): Whisper ends its output before speech that touches the end of
its input. 28 s windows fixed that but cut the dense English file more often inside sentences (word error
rate 0.096 against 0.063 with 30 s); 29 s gave 0.064 there and kept the long test file within 2 points
of clip by clip (0.079 vs 0.086). Measured with whisper-base, beam 5, bfloat16, 2 CPU cores."""
TAIL_MIN_S: float | None = 1.0
"""A ``batched`` window whose decoded text closes with a timestamp at least this many seconds before the
window's audio ends is decoded once more from that timestamp to its end (its tail), in one batch with the
other tails of its batch in its language: Whisper sometimes ends its output early, and the words after it
would be lost. This departs from OpenAI's ``transcribe()``, which goes on from the last timestamp only when
the output ends inside a segment and otherwise takes the rest of the window for silence; the batched
algorithm decodes each window once, so without tails such words were lost. ``None`` turns tails off.
Measured with ``bench/engine.py``'s corpus (whisper-base, 2 CPU cores), word error rate without / with
tails: dense English 0.065 / 0.058 (the lost "acclaimed Shakespeare's genius", ``tests/test_engine.py``),
disfluent 0.272 / 0.247, English under music 0.340 / 0.298, Swedish-English-Spanish 0.428 / 0.329 (one
window had stopped after 5 s of 23 s), Swedish unchanged; time +0-27 %. 1 s: the shortest tail seen that
held words (1.95 s, dense English) with margin; shorter gaps are the padding after the last word. A tail
starts at the main text's last timestamp, so it could repeat the main text's last words; on the corpus none
did (9 tails on the six recordings: 3 empty, 6 starting with the next sentence), so there is no overlap
rule."""
HOP_LENGTH = 160
"""Audio samples per log-mel frame (10 ms at 16 kHz)."""
FRAMES_PER_WINDOW = 3000
"""Log-mel frames (10 ms each) in one Whisper input of 30 s."""
SECONDS_PER_FRAME = 0.01
"""Seconds per log-mel frame."""
