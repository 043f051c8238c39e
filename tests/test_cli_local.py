"""``gpu-transcribe run --local`` end to end, as a user runs it: a subprocess, the real model, real speech.

Every kind of bad input goes through the CLI here: each gets one line naming the path or option, the
exit status is non-zero, and the good files of the same batch are still transcribed and written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.fixtures import recordings_dir

REPO = Path(__file__).resolve().parent.parent
AUDIO = recordings_dir()
SV_CLIP = AUDIO / "sv_nst_se10x016_u0016004.wav"
SV_CLIP_2 = AUDIO / "sv_nst_se10x016_u0016002.wav"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (path / "config.json").exists():
        pytest.skip(f"no offline model at {path}: run `make offline-model`")
    return path


def run_cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gpu_transcribe ARGS`` the way a user would, with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _mp3_of(src: Path, dst: Path) -> Path:
    """Encode ``src`` as MP3 with PyAV (FFmpeg), the way a user's recorder would."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("mp3", rate=16000)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def test_two_files_transcribed_into_output_dir(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--local", "--model", model_dir, "-o", out, "--format", "txt,json,srt,vtt", SV_CLIP, SV_CLIP_2
    )
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split()
    for stem in (SV_CLIP.stem, SV_CLIP_2.stem):
        for fmt in ("txt", "json", "srt", "vtt"):
            assert str(out / f"{stem}.{fmt}") in printed
    data = json.loads((out / f"{SV_CLIP.stem}.json").read_text(encoding="utf-8"))
    assert data["language"] == "sv"
    assert data["segments"], "a Swedish clip must give segments"
    text = (out / f"{SV_CLIP.stem}.txt").read_text(encoding="utf-8").lower()
    assert "husläkare" in text or "gammal" in text, text
    assert "real-time" in proc.stderr  # the summary table goes to stderr


def test_default_output_is_beside_each_input(tmp_path: Path, model_dir: Path) -> None:
    clip = tmp_path / "inputs" / "intervju.wav"
    clip.parent.mkdir()
    clip.write_bytes(SV_CLIP.read_bytes())
    proc = run_cli("run", "--local", "--model", model_dir, clip)
    assert proc.returncode == 0, proc.stderr
    assert (clip.parent / "intervju.txt").read_text(encoding="utf-8").strip()
    assert (clip.parent / "intervju.json").exists()


def test_bad_inputs_in_a_batch_each_get_a_line_and_the_good_file_is_written(
    tmp_path: Path, model_dir: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = src / "good.wav"
    good.write_bytes(SV_CLIP.read_bytes())
    zero = src / "zero.mp3"
    zero.write_bytes(b"")
    text = src / "notes.mp3"
    text.write_text("this is a shopping list, not audio\n" * 20, encoding="utf-8")
    full_mp3 = _mp3_of(SV_CLIP_2, tmp_path / "full.mp3")
    truncated = src / "truncated.mp3"
    truncated.write_bytes(full_mp3.read_bytes()[: full_mp3.stat().st_size // 3])
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    missing = tmp_path / "missing.mp3"
    out = tmp_path / "out"
    out.mkdir()
    previous = out / "notes.txt"  # a good transcript from an earlier run must survive a failed one,
    previous.write_text("earlier good transcript\n", encoding="utf-8")  # even with --overwrite

    proc = run_cli(
        "run",
        "--local",
        "--overwrite",
        "--model",
        model_dir,
        "-o",
        out,
        good,
        zero,
        text,
        truncated,
        empty_dir,
        missing,
    )

    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for bad in (zero, text, truncated, empty_dir, missing):
        assert any(str(bad) in line for line in errors), f"no error line names {bad}:\n{proc.stderr}"
    assert (out / "good.txt").read_text(encoding="utf-8").strip()
    assert (out / "good.json").exists()
    for stem in ("zero", "truncated"):
        assert not list(out.glob(f"{stem}.*")), f"output left for bad file {stem}"
    assert previous.read_text(encoding="utf-8") == "earlier good transcript\n"
    assert not (out / "notes.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_unwritable_output_dir_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    proc = run_cli("run", "--local", "-o", blocker / "out", SV_CLIP)
    assert proc.returncode == 2  # a bad option
    assert "--output-dir" in proc.stderr and str(blocker / "out") in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_unknown_language_is_rejected_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "--local", "--language", "klingon", "-o", tmp_path, SV_CLIP)
    assert proc.returncode == 2
    assert "--language" in proc.stderr and "klingon" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_model_that_cannot_be_found(tmp_path: Path) -> None:
    missing_model = tmp_path / "no-such-model"
    proc = run_cli("run", "--local", "--model", "no-such-org/no-such-whisper", "-o", tmp_path / "o", SV_CLIP)
    assert proc.returncode != 0
    assert "no-such-org/no-such-whisper" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not missing_model.exists()
    assert not list((tmp_path / "o").glob("*.txt"))


def test_local_host_and_dry_run_cannot_be_combined(tmp_path: Path) -> None:
    proc = run_cli("run", "--local", "--dry-run", "-o", tmp_path, SV_CLIP)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--local and --dry-run cannot be combined" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--local", "--device", "tpu"], "--device: 'tpu' is not one of auto, cpu, cuda"),
        (["--local", "--task", "summarise"], "--task: 'summarise' is not one of transcribe, translate"),
        (["--local", "--algorithm", "fast"], "--algorithm: 'fast' is not one of auto, sequential, batched"),
        (["--local", "--format", "txt,doc"], "--format: 'doc' is not one of txt, json, srt, vtt"),
        (["--market", "cheap"], "market (from --market): 'cheap' is not allowed"),
        (["--algorithm", "fast"], "--algorithm: 'fast'"),  # a cloud run checks before any AWS call
    ],
)
def test_a_bad_choice_is_one_line_and_exit_2_before_any_work(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = run_cli("run", *args, "-o", tmp_path / "o", SV_CLIP)
    assert proc.returncode == 2, proc.stderr
    assert expected in _one_error_line(proc)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "cpu"], "--device applies only with --local"),
        (["--host", "u@h", "--device", "cuda"], "--device applies only with --local"),
        (["--local", "--identity", "key"], "--identity applies only with --host"),
        (["--known-hosts", "kh"], "--known-hosts applies only with --host"),
        (["--no-s3", "--upload-audio"], "--upload-audio stores the audio in S3, which --no-s3 turns off"),
    ],
)
def test_a_flag_that_does_not_apply_is_refused(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = run_cli("run", *args, "-o", tmp_path / "o", SV_CLIP)
    assert proc.returncode == 2, proc.stderr
    assert expected in _one_error_line(proc)


def test_run_help_lists_every_choice() -> None:
    proc = run_cli("run", "--help")
    text = " ".join(proc.stdout.split())
    for choices in (
        "auto (cuda if torch sees a GPU), cpu or cuda",
        "txt,json,srt,vtt",
        "transcribe, or translate",
    ):
        assert choices in text
    assert "spot-then-on-demand, spot or on-demand" in text
    assert "auto (= batched)" in text and "most accurate" not in text


def test_an_unknown_language_lists_the_valid_codes(tmp_path: Path) -> None:
    line = _one_error_line(run_cli("run", "--local", "-l", "xx", "-o", tmp_path, SV_CLIP))
    assert "'xx' is not allowed" in line and "expected unknown language" not in line
    assert "one of Whisper's codes:" in line and " sv," in line and " en," in line and "yue" in line


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_model_directory_that_does_not_exist_is_exit_2(tmp_path: Path, kind: str) -> None:
    model = tmp_path / "models" / "whisper"
    if kind == "file":
        model.parent.mkdir()
        model.write_text("x", encoding="utf-8")
    proc = run_cli("run", "--local", "--model", model, "-o", tmp_path / "o", SV_CLIP)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert f"model (from --model): {model}" in line
    assert ("no such directory" if kind == "missing" else "is not a directory") in line


@pytest.mark.parametrize("where", ["--local", "--host"])
def test_output_dir_that_is_a_file_is_a_bad_option(tmp_path: Path, where: str) -> None:
    a_file = tmp_path / "transcripts"
    a_file.write_text("x", encoding="utf-8")
    key = tmp_path / "key"
    key.write_text("", encoding="utf-8")
    host = ["--host", "nobody@127.0.0.1:9", "-i", key, "--known-hosts", key, "--no-s3"]
    run_where: list[str | Path] = ["--local"] if where == "--local" else host
    proc = run_cli("run", *run_where, "-o", a_file, SV_CLIP)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert f"--output-dir {a_file}: cannot write there" in line
    assert a_file.read_text(encoding="utf-8") == "x"


_A_BUG = (
    "import sys\n"
    "import gpu_transcribe.cli.account as account\n"
    "def broken(*args, **kwargs):\n"
    "    raise KeyError('no such row')\n"
    "account.print_settings = broken\n"
    "from gpu_transcribe.cli.main import app\n"
    "app(sys.argv[1:], prog_name='gpu-transcribe')\n"
)


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_line_unless_debug(tmp_path: Path, debug: bool) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1", HOME=str(tmp_path))
    args = ["--debug"] if debug else []
    proc = subprocess.run(
        [sys.executable, "-c", _A_BUG, *args, "config", "show"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    if debug:
        assert "Traceback (most recent call last)" in proc.stderr and "KeyError" in proc.stderr
    else:
        line = _one_error_line(proc)
        assert line.startswith("error: unexpected KeyError: 'no such row'") and "--debug" in line


def test_debug_is_in_the_root_help() -> None:
    assert "--debug" in run_cli("--help").stdout


def test_shell_completion_is_offered() -> None:
    assert "--install-completion" in run_cli("--help").stdout
    # Typer names the shell it finds among the command's parents: run it from bash, as a user's shell would
    # (CI's make runs commands under sh, which Typer has no completion for). "; true" keeps bash from
    # replacing itself with the command.
    script = subprocess.run(
        ["bash", "-c", '"$0" --show-completion; true', str(Path(sys.executable).parent / "gpu-transcribe")],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _gpu_transcribe_completion gpu-transcribe" in script.stdout


def test_names_with_brackets_are_printed_literally(tmp_path: Path, model_dir: Path) -> None:
    # "[dQw4w9WgXcQ]" reads as a Rich style, "[/b]" as a closing tag (a MarkupError), ":smile:" as an emoji.
    odd_dir = tmp_path / "x["
    odd_dir.mkdir()
    first = odd_dir / "b]y Title [dQw4w9WgXcQ].wav"
    first.write_bytes(SV_CLIP.read_bytes())
    second = tmp_path / "Talk [bold] :smile:.wav"
    second.write_bytes(SV_CLIP_2.read_bytes())
    missing = tmp_path / "gone [/b] [dQw4w9WgXcQ].wav"

    proc = run_cli("run", "--local", "--model", model_dir, "-f", "txt", first, second, missing)

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    expected = [str(first.with_suffix(".txt")), str(second.with_suffix(".txt"))]
    assert proc.stdout.splitlines() == expected
    for path in expected:
        assert Path(path).read_text(encoding="utf-8").strip()
    assert first.name in proc.stderr and second.name in proc.stderr  # the summary table
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0], proc.stderr


def test_an_existing_output_is_reported_and_its_input_passed_over(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / f"{SV_CLIP.stem}.txt"
    earlier.write_text("earlier transcript\n", encoding="utf-8")

    proc = run_cli("run", "--local", "--model", model_dir, "-o", out, "-f", "txt", SV_CLIP, SV_CLIP_2)

    # Passing over an input whose transcript exists is not a failure: a "skipped:" line naming the flag
    # that replaces it, no "error:", exit status 0.
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped:")]
    assert skipped == [
        f"skipped: {earlier} exists (--overwrite replaces it; --skip-existing passes over it quietly)"
    ]
    assert earlier.read_text(encoding="utf-8") == "earlier transcript\n"
    assert proc.stdout.splitlines() == [str(out / f"{SV_CLIP_2.stem}.txt")]
    assert SV_CLIP.stem not in proc.stderr.replace(str(earlier), "")  # not given to the engine


def test_when_every_output_exists_nothing_runs_and_the_exit_status_is_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for clip in (SV_CLIP, SV_CLIP_2):
        (out / f"{clip.stem}.txt").write_text("earlier\n", encoding="utf-8")
    # A model that does not exist: the engine would fail if it were started.
    args = ("run", "--local", "--model", "no-such-org/no-such-whisper", "-o", out, "-f", "txt,json")

    refused = run_cli(*args, SV_CLIP, SV_CLIP_2)
    assert refused.returncode == 0, refused.stderr
    skipped = [line for line in refused.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and all("exists (--overwrite replaces it" in line for line in skipped)
    assert "error:" not in refused.stderr
    assert refused.stdout == ""

    skipped = run_cli(*args, "--skip-existing", SV_CLIP, SV_CLIP_2)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout == "" and skipped.stderr == ""
    assert not list(out.glob("*.json"))
    assert {p.read_text(encoding="utf-8") for p in out.iterdir()} == {"earlier\n"}


def test_skip_existing_runs_the_others_and_overwrite_replaces(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / f"{SV_CLIP.stem}.txt"
    earlier.write_text("earlier transcript\n", encoding="utf-8")
    args = ("run", "--local", "--model", model_dir, "-o", out, "-f", "txt")

    skipped = run_cli(*args, "--skip-existing", SV_CLIP, SV_CLIP_2)
    assert skipped.returncode == 0, skipped.stderr
    assert "error:" not in skipped.stderr
    assert skipped.stdout.splitlines() == [str(out / f"{SV_CLIP_2.stem}.txt")]
    assert earlier.read_text(encoding="utf-8") == "earlier transcript\n"

    replaced = run_cli(*args, "--overwrite", SV_CLIP)
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout.splitlines() == [str(earlier)]
    assert earlier.read_text(encoding="utf-8") != "earlier transcript\n"


def test_overwrite_and_skip_existing_cannot_be_combined(tmp_path: Path) -> None:
    proc = run_cli("run", "--local", "--overwrite", "--skip-existing", "-o", tmp_path, SV_CLIP)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--overwrite and --skip-existing cannot be combined" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def _long_clip(dst: Path, repeats: int) -> Path:
    """``SV_CLIP`` ``repeats`` times over, as one WAV file (long enough to still run when a signal comes)."""
    import wave

    with wave.open(str(SV_CLIP), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    with wave.open(str(dst), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * repeats)
    return dst


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_prints_the_finished_outputs_and_what_was_not_done(
    tmp_path: Path, model_dir: Path, signum: int
) -> None:
    out = tmp_path / "out"
    long_clip = _long_clip(tmp_path / "long.wav", 12)
    third = tmp_path / "third.wav"
    third.write_bytes(SV_CLIP.read_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1")
    argv = [
        sys.executable,
        "-m",
        "gpu_transcribe",
        "run",
        "--local",
        "--model",
        str(model_dir),
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(
        [*argv, "-f", "txt", str(SV_CLIP_2), str(long_clip), str(third)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = out / f"{SV_CLIP_2.stem}.txt"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), proc.communicate(timeout=60)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 128 + signum, stderr
    assert stdout.splitlines() == [str(first)]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert f"stopped by {signal.Signals(signum).name}" in errors[0]
    assert str(long_clip) in errors[0] and str(third) in errors[0] and str(SV_CLIP_2) not in errors[0]
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == [first.name]  # no partial or temporary file


def test_word_timestamps_prompt_and_readable_subtitles(tmp_path: Path, model_dir: Path) -> None:
    """``run --local --word-timestamps --prompt ...``: the JSON has words per segment that spell it and
    echoes the options; ``--max-line-width 30 --max-line-count 1``: every subtitle line keeps the width,
    in more cues than segments (the words are timed for it)."""
    clip = AUDIO / "en_jfk.flac"
    words_out = tmp_path / "words"
    proc = run_cli(
        "run", "--local", "--model", model_dir, "-o", words_out, "--format", "json", "--language", "en",
        "--word-timestamps", "--prompt", "Americans, country", clip,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((words_out / "en_jfk.json").read_text(encoding="utf-8"))
    assert data["options"]["word_timestamps"] is True
    assert data["options"]["prompt"] == "Americans, country"
    for segment in data["segments"]:
        assert segment["words"], segment
        assert "".join(w["word"] for w in segment["words"]).strip() == segment["text"]
        assert set(segment["words"][0]) == {"word", "start_s", "end_s", "probability"}
    out = tmp_path / "subtitles"
    proc = run_cli(
        "run", "--local", "--model", model_dir, "-o", out, "--format", "json,srt,vtt", "--language", "en",
        "--max-line-width", "30", "--max-line-count", "1", clip,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "en_jfk.json").read_text(encoding="utf-8"))
    assert data["options"]["max_line_width"] == 30 and data["options"]["word_timestamps"] is True
    for fmt in ("srt", "vtt"):
        lines = (out / f"en_jfk.{fmt}").read_text(encoding="utf-8").splitlines()
        texts = [line for line in lines if line and "-->" not in line and not line.isdigit()]
        assert all(len(line) <= 30 for line in texts if line != "WEBVTT"), lines
        assert len([line for line in lines if "-->" in line]) > len(data["segments"])


def test_word_timestamps_with_sequential_is_one_line(tmp_path: Path, model_dir: Path) -> None:
    proc = run_cli(
        "run", "--local", "--model", model_dir, "-o", tmp_path, "--algorithm", "sequential",
        "--word-timestamps", SV_CLIP,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--word-timestamps: use --algorithm batched" in proc.stderr, proc.stderr
