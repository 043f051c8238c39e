"""Noticing the loss of an instance while work goes on over SSH: EC2's instance state, and on spot instances
the two-minute interruption notice that IMDSv2 serves at ``spot/instance-action``, read on the instance over
the open connection (so a loss is reported, and a relaunch can be planned, before the instance disappears).

The notice's parsing (:func:`parse_spot_notice`) is shared with a reader for the machine this code runs on
(:func:`read_imds`, :func:`read_local_spot_notice`), which the pipeline's worker uses on its own instance.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe.common import ProgressCallback, ProgressEvent
from gpu_transcribe.errors import GpuTranscribeError, InstanceLostError, SSHError

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.ssh import SSHSession

#: Seconds between reads of the spot interruption notice: AWS recommends checking every 5 seconds
#: (docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html).
NOTICE_CHECK_S = 5.0

#: Test seam: the instance metadata service's base URL as the instance sees it.
IMDS_ENDPOINT_ENV = "GPU_TRANSCRIBE_IMDS_ENDPOINT"
IMDS_ENDPOINT = "http://169.254.169.254"

#: Reads the spot interruption notice with IMDSv2 (a session token first, then the document). Prints the
#: notice's JSON and exits 0 when EC2 has scheduled the interruption; the document is 404 (curl exits 22)
#: until then. ``$1`` is the metadata service's base URL.
_NOTICE_SCRIPT = (
    'token=$(curl -sf -m 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" "$1/latest/api/token")'
    ' && exec curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" "$1/latest/meta-data/spot/instance-action"'
)


@dataclass(frozen=True)
class SpotNotice:
    """EC2's two-minute spot interruption notice (IMDSv2 ``spot/instance-action``).

    Attributes:
        action: ``terminate``, ``stop`` or ``hibernate``.
        time: when EC2 will act, UTC ISO 8601 as the document gives it (``2026-12-02T04:05:06Z``).
    """

    action: str
    time: str


def parse_spot_notice(document: str | bytes) -> SpotNotice | None:
    """The notice in a ``spot/instance-action`` document (JSON ``{"action": ..., "time": ...}``), or ``None``
    if it is not one."""
    try:
        parsed = json.loads(document)
        return SpotNotice(str(parsed["action"]), str(parsed["time"]))
    except (ValueError, KeyError, TypeError):
        return None


def imds_endpoint() -> str:
    """The instance metadata service's base URL: ``$GPU_TRANSCRIBE_IMDS_ENDPOINT`` or 169.254.169.254."""
    return os.environ.get(IMDS_ENDPOINT_ENV, "").strip() or IMDS_ENDPOINT


def read_imds(path: str, endpoint: str | None = None, timeout_s: float = 2.0) -> str | None:
    """Read ``/latest/<path>`` from the metadata service of the machine this runs on, with IMDSv2 (a session
    token first, then the document), as the spot notice script does over SSH.

    Args:
        path: e.g. ``meta-data/spot/instance-action``, ``meta-data/instance-id``.
        endpoint: the service's base URL; :func:`imds_endpoint` if ``None``.
        timeout_s: seconds per request (the service answers in milliseconds on EC2; off EC2 nothing
            answers, and this bounds the wait).

    Returns:
        The document's text, or ``None`` when it does not exist (404), the service refuses, or nothing
        answers (not on EC2).
    """
    import urllib.error
    import urllib.request

    base = endpoint or imds_endpoint()
    try:
        token_request = urllib.request.Request(
            f"{base}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        with urllib.request.urlopen(token_request, timeout=timeout_s) as reply:
            token = reply.read().decode()
        request = urllib.request.Request(f"{base}/latest/{path}", headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return str(reply.read().decode())
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors; a timeout too
        return None


def read_local_spot_notice(endpoint: str | None = None) -> SpotNotice | None:
    """The spot interruption notice of the machine this runs on (IMDSv2), or ``None`` if there is none (or no
    metadata service: not on EC2)."""
    document = read_imds("meta-data/spot/instance-action", endpoint)
    return None if document is None else parse_spot_notice(document)


class SpotWatcher:
    """A background thread that notices the loss of the instance while the caller works over SSH.

    Every ``alive_check_s`` it asks EC2 whether the instance still runs; when ``notice_check_s`` is set it
    also reads the spot interruption notice on the instance. A notice is reported at once (``spot-notice``)
    and handed to ``on_notice``, two minutes before EC2 acts; a lost instance is reported (``lost``) and the
    SSH session closed, so that the blocked SSH call returns at once.
    """

    def __init__(
        self,
        ctx: AwsContext,
        instance_id: str,
        ssh: SSHSession,
        *,
        alive_check_s: float,
        notice_check_s: float | None,
        on_progress: ProgressCallback,
        on_notice: Callable[[SpotNotice], None] | None,
    ) -> None:
        self._ctx, self._instance_id, self._ssh = ctx, instance_id, ssh
        self._alive_check_s, self._notice_check_s = alive_check_s, notice_check_s
        self._on_progress, self._on_notice = on_progress, on_notice
        self._stop = threading.Event()
        self._imds = imds_endpoint()
        self.lost: InstanceLostError | None = None
        self.reported: InstanceLostError | None = None  # the loss this thread reported itself
        self.notice: SpotNotice | None = None
        self._thread = threading.Thread(target=self._loop, name="instance-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        step_s = min(self._alive_check_s, self._notice_check_s or self._alive_check_s)
        next_alive = next_notice = time.monotonic()
        while not self._stop.wait(step_s):
            now = time.monotonic()
            if self._notice_check_s is not None and self.notice is None and now >= next_notice:
                next_notice = now + self._notice_check_s
                self._read_notice()
            if now >= next_alive:
                next_alive = now + self._alive_check_s
                if self._check_alive():
                    return

    def _check_alive(self) -> bool:
        from gpu_transcribe.aws.ec2.instances import check_alive

        try:
            check_alive(self._ctx, self._instance_id)
        except InstanceLostError as exc:
            self.lost = self.reported = exc
            self._on_progress(ProgressEvent("lost", str(exc)))
            self._ssh.close()
            return True
        except GpuTranscribeError as exc:  # EC2 not answering: keep working, say so
            self._on_progress(ProgressEvent("note", f"could not check the instance: {exc}"))
        return False

    def _read_notice(self) -> None:
        try:
            result = self._ssh.run(
                ["sh", "-c", _NOTICE_SCRIPT, "sh", self._imds], check=False, channel_timeout_s=10
            )
        except SSHError:
            return  # the connection is going: the alive check or the caller's SSH call reports it
        if result.returncode == 127:  # no curl on the image: EC2's state remains the only signal
            self._on_progress(ProgressEvent("note", "cannot read spot interruption notices (no curl)"))
            self._notice_check_s = None
            return
        if result.returncode != 0:
            return
        notice = parse_spot_notice(result.stdout)
        if notice is None:
            return
        self.notice = notice
        self._on_progress(
            ProgressEvent(
                "spot-notice",
                f"EC2 will {notice.action} spot instance {self._instance_id} at {notice.time} "
                "(interruption notice)",
            )
        )
        if self._on_notice is not None:
            self._on_notice(notice)

    def confirm_lost(self) -> InstanceLostError | None:
        """After an SSH failure: was the instance lost? Asks EC2 once more if the watcher has not seen it."""
        from gpu_transcribe.aws.ec2.instances import check_alive

        if self.lost is None:
            try:
                check_alive(self._ctx, self._instance_id)
            except InstanceLostError as exc:
                self.lost = exc
            except GpuTranscribeError:
                pass
        if self.lost is None and self.notice is not None:
            self.lost = InstanceLostError(
                f"spot instance {self._instance_id} was interrupted (EC2's notice: {self.notice.action} at "
                f"{self.notice.time})",
                self._instance_id,
                "shutting-down",
                "Server.SpotInstanceTermination",
            )
        return self.lost
