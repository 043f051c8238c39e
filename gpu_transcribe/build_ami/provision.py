"""Provisioning a connected builder: push the wheel, ``ami/provision.py`` and the lock file, run the
provisioning (stoppable as a process group), and accept its ``manifest.json`` only if every check passed
for this version and model."""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe import __version__
from gpu_transcribe.build_ami.plan import CUDA_LOCK, PROVISION_SCRIPT, BuildRequest, provision_argv
from gpu_transcribe.common import ProgressCallback, ProgressEvent
from gpu_transcribe.errors import GpuTranscribeError, ProvisionError, RemoteCommandError
from gpu_transcribe.instance.session import CleanupStep, InstanceSession

if TYPE_CHECKING:
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession

#: Lines of provisioning output kept for the error message of a failed build.
OUTPUT_TAIL_LINES = 30
#: Runs the rest of its arguments with stdout and stderr merged, first writing its process group id to the
#: file named by ``$0``, so that an interrupted build can stop the provisioning (and pip, and the warm-up) on
#: the builder. /proc/self/stat field 5 is the process group (proc(5)).
_WRAPPER = 'read -r _ _ _ _ pgid _ < /proc/$$/stat && echo "$pgid" > "$0" && exec "$@" 2>&1'
_KILL = 'pgid=$(cat "$0" 2>/dev/null) && [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null; true'


def _failed_checks(manifest: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not manifest:
        return []
    checks = manifest.get("checks") or {}
    return [(str(name), str(state)) for name, state in checks.items() if state != "ok"]


def _failed_check_lines(lines: Sequence[str]) -> list[tuple[str, str]]:
    """``(check, "FAILED: reason")`` from provision.py's ``check NAME: FAILED reason`` lines (for when the
    manifest cannot be read)."""
    failed = []
    for line in lines:
        name, sep, rest = line.removeprefix("check ").partition(": FAILED ")
        if line.startswith("check ") and sep:
            failed.append((name, f"FAILED: {rest}"))
    return failed


def read_manifest(session: SSHSession, remote_prefix: str, workdir: Path) -> dict[str, Any] | None:
    """The builder's ``manifest.json``, or ``None`` if it cannot be read."""
    local = workdir / "manifest.json"
    try:
        session.pull([(f"{remote_prefix}/manifest.json", local)])
        data = json.loads(local.read_text(encoding="utf-8"))
    except (GpuTranscribeError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_manifest(
    manifest: dict[str, Any] | None, request: BuildRequest, output_tail: str
) -> dict[str, Any]:
    """The manifest, if it shows a complete, passing provisioning of this version and model.

    Raises:
        ProvisionError: it is missing, a check failed, or it describes another version or model.
    """
    if manifest is None:
        raise ProvisionError(
            "provisioning exited 0 but left no readable manifest.json; no image was made",
            output_tail=output_tail,
        )
    failed = _failed_checks(manifest)
    if failed or manifest.get("ok") is not True or not manifest.get("checks"):
        raise ProvisionError(
            "provisioning checks failed: "
            + ("; ".join(f"{name}: {state}" for name, state in failed) or "the manifest is not ok")
            + "; no image was made",
            failed,
            output_tail,
        )
    if manifest.get("gpu_transcribe") != __version__ or manifest.get("model") != request.model:
        raise ProvisionError(
            f"the builder's manifest names gpu-transcribe {manifest.get('gpu_transcribe')} with "
            f"{manifest.get('model')}, not {__version__} with {request.model}; no image was made",
            output_tail=output_tail,
        )
    return manifest


def provision_builder(
    session: InstanceSession,
    settings: Settings,
    request: BuildRequest,
    workdir: Path,
    wheel: Path,
    *,
    phase_done: Callable[[str], None],
    on_progress: ProgressCallback,
) -> dict[str, Any]:
    """Push the wheel, ``ami/provision.py`` and the lock file into a private directory on the connected
    builder, run the provisioning, check its manifest, then close SSH (the builder is stopped next).

    While the provisioning runs, the session's teardown stops it (its whole process group) and removes the
    directory.

    Returns:
        The builder's ``manifest.json``, showing every check passed.

    Raises:
        ProvisionError: the provisioning failed, or its manifest is missing, failing, or of another version.
        SSHError: a push or a command failed.
    """
    ssh, launched = session.ssh, session.launched

    # Push the wheel, the provisioning script and the lock file into a private directory.
    remote_dir = f"/tmp/gpu-transcribe-build-{session.run_id}"
    ssh.run(["mkdir", "-m", "700", remote_dir])
    provisioning = [False]

    def stop_provisioning(open_ssh: SSHSession | None) -> None:
        if open_ssh is None:
            return
        if provisioning[0]:
            on_progress(ProgressEvent("terminate", "stopping the provisioning on the builder"))
            with contextlib.suppress(GpuTranscribeError):
                open_ssh.run(
                    ["sh", "-c", _KILL, f"{remote_dir}/provision.pgid"], check=False, channel_timeout_s=5
                )
        with contextlib.suppress(GpuTranscribeError):
            open_ssh.run(["rm", "-rf", remote_dir], check=False, channel_timeout_s=5)

    cleanup = CleanupStep(f"the build directory {remote_dir}", stop_provisioning)
    session.add_cleanup(cleanup)
    pushed = ssh.push(
        [
            (wheel, f"{remote_dir}/{wheel.name}"),
            (PROVISION_SCRIPT, f"{remote_dir}/provision.py"),
            (CUDA_LOCK, f"{remote_dir}/{CUDA_LOCK.name}"),
        ]
    )
    on_progress(
        ProgressEvent("push", f"pushed {', '.join(Path(p.remote_path).name for p in pushed)} to {remote_dir}")
    )
    phase_done("push")

    # Provision.
    argv = provision_argv(
        request, settings.remote_prefix, remote_dir, wheel.name, launched.client_key.public_key_openssh
    )
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)

    def on_line(line: str) -> None:
        tail.append(line)
        stage = "provision" if line.startswith(("==> ", "check ", "provisioning ")) else "provision-output"
        on_progress(ProgressEvent(stage, line))

    provisioning[0] = True
    try:
        ssh.run(["sh", "-c", _WRAPPER, f"{remote_dir}/provision.pgid", *argv], on_stdout_line=on_line)
    except RemoteCommandError as exc:
        provisioning[0] = False
        manifest = read_manifest(ssh, settings.remote_prefix, workdir)
        failed = _failed_checks(manifest) or _failed_check_lines(tail)
        why = "; ".join(f"{name}: {reason}" for name, reason in failed) or (
            f"exit status {exc.returncode}" if exc.returncode >= 0 else str(exc)
        )
        raise ProvisionError(
            f"provisioning the builder failed ({why}); no image was made", failed, "\n".join(tail)
        ) from exc
    provisioning[0] = False
    manifest = check_manifest(read_manifest(ssh, settings.remote_prefix, workdir), request, "\n".join(tail))
    ssh.run(["rm", "-rf", remote_dir], check=False)
    session.remove_cleanup(cleanup)
    session.close_ssh()
    phase_done("provision")
    return manifest
