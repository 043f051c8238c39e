#!/bin/sh
# gpu-transcribe dead-man switch: runs on the instance (started by cloud-init user data) and powers it off,
# which terminates it because it was launched with InstanceInitiatedShutdownBehavior=terminate, when
#   1. the instance has been up for MAX_LIFETIME_S seconds (counted from boot), or
#   2. the client's heartbeat file (touched over SSH by the client every 30 s) is older than
#      HEARTBEAT_TIMEOUT_S seconds. Until the first touch the switch's own start counts as a heartbeat.
#      With ALIVE_CMD set, every check at which that command succeeds counts as a heartbeat too (the
#      pipeline's fleet: "the worker's systemd unit is active"), so the instance powers off HEARTBEAT_TIMEOUT_S
#      seconds after the watched process is gone.
# So a client killed with SIGKILL, a sleeping laptop or a lost network still ends in a terminated instance.
#
# Every input is an environment variable, so that a test can run this script with a fake clock, short limits
# and a fake poweroff command (tests/test_deadman.py):
#   MAX_LIFETIME_S       seconds from START_EPOCH_S until power-off (default 3600)
#   HEARTBEAT_FILE       path whose modification time is the last heartbeat
#   HEARTBEAT_TIMEOUT_S  seconds without a heartbeat until power-off (default 300)
#   CHECK_INTERVAL_S     seconds between checks (default 10; fractions allowed)
#   POWEROFF_CMD         command that powers off (default: shutdown -P now); DEADMAN_REASON is exported to it
#   CLOCK_CMD            command printing the time now in epoch seconds (default: date +%s)
#   START_EPOCH_S        epoch seconds the lifetime counts from (default: boot time, from /proc/uptime)
#   SWITCH_START_S       epoch seconds that count as the first heartbeat (default: when this script starts)
#   DEADMAN_ONESHOT      1: check once and exit (0: nothing to do, or power-off issued)
#   ALIVE_CMD            command whose success at a check counts as a heartbeat (default: none)
set -u

MAX_LIFETIME_S="${MAX_LIFETIME_S:-3600}"
HEARTBEAT_FILE="${HEARTBEAT_FILE:-/run/gpu-transcribe/heartbeat}"
HEARTBEAT_TIMEOUT_S="${HEARTBEAT_TIMEOUT_S:-300}"
CHECK_INTERVAL_S="${CHECK_INTERVAL_S:-10}"
POWEROFF_CMD="${POWEROFF_CMD:-shutdown -P now}"
CLOCK_CMD="${CLOCK_CMD:-date +%s}"
START_EPOCH_S="${START_EPOCH_S:-}"
SWITCH_START_S="${SWITCH_START_S:-}"
DEADMAN_ONESHOT="${DEADMAN_ONESHOT:-0}"
ALIVE_CMD="${ALIVE_CMD:-}"

log() {
    echo "gpu-transcribe-deadman: $*" >&2
    command -v logger >/dev/null 2>&1 && logger -t gpu-transcribe-deadman -- "$*" 2>/dev/null
    return 0
}

now() {
    $CLOCK_CMD
}

mtime() {
    # Modification time of $1 in epoch seconds, or nothing if it does not exist (GNU and busybox stat).
    stat -c %Y "$1" 2>/dev/null || date -r "$1" +%s 2>/dev/null
}

if [ -z "$START_EPOCH_S" ]; then
    uptime_s=$(cut -d. -f1 /proc/uptime)
    START_EPOCH_S=$(( $(now) - uptime_s ))
fi
[ -n "$SWITCH_START_S" ] || SWITCH_START_S=$(now)
log "armed: lifetime ${MAX_LIFETIME_S} s from ${START_EPOCH_S}, heartbeat ${HEARTBEAT_FILE}${ALIVE_CMD:+ or '$ALIVE_CMD'} within ${HEARTBEAT_TIMEOUT_S} s"

power_off() {
    DEADMAN_REASON="$1"
    export DEADMAN_REASON
    log "powering off: $1"
    if $POWEROFF_CMD; then
        exit 0
    fi
    log "power-off command failed ($POWEROFF_CMD); trying again at the next check"
}

check() {
    t=$(now)
    age_s=$(( t - START_EPOCH_S ))
    if [ "$age_s" -ge "$MAX_LIFETIME_S" ]; then
        power_off "max-lifetime: up ${age_s} s, limit ${MAX_LIFETIME_S} s"
        return
    fi
    beat=$(mtime "$HEARTBEAT_FILE")
    if [ -z "$beat" ] || [ "$beat" -lt "$SWITCH_START_S" ]; then
        beat=$SWITCH_START_S
    fi
    if [ -n "$ALIVE_CMD" ]; then
        if $ALIVE_CMD >/dev/null 2>&1; then
            last_alive_s=$t
        fi
        if [ -n "${last_alive_s:-}" ] && [ "$last_alive_s" -gt "$beat" ]; then
            beat=$last_alive_s
        fi
    fi
    silent_s=$(( t - beat ))
    if [ "$silent_s" -ge "$HEARTBEAT_TIMEOUT_S" ]; then
        power_off "stale-heartbeat: none for ${silent_s} s, limit ${HEARTBEAT_TIMEOUT_S} s"
    fi
}

while :; do
    check
    [ "$DEADMAN_ONESHOT" = "1" ] && exit 0
    sleep "$CHECK_INTERVAL_S"
done
