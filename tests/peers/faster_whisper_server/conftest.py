# Adapted from fedirz/faster-whisper-server, commit 2ea974d7e48ebaed05e9d31285c46cb0d8699ca7,
# tests/conftest.py. MIT License, Copyright (c) 2024 Fedir Zadniprovskyi: see LICENSE in this folder.
# Its fixtures are speaches' (the same project, renamed), adapted once for both in
# tests/peers/upstream_fixtures.py (what changed, and why, is written there and in tests/peers/README.md).
from tests.peers.upstream_fixtures import (  # noqa: F401 (pytest registers imported fixtures)
    OPENAI_BASE_URL,
    TIMEOUT,
    AclientFactory,
    _in_audio_dir,
    aclient,
    aclient_factory,
    actual_openai_client,
    dynamic_openai_client,
    openai_client,
)
