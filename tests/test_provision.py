"""``ami/provision.py`` for real, over the loopback sshd as ``build-ami`` runs it on a builder.

The wheel built from this checkout and the script are pushed over SFTP; the script makes a venv in a temporary
prefix, installs it from the CPU lock (``requirements/cpu.lock``, hashes checked: torch's CPU build on this
machine's disk) and then the wheel without dependencies, copies the offline whisper-base checkpoint, compiles
bytecode and transcribes a real Swedish recording on the CPU. The manifest, pulled back, must show every check
passing and a non-empty warm-up transcript. Then: a second run reuses everything, a failing step exits 1
naming the check, a missing lock or a file whose hash is not the lock's fails the install,
``run --update-engine``'s command installs a pushed wheel into the prefix, and the builder's key is removed
from authorized_keys.

Measured on the 2-core test machine: first provisioning about 70 s (pip installing torch and the rest from
local wheels is most of it), a second run about 20 s (the warm-up's model load and transcription).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from gpu_transcribe import __version__
from gpu_transcribe.build_ami import PROVISION_SCRIPT
from gpu_transcribe.build_ami.wheel import update_engine_argv
from gpu_transcribe.ssh import SSHSession, SSHTarget, connect
from tests.fixtures.provision import (
    TEST_MODEL_ID,
    built_wheel,
    offline_model_dir,
    provision_test_args,
    remember_provisioned_prefix,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHECKS = {"engine_imports", "model_cached", "bytecode_compiled", "warmup_transcript"}


def load_provision_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("provision_under_test", PROVISION_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def session(sshd_server: object, sshd_target: SSHTarget) -> Iterator[SSHSession]:
    with connect(sshd_target, deadline_s=30) as opened:
        yield opened


@pytest.fixture(scope="module")
def sshd_target(sshd_server: object) -> SSHTarget:  # module scope: one session for the module
    from tests.fixtures.sshd import SshdServer

    assert isinstance(sshd_server, SshdServer)
    return SSHTarget(
        host=sshd_server.host,
        port=sshd_server.port,
        username=sshd_server.username,
        private_key=sshd_server.client_private_key,
        host_public_key=sshd_server.host_public_key,
    )


@pytest.fixture(scope="module")
def remote_dir(session: SSHSession, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The staging directory on the "builder", with the wheel and the script pushed into it."""
    path = f"/tmp/gpu-transcribe-provision-test-{uuid.uuid4().hex[:8]}"
    session.run(["mkdir", "-m", "700", path])
    wheel = built_wheel(tmp_path_factory)
    session.push([(wheel, f"{path}/{wheel.name}"), (PROVISION_SCRIPT, f"{path}/provision.py")])
    yield path
    session.run(["rm", "-rf", path], check=False)


def provision(
    session: SSHSession, remote_dir: str, prefix: Path, wheel_name: str, *extra: str
) -> tuple[int, list[str], dict[str, object] | None]:
    """Run the pushed script remotely; return its exit status, its stdout lines and its manifest."""
    lines: list[str] = []
    argv = [sys.executable, f"{remote_dir}/provision.py", "--prefix", str(prefix)]
    argv += ["--wheel", f"{remote_dir}/{wheel_name}", *provision_test_args(), *extra]
    result = session.run(argv, on_stdout_line=lines.append, check=False)
    manifest_path = prefix / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if result.returncode != 0:
        print("\n".join(lines[-40:]), result.stderr_tail, sep="\n")
    return result.returncode, lines, manifest


@pytest.fixture(scope="module")
def first_run(
    session: SSHSession, remote_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int, list[str], dict[str, object] | None]:
    prefix = tmp_path_factory.mktemp("provision") / "opt-gpu-transcribe"
    wheel = built_wheel(tmp_path_factory)
    returncode, lines, manifest = provision(session, remote_dir, prefix, wheel.name)
    if returncode == 0:
        remember_provisioned_prefix(prefix)
    return prefix, returncode, lines, manifest


def test_provisioning_installs_the_engine_and_passes_every_check(
    first_run: tuple[Path, int, list[str], dict[str, object] | None],
) -> None:
    prefix, returncode, lines, manifest = first_run
    assert returncode == 0
    assert lines[-1] == "provisioning ok"
    steps = [line[4:] for line in lines if line.startswith("==> ")]
    assert steps == [
        "install prefix",
        "system packages: skipped (--skip-system-packages)",
        "virtual environment",
        "engine wheel",
        "versions",
        "model",
        "bytecode",
        "warm-up transcription",
        "image cleanup: skipped (--skip-image-cleanup)",
    ]
    assert [line for line in lines if line.startswith("check ")] == [
        "check engine_imports: ok",
        "check model_cached: ok",
        "check bytecode_compiled: ok",
        "check warmup_transcript: ok",
    ]
    assert manifest is not None
    assert manifest["ok"] is True
    assert manifest["checks"] == dict.fromkeys(CHECKS, "ok")
    assert manifest["gpu_transcribe"] == __version__
    assert manifest["model"] == TEST_MODEL_ID and manifest["revision"] is None
    assert manifest["torch"] == "2.13.0+cpu" and manifest["cuda_available"] is False
    model_path = Path(str(manifest["model_path"]))
    assert model_path.parent == prefix / "models" and (model_path / "config.json").is_file()
    assert manifest["model_source"] == str(offline_model_dir().resolve())
    warmup = manifest["warmup"]
    assert isinstance(warmup, dict)
    from gpu_transcribe_engine.device import default_dtype

    assert (warmup["device"], warmup["dtype"]) == ("cpu", default_dtype("cpu"))
    text = str(warmup["text"]).strip()
    assert text, "the warm-up transcript is empty"
    # The clip says "Århuslekar börja i och för sig bli gammal och skröplig, men den har ju ett sådant
    # trevligt sätt." (its .txt); whisper-base gets most of the words.
    assert {"gammal", "trevligt"} <= {w.strip(".,").lower() for w in text.split()}
    # What a run does with the image: the venv's interpreter runs the engine offline from the manifest's path.
    engine = subprocess.run(
        [str(prefix / "venv" / "bin" / "python"), "-m", "gpu_transcribe_engine", "transcribe", "--help"],
        capture_output=True,
        text=True,
    )
    assert engine.returncode == 0 and "--model" in engine.stdout
    # Bytecode is there for the engine's heavy imports (the first run does not compile them).
    site = next((prefix / "venv" / "lib").glob("python3*/site-packages"))
    assert any((site / "transformers" / "__pycache__").glob("__init__.*.pyc"))
    assert any((site / "gpu_transcribe_engine" / "__pycache__").glob("engine.*.pyc"))


def test_a_second_run_reuses_the_prefix(
    session: SSHSession,
    remote_dir: str,
    tmp_path_factory: pytest.TempPathFactory,
    first_run: tuple[Path, int, list[str], dict[str, object] | None],
) -> None:
    prefix, returncode, _, _ = first_run
    assert returncode == 0
    weights = next((prefix / "models").glob("*/model.safetensors"))
    inode = weights.stat().st_ino
    again, lines, manifest = provision(session, remote_dir, prefix, built_wheel(tmp_path_factory).name)
    assert again == 0
    assert f"    reusing {prefix / 'venv'}" in lines
    assert any(line.startswith("    reusing ") and "models" in line for line in lines)
    assert weights.stat().st_ino == inode  # not copied again
    assert manifest is not None and manifest["ok"] is True


def test_a_failing_step_exits_1_and_names_the_check(
    session: SSHSession,
    remote_dir: str,
    tmp_path_factory: pytest.TempPathFactory,
    first_run: tuple[Path, int, list[str], dict[str, object] | None],
    tmp_path: Path,
) -> None:
    prefix, returncode, _, _ = first_run
    assert returncode == 0
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    wheel = built_wheel(tmp_path_factory).name
    failed, lines, manifest = provision(session, remote_dir, prefix, wheel, "--model-dir", str(empty))
    assert failed == 1
    assert "check engine_imports: ok" in lines
    [line] = [line for line in lines if line.startswith("check model_cached")]
    assert (
        line
        == f"check model_cached: FAILED --model-dir {empty}: no config.json and weights there; give a "
        + ("transformers checkpoint")
    )
    assert manifest is not None and manifest["ok"] is False
    assert manifest["checks"]["model_cached"].startswith("FAILED: --model-dir")  # type: ignore[index]
    assert "warmup_transcript" not in manifest["checks"]  # type: ignore[operator]


def test_an_unusable_interpreter_fails_at_the_venv_step(
    session: SSHSession, remote_dir: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    prefix = tmp_path / "fresh"
    wheel = built_wheel(tmp_path_factory).name
    failed, lines, manifest = provision(
        session, remote_dir, prefix, wheel, "--python", "/nonexistent/python3.11"
    )
    assert failed == 1
    assert "check venv: FAILED /nonexistent/python3.11: cannot run it (No such file or directory)" in lines
    assert manifest is not None and manifest["checks"] == {
        "venv": "FAILED: /nonexistent/python3.11: cannot run it (No such file or directory)"
    }


def test_a_missing_lock_fails_the_engine_install(
    session: SSHSession, remote_dir: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    wheel = built_wheel(tmp_path_factory).name
    missing = tmp_path / "missing.lock"
    prefix = tmp_path / "fresh"
    failed, lines, manifest = provision(session, remote_dir, prefix, wheel, "--lock", str(missing))
    assert failed == 1
    reason = f"--lock {missing}: no such file; give requirements/cuda.lock (`make lock`)"
    assert f"check engine_installed: FAILED {reason}" in lines
    assert manifest is not None and manifest["checks"] == {"engine_installed": f"FAILED: {reason}"}


def test_a_lock_whose_hash_does_not_match_installs_nothing(
    session: SSHSession, remote_dir: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """pip checks every file against the lock's hashes: a file that is not the one locked is refused."""
    wheel = built_wheel(tmp_path_factory)
    lock = tmp_path / "tampered.lock"
    lock.write_text(f"gpu-transcribe @ {wheel.resolve().as_uri()} --hash=sha256:{'0' * 64}\n")
    prefix = tmp_path / "fresh"
    failed, lines, manifest = provision(session, remote_dir, prefix, wheel.name, "--lock", str(lock))
    assert failed == 1
    assert any("--require-hashes -r " in line and line.endswith("tampered.lock") for line in lines)
    [line] = [line for line in lines if line.startswith("check engine_installed")]
    assert line.startswith("check engine_installed: FAILED `")
    assert manifest is not None
    checks = manifest["checks"]
    assert isinstance(checks, dict) and list(checks) == ["engine_installed"]
    assert not list((prefix / "venv" / "lib").glob("python3*/site-packages/gpu_transcribe*"))


def test_update_engine_installs_a_pushed_wheel_into_the_prefix(
    session: SSHSession,
    remote_dir: str,
    tmp_path_factory: pytest.TempPathFactory,
    first_run: tuple[Path, int, list[str], dict[str, object] | None],
) -> None:
    prefix, returncode, _, _ = first_run
    assert returncode == 0
    wheel = built_wheel(tmp_path_factory)
    python = prefix / "venv" / "bin" / "python"
    record = next((prefix / "venv" / "lib").glob("python3*/site-packages/gpu_transcribe-*.dist-info/RECORD"))
    before = record.stat().st_mtime_ns
    result = session.run(update_engine_argv(str(prefix), f"{remote_dir}/{wheel.name}"), check=False)
    assert result.returncode == 0, result.stderr_tail
    after = next((prefix / "venv" / "lib").glob("python3*/site-packages/gpu_transcribe-*.dist-info/RECORD"))
    assert after.stat().st_mtime_ns > before  # reinstalled although the version is the same
    shown = subprocess.run(
        [str(python), "-m", "pip", "show", "gpu-transcribe"], capture_output=True, text=True
    )
    assert f"Version: {__version__}" in shown.stdout


def test_update_engine_argv_shape() -> None:
    argv = update_engine_argv("/opt/gpu-transcribe/", "/tmp/x/gpu_transcribe-0.1.0-py3-none-any.whl")
    assert argv[:4] == ["/opt/gpu-transcribe/venv/bin/python", "-m", "pip", "install"]
    assert {"--no-deps", "--force-reinstall", "--no-index"} <= set(argv)
    assert argv[-1] == "/tmp/x/gpu_transcribe-0.1.0-py3-none-any.whl"
    with pytest.raises(ValueError):
        update_engine_argv("opt/gpu-transcribe", "/tmp/x.whl")
    with pytest.raises(ValueError):
        update_engine_argv("/opt/gpu-transcribe", "/tmp/x.tar.gz")


def test_the_builders_key_is_removed_from_authorized_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_provision_module()
    ssh_dir = tmp_path / ".ssh"
    ssh_dir.mkdir()
    keep = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeepKeepKeepKeepKeepKeepKeepKeepKeepKeepKee user@laptop\n"
    builder = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuildBuildBuildBuildBuildBuildBuildBuildBuil"
    (ssh_dir / "authorized_keys").write_text(keep + builder + " gpu-transcribe-builder\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert module.forget_authorized_key(builder + " gpu-transcribe-client-x") is True
    assert (ssh_dir / "authorized_keys").read_text() == keep
    assert module.forget_authorized_key(builder) is False  # nothing left to remove


def _builder_root(root: Path) -> dict[str, str]:
    """A fake builder's file system under ``root``: what the image must not carry, and what it keeps."""
    files = {
        "var/lib/cloud/instances/i-0builder/user-data.txt": "#cloud-config\nssh_keys: secret\n",
        "var/lib/cloud/seed/nocloud/user-data": "seed",
        "var/lib/cloud/data/instance-id": "i-0builder",
        "etc/ssh/ssh_host_ed25519_key": "PRIVATE",
        "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA",
        "etc/ssh/ssh_host_rsa_key": "PRIVATE",
        "etc/ssh/sshd_config": "PermitRootLogin no\n",
        "root/.bash_history": "sudo something\n",
        "home/ubuntu/.bash_history": "ls\n",
        "home/ubuntu/.python_history": "import os\n",
        "home/ubuntu/.ssh/authorized_keys": "ssh-ed25519 AAAA user\n",
        "var/log/cloud-init.log": "builder user data ...",
        "var/log/cloud-init-output.log": "...",
        "var/log/syslog": "Nov 30 builder\n",
        "var/log/syslog.1": "older\n",
        "var/log/auth.log.2.gz": "gz",
        "var/log/journal/abc/system.journal": "journal",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "opt/gpu-transcribe/manifest.json": "{}",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "var/lib/cloud/instance").symlink_to(root / "var/lib/cloud/instances/i-0builder")
    return files


def test_image_cleanup_removes_the_builders_state_and_keeps_the_rest(tmp_path: Path) -> None:
    module = load_provision_module()
    _builder_root(tmp_path)
    assert module.image_leftovers(tmp_path)  # the builder as it is, before the cleanup
    removed = module.clean_image(tmp_path)
    assert "etc/ssh/ssh_host_ed25519_key" in removed and "var/lib/cloud/instances" in removed
    assert module.image_leftovers(tmp_path) == []
    assert list((tmp_path / "var/lib/cloud").iterdir()) == []
    assert not list((tmp_path / "etc/ssh").glob("ssh_host_*"))
    assert not (tmp_path / "root/.bash_history").exists()
    assert not (tmp_path / "home/ubuntu/.bash_history").exists()
    assert not (tmp_path / "home/ubuntu/.python_history").exists()
    assert sorted(p.name for p in (tmp_path / "var/log").rglob("*") if p.is_file()) == ["syslog"]
    assert (tmp_path / "var/log/syslog").read_text() == ""
    assert (tmp_path / "etc/machine-id").read_text() == ""
    # What the image needs stays.
    assert (tmp_path / "etc/ssh/sshd_config").read_text() == "PermitRootLogin no\n"
    assert (tmp_path / "home/ubuntu/.ssh/authorized_keys").exists()
    assert (tmp_path / "opt/gpu-transcribe/manifest.json").exists()
    assert module.clean_image(tmp_path) == []  # idempotent


def test_clean_image_command_fails_naming_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_provision_module()
    _builder_root(tmp_path)
    assert module.main(["clean-image", str(tmp_path)]) == 0
    (tmp_path / "etc/ssh/ssh_host_ecdsa_key").write_text("PRIVATE")  # written again after the cleanup
    monkeypatch.setattr(module, "clean_image", lambda root: [])
    assert module.main(["clean-image", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ssh_host_ecdsa_key" in err


def test_provisioning_ends_with_the_image_cleanup_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--skip-image-cleanup`` the last step runs ``provision.py clean-image /`` through sudo and
    records the ``image_clean`` check (the other steps are stubbed here)."""
    module = load_provision_module()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_text("w")
    commands: list[list[str]] = []
    monkeypatch.setattr(module, "ensure_venv", lambda prefix, python: Path(sys.executable))
    monkeypatch.setattr(module, "install_wheel", lambda *args: None)
    monkeypatch.setattr(module, "versions", lambda venv_python: {})
    monkeypatch.setattr(module, "cache_model", lambda *args: model)
    monkeypatch.setattr(module, "compile_bytecode", lambda venv_python: None)
    monkeypatch.setattr(module, "warm_up", lambda *args: {"text": "hej"})
    monkeypatch.setattr(module, "run", lambda argv, check, **kwargs: commands.append(argv) or "")
    argv = ["--prefix", str(tmp_path / "prefix"), "--wheel", "w.whl", "--lock", "l", "--skip-system-packages"]
    assert module.main([*argv, "--warmup-audio", str(tmp_path / "a.wav")]) == 0
    script = str(PROVISION_SCRIPT.resolve())
    assert commands == [["sudo", "-n", sys.executable, script, "clean-image", "/"]]
    out = capsys.readouterr().out.splitlines()
    assert "==> image cleanup" in out and "check image_clean: ok" in out
    manifest = json.loads((tmp_path / "prefix" / "manifest.json").read_text())
    assert manifest["checks"]["image_clean"] == "ok"


def test_the_script_is_python_3_10_and_standard_library_only() -> None:
    """The builder runs it with Ubuntu 22.04's python3 (3.10) before anything is installed."""
    source = PROVISION_SCRIPT.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 10))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    assert "datetime.UTC" not in source and "dt.UTC" not in source  # 3.11+
