#!/usr/bin/env python3
"""Provision a gpu-transcribe image: engine venv, cached model, compiled bytecode, a warm-up, a manifest.

Runs on the builder instance (``gpu-transcribe build-ami`` pushes it with the project's wheel) and in the
tests, into a temporary prefix. Standard library only: it runs before anything is installed.

Every step prints ``==> step`` and is idempotent (a second run reuses what is there). Every check prints
``check NAME: ok`` or ``check NAME: FAILED reason``; the manifest (``PREFIX/manifest.json``) records them.
Exit status 0 only if every check passed; ``build-ami`` creates no image otherwise.

Layout under the prefix (default ``/opt/gpu-transcribe``):
    venv/            the engine's virtual environment (the wheel with its ``engine`` extra)
    models/          the model: a Hugging Face cache (``--model ID``) or a copy of ``--model-dir``
    manifest.json    versions, model, paths and checks (see :func:`write_manifest`)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: System packages the engine needs on Ubuntu 22.04 besides the NVIDIA driver of the base AMI:
#: python3.11 (the client and engine need >= 3.11; Ubuntu 22.04 ships 3.10), venv support, and espeak-ng
#: to speak the warm-up sentence when no warm-up audio is given.
SYSTEM_PACKAGES = ("python3.11", "python3.11-venv", "espeak-ng")
WARMUP_SENTENCE = "Det här är ett prov av transkriberingen. Ett, två, tre."


class ProvisionError(Exception):
    """A step failed; the message is one line saying which and why."""


def step(name: str) -> None:
    """Print a step header (flushed, so a remote log shows it at once)."""
    print(f"==> {name}", flush=True)


def run(argv: list[str], env: dict[str, str] | None = None, capture: bool = False) -> str:
    """Run ``argv``, echoing it; return stdout if ``capture``.

    Raises:
        ProvisionError: the command exited non-zero (the message quotes it and its last stderr line).
    """
    print("    $ " + shlex.join(argv), flush=True)
    proc = subprocess.run(argv, env=env, text=True, capture_output=capture)
    if proc.returncode != 0:
        last = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
        raise ProvisionError(
            f"{shlex.join(argv[:3])} ... exited {proc.returncode}{': ' + last[0] if last else ''}"
        )
    return proc.stdout if capture else ""


def install_system_packages() -> None:
    """apt-get the :data:`SYSTEM_PACKAGES` (deadsnakes PPA for python3.11 on Ubuntu 22.04)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if shutil.which("python3.11") is None:
        run(["sudo", "-E", "add-apt-repository", "-y", "ppa:deadsnakes/ppa"], env=env)
    run(["sudo", "-E", "apt-get", "update", "-q"], env=env)
    run(["sudo", "-E", "apt-get", "install", "-y", "-q", *SYSTEM_PACKAGES], env=env)


def ensure_venv(prefix: Path, python: str) -> Path:
    """Create ``prefix/venv`` with ``python`` unless it exists; return the venv's interpreter."""
    venv_python = prefix / "venv" / "bin" / "python"
    if venv_python.exists():
        print(f"    reusing {prefix / 'venv'}", flush=True)
    else:
        run([python, "-m", "venv", str(prefix / "venv")])
        run([str(venv_python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    return venv_python


def install_wheel(venv_python: Path, wheel: Path, torch_spec: str | None, pip_args: list[str]) -> None:
    """Install the wheel with its ``engine`` extra (and ``torch_spec`` first, if given)."""
    if not wheel.is_file():
        raise ProvisionError(
            f"--wheel {wheel}: no such file; build it with `python -m pip wheel --no-deps .`"
        )
    pip = [str(venv_python), "-m", "pip", "install", "-q", *pip_args]
    if torch_spec:
        run([*pip, torch_spec])
    run([*pip, f"{wheel.resolve()}[engine]"])
    # --force-reinstall of our own wheel only: an image rebuilt with a new wheel of the same version updates.
    run([*pip, "--no-deps", "--force-reinstall", str(wheel.resolve())])


def cache_model(
    venv_python: Path, prefix: Path, model: str, revision: str | None, model_dir: Path | None
) -> Path:
    """Put the model under ``prefix/models`` and return the directory the engine loads it from.

    ``model_dir`` (a local transformers checkpoint) is copied; otherwise ``model`` is downloaded from the
    Hugging Face hub into ``prefix/models/hub`` with ``huggingface_hub.snapshot_download``.
    """
    models = prefix / "models"
    models.mkdir(parents=True, exist_ok=True)
    if model_dir is not None:
        if not (model_dir / "config.json").is_file():
            raise ProvisionError(
                f"--model-dir {model_dir}: no config.json there; give a transformers checkpoint"
            )
        target = models / model_dir.name
        if not target.exists():
            tmp = Path(tempfile.mkdtemp(dir=models, prefix=".copy-"))
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
            tmp.rename(target)
        return target
    code = (
        "import sys; from huggingface_hub import snapshot_download; "
        "print(snapshot_download(sys.argv[1], revision=sys.argv[2] or None, cache_dir=sys.argv[3]))"
    )
    out = run([str(venv_python), "-c", code, model, revision or "", str(models / "hub")], capture=True)
    return Path(out.strip().splitlines()[-1])


def compile_bytecode(venv_python: Path) -> None:
    """Compile every module of the venv so the first run does not (measured: import is the slow part)."""
    run([str(venv_python), "-m", "compileall", "-q", "-j", "0", str(venv_python.parent.parent / "lib")])


def make_warmup_audio(workdir: Path) -> Path:
    """Speak :data:`WARMUP_SENTENCE` with espeak-ng into a WAV file and return it."""
    out = workdir / "warmup.wav"
    run(["espeak-ng", "-v", "sv", "-w", str(out), WARMUP_SENTENCE])
    return out


def warm_up(venv_python: Path, model_path: Path, audio: Path, device: str, workdir: Path) -> str:
    """Transcribe ``audio`` with the installed engine; return the transcript text.

    Raises:
        ProvisionError: the engine failed or the transcript is empty.
    """
    out = workdir / "warmup-out"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = [str(venv_python), "-m", "remote", "transcribe", str(audio), "--out", str(out)]
    argv += ["--model", str(model_path), "--device", device, "--format", "json", "--language", "auto"]
    run(argv, env=env, capture=True)
    data = json.loads((out / f"{audio.stem}.json").read_text(encoding="utf-8"))
    text = str(data.get("text", "")).strip()
    if not text:
        raise ProvisionError(f"warm-up transcription of {audio.name} is empty")
    return text


def versions(venv_python: Path) -> dict[str, str]:
    """Versions of torch, CUDA, transformers, gpu-transcribe, Python and the NVIDIA driver."""
    code = (
        "import json, platform, torch, transformers; from importlib.metadata import version; "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda or '', "
        "'cuda_available': str(torch.cuda.is_available()), 'transformers': transformers.__version__, "
        "'gpu_transcribe': version('gpu-transcribe'), 'python': platform.python_version()}))"
    )
    found: dict[str, str] = json.loads(
        run([str(venv_python), "-c", code], capture=True).strip().splitlines()[-1]
    )
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


def write_manifest(prefix: Path, manifest: dict[str, object]) -> Path:
    """Write ``prefix/manifest.json`` atomically and return its path."""
    path = prefix / "manifest.json"
    tmp = path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's options (``--help`` lists them)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--prefix", type=Path, default=Path("/opt/gpu-transcribe"), help="install prefix")
    p.add_argument("--wheel", type=Path, required=True, help="the gpu-transcribe wheel to install")
    p.add_argument("--model", default="KBLab/kb-whisper-small", help="Hugging Face model id")
    p.add_argument("--revision", default=None, help="model revision")
    p.add_argument("--model-dir", type=Path, default=None, help="a local model directory to use instead")
    p.add_argument("--python", default="python3.11", help="interpreter for the venv (>= 3.11)")
    p.add_argument("--torch-spec", default=None, help="install this torch first, e.g. 'torch==2.6.0'")
    p.add_argument("--pip-arg", action="append", default=[], help="extra pip argument (repeatable)")
    p.add_argument("--skip-system-packages", action="store_true", help="do not apt-get anything")
    p.add_argument(
        "--warmup-audio", type=Path, default=None, help="speech for the warm-up (default: espeak-ng)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="warm-up device")
    p.add_argument("--require-cuda", action="store_true", help="fail unless torch sees a CUDA GPU")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every step; return the exit status (0: every check passed)."""
    args = parse_args(argv)
    prefix: Path = args.prefix.resolve()
    checks: dict[str, str] = {}
    manifest: dict[str, object] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model if args.model_dir is None else str(args.model_dir),
        "revision": args.revision,
        "prefix": str(prefix),
        "checks": checks,
    }

    def check(name: str, ok: bool, reason: str = "") -> None:
        checks[name] = "ok" if ok else f"FAILED: {reason}"
        print(f"check {name}: {'ok' if ok else 'FAILED ' + reason}", flush=True)

    try:
        prefix.mkdir(parents=True, exist_ok=True)
        if args.skip_system_packages:
            step("system packages: skipped (--skip-system-packages)")
        else:
            step("system packages")
            install_system_packages()
        step("virtual environment")
        venv_python = ensure_venv(prefix, args.python)
        step("engine wheel")
        install_wheel(venv_python, args.wheel, args.torch_spec, args.pip_arg)
        step("versions")
        found = versions(venv_python)
        manifest.update(found)
        check("engine_imports", True)
        if args.require_cuda:
            check("cuda_available", found.get("cuda_available") == "True", "torch sees no CUDA GPU")
        step("model")
        model_path = cache_model(venv_python, prefix, args.model, args.revision, args.model_dir)
        manifest["model_path"] = str(model_path)
        check("model_cached", (model_path / "config.json").is_file(), f"no config.json in {model_path}")
        step("bytecode")
        compile_bytecode(venv_python)
        check("bytecode_compiled", True)
        step("warm-up transcription")
        with tempfile.TemporaryDirectory(prefix="gpu-transcribe-warmup-") as tmp:
            audio = args.warmup_audio or make_warmup_audio(Path(tmp))
            text = warm_up(venv_python, model_path, audio, args.device, Path(tmp))
        manifest["warmup_transcript"] = text
        check("warmup_transcript", bool(text), "empty")
    except ProvisionError as exc:
        check("provision", False, str(exc))
    finally:
        path = write_manifest(prefix, manifest)
        print(f"manifest: {path}", flush=True)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        print(f"provisioning FAILED: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    print("provisioning ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
