"""Tests of :class:`gpu_transcribe.ssh.channel.LineReader`, fed by a fake ``recv``, and of the rule that
only ``gpu_transcribe/ssh/`` imports paramiko."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from gpu_transcribe.ssh import channel


def chunks(*parts: bytes) -> Callable[[int], bytes]:
    """A ``recv`` that returns ``parts`` one by one (cut to the size asked), then ``b""``."""
    queue = list(parts)

    def recv(size: int) -> bytes:
        if not queue:
            return b""
        part = queue.pop(0)
        if len(part) > size:
            queue.insert(0, part[size:])
        return part[:size]

    return recv


def test_line_reader_splits_lines_across_chunks() -> None:
    reader = channel.LineReader(chunks(b"a", b"b\r\nc", b"\n\nd\xff", b"e"))
    assert list(reader) == ["ab", "c", "", "d\ufffde"]
    assert reader.readline() is None
    assert list(channel.LineReader(chunks())) == []
    assert list(channel.LineReader(chunks(b"x\n"))) == ["x"]


def test_line_reader_hands_over_the_bytes_after_a_line() -> None:
    reader = channel.LineReader(chunks(b"12\nab\ncd", b"more"), chunk_bytes=7)
    assert reader.readline() == "12"
    assert reader.take_rest() == b"ab\nc"  # what the first receive brought beyond the line
    assert reader.readline() == "dmore"


def test_line_reader_bounds_long_lines() -> None:
    endless = [b"y" * 100] * 50 + [b"z" * 7 + b"\nshort\n"]
    reader = channel.LineReader(chunks(b"x" * 30 + b"\n", *endless), chunk_bytes=100, max_line_chars=10)
    assert list(reader) == ["x" * 10, "y" * 10, "short"]
    assert len(reader._buffer) <= 100 + 10


def test_only_the_ssh_package_imports_paramiko() -> None:
    root = Path(__file__).resolve().parents[1]
    importers = set()
    for path in [
        *(root / "gpu_transcribe").rglob("*.py"),
        *(root / "gpu_transcribe_engine").rglob("*.py"),
        *(root / "gpu_transcribe_api").rglob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] == "paramiko" for name in names):
                importers.add(path.relative_to(root).parent.as_posix())
    assert importers == {"gpu_transcribe/ssh"}
