"""Capped, jittered exponential backoff for the retries botocore cannot do for us, built on tenacity.

botocore's standard retry mode already handles throttling and 5xx for ordinary calls (see :mod:`.clients`). We
retry ourselves where its rules do not fit:

- ``RunInstances`` through the fail-fast client: only transient codes, same ``ClientToken`` (so a retry can
  never start a second instance), while capacity codes move on at once;
- teardown: ``InvalidInstanceID.NotFound`` right after launch (describe calls lag), and
  ``DependencyViolation`` when deleting a security group until the instance's network interface is gone.

Waits are "full jitter" (uniform between 0 and ``min(cap, base * 2**n)``), the scheme AWS recommends
(aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/, 2015) and botocore's standard mode uses.
tenacity provides the retry loop and the jitter; the clock and sleep are injectable so tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tenacity

#: Defaults for transient errors: 4 tries, waits of at most 1, 2, 4 s (capped at 20 s for longer schedules).
TRANSIENT_ATTEMPTS = 4
BASE_S = 1.0
CAP_S = 20.0


def retrying(
    *,
    retry_on: Callable[[BaseException], bool],
    attempts: int | None = TRANSIENT_ATTEMPTS,
    timeout_s: float | None = None,
    base_s: float = BASE_S,
    cap_s: float = CAP_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """A tenacity ``Retrying`` that retries exceptions for which ``retry_on`` is true, then re-raises the
    last.

    Args:
        retry_on: which exceptions to retry.
        attempts: give up after this many tries (``None``: no limit by count).
        timeout_s: give up once this many seconds (by ``clock``) have passed since the first try, measured
            before each wait (``None``: no limit by time). At least one of ``attempts``/``timeout_s`` is
            needed.
        base_s, cap_s: the jittered exponential schedule, in seconds.
        clock: monotonic seconds (injectable).
        sleep: how to wait (injectable).
        before_sleep: called before each wait (for progress).
    """
    if attempts is None and timeout_s is None:
        raise ValueError("retrying() needs attempts or timeout_s")
    start = clock()

    def stop(state: tenacity.RetryCallState) -> bool:
        if attempts is not None and state.attempt_number >= attempts:
            return True
        return timeout_s is not None and clock() - start >= timeout_s

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_on),
        stop=stop,
        wait=tenacity.wait_random_exponential(multiplier=base_s, max=cap_s),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
