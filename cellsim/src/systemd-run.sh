#!/bin/sh
# The simulated cell's stand-in for systemd-run (unprivileged tests, rehearsals): runs the
# command after `--` in the foreground, honouring --setenv and RuntimeMaxSec (SIGTERM at the
# limit, as systemd does). It gives no cgroup of its own: cellctl's real transient units are
# tested against a real systemd (tests/systemd_upgrade.rs).
set -u
limit=""
unit=""
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        --unit=*) unit="${1#--unit=}" ;;
        --setenv=*) export "${1#--setenv=}" ;;
        --property=RuntimeMaxSec=*) limit="${1#--property=RuntimeMaxSec=}" ;;
        *) ;;
    esac
    shift
done
[ -n "${FAKE_SYSTEMD_RUN_LOG:-}" ] && echo "$unit $*" >> "$FAKE_SYSTEMD_RUN_LOG"
if [ -n "$limit" ]; then
    exec timeout -s TERM -k 10 "$limit" "$@"
fi
exec "$@"
