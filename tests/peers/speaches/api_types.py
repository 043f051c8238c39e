# Excerpt of speaches-ai/speaches, commit 870e1e16a73452496e99d49f759eabd692a8e0e0, src/speaches/api_types.py:
# the names the vendored tests import, verbatim. MIT License, Copyright (c) 2024 Fedir Zadniprovskyi: see
# LICENSE in this folder.
from typing import Literal

# https://github.com/openai/openai-openapi/blob/master/openapi.yaml#L10909
TimestampGranularities = list[Literal["segment", "word"]]


DEFAULT_TIMESTAMP_GRANULARITIES: TimestampGranularities = ["segment"]
TIMESTAMP_GRANULARITIES_COMBINATIONS: list[TimestampGranularities] = [
    [],  # should be treated as ["segment"]. https://platform.openai.com/docs/api-reference/audio/createTranscription#audio-createtranscription-timestamp_granularities
    ["segment"],
    ["word"],
    ["word", "segment"],
    ["segment", "word"],  # same as ["word", "segment"] but order is different
]
