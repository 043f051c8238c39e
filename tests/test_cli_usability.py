"""What a new user meets in the first hour, through the real CLI (a subprocess, as a shell runs it): pipes
closed early, 80-column help, one name for one thing, exit statuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
#: A Hugging Face endpoint nothing listens on (port 9, discard, is closed on loopback): the hub out of reach.
CLOSED_HUB = "http://127.0.0.1:9"


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

    # The hub out of reach (a closed port) does not matter for a model directory: it is never asked.
    proc = gpu_transcribe(
        tmp_path, "run", "--local", "-m", model, "-l", "auto", "-o", out, clip, HF_ENDPOINT=CLOSED_HUB
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out / f"{clip.stem}.txt"), str(out / f"{clip.stem}.json")]
    lines = proc.stderr.splitlines()
    assert all(len(line) <= 80 for line in lines), proc.stderr
    # The file's row: its whole name, then the detected language; no output path anywhere in the summary.
    assert [clip.name, "en"] in [line.split()[:2] for line in lines], proc.stderr
    assert str(out) not in proc.stderr and "language" in proc.stderr


# --- --help at 80 columns ----------------------------------------------------------------------------------

#: What Typer prints when a parameter has no metavar: a type name (<str>, <int range>, <list[Path]>,
#: <path>...) or a parameter name in braces ({paths}).
_LEAKED_TYPE = re.compile(r"<[\w\[\]|, ]+>|\{\w+\}")


def _command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as argument lists (``[]`` is the root)."""
    import typer.main

    from gpu_transcribe.cli.main import app

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_help_reads_at_80_columns(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_transcribe.cli.main import app

    monkeypatch.setenv("COLUMNS", "80")
    paths = _command_paths()
    assert ["run"] in paths and ["jobs", "fetch"] in paths and ["pipeline", "deploy"] in paths
    for path in paths:
        result = cli.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = result.stdout
        assert not _LEAKED_TYPE.findall(text), (path, _LEAKED_TYPE.findall(text), text)
        # A group's list of commands: each summary whole (a sentence that ends), never cut with "...".
        if "\nCommands:\n" in text:
            for line in text.split("\nCommands:\n", 1)[1].splitlines():
                if line.startswith("  ") and not line.startswith("   "):
                    assert not line.rstrip().endswith("..."), (path, line)


def test_run_help_names_its_arguments_and_local(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_transcribe.cli.main import app

    monkeypatch.setenv("COLUMNS", "80")
    root = cli.invoke(app, ["--help"]).stdout
    assert "Transcribe audio files on a GPU instance, --local or --host." in root
    run = cli.invoke(app, ["run", "--help"]).stdout
    assert "Usage: gpu-transcribe run [OPTIONS] AUDIO..." in run
    for shown in (
        "-o, --output-dir DIR",
        "-f, --format LIST",
        "-l, --language CODE",
        "-m, --model ID_OR_DIR",
    ):
        assert shown in run, run


@pytest.mark.parametrize("command", [["build-ami"], ["server", "up"], ["worker"], ["run"]])
def test_model_help_speaks_of_the_command_it_is_in(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    from gpu_transcribe.cli.main import app

    text = cli.invoke(app, [*command, "--help"]).stdout
    entries: list[str] = []  # one per option: its first line starts with "  -", the others are indented more
    for line in text.split("\nOptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif entries:
            entries[-1] += " " + line.strip()
    model = next(e for e in entries if e.startswith("-m, --model"))
    assert "run --local" not in model, model
    if command in (["build-ami"], ["server", "up"]):  # the model must be on the hub: the instance loads it
        assert "a Hugging Face id." in model and "directory" not in model, model


def test_submit_help_says_once_where_outputs_go(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_transcribe.cli.main import app

    text = " ".join(cli.invoke(app, ["submit", "--help"]).stdout.split())
    assert "beside each input" not in text and "default: here" not in text
    assert "into --output-dir (default: the current directory)" in text
    assert "--output-dir DIR With --wait: write the outputs here. Default: the current directory." in text


def test_one_option_names_the_pipeline_in_every_command(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpu_transcribe.cli.main import app

    commands = [
        ["submit"],
        ["worker"],
        ["jobs", "list"],
        ["jobs", "fetch"],
        ["jobs", "retry"],
        ["jobs", "watch"],
        ["pipeline", "deploy"],
        ["pipeline", "status"],
        ["pipeline", "destroy"],
        ["pipeline", "webhook-secret"],
    ]
    for command in commands:
        text = cli.invoke(app, [*command, "--help"]).stdout
        assert "--pipeline NAME" in text and "--name" not in text, (command, text)


def test_the_old_pipeline_flag_still_works_and_says_so(cli: CliRunner) -> None:
    from gpu_transcribe.cli.main import app

    # Two different names: refused before any AWS call, naming the one flag to use.
    both = cli.invoke(app, ["pipeline", "status", "--pipeline", "a", "--name", "b"])
    assert both.exit_code == 2, both.output
    assert "--name is the old spelling of --pipeline; give only --pipeline" in both.stderr
    # The old spelling alone: a bad name is still refused as the pipeline's name, after the warning.
    old = cli.invoke(app, ["pipeline", "deploy", "--name", "Team_A"])
    assert old.exit_code == 2, old.output
    assert "warning: --name is now --pipeline" in old.stderr
    assert "--pipeline: 'Team_A' is not a pipeline name" in old.stderr


# --- run --dry-run with a file that is not there -----------------------------------------------------------


def test_a_dry_run_names_the_missing_file_first_and_then_what_else_is_missing(tmp_path: Path) -> None:
    # No bucket set, and AWS at a closed port (one attempt): the plan stops at the cloud, but says so after
    # the input problem, and names the missing bucket too.
    proc = gpu_transcribe(
        tmp_path,
        "run",
        "--dry-run",
        "missing.wav",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_MAX_ATTEMPTS="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    assert proc.returncode == 2, proc.stderr  # the missing bucket setting: a bad setting
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == "error: missing.wav: no such file or directory; check the path", proc.stderr
    assert any(line.startswith("error: s3_bucket: no S3 bucket is set") for line in errors[1:]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("would transcribe 0 file(s)"), proc.stdout


# --- the default model without network ----------------------------------------------------------------------


def _one_hub_error(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "cannot reach the Hugging Face hub at http://127.0.0.1:9" in errors[0], proc.stderr
    assert "pass --model DIR" in errors[0] and "make offline-model" in errors[0], proc.stderr
    return errors[0]


def test_run_local_says_at_once_that_the_hub_is_out_of_reach(tmp_path: Path) -> None:
    clip = REPO / "recordings" / "en_jfk.flac"
    proc = gpu_transcribe(
        tmp_path,
        "run",
        "--local",
        "-o",
        tmp_path / "o",
        clip,
        HF_ENDPOINT=CLOSED_HUB,
        HF_HOME=str(tmp_path / "hf"),
    )
    assert proc.returncode == 1, proc.stderr
    assert "'KBLab/kb-whisper-small'" in _one_hub_error(proc)  # the default model, named
    assert proc.stdout == ""


def test_serve_says_at_once_that_the_hub_is_out_of_reach(tmp_path: Path) -> None:
    proc = gpu_transcribe(
        tmp_path, "serve", "--port", "0", HF_ENDPOINT=CLOSED_HUB, HF_HOME=str(tmp_path / "hf")
    )
    assert proc.returncode == 1, proc.stderr
    _one_hub_error(proc)
    assert "Uvicorn running" not in proc.stderr  # refused before the server starts


def _cached_model(cache: Path, repo_id: str) -> None:
    """``repo_id`` in a Hugging Face cache at ``cache``, as a download leaves it (refs/main, a snapshot),
    its files those of the offline test model."""
    model = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model / "config.json").exists():
        pytest.skip(f"no offline model at {model}: run `make offline-model`")
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in model.iterdir():
        (snapshot / file.name).symlink_to(file)


def test_a_model_in_the_local_cache_needs_no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from gpu_transcribe_engine.errors import HubUnreachableError
    from gpu_transcribe_engine.hub import check_hub_model

    monkeypatch.setattr(constants, "ENDPOINT", CLOSED_HUB)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _cached_model(tmp_path / "hub", "test-org/whisper-base")
    check_hub_model("test-org/whisper-base", None)  # cached: the closed hub is not asked
    with pytest.raises(HubUnreachableError, match=r"'test-org/other-model'.*pass --model DIR"):
        check_hub_model("test-org/other-model", None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_hub_model("test-org/whisper-base", None)
    with pytest.raises(HubUnreachableError, match=r"HF_HUB_OFFLINE is set; pass --model DIR"):
        check_hub_model("test-org/other-model", None)


def test_run_local_loads_a_cached_hub_model_offline(tmp_path: Path) -> None:
    _cached_model(tmp_path / "hf" / "hub", "test-org/whisper-base")
    clip = REPO / "recordings" / "en_jfk.flac"
    proc = gpu_transcribe(
        tmp_path,
        "run",
        "--local",
        "-m",
        "test-org/whisper-base",
        "-l",
        "en",
        "-f",
        "txt",
        "-o",
        tmp_path / "o",
        clip,
        HF_ENDPOINT=CLOSED_HUB,
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(tmp_path / "o" / "en_jfk.txt")]


def test_serve_device_cuda_without_a_gpu_is_a_bad_option(tmp_path: Path) -> None:
    model = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    proc = gpu_transcribe(
        tmp_path, "serve", "--port", "0", "--device", "cuda", "--model", model, CUDA_VISIBLE_DEVICES=""
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: no CUDA GPU is available"), (
        proc.stderr
    )


def test_an_untested_typer_release_keeps_typers_own_metavars(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_plain_metavars`` reads Typer internals only under the releases it was tested with; under another
    it leaves every parameter as Typer made it, and the help still renders."""
    import typer

    from gpu_transcribe.cli import base as cli_base
    from gpu_transcribe.cli.main import app

    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    tested = {p.name: p.metavar for p in command.params}
    assert tested["beam_size"] == "N"
    monkeypatch.setattr(cli_base, "_TYPER_TESTED", ("999.",))
    untested = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    assert {p.name: p.metavar for p in untested.params}["beam_size"] is None
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--region" in result.output
