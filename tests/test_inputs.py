"""Finding audio among the paths a user gives: files, directories, and every kind of bad path."""

from __future__ import annotations

from pathlib import Path

from gpu_transcribe.run.inputs import collect_audio


def _write(path: Path, data: bytes = b"RIFF....") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_files_and_directories_expand_in_order_without_duplicates(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.mp3")
    _write(tmp_path / "dir" / "z.wav")
    _write(tmp_path / "dir" / "sub" / "b.FLAC")
    _write(tmp_path / "dir" / "notes.txt")
    got = collect_audio([str(a), str(tmp_path / "dir"), str(a)])
    assert [f.path.name for f in got.files] == ["a.mp3", "b.FLAC", "z.wav"]
    assert got.problems == ()
    assert all(f.size_bytes == 8 for f in got.files)


def test_each_bad_path_is_reported_and_the_good_ones_kept(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.wav")
    empty_file = _write(tmp_path / "empty.mp3", b"")
    empty_dir = tmp_path / "nothing-here"
    empty_dir.mkdir()
    _write(empty_dir / "readme.txt")
    missing = tmp_path / "missing.mp3"
    got = collect_audio([str(missing), str(good), str(empty_file), str(empty_dir)])
    assert [f.path for f in got.files] == [good.resolve()]
    messages = [str(p) for p in got.problems]
    assert len(messages) == 3
    assert str(missing) in messages[0] and "no such file" in messages[0]
    assert str(empty_file) in messages[1] and "empty (0 bytes)" in messages[1]
    assert str(empty_dir) in messages[2] and "no audio files" in messages[2]
    assert [p.path for p in got.problems] == [missing, empty_file, empty_dir]


def test_a_named_file_is_taken_whatever_its_suffix(tmp_path: Path) -> None:
    odd = _write(tmp_path / "recording.data")
    got = collect_audio([odd])
    assert [f.path for f in got.files] == [odd.resolve()]
