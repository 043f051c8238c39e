"""The prepared GPU check: stage what the engine needs onto a lent GPU machine in pieces, then run the
decoding-loop benchmark there.

    python -m bench.gpu_check prepare [--model models/whisper-base] [--audio FILE] [--out .gpu]
        [--limit-mib 44]
    python3 -m bench.gpu_check stage .gpu/carry-K        (on the GPU machine, once per piece)
    python3 -m bench.gpu_check run [--windows 8,16]      (on the GPU machine, after every piece)

Why in pieces: a call to the lent machine carries at most 64 MiB with the repository (about 13 MB), and
has no network. Its image holds PyTorch with CUDA but not the versions of the lock file
(``requirements/cuda.lock``): transformers 5.17 there, where the engine's fast path needs 5.24
(:data:`gpu_transcribe_engine.fast_path.TESTED_TRANSFORMERS`). ``prepare`` (here) writes, under ``--out``:

- ``wheels/``: transformers, huggingface-hub and tokenizers at the lock file's versions, for the
  machine's Python 3.12 (``pip download``);
- ``model/``: the checkpoint in float16, in safetensors shards small enough to carry;
- ``audio.npy``: ``--audio`` decoded to 16 kHz float32 (the machine has no PyAV);
- ``carry-1``, ``carry-2``...: the same files in groups of at most ``--limit-mib`` each, and
  ``plan.txt`` with one device call per group (``stage``) and the last one (``run``).

``stage`` copies a carried group into ``STAGE_DIR`` (it outlives a call while the machine is held, and a
machine is given back 30 s after its last call, so the calls follow each other at once); ``run`` installs
the wheels into ``STAGE_DIR/site`` and runs :mod:`bench.decode_loop` on CUDA (eager against compiled, 8
and 16 windows) into ``$OUT/gpu-check.txt``. The whole-process benchmark (:mod:`bench.engine` against
faster-whisper float16) and ``bench/server.py --device cuda`` need the CUDA lock installed (PyAV,
CTranslate2 built for CUDA 12, the server's packages), which is the GPU image (``build-ami``), not this
machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

STAGE_DIR = Path("/tmp/gpu-check")
"""Where ``stage`` gathers the pieces on the GPU machine."""
WHEELS = ("transformers", "huggingface-hub", "tokenizers")
"""Packages carried at the lock file's versions (the machine's image has older ones)."""
LOCK = Path("requirements/cpu.lock")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def locked_version(name: str, lock: Path = LOCK) -> str:
    """The version ``lock`` pins for ``name`` (``name==X.Y.Z \\``).

    Raises:
        KeyError: ``name`` is not in the lock.
    """
    prefix = f"{name}=="
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].split()[0]
    raise KeyError(f"{name} is not pinned in {lock}")


def carry_groups(sizes: dict[str, int], limit_bytes: int) -> list[list[str]]:
    """Split files (relative path -> size in bytes) into groups of at most ``limit_bytes`` each, largest
    first into the first group with room (first-fit decreasing), each group's paths sorted.

    Raises:
        ValueError: a file is larger than ``limit_bytes``.
    """
    groups: list[tuple[int, list[str]]] = []
    for path, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        if size > limit_bytes:
            raise ValueError(f"{path}: {size} bytes, more than a call carries ({limit_bytes}); shard it")
        for index, (used, paths) in enumerate(groups):
            if used + size <= limit_bytes:
                groups[index] = (used + size, [*paths, path])
                break
        else:
            groups.append((size, [path]))
    return [sorted(paths) for _used, paths in groups]


def prepare(model: str, audio: Path, out: Path, limit_mib: int) -> list[list[str]]:
    """Write the wheels, the float16 model, the audio and the carry groups under ``out``; return the
    groups."""
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from gpu_transcribe_engine.audio import decode_audio

    samples = decode_audio(audio)  # a missing or broken recording is said before any work
    if out.exists() and any(out.iterdir()):
        if not (out / "plan.txt").is_file():
            raise ValueError(f"--out {out}: exists and is not an earlier prepare's output; give a new folder")
        shutil.rmtree(out)  # an earlier prepare's pieces, made again
    staged = out / "staged"
    wheels = staged / "wheels"
    wheels.mkdir(parents=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pins = [f"{name}=={locked_version(name)}" for name in WHEELS]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    target = ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels)]
    subprocess.run([*download, *target, *pins], check=True)
    whisper = WhisperForConditionalGeneration.from_pretrained(model, dtype=torch.float16)
    whisper.save_pretrained(staged / "model", max_shard_size="30MB")
    WhisperProcessor.from_pretrained(model).save_pretrained(staged / "model")
    np.save(staged / "audio.npy", samples)
    limit = limit_mib * 1024 * 1024
    for path in [p for p in staged.rglob("*") if p.is_file() and p.stat().st_size > limit]:
        split_file(path, limit)  # a single tensor (the token embedding) outgrows any shard size
    sizes = {str(p.relative_to(staged)): p.stat().st_size for p in staged.rglob("*") if p.is_file()}
    groups = carry_groups(sizes, limit)
    lines = []
    for number, paths in enumerate(groups, start=1):
        for path in paths:
            target = out / f"carry-{number}" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged / path, target)
        piece = f"{out}/carry-{number}"
        lines.append(f"run(carry=['{piece}'], command='python3 -m bench.gpu_check stage {piece}')")
    shutil.rmtree(staged)
    lines.append("run(command='python3 -m bench.gpu_check run', timeout_s=480)")
    (out / "plan.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return groups


PART = ".part-"
"""Suffix of a file's pieces (``model.safetensors.part-00-of-02``...), joined again by :func:`join_parts`."""


def split_file(path: Path, limit_bytes: int) -> list[Path]:
    """Replace ``path`` by pieces of at most ``limit_bytes``, ``path.part-00-of-03``...; return them."""
    size = path.stat().st_size
    count = max(1, -(-size // limit_bytes))
    pieces = []
    with path.open("rb") as source:
        for number in range(count):
            piece = path.with_name(f"{path.name}{PART}{number:02d}-of-{count:02d}")
            piece.write_bytes(source.read(limit_bytes))
            pieces.append(piece)
    path.unlink()
    return pieces


def join_parts(folder: Path) -> list[Path]:
    """Join every ``X.part-NN-of-MM`` series under ``folder`` back into ``X`` (pieces removed); return the
    files made.

    Raises:
        ValueError: a series lacks a piece (a carry group was not staged).
    """
    series: dict[Path, list[Path]] = {}
    for piece in folder.rglob(f"*{PART}*"):
        series.setdefault(piece.with_name(piece.name.split(PART)[0]), []).append(piece)
    for whole, pieces in series.items():
        pieces.sort()
        numbered = [piece.name.split(PART)[1].split("-of-") for piece in pieces]
        count = int(numbered[0][1])
        if [int(number) for number, _ in numbered] != list(range(count)):
            staged = [int(number) for number, _ in numbered]
            raise ValueError(f"{whole}: pieces {staged} of {count} staged; stage every carry group first")
        with whole.open("wb") as sink:
            for piece in pieces:
                sink.write(piece.read_bytes())
        for piece in pieces:
            piece.unlink()
    return sorted(series)


def stage(piece: Path) -> None:
    """Copy a carried group's files into :data:`STAGE_DIR`, keeping their relative paths.

    Raises:
        ValueError: ``piece`` holds no files (not carried with the call).
    """
    files = [path for path in piece.rglob("*") if path.is_file()]
    if not files:
        raise ValueError(f"{piece}: no files here; name it in the call's carry")
    for path in files:
        target = STAGE_DIR / path.relative_to(piece)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    print(f"staged {piece} -> {STAGE_DIR}")


def run(device: str = "cuda", windows: Sequence[str] = ("8", "16")) -> int:
    """Install the staged wheels and run the decoding-loop benchmark on ``device`` for each batch of
    ``windows`` into ``$OUT/gpu-check.txt`` (``--device cpu``: a dry run of the staging here).

    Raises:
        ValueError: a piece, the model, the audio or the wheels are not staged.
    """
    join_parts(STAGE_DIR)
    needed = [STAGE_DIR / "model" / "config.json", STAGE_DIR / "audio.npy"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing or not list((STAGE_DIR / "wheels").glob("*.whl")):
        lacking = ", ".join(missing) or "wheels/"
        raise ValueError(f"{STAGE_DIR}: {lacking} not staged; stage every carry group first")
    site = STAGE_DIR / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    wheels = [str(path) for path in sorted((STAGE_DIR / "wheels").glob("*.whl"))]
    subprocess.run([*install, "--target", str(site), *wheels], check=True)
    env = {**os.environ, "PYTHONPATH": f"{site}:{Path.cwd()}", "PYTHONUNBUFFERED": "1"}
    out_dir = Path(os.environ.get("OUT", "."))
    log = out_dir / "gpu-check.txt"
    code = 0
    with log.open("w", encoding="utf-8") as sink:
        if shutil.which("nvidia-smi"):
            subprocess.run(["nvidia-smi"], stdout=sink, stderr=subprocess.STDOUT, check=False)
        for count in windows:
            command = [sys.executable, "-m", "bench.decode_loop", "--device", device, "--windows", count]
            command += ["--model", str(STAGE_DIR / "model"), "--audio", str(STAGE_DIR / "audio.npy")]
            sink.write(f"$ {' '.join(command)}\n")
            sink.flush()
            result = subprocess.run(command, env=env, stdout=sink, stderr=subprocess.STDOUT, check=False)
            code = code or result.returncode
    print(log.read_text(encoding="utf-8")[-6000:])
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (module docstring). Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python3 -m bench.gpu_check", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare")
    prep.add_argument("--model", default="models/whisper-base")
    prep.add_argument("--audio", type=Path, default=Path("recordings/en_swc_william-shakespeare-part1.ogg"))
    prep.add_argument("--out", type=Path, default=Path(".gpu"))
    prep.add_argument("--limit-mib", type=int, default=44)
    put = commands.add_parser("stage")
    put.add_argument("piece", type=Path)
    check = commands.add_parser("run")
    check.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    check.add_argument("--windows", default="8,16", help="batch sizes, comma-separated")
    from gpu_transcribe_engine.errors import EngineFailure

    args = parser.parse_args(argv)
    if args.command == "prepare" and not 1 <= args.limit_mib <= 50:
        parser.error(f"--limit-mib {args.limit_mib}: give 1..50 (a call carries 64 MiB with the repository)")
    try:
        if args.command == "prepare":
            groups = prepare(args.model, args.audio, args.out, args.limit_mib)
            plan = args.out / "plan.txt"
            print(f"{len(groups)} carry groups under {args.out}; the device calls are in {plan}")
            return 0
        if args.command == "stage":
            stage(args.piece)
            return 0
        return run(args.device, [count.strip() for count in args.windows.split(",") if count.strip()])
    except (ValueError, OSError, EngineFailure, subprocess.CalledProcessError) as exc:
        # the audio or model missing, a wheel not downloadable, a piece not staged
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
