"""``python -m gpu_transcribe_engine transcribe`` as a subprocess: JSON-lines events, exit codes, outputs on
disk.

One real run (whisper-base on CPU) on two Swedish recordings and a text file named ``.mp3``; the fatal
paths (bad option, unusable ``--out``, missing model) need no model at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.fixtures import REPO_ROOT, SWEDISH_CLIPS, clip_path, find_test_model
from gpu_transcribe_engine.device import default_dtype
from gpu_transcribe_engine.protocol import EVENTS, EXIT_FATAL, EXIT_SOME_FAILED, parse_line


def run_engine(*args: str, timeout_s: float = 300) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``python -m gpu_transcribe_engine`` from the repository root; return (exit code, events,
    stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_transcribe_engine", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    events = []
    for line in proc.stdout.splitlines():
        event = parse_line(line)
        assert event is not None, (
            f"stdout line is not a protocol event: {line!r}\nstderr: {proc.stderr[-2000:]}"
        )
        events.append(event)
    return proc.returncode, events, proc.stderr


@pytest.mark.slow
def test_two_good_files_and_one_bad(tmp_path: Path) -> None:
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    bad = tmp_path / "in" / "minutes.mp3"
    bad.parent.mkdir()
    bad.write_text("Protokoll från mötet.\n", encoding="utf-8")
    good = [str(clip_path(SWEDISH_CLIPS[1])), str(clip_path(SWEDISH_CLIPS[2]))]
    out = tmp_path / "out"
    code, events, stderr = run_engine(
        "transcribe",
        good[0],
        str(bad),
        good[1],
        "--out",
        str(out),
        "--model",
        str(model),
        "--format",
        "txt,json,srt,vtt",
        "--device",
        "cpu",
    )
    assert code == EXIT_SOME_FAILED, stderr[-2000:]
    names = [e["event"] for e in events]
    assert all(name in EVENTS for name in names)
    assert names[0] == "model_loaded" and names[-1] == "all_done"
    loaded = events[0]
    assert (loaded["device"], loaded["dtype"], loaded["algorithm"], loaded["batch_size"]) == (
        "cpu",
        default_dtype("cpu"),
        "batched",
        8,
    )
    assert loaded["model"] == str(model) and loaded["load_s"] > 0
    # Per file: started, progress..., then done or failed; files in order.
    per_file = [[e for e in events if e.get("index") == i] for i in range(3)]
    for index, file_events in enumerate(per_file):
        assert file_events[0]["event"] == "file_started" and file_events[0]["total"] == 3
        assert [e["event"] for e in file_events[1:-1]] == ["progress"] * (len(file_events) - 2)
        assert file_events[-1]["event"] == ("file_failed" if index == 1 else "file_done")
    starts = [names.index("file_started", i) for i in range(len(names)) if names[i] == "file_started"]
    assert starts == sorted(starts)
    failed = per_file[1][-1]
    assert failed["code"] == "decode_error" and "minutes.mp3" in failed["message"]
    for index, audio in ((0, good[0]), (2, good[1])):
        done = per_file[index][-1]
        assert done["audio"] == audio and done["language"] == "sv" and done["segments"] >= 1
        assert done["transcribe_s"] > 0 and done["duration_s"] > 5
        stem = Path(audio).stem
        assert done["outputs"] == {fmt: str(out / f"{stem}.{fmt}") for fmt in ("txt", "json", "srt", "vtt")}
        data = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        assert data["options"]["algorithm"] == "batched" and data["language"] == "sv"
        assert (out / f"{stem}.txt").read_text(encoding="utf-8").strip()
        progress = [e["done_s"] for e in per_file[index] if e["event"] == "progress"]
        assert progress == sorted(progress) and progress[-1] == pytest.approx(done["duration_s"], abs=0.01)
    assert not list(out.glob("minutes.*")), "no output may be written for the bad file"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{Path(a).stem}.{fmt}" for a in good for fmt in ("txt", "json", "srt", "vtt")
    )
    assert events[-1]["files_ok"] == 2 and events[-1]["files_failed"] == 1


def test_bad_language_is_fatal_before_any_model_load(tmp_path: Path) -> None:
    # The model path does not exist: had the engine tried to load it, the code would be model_not_found.
    code, events, _ = run_engine(
        "transcribe", "a.wav", "--out", str(tmp_path), "--language", "xx", "--model", str(tmp_path / "none")
    )
    assert code == EXIT_FATAL
    assert [e["event"] for e in events] == ["fatal"]
    assert events[0]["code"] == "bad_option" and "--language" in events[0]["message"]


def test_missing_model_is_fatal_model_not_found(tmp_path: Path) -> None:
    code, events, _ = run_engine(
        "transcribe", "a.wav", "--out", str(tmp_path), "--model", str(tmp_path / "nope")
    )
    assert code == EXIT_FATAL
    assert [e["event"] for e in events] == ["fatal"]
    assert events[0]["code"] == "model_not_found" and "nope" in events[0]["message"]


def test_unusable_out_directory_is_fatal_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x", encoding="utf-8")
    code, events, _ = run_engine("transcribe", "a.wav", "--out", str(blocker / "sub"), "--model", "unused")
    assert code == EXIT_FATAL
    assert events[0]["event"] == "fatal" and events[0]["code"] == "output_error"
    assert str(blocker / "sub") in events[0]["message"]


def test_inputs_that_would_overwrite_each_other_are_refused(tmp_path: Path) -> None:
    code, events, _ = run_engine(
        "transcribe", "x/talk.wav", "y/talk.mp3", "--out", str(tmp_path), "--model", "unused"
    )
    assert code == EXIT_FATAL and events[0]["code"] == "bad_option" and "talk" in events[0]["message"]


def test_bad_format_and_usage_errors(tmp_path: Path) -> None:
    code, events, _ = run_engine("transcribe", "a.wav", "--out", str(tmp_path), "--format", "docx")
    assert code == EXIT_FATAL and events[0]["code"] == "bad_option" and "--format" in events[0]["message"]
    code, events, stderr = run_engine("transcribe", "a.wav")  # neither --out nor --beside-input
    assert code == 2 and events == [] and "--beside-input" in stderr  # argparse's usage error


def test_help_does_not_import_torch() -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['gpu_transcribe_engine', 'transcribe', '--help']\n"
        "try:\n    runpy.run_module('gpu_transcribe_engine', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'av', 'numpy') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]
    assert "--beside-input" in proc.stdout


@pytest.mark.slow
def test_beside_input_writes_next_to_each_input(tmp_path: Path) -> None:
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    import shutil

    audio = tmp_path / "inbox" / "möte.wav"
    audio.parent.mkdir()
    shutil.copy(clip_path(SWEDISH_CLIPS[2]), audio)
    code, events, stderr = run_engine(
        "transcribe",
        str(audio),
        "--beside-input",
        "--model",
        str(model),
        "--format",
        "srt",
        "--device",
        "cpu",
    )
    assert code == 0, stderr[-2000:]
    assert [e["event"] for e in events][-2:] == ["file_done", "all_done"]
    assert events[-2]["outputs"] == {"srt": str(tmp_path / "inbox" / "möte.srt")}
    assert (tmp_path / "inbox" / "möte.srt").read_text(encoding="utf-8").startswith("1\n")


class _ExplodingEngine:
    """A stand-in engine whose second file fails with an error that is no :class:`EngineFailure`."""

    info = SimpleNamespace(
        model="fake", revision="r", device="cpu", dtype="float32", load_s=0.1, decode_loop="eager"
    )

    @classmethod
    def load(cls, model: str, *, revision: str | None, device: str, decode_loop: str) -> _ExplodingEngine:
        return cls()

    def resolve_options(self, options: Any) -> Any:
        return SimpleNamespace(algorithm="batched", batch_size=8)

    def transcribe_file(self, audio: str, options: Any, *, progress: Any) -> Any:
        if "boom" in audio:
            raise KeyError("an engine bug")
        timings = SimpleNamespace(decode_s=0.1, transcribe_s=0.2)
        return SimpleNamespace(duration_s=1.0, timings=timings, language="sv", segments=[])


def test_an_unexpected_error_in_one_file_does_not_stop_the_files_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import types

    import gpu_transcribe_engine.__main__ as engine_cli
    import gpu_transcribe_engine.writers

    fake = types.ModuleType("gpu_transcribe_engine.engine")
    fake.WhisperEngine = _ExplodingEngine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpu_transcribe_engine.engine", fake)
    monkeypatch.setattr(gpu_transcribe_engine.writers, "write_outputs", lambda transcript, stem, formats: {})
    files = [str(tmp_path / name) for name in ("a.wav", "boom.wav", "c.wav")]
    args = engine_cli.build_parser().parse_args(
        ["transcribe", *files, "--out", str(tmp_path / "out"), "--device", "cpu"]
    )
    events = io.StringIO()
    assert engine_cli._transcribe(args, events) == EXIT_SOME_FAILED
    parsed = [parse_line(line) for line in events.getvalue().splitlines()]
    finished = [(e["event"], e["index"]) for e in parsed if e and e["event"] in ("file_done", "file_failed")]
    assert finished == [("file_done", 0), ("file_failed", 1), ("file_done", 2)]
    failed = next(e for e in parsed if e and e["event"] == "file_failed")
    assert "boom.wav" in failed["message"] and "KeyError" in failed["message"]
    assert parsed[-1] is not None and (parsed[-1]["files_ok"], parsed[-1]["files_failed"]) == (2, 1)


_PROCESS_SCRIPT = """
import atexit, logging, sys
from gpu_transcribe_engine.__main__ import run_as_process

def clean_up():
    open(sys.argv[1], "w").write("library clean-up ran")
    sys.stdout.write(", then a clean-up's own")

def entry():
    atexit.register(clean_up)
    logging.getLogger("library").warning("a last warning")
    sys.stdout.write("buffered, no newline")
    if sys.argv[2] == "raise":
        raise RuntimeError("an engine bug")
    if sys.argv[2] == "usage":
        raise SystemExit(2)
    return int(sys.argv[2])

run_as_process(entry)
"""


@pytest.mark.parametrize(
    ("how", "code"), [("0", 0), ("1", EXIT_SOME_FAILED), ("3", EXIT_FATAL), ("usage", 2), ("raise", 1)]
)
def test_the_process_ends_with_its_code_after_handlers_and_buffered_output(
    tmp_path: Path, how: str, code: int
) -> None:
    """The engine process skips the interpreter's teardown; what a run wrote or registered is not lost."""
    marker = tmp_path / "cleaned"
    proc = subprocess.run(
        [sys.executable, "-c", _PROCESS_SCRIPT, str(marker), how],
        cwd=REPO_ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # buffered, as by default
            "PYTHONPATH": str(REPO_ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "buffered, no newline, then a clean-up's own"
    assert "a last warning" in proc.stderr
    assert marker.read_text(encoding="utf-8") == "library clean-up ran"
    assert ("RuntimeError: an engine bug" in proc.stderr) == (how == "raise")
