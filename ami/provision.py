#!/usr/bin/env python3
"""Provision a gpu-transcribe image: engine venv, cached model, compiled bytecode, a warm-up, a manifest.

Runs on the builder instance (``gpu-transcribe build-ami`` pushes it with the project's wheel and the lock
file ``requirements/cuda.lock``, and runs it with the image's ``python3``) and in the tests, into a temporary
prefix, with ``requirements/cpu.lock``. Standard library only, and Python 3.10 syntax: it runs with Ubuntu
22.04's python3 before anything is installed.

Every step prints ``==> step`` and is idempotent: a second run reuses the venv, the installed packages and the
cached model, recompiles nothing that is compiled, and redoes the checks and the warm-up. Every check prints
``check NAME: ok`` or ``check NAME: FAILED reason``; the manifest (``PREFIX/manifest.json``) records them.
The exit status is 0 only if every check passed; ``build-ami`` creates no image otherwise.

Layout under the prefix (default ``/opt/gpu-transcribe``, owned by the login user so that
``run --update-engine`` can install into the venv without sudo):
    venv/            the engine's virtual environment: the lock's exact versions (hashes checked), then the
                     wheel without dependencies
    models/          the model: a Hugging Face cache (``--model ID``) or a copy of ``--model-dir``
    manifest.json    versions, model, paths, the warm-up and the checks (see :func:`write_manifest`)

Checks (each one can fail; a failed step ends the run and is recorded as the failed check):
    engine_imports        the venv imports ``gpu_transcribe_engine.engine`` (torch, transformers) and reports
    versions
    cuda_available        torch sees a CUDA GPU (with ``--require-cuda``, the default on the builder)
    model_cached          the model directory has ``config.json`` and its weights
    bytecode_compiled     ``compileall`` compiled every module of the venv (tests directories excluded)
    warmup_transcript     the engine transcribed the warm-up clip offline to a non-empty text
    warmup_gpu_float16    ... on the GPU in float16 (with ``--require-cuda``)
    image_clean           the last step (``provision.py clean-image /``, as root) left no cloud-init state,
                          SSH host keys, shell history, cloud-init logs or machine id for the image to carry
                          (skipped with ``--skip-image-cleanup``, which the tests use on their own machine)

Why one file of more than 500 lines: the file is the unit that is shipped and run. ``build-ami`` pushes it
as one file beside the wheel and the lock (:data:`gpu_transcribe.build_ami.plan.PROVISION_SCRIPT`; an
installed copy carries it as ``gpu_transcribe/data/provision.py``, see
:data:`gpu_transcribe.build_ami.wheel.WHEEL_EXTRAS`) and runs it with the builder's own ``python3`` before
anything is installed, so it cannot import the project; the image cleanup runs the same file again as root
(``sudo -n python3 provision.py clean-image /``). Split into modules, its steps would travel as several files
kept in step in the wheel's data, the push and the tests, for a script whose steps run once, in order, from
:func:`main`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: System packages the engine needs on Ubuntu 22.04 besides the NVIDIA driver of the base AMI:
#: python3.11 (the client and engine need >= 3.11; Ubuntu 22.04 ships 3.10, the deadsnakes PPA has 3.11),
#: venv support, espeak-ng to speak the warm-up sentence when no warm-up audio is given, and curl, with which
#: the client reads the spot interruption notice from the instance metadata service over SSH.
SYSTEM_PACKAGES = ("python3.11", "python3.11-venv", "espeak-ng", "curl")
WARMUP_SENTENCE = "Det här är ett prov av transkriberingen. Ett, två, tre."
MANIFEST_FORMAT = 1
#: Modules under these directories are test suites shipped inside packages (torch/testing/_internal has
#: Python 3.12-only files); they are not imported by the engine and are left out of compileall.
COMPILE_EXCLUDE_REGEX = r"[/\\](tests?|testing)[/\\]"
#: Seconds apt may wait for the dpkg lock (unattended-upgrades holds it for minutes after first boot).
APT_LOCK_TIMEOUT_S = 600
#: Files of a model repository worth downloading: configs, tokenizer and the weights (safetensors if the
#: repository has them, else PyTorch .bin). Whisper repositories also hold ggml, Flax, TF and CTranslate2
#: copies, several GB the engine never reads.
MODEL_CONFIG_PATTERNS = ("*.json", "*.txt", "*.tiktoken")

_VERSIONS_CODE = """\
import json, platform, sys
from importlib.metadata import version
import gpu_transcribe_engine.engine
import torch, transformers
info = {
    "gpu_transcribe": version("gpu-transcribe"),
    "python": platform.python_version(),
    "torch": torch.__version__,
    "cuda": torch.version.cuda or "",
    "cuda_available": torch.cuda.is_available(),
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
    "transformers": transformers.__version__,
}
print(json.dumps(info))
"""

_DOWNLOAD_CODE = """\
import sys
from fnmatch import fnmatch
from huggingface_hub import HfApi, snapshot_download
model, revision, cache_dir = sys.argv[1], sys.argv[2] or None, sys.argv[3]
configs = sys.argv[4].split(",")
files = HfApi().list_repo_files(model, revision=revision)
weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["pytorch_model*.bin"]
path = snapshot_download(model, revision=revision, cache_dir=cache_dir, allow_patterns=configs + weights)
print(path)
"""


class ProvisionError(Exception):
    """A step failed; ``check`` names the failed check and the message says why, in one line."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


def step(name: str) -> None:
    """Print a step header (flushed, so a remote log shows it at once)."""
    print(f"==> {name}", flush=True)


def run(argv: list[str], check: str, env: dict[str, str] | None = None, capture: bool = False) -> str:
    """Run ``argv``, echoing it; return its stdout if ``capture`` (else it goes to our stdout).

    stderr always goes to our stderr (the build shows its tail when a step fails), and its last line is
    kept for the error message.

    Raises:
        ProvisionError: for ``check``: the command is missing or exited non-zero (the message quotes it and
            its last stderr line).
    """
    shown = ["<script>" if "\n" in arg else arg for arg in argv]
    print("    $ " + shlex.join(shown), flush=True)
    try:
        proc = subprocess.run(
            argv, env=env, text=True, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise ProvisionError(check, f"{argv[0]}: cannot run it ({exc.strerror})") from None
    if proc.stderr:
        sys.stderr.write(proc.stderr)
        sys.stderr.flush()
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        last = f": {lines[-1]}" if lines else ""
        raise ProvisionError(check, f"`{shlex.join(argv[:4])} ...` exited {proc.returncode}{last}")
    return proc.stdout if capture else ""


def ensure_prefix(prefix: Path) -> None:
    """Create ``prefix`` owned by this user; with sudo when its parent is not writable (``/opt``)."""
    if prefix.is_dir() and os.access(prefix, os.W_OK):
        return
    try:
        prefix.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        if shutil.which("sudo") is None:
            raise ProvisionError("prefix", f"{prefix}: cannot create it and there is no sudo") from None
        owner = [f"--owner={os.getuid()}", f"--group={os.getgid()}"]
        run(["sudo", "install", "-d", *owner, "--mode=0755", str(prefix)], "prefix")
    if not os.access(prefix, os.W_OK):
        raise ProvisionError("prefix", f"{prefix}: not writable by uid {os.getuid()}")


def install_system_packages() -> None:
    """apt-get the :data:`SYSTEM_PACKAGES` (deadsnakes PPA for python3.11 on Ubuntu 22.04).

    Waits for cloud-init to finish first: on a fresh instance it (and unattended-upgrades) holds the dpkg
    lock; apt also waits up to :data:`APT_LOCK_TIMEOUT_S` for the lock.
    """
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if shutil.which("cloud-init"):
        # Exit status 2 means "done, with recoverable errors": not ours to judge here.
        subprocess.run(["cloud-init", "status", "--wait"], stdout=subprocess.DEVNULL, check=False)
    apt = ["sudo", "-E", "apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}", "-q"]
    if shutil.which("python3.11") is None:
        run(["sudo", "-E", "add-apt-repository", "-y", "ppa:deadsnakes/ppa"], "system_packages", env=env)
    run([*apt, "update"], "system_packages", env=env)
    run([*apt, "install", "-y", "--no-install-recommends", *SYSTEM_PACKAGES], "system_packages", env=env)


def ensure_venv(prefix: Path, python: str) -> Path:
    """Create ``prefix/venv`` with ``python`` unless it works already; return the venv's interpreter."""
    venv_python = prefix / "venv" / "bin" / "python"
    probe = [str(venv_python), "-c", "import pip"]
    if venv_python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        print(f"    reusing {prefix / 'venv'}", flush=True)
        return venv_python
    run([python, "-m", "venv", "--clear", str(prefix / "venv")], "venv")
    return venv_python


def install_wheel(venv_python: Path, wheel: Path, lock: Path, pip_args: list[str]) -> None:
    """Install the engine's dependencies from ``lock`` (exact versions, every file's hash checked), then the
    wheel with ``--no-deps --force-reinstall`` (a rebuilt wheel of the same version replaces the old one),
    then ``pip check``: the lock must hold everything the wheel and its ``engine`` extra need.

    ``lock`` is a ``uv pip compile --generate-hashes`` output: ``requirements/cuda.lock`` on the builder,
    ``requirements/cpu.lock`` in the tests. ``pip_args`` go to both installs (e.g. ``--find-links DIR``).

    Raises:
        ProvisionError: ``engine_installed``: no wheel or lock file, or pip failed (a hash mismatch, a
            package missing from the lock).
    """
    if not wheel.is_file():
        raise ProvisionError(
            "engine_installed",
            f"--wheel {wheel}: no such file; build it with `python -m pip wheel --no-deps .`",
        )
    if not lock.is_file():
        raise ProvisionError(
            "engine_installed", f"--lock {lock}: no such file; give requirements/cuda.lock (`make lock`)"
        )
    pip = [str(venv_python), "-m", "pip"]
    install = [*pip, "install", "--quiet", "--disable-pip-version-check", *pip_args]
    run([*install, "--require-hashes", "-r", str(lock.resolve())], "engine_installed")
    run([*install, "--no-deps", "--force-reinstall", str(wheel.resolve())], "engine_installed")
    run([*pip, "check", "--disable-pip-version-check"], "engine_installed")


def versions(venv_python: Path) -> dict[str, object]:
    """Import the engine in the venv; return the versions of gpu-transcribe, Python, torch, CUDA,
    transformers, the GPU's name and the NVIDIA driver.

    Raises:
        ProvisionError: ``engine_imports``: the engine does not import.
    """
    out = run([str(venv_python), "-c", _VERSIONS_CODE], "engine_imports", capture=True)
    try:
        found: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ProvisionError("engine_imports", f"the version probe printed no JSON: {out[-200:]!r}") from None
    driver = ""
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        driver = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    found["driver"] = driver
    return found


def has_weights(model_path: Path) -> bool:
    """True if ``model_path`` holds transformers weights (safetensors or PyTorch, single or sharded)."""
    return any(model_path.glob("*.safetensors")) or any(model_path.glob("pytorch_model*.bin"))


def cache_model(
    venv_python: Path, prefix: Path, model: str, revision: str | None, model_dir: Path | None
) -> Path:
    """Put the model under ``prefix/models`` and return the directory the engine loads it from.

    ``model_dir`` (a local transformers checkpoint of ``model``) is copied (into a temporary directory, then
    renamed: a half copy is never taken for a whole one); otherwise ``model`` is downloaded from the Hugging
    Face hub into ``prefix/models/hub`` (configs, tokenizer and one format of weights).

    Raises:
        ProvisionError: ``model_cached``: no checkpoint in ``model_dir``, or the download failed.
    """
    models = prefix / "models"
    models.mkdir(parents=True, exist_ok=True)
    if model_dir is not None:
        model_dir = model_dir.resolve()
        if not (model_dir / "config.json").is_file() or not has_weights(model_dir):
            raise ProvisionError(
                "model_cached",
                f"--model-dir {model_dir}: no config.json and weights there; give a transformers checkpoint",
            )
        target = models / model_dir.name
        if target.exists():
            print(f"    reusing {target}", flush=True)
            return target
        tmp = Path(tempfile.mkdtemp(dir=models, prefix=".copy-"))
        print(f"    copying {model_dir} to {target}", flush=True)
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        tmp.chmod(0o755)
        tmp.rename(target)
        return target
    argv = [str(venv_python), "-c", _DOWNLOAD_CODE, model, revision or "", str(models / "hub")]
    out = run([*argv, ",".join(MODEL_CONFIG_PATTERNS)], "model_cached", capture=True)
    lines = out.strip().splitlines()
    if not lines:
        raise ProvisionError("model_cached", f"downloading {model} printed no path")
    return Path(lines[-1].strip())


def compile_bytecode(venv_python: Path) -> None:
    """Compile every module of the venv, so the first run does not (imports are the slow part of a cold
    start). Test suites inside packages are excluded (:data:`COMPILE_EXCLUDE_REGEX`).

    Raises:
        ProvisionError: ``bytecode_compiled``: a module failed to compile.
    """
    lib = venv_python.parent.parent / "lib"
    argv = [str(venv_python), "-m", "compileall", "-q", "-j", "0", "-x", COMPILE_EXCLUDE_REGEX, str(lib)]
    run(argv, "bytecode_compiled")


def make_warmup_audio(workdir: Path) -> Path:
    """Speak :data:`WARMUP_SENTENCE` with espeak-ng into a WAV file and return it.

    Raises:
        ProvisionError: ``warmup_transcript``: espeak-ng is not installed or failed.
    """
    if shutil.which("espeak-ng") is None:
        raise ProvisionError(
            "warmup_transcript",
            "espeak-ng is not installed (it is a system package): give --warmup-audio FILE",
        )
    out = workdir / "warmup.wav"
    run(["espeak-ng", "-v", "sv", "-w", str(out), WARMUP_SENTENCE], "warmup_transcript")
    return out


def warm_up(
    venv_python: Path, model_path: Path, audio: Path, device: str, workdir: Path
) -> dict[str, object]:
    """Transcribe ``audio`` with the installed engine, offline, as a run would.

    Returns:
        ``{"audio", "device", "dtype", "load_s", "transcribe_s", "text"}`` from the engine's events and
        its JSON output.

    Raises:
        ProvisionError: ``warmup_transcript``: the engine failed or wrote no text.
    """
    if not audio.is_file():
        raise ProvisionError("warmup_transcript", f"--warmup-audio {audio}: no such file")
    out = workdir / "warmup-out"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = [str(venv_python), "-m", "gpu_transcribe_engine", "transcribe", str(audio), "--out", str(out)]
    argv += ["--model", str(model_path), "--device", device, "--format", "json", "--language", "auto"]
    stdout = run(argv, "warmup_transcript", env=env, capture=True)
    info: dict[str, object] = {"audio": audio.name}
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "model_loaded":
            info.update(device=event.get("device"), dtype=event.get("dtype"), load_s=event.get("load_s"))
        elif event.get("event") == "file_done":
            info["transcribe_s"] = event.get("transcribe_s")
    result = out / f"{audio.stem}.json"
    try:
        data = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProvisionError(
            "warmup_transcript", f"the engine wrote no readable {result.name} ({exc})"
        ) from None
    text = str(data.get("text", "")).strip()
    if not text:
        raise ProvisionError("warmup_transcript", f"the warm-up transcription of {audio.name} is empty")
    info["text"] = text
    return info


def forget_authorized_key(public_key: str) -> bool:
    """Remove ``public_key`` (``ssh-ed25519 AAAA...``) from this user's ``~/.ssh/authorized_keys``.

    The builder's per-build key would otherwise stay authorized in every instance made from the image.
    Matches on the key's base64 blob; other lines are kept. Returns True if a line was removed.
    """
    parts = public_key.split()
    if len(parts) < 2:
        return False
    path = Path.home() / ".ssh" / "authorized_keys"
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError:
        return False
    kept = [line for line in lines if parts[1] not in line.split()]
    if len(kept) == len(lines):
        return False
    tmp = path.with_name(".authorized_keys.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return True


#: Shell and tool history files of root and of every user under ``/home``.
HISTORY_FILES = (".bash_history", ".python_history", ".lesshst", ".viminfo", ".wget-hsts")
#: Rotated logs: ``syslog.1``, ``auth.log.2.gz``, ``dmesg.0``, ``*.gz``, ``*.old``.
_ROTATED_LOG = re.compile(r"(\.\d+(\.gz)?|\.gz|\.old)$")


def _history_files(root: Path) -> list[Path]:
    homes = [root / "root", *sorted((root / "home").glob("*"))]
    return [home / name for home in homes for name in HISTORY_FILES]


def clean_image(root: Path) -> list[str]:
    """Remove what the builder's life left under ``root`` that no instance made from the image may inherit.

    - cloud-init's state (everything under ``var/lib/cloud``: the builder's instance data, user data, seed and
      semaphores), so every instance runs cloud-init as a first boot, as ``cloud-init clean --seed`` does;
    - the SSH host keys (``etc/ssh/ssh_host_*``): instances of the image must not share one host key (runs
      install their own through user data);
    - shell and tool history of root and of the users under ``home``;
    - logs: cloud-init's removed, rotated ones removed, the others truncated, the journal's files removed;
    - the machine id (``etc/machine-id`` emptied: systemd makes a new one at the next boot).

    Idempotent. ``root`` is ``/`` on the builder (run as root) and a temporary directory in the tests.

    Returns:
        What it removed or emptied, as paths relative to ``root``.
    """
    done: list[str] = []

    def remove(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            return
        done.append(str(path.relative_to(root)))

    cloud = root / "var" / "lib" / "cloud"
    for entry in sorted(cloud.iterdir()) if cloud.is_dir() else []:
        remove(entry)
    for key in sorted((root / "etc" / "ssh").glob("ssh_host_*")):
        remove(key)
    for history in _history_files(root):
        remove(history)
    logs = root / "var" / "log"
    for path in sorted(logs.rglob("*")) if logs.is_dir() else []:
        if path.is_symlink() or not path.is_file():
            continue
        in_journal = path.relative_to(logs).parts[0] == "journal"
        if in_journal or path.name.startswith("cloud-init") or _ROTATED_LOG.search(path.name):
            remove(path)
        elif path.stat().st_size:
            path.write_bytes(b"")
            done.append(str(path.relative_to(root)))
    machine_id = root / "etc" / "machine-id"
    if machine_id.is_file() and machine_id.stat().st_size:
        machine_id.write_bytes(b"")
        done.append(str(machine_id.relative_to(root)))
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        remove(dbus_id)
    return done


def image_leftovers(root: Path) -> list[str]:
    """What :func:`clean_image` removes that is still under ``root``, one short line each (empty: clean).

    Other logs are not checked: services keep writing them until the builder stops.
    """
    found: list[str] = []
    cloud = root / "var" / "lib" / "cloud"
    if cloud.is_dir() and any(cloud.iterdir()):
        found.append(f"cloud-init state in {cloud}")
    keys = sorted((root / "etc" / "ssh").glob("ssh_host_*"))
    if keys:
        found.append(f"SSH host keys: {', '.join(str(k) for k in keys)}")
    histories = [str(h) for h in _history_files(root) if h.exists()]
    if histories:
        found.append(f"history: {', '.join(histories)}")
    cloud_logs = sorted((root / "var" / "log").glob("cloud-init*"))
    if cloud_logs:
        found.append(f"cloud-init logs: {', '.join(str(p) for p in cloud_logs)}")
    machine_id = root / "etc" / "machine-id"
    if machine_id.is_file() and machine_id.stat().st_size:
        found.append(f"{machine_id} is not empty")
    return found


def clean_image_main(root: Path) -> int:
    """``provision.py clean-image ROOT``: wait for cloud-init, run ``cloud-init clean --logs --seed`` when
    ``ROOT`` is ``/`` and cloud-init is installed, then :func:`clean_image` and :func:`image_leftovers`.
    Exit status 0 when nothing is left; else 1, with one line on stderr naming what is."""
    if root == Path("/") and shutil.which("cloud-init"):
        subprocess.run(["cloud-init", "status", "--wait"], stdout=subprocess.DEVNULL, check=False)
        subprocess.run(["cloud-init", "clean", "--logs", "--seed"], check=False)
    for item in clean_image(root):
        print(f"    removed {item}", flush=True)
    left = image_leftovers(root)
    if left:
        print(f"left in the image: {'; '.join(left)}", file=sys.stderr, flush=True)
        return 1
    return 0


def write_manifest(prefix: Path, manifest: dict[str, object]) -> Path:
    """Write ``prefix/manifest.json`` atomically and return its path.

    Keys: ``format`` (1), ``created`` (UTC ISO 8601), ``prefix``, ``model`` (the Hugging Face id),
    ``revision`` (``null`` for the default branch), ``model_source`` (``hub`` or the copied directory),
    ``model_path`` (what ``python -m gpu_transcribe_engine transcribe --model`` takes), ``python``,
    ``gpu_transcribe``,
    ``torch``, ``cuda``, ``cuda_available``, ``gpu``, ``transformers``, ``driver``, ``warmup`` (see
    :func:`warm_up`), ``checks`` (name -> ``ok`` or ``FAILED: reason``) and ``ok`` (every check passed).
    """
    path = prefix / "manifest.json"
    tmp = path.with_name(".manifest.json.tmp")
    tmp.write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's options (``--help`` lists them). A later option wins over an earlier one."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--prefix", type=Path, default=Path("/opt/gpu-transcribe"), help="install prefix")
    p.add_argument("--wheel", type=Path, required=True, help="the gpu-transcribe wheel to install")
    p.add_argument("--model", default="KBLab/kb-whisper-small", help="Hugging Face model id")
    p.add_argument("--revision", default=None, help="model revision (default: the default branch)")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a local checkpoint of --model to copy instead of downloading",
    )
    p.add_argument("--python", default="python3.11", help="interpreter for the venv (>= 3.11)")
    p.add_argument(
        "--lock",
        type=Path,
        required=True,
        help="lock file the venv is installed from (requirements/cuda.lock; cpu.lock in the tests)",
    )
    p.add_argument("--pip-arg", action="append", default=[], help="extra pip argument (repeatable)")
    p.add_argument("--skip-system-packages", action="store_true", help="do not apt-get anything")
    p.add_argument(
        "--warmup-audio", type=Path, default=None, help="speech for the warm-up (default: espeak-ng)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="warm-up device")
    p.add_argument(
        "--require-cuda",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fail unless torch sees a CUDA GPU and the warm-up ran on it in float16",
    )
    p.add_argument(
        "--skip-image-cleanup",
        action="store_true",
        help="do not clean cloud-init state, SSH host keys, history and logs at the end (tests only)",
    )
    p.add_argument(
        "--forget-authorized-key",
        default=None,
        metavar="PUBLIC_KEY",
        help="at the end, remove this public key from ~/.ssh/authorized_keys (the builder's own key)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every step; return the exit status (0: every check passed).

    ``provision.py clean-image ROOT`` runs only the image cleanup (:func:`clean_image_main`); the last step
    runs it so, as root.
    """
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["clean-image"]:
        return clean_image_main(Path(given[1] if len(given) > 1 else "/"))
    args = parse_args(argv)
    prefix: Path = args.prefix.resolve()
    checks: dict[str, str] = {}
    manifest: dict[str, object] = {
        "format": MANIFEST_FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "prefix": str(prefix),
        "model": args.model,
        "revision": args.revision,
        "model_source": str(args.model_dir.resolve()) if args.model_dir else "hub",
        "checks": checks,
        "ok": False,
    }

    def check(name: str, ok: bool, reason: str = "") -> None:
        checks[name] = "ok" if ok else f"FAILED: {reason}"
        print(f"check {name}: {'ok' if ok else 'FAILED ' + reason}", flush=True)

    wrote = False
    try:
        step("install prefix")
        ensure_prefix(prefix)
        if args.skip_system_packages:
            step("system packages: skipped (--skip-system-packages)")
        else:
            step("system packages")
            install_system_packages()
        step("virtual environment")
        venv_python = ensure_venv(prefix, args.python)
        step("engine wheel")
        install_wheel(venv_python, args.wheel, args.lock, args.pip_arg)
        step("versions")
        found = versions(venv_python)
        manifest.update(found)
        check("engine_imports", True)
        if args.require_cuda:
            check("cuda_available", found.get("cuda_available") is True, "torch sees no CUDA GPU")
        step("model")
        model_path = cache_model(venv_python, prefix, args.model, args.revision, args.model_dir)
        manifest["model_path"] = str(model_path)
        check(
            "model_cached",
            (model_path / "config.json").is_file() and has_weights(model_path),
            f"no config.json and weights in {model_path}",
        )
        step("bytecode")
        compile_bytecode(venv_python)
        check("bytecode_compiled", True)
        step("warm-up transcription")
        with tempfile.TemporaryDirectory(prefix="gpu-transcribe-warmup-") as tmp:
            audio = args.warmup_audio.resolve() if args.warmup_audio else make_warmup_audio(Path(tmp))
            warmup = warm_up(venv_python, model_path, audio, args.device, Path(tmp))
        manifest["warmup"] = warmup
        check("warmup_transcript", bool(warmup.get("text")), "empty")
        if args.require_cuda:
            on_gpu = warmup.get("device") == "cuda" and warmup.get("dtype") == "float16"
            where = f"{warmup.get('device')} in {warmup.get('dtype')}"
            check("warmup_gpu_float16", on_gpu, f"the warm-up ran on {where}")
        if args.skip_image_cleanup:
            step("image cleanup: skipped (--skip-image-cleanup)")
        else:
            step("image cleanup")
            script = str(Path(__file__).resolve())
            run(["sudo", "-n", sys.executable, script, "clean-image", "/"], "image_clean")
            check("image_clean", True)
    except ProvisionError as exc:
        check(exc.check, False, str(exc))
    finally:
        manifest["ok"] = bool(checks) and all(state == "ok" for state in checks.values())
        if prefix.is_dir() and os.access(prefix, os.W_OK):
            path = write_manifest(prefix, manifest)
            wrote = True
            print(f"manifest: {path}", flush=True)
        if args.forget_authorized_key and forget_authorized_key(args.forget_authorized_key):
            print("removed the builder's key from ~/.ssh/authorized_keys", flush=True)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed or not wrote:
        print(f"provisioning FAILED: {', '.join(failed) or 'no manifest'}", file=sys.stderr, flush=True)
        return 1
    print("provisioning ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
