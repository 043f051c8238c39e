"""The real speech the peers' tests send in place of their placeholders (``tests/peers/README.md``)."""

from __future__ import annotations

from bench.fixtures import clip_path

PEER_CLIP = "en_mfa_thoughts.flac"
"""3.6 s of spontaneous English ("I have a thousand thoughts about that thing."): one short Whisper window,
so each of the peers' ~80 requests costs about a second on two CPU cores."""
EXAMPLE_DATA: bytes = clip_path(PEER_CLIP).read_bytes()
""":data:`PEER_CLIP`'s bytes: openai-python's tests send them where they send ``b"Example data"``."""
