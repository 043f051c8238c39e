# Excerpt of speaches-ai/speaches, commit 870e1e16a73452496e99d49f759eabd692a8e0e0, src/speaches/routers/stt.py:
# the name the vendored tests import, verbatim. MIT License, Copyright (c) 2024 Fedir Zadniprovskyi: see
# LICENSE in this folder.
RESPONSE_FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
