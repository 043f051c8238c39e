"""The project's wheel: built locally for ``build-ami``, installed on an instance by ``run --update-engine``.

The wheel holds the three packages (``gpu_transcribe``, the engine ``gpu_transcribe_engine`` and the HTTP API
``gpu_transcribe_api``), so the one file that
``build-ami`` pushes to the builder is also what ``run --update-engine`` pushes to an instance whose image has
an older version.

:func:`build_wheel` copies only what goes into the wheel (``pyproject.toml``, ``README.md``, the two package
directories, without ``__pycache__``, and :data:`WHEEL_EXTRAS`: ``ami/provision.py`` and
``requirements/cuda.lock`` as package data) into a temporary directory and builds there with
``python -m pip wheel --no-deps``. Building in a copy keeps the checkout clean (setuptools writes ``build/``
and ``*.egg-info`` next to ``pyproject.toml``) and keeps stale files in an old ``build/lib`` out of the wheel.
When the running interpreter already has setuptools >= 77 (the build backend ``pyproject.toml`` asks for),
the build runs without pip's build isolation, so it needs no package index. Measured on this project's
2-core machine: 1.5 s without isolation, 3.5 s with it (setuptools from a local index).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe_engine.files import replace_atomically

#: What the wheel is built from, relative to the source root (see pyproject.toml's packages.find).
WHEEL_SOURCES: tuple[str, ...] = (
    "pyproject.toml",
    "README.md",
    "gpu_transcribe",
    "gpu_transcribe_engine",
    "gpu_transcribe_api",
)
#: Files outside the packages that the wheel carries as package data (source path -> path in the copy), so
#: that an installed copy can provision a ``build-ami`` builder (``gpu_transcribe.build_ami.plan``). The
#: checkout keeps the one source of each; the copy in the package exists only in the wheel.
WHEEL_EXTRAS: tuple[tuple[str, str], ...] = (
    ("ami/provision.py", "gpu_transcribe/data/provision.py"),
    ("requirements/cuda.lock", "gpu_transcribe/data/cuda.lock"),
)
#: The build backend version pyproject.toml requires (``[build-system] requires``).
MIN_SETUPTOOLS = (77,)
#: Seconds a wheel build may take before it is stopped (it takes 1.5-3.5 s here).
BUILD_TIMEOUT_S = 300.0


def source_root() -> Path:
    """The source checkout this package was imported from: the directory holding ``pyproject.toml``.

    Raises:
        GpuTranscribeError: the package was installed from a wheel (no ``pyproject.toml`` beside it); the
            message says to pass a wheel (``build-ami --wheel FILE``) instead.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "gpu_transcribe_engine").is_dir():
        raise GpuTranscribeError(
            f"cannot build the gpu-transcribe wheel: {root} is not a source checkout (no pyproject.toml); "
            "run build-ami from a checkout of the project, or give a wheel with --wheel FILE"
        )
    return root


def _setuptools_ready() -> bool:
    """True if this interpreter has setuptools >= :data:`MIN_SETUPTOOLS` (build without isolation)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = []
    for piece in version.split(".")[: len(MIN_SETUPTOOLS)]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= MIN_SETUPTOOLS


def build_wheel(out_dir: Path) -> Path:
    """Build the project's wheel (``gpu_transcribe-<version>-py3-none-any.whl``) into ``out_dir``.

    Args:
        out_dir: where the wheel is written (created if missing); an older wheel of the same name is replaced.

    Returns:
        The wheel's path.

    Raises:
        GpuTranscribeError: no source checkout, pip missing, or the build failed (the message ends with the
            build's last output line).
    """
    root = source_root()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-transcribe-wheel-") as tmp:
        src = Path(tmp) / "src"
        dist = Path(tmp) / "dist"
        src.mkdir()
        for name in WHEEL_SOURCES:
            path = root / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif path.is_file():
                shutil.copy2(path, src / name)
        for name, packaged in WHEEL_EXTRAS:
            shutil.copy2(root / name, src / packaged)
        # An absolute path: pip reads a bare name ("src") as a requirement to look up on the index.
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist)]
        if _setuptools_ready():
            argv.append("--no-build-isolation")
        argv.append(str(src))
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT_S, cwd=tmp
            )
        except subprocess.TimeoutExpired:
            raise GpuTranscribeError(
                f"building the gpu-transcribe wheel took more than {BUILD_TIMEOUT_S:.0f} s; "
                "give a built wheel with --wheel FILE"
            ) from None
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            if "No module named pip" in (proc.stderr or ""):
                last = f"{sys.executable} has no pip; install pip or give a built wheel with --wheel FILE"
            raise GpuTranscribeError(f"building the gpu-transcribe wheel from {root} failed: {last}")
        wheels = sorted(dist.glob("*.whl"))
        if len(wheels) != 1:
            raise GpuTranscribeError(f"building the gpu-transcribe wheel gave {len(wheels)} wheels, not one")
        target = out_dir / wheels[0].name
        with replace_atomically(target, 0o644) as (handle, _tmp), wheels[0].open("rb") as built:
            shutil.copyfileobj(built, handle)
    return target


def update_engine_argv(remote_prefix: str, remote_wheel: str) -> list[str]:
    """The command that installs a pushed wheel into an image's engine environment (``run --update-engine``).

    ``--no-deps``: the image already has the engine's dependencies (torch with CUDA, transformers...); only
    our own two packages change, so nothing is downloaded and it takes seconds. ``--force-reinstall``: a
    wheel of the same version (a local change not yet released) replaces the installed one. ``--no-index``:
    with ``--no-deps`` nothing needs an index, and an instance may have no route to one.

    Args:
        remote_prefix: the image's install prefix (the ``remote_prefix`` setting, ``/opt/gpu-transcribe``);
            its ``venv/bin/python`` is the engine's interpreter (``ami/provision.py``).
        remote_wheel: the wheel's path on the instance (keep the wheel's own file name: pip reads the
            version from it).

    Returns:
        The argv, for :meth:`gpu_transcribe.ssh.SSHSession.run` (which quotes every argument).

    Raises:
        ValueError: ``remote_prefix`` is not absolute, or ``remote_wheel`` does not end in ``.whl``.
    """
    if not remote_prefix.startswith("/"):
        raise ValueError(f"remote_prefix {remote_prefix!r} is not an absolute path")
    if not remote_wheel.endswith(".whl"):
        raise ValueError(f"remote_wheel {remote_wheel!r} is not a wheel (.whl)")
    python = f"{remote_prefix.rstrip('/')}/venv/bin/python"
    return [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-index",
        "--no-deps",
        "--force-reinstall",
        remote_wheel,
    ]
