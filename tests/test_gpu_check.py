"""``bench/gpu_check.py``: what a call to the lent GPU machine can carry is split and joined back intact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import gpu_check


def test_carry_groups_hold_every_file_once_within_the_limit() -> None:
    sizes = {"a": 40, "b": 30, "c": 25, "d": 20, "e": 5, "f": 1}
    groups = gpu_check.carry_groups(sizes, limit_bytes=50)
    assert sorted(path for group in groups for path in group) == sorted(sizes)
    assert all(sum(sizes[path] for path in group) <= 50 for group in groups)
    assert len(groups) == 3  # 121 bytes cannot go in two groups of 50
    with pytest.raises(ValueError, match=r"^big: 51 bytes, more than a call carries"):
        gpu_check.carry_groups({"big": 51}, limit_bytes=50)


def test_a_file_split_for_carrying_is_joined_back_byte_for_byte(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    whole = tmp_path / "model" / "model.safetensors"
    whole.parent.mkdir()
    whole.write_bytes(data)
    pieces = gpu_check.split_file(whole, limit_bytes=3_000)
    assert [p.name for p in pieces] == [f"model.safetensors.part-0{i}-of-04" for i in range(4)]
    assert not whole.exists() and all(p.stat().st_size <= 3_000 for p in pieces)
    assert gpu_check.join_parts(tmp_path) == [whole]
    assert whole.read_bytes() == data and not list(tmp_path.rglob("*.part-*"))


@pytest.mark.parametrize("missing", [1, 2])
def test_a_missing_piece_is_named_instead_of_joining_a_broken_file(tmp_path: Path, missing: int) -> None:
    whole = tmp_path / "w.bin"
    whole.write_bytes(b"x" * 10)
    pieces = gpu_check.split_file(whole, limit_bytes=4)
    pieces[missing].unlink()
    kept = [n for n in range(3) if n != missing]
    with pytest.raises(ValueError, match=rf"w\.bin: pieces \[{kept[0]}, {kept[1]}\] of 3 staged"):
        gpu_check.join_parts(tmp_path)
    assert not whole.exists()


def test_the_carried_wheels_are_the_lock_files_versions() -> None:
    lock = Path(__file__).parents[1] / "requirements" / "cpu.lock"
    versions = {name: gpu_check.locked_version(name, lock) for name in gpu_check.WHEELS}
    assert versions["transformers"].startswith("5.24.")  # the fast path's tested release
    with pytest.raises(KeyError, match="no-such-package is not pinned"):
        gpu_check.locked_version("no-such-package", lock)


def test_prepare_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """``--out`` naming a folder of other files: refused in one line, the files kept."""
    recording = Path(__file__).parents[1] / "recordings" / "en_jfk.flac"
    kept = tmp_path / "notes.txt"
    kept.write_text("mine", encoding="utf-8")
    assert gpu_check.main(["prepare", "--out", str(tmp_path), "--audio", str(recording)]) == 2
    assert kept.read_text(encoding="utf-8") == "mine"


def test_staging_nothing_or_running_unstaged_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_check, "STAGE_DIR", tmp_path / "stage")
    assert gpu_check.main(["stage", str(tmp_path / "not-carried")]) == 2
    assert "not-carried: no files here; name it in the call's carry" in capsys.readouterr().err
    assert gpu_check.main(["run", "--device", "cpu"]) == 2
    assert "audio.npy not staged; stage every carry group first" in capsys.readouterr().err
