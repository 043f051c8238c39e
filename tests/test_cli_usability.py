"""What a new user meets in the first hour, through the real CLI (a subprocess, as a shell runs it): pipes
closed early, 80-column help, one name for one thing, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's environment without GPU_TRANSCRIBE_* settings, an empty config directory, no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_TRANSCRIBE_")}
    env.update(PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "xdg"), NO_COLOR="1", COLUMNS="80")
    env.update(extra)
    return env


def gpu_transcribe(tmp_path: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m gpu_transcribe ARGS`` in ``tmp_path``, 80 columns, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", *map(str, args)],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- a reader that closes the pipe -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["config", "show", "--json"], ["config", "show"]])
@pytest.mark.parametrize("read_first_line", [False, True])
def test_a_closed_pipe_ends_the_command_quietly(
    tmp_path: Path, args: list[str], read_first_line: bool
) -> None:
    # Closing the only read end before the command writes makes every write fail (EPIPE): the case that
    # `| head -1` hits when head is quicker. Reading one line first is head's other timing.
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpu_transcribe", *args],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        if read_first_line:
            assert proc.stdout.readline().strip()
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, stderr
        assert stderr == "", stderr


# --- server down with no server ----------------------------------------------------------------------------


def test_server_down_without_a_server_says_so_once(tmp_path: Path) -> None:
    proc = gpu_transcribe(tmp_path, "server", "down", GPU_TRANSCRIBE_STATE_DIR=str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["no server named default here; nothing to do"]
    assert proc.stderr == ""


# --- --device cuda on a machine without a GPU --------------------------------------------------------------


def test_device_cuda_without_a_gpu_is_a_bad_option(tmp_path: Path) -> None:
    model = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model / "config.json").exists():
        pytest.skip(f"no offline model at {model}: run `make offline-model`")
    clip = REPO / "recordings" / "en_jfk.flac"
    # CUDA_VISIBLE_DEVICES="" hides any GPU from torch: this machine has none, as far as the engine knows.
    proc = gpu_transcribe(
        tmp_path,
        "run",
        "--local",
        "--device",
        "cuda",
        "-m",
        model,
        "-o",
        tmp_path / "o",
        clip,
        CUDA_VISIBLE_DEVICES="",
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--device cuda: no CUDA GPU is available" in errors[0], proc.stderr
    assert "--device cpu" in errors[0]
    assert proc.stdout == "" and not list((tmp_path / "o").glob("*.txt"))


# --- the run summary at 80 columns -------------------------------------------------------------------------


def test_the_run_summary_reads_at_80_columns_and_shows_the_language(tmp_path: Path) -> None:
    model = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model / "config.json").exists():
        pytest.skip(f"no offline model at {model}: run `make offline-model`")
    clip = tmp_path / "intervju-kommunstyrelsen-2024-03-12.flac"  # a name as long as users give them
    clip.write_bytes((REPO / "recordings" / "en_jfk.flac").read_bytes())
    out = tmp_path / "transcripts-from-the-interviews"

    proc = gpu_transcribe(tmp_path, "run", "--local", "-m", model, "-l", "auto", "-o", out, clip)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out / f"{clip.stem}.txt"), str(out / f"{clip.stem}.json")]
    lines = proc.stderr.splitlines()
    assert all(len(line) <= 80 for line in lines), proc.stderr
    # The file's row: its whole name, then the detected language; no output path anywhere in the summary.
    assert [clip.name, "en"] in [line.split()[:2] for line in lines], proc.stderr
    assert str(out) not in proc.stderr and "language" in proc.stderr
