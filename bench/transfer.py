"""Push throughput: our paramiko SFTP push vs OpenSSH ``scp``, both against one loopback sshd.

The target: at least 0.6x the throughput of ``scp`` for one 200 MB file, connection set-up included
for both, and more for a batch. Both sides verify the host key strictly (``scp`` with a known_hosts file and
``StrictHostKeyChecking=yes``; ours with the exact key line) and log in with the same ed25519 key. Our
figure includes what the run flow pays and ``scp`` does not do: the SHA-256 of every file computed while
sending and checked on the host. Runs alternate (scp, ours, scp, ours...) so that load from other processes
hits all alike; the ratio is taken per round and summarized by its median. A third contender, plain
paramiko (``SFTPClient.put`` with defaults, no hash check), shows where we started.

Usage (from the repository root)::

    python bench/transfer.py                 # 200 MB file and 8 x 25 MB, 5 rounds each
    python bench/transfer.py --reps 3 --single-mb 100 --batch 4x10
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_transcribe import ssh
from tests.fixtures.sshd import SshdServer, find_sshd


def make_file(path: Path, size_bytes: int) -> Path:
    """Write ``size_bytes`` of random data (incompressible, like encoded audio)."""
    with path.open("wb") as handle:
        left = size_bytes
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            handle.write(chunk)
            left -= len(chunk)
    return path


def scp_command(server: SshdServer, sources: list[Path], dest_dir: Path) -> list[str]:
    """OpenSSH scp with strict host key checking against the server's known_hosts file."""
    return [
        "scp",
        "-q",
        "-B",  # batch mode: never prompt
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={server.known_hosts_path}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(server.client_key_path),
        "-P",
        str(server.port),
        *[str(s) for s in sources],
        f"{server.username}@{server.host}:{dest_dir}/",
    ]


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def clear(dest_dir: Path) -> None:
    shutil.rmtree(dest_dir, ignore_errors=True)
    dest_dir.mkdir(parents=True)


def run_scp(server: SshdServer, sources: list[Path], dest_dir: Path) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) of one scp run."""
    clear(dest_dir)
    cpu0, t0 = child_cpu_s(), time.perf_counter()
    subprocess.run(scp_command(server, sources, dest_dir), check=True)
    wall = time.perf_counter() - t0
    for source in sources:
        if (dest_dir / source.name).stat().st_size != source.stat().st_size:
            raise RuntimeError(f"scp left a short {dest_dir / source.name}")
    return wall, child_cpu_s() - cpu0


def run_ours(target: ssh.SSHTarget, sources: list[Path], dest_dir: Path) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) of connect + push (with remote SHA-256 check) + close."""
    clear(dest_dir)
    cpu0, t0 = self_cpu_s(), time.perf_counter()
    with ssh.connect(target, deadline_s=30) as session:
        session.push([(s, str(dest_dir / s.name)) for s in sources])
    return time.perf_counter() - t0, self_cpu_s() - cpu0


def run_plain_paramiko(server: SshdServer, sources: list[Path], dest_dir: Path) -> tuple[float, float]:
    """The "before" figure: paramiko defaults (SSHClient, ``SFTPClient.put`` one file after the other,
    32 KiB writes, AES-CTR + HMAC), strict host key, no hash check. Only the benchmark imports paramiko
    outside ``gpu_transcribe/ssh/``, as this peer."""
    import io

    import paramiko

    clear(dest_dir)
    cpu0, t0 = self_cpu_s(), time.perf_counter()
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        server.host,
        port=server.port,
        username=server.username,
        pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(server.client_private_key)),
        allow_agent=False,
        look_for_keys=False,
    )
    try:
        sftp = client.open_sftp()
        for source in sources:
            sftp.put(str(source), str(dest_dir / source.name))
        sftp.close()
    finally:
        client.close()
    return time.perf_counter() - t0, self_cpu_s() - cpu0


def compare(
    name: str, size_bytes: int, reps: int, contenders: dict[str, Callable[[], tuple[float, float]]]
) -> float:
    """Run the contenders in turn ``reps`` times (the first, scp, is the reference); print MB/s, client CPU
    and each one's ratio to scp per round. Returns the median ratio of ``ours``."""
    mb = size_bytes / 1e6
    names = list(contenders)
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    contenders[names[0]]()  # warm-up: page cache, sshd's first fork
    for _ in range(reps):
        walls = {}
        for contender in names:
            wall, cpu = contenders[contender]()
            walls[contender] = wall
            rates[contender].append(mb / wall)
            cpus[contender].append(cpu)
        for contender in names:
            ratios[contender].append(walls[names[0]] / walls[contender])
    print(f"\n{name} ({mb:.0f} MB, {reps} rounds, connection set-up included; MB/s per round)")
    for contender in names:
        runs = " ".join(f"{r:6.1f}" for r in rates[contender])
        line = f"  {contender:<15} {runs}   median {statistics.median(rates[contender]):6.1f} MB/s"
        line += f", client CPU {statistics.median(cpus[contender]):.2f} s"
        if contender != names[0]:
            line += f", ratio to scp: median {statistics.median(ratios[contender]):.2f}"
            line += f" (per round {' '.join(f'{r:.2f}' for r in ratios[contender])})"
        print(line)
    return statistics.median(ratios["ours"])


def scp_cipher(server: SshdServer) -> str:
    """The cipher OpenSSH's client negotiates with this sshd (from ``ssh -v``)."""
    out = subprocess.run(
        [
            "ssh",
            "-v",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={server.known_hosts_path}",
            "-i",
            str(server.client_key_path),
            "-p",
            str(server.port),
            f"{server.username}@{server.host}",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    for line in out.splitlines():
        if "client->server cipher:" in line:
            return line.split("cipher:", 1)[1].split()[0]
    return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="rounds per case (each runs every contender)")
    parser.add_argument("--single-mb", type=int, default=200, help="size of the single file, MB")
    parser.add_argument("--batch", default="8x25", help="batch as COUNTxMB")
    parser.add_argument("--workdir", type=Path, default=None, help="where files go (default: a temp dir)")
    args = parser.parse_args()
    if find_sshd() is None or shutil.which("scp") is None:
        print("needs OpenSSH sshd and scp (apt-get install openssh-server openssh-client)", file=sys.stderr)
        return 2
    count, batch_mb = (int(x) for x in args.batch.lower().split("x"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=args.workdir))
    try:
        with SshdServer(workdir / "sshd") as server:
            target = ssh.SSHTarget(
                host=server.host,
                port=server.port,
                username=server.username,
                private_key=server.client_private_key,
                host_public_key=server.host_public_key,
            )
            src = workdir / "src"
            src.mkdir()
            single = [make_file(src / "single.bin", args.single_mb * 1_000_000)]
            batch = [make_file(src / f"batch {i}.bin", batch_mb * 1_000_000) for i in range(count)]
            with ssh.connect(target) as session:
                where = f"loopback {server.host}:{server.port}"
                print(f"server: {session.server_version}; {where}; {os.cpu_count()} CPUs")
                print(
                    f"ours: paramiko, cipher {session.cipher}, receive window {ssh.WINDOW_SIZE_BYTES} B, "
                    f"max packet {ssh.MAX_PACKET_SIZE_BYTES} B, SFTP write "
                    f"{ssh.sftp_write_size(32768, 4, ssh.OPENSSH_MAX_WRITE_BYTES)} B pipelined, "
                    f"{ssh.PUSH_CONCURRENCY} files at once, SHA-256 checked on the host"
                )
            print(f"scp: OpenSSH, cipher {scp_cipher(server)}, strict host key checking, no hash check")
            dest = workdir / "dest"
            r1 = compare(
                "single file",
                sum(s.stat().st_size for s in single),
                args.reps,
                {
                    "scp": lambda: run_scp(server, single, dest),
                    "ours": lambda: run_ours(target, single, dest),
                    "paramiko put": lambda: run_plain_paramiko(server, single, dest),
                },
            )
            r2 = compare(
                f"batch {count} x {batch_mb} MB",
                sum(s.stat().st_size for s in batch),
                args.reps,
                {
                    "scp": lambda: run_scp(server, batch, dest),
                    "ours": lambda: run_ours(target, batch, dest),
                    "paramiko put": lambda: run_plain_paramiko(server, batch, dest),
                },
            )
            print(f"\nsummary: ours/scp median ratio: single {r1:.2f} (target >= 0.6), batch {r2:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
