"""Correction of a finished transcript by a language model on Amazon Bedrock (``run --correct``, the
pipeline's optional stage). Orchestration only: no printing; Bedrock is reached through
:mod:`gpu_transcribe.aws.bedrock`.

Modules:

- :mod:`~gpu_transcribe.correct.config`: ``CorrectionConfig`` (model, region, rails, prices) and
  ``CorrectionResult`` (what a job records);
- :mod:`~gpu_transcribe.correct.prompt`: pieces, the system prompt, the user message, the strict parse of
  the answer (rules 1 to 3 below);
- :mod:`~gpu_transcribe.correct.rail`: the safety rail (rule 4);
- :mod:`~gpu_transcribe.correct.correct`: the Converse calls and their tally, ``correct_file`` and
  ``correct_outputs`` (rules 5 and 6);
- :mod:`~gpu_transcribe.correct.files`: the raw ``.json`` read back, the corrected files written.

The flow for one transcript:

1. **Pieces.** The segments are cut, in order, into pieces whose text fits a budget of approximate tokens
   (``approx_tokens``: characters / ``CHARS_PER_TOKEN``, rounded up; the rule is deliberately pessimistic so
   that a piece and its answer fit the model's limits). A segment larger than the budget is a piece of its
   own. Each piece is sent with ``CorrectionConfig.context_segments`` neighbouring segments on each side as
   read-only context.
2. **Prompt.** A system prompt in the transcript's language (Swedish or English; other languages get the
   English prompt naming the language) asks to fix spelling, names, capitalisation and punctuation and never
   to add, drop, merge, split or reorder content, and to answer with only a JSON object mapping each segment
   id of the piece to its corrected text, the same ids in the same order.
3. **Parse.** An answer that is not that object (bad JSON, an id missing, added or out of order, a value that
   is not a string) leaves the whole piece raw, counted in ``CorrectionResult.pieces_kept_raw``.
4. **Safety rail.** A corrected segment is kept raw, counted in ``CorrectionResult.segments_refused``, when
   it is empty, or when its word edit distance from the raw segment (``word_edit_distance`` on ``words``:
   case-folded, punctuation at word edges removed, so punctuation and capitalisation fixes do not count)
   exceeds ``max_change_fraction`` of the raw segment's words, with a floor of one word (so a single misspelt
   word in a one-word segment may be fixed).
5. **Calls.** At most ``concurrency`` Converse calls at once (a thread pool); throttling is retried by
   :func:`~gpu_transcribe.aws.bedrock.converse`. After any other Bedrock error, pieces not yet sent are not
   sent (they stay raw): the error would repeat.
6. **Result.** Tokens and cost (``PRICES_USD_PER_1K_TOKENS``) are recorded. When no piece could be corrected
   (Bedrock failed, or every answer was refused), the status is ``failed`` with the reason, and nothing is
   written: the raw transcript stands alone and the run still succeeds. Otherwise the corrected transcript is
   written beside the raw one as ``<stem>.corrected.<fmt>`` through
   :func:`gpu_transcribe_engine.writers.write_outputs` (the same renderers, so the same segment times, and
   atomic files), never instead of it.
"""
