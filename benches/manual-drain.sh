#!/usr/bin/env bash
# The reference for the benchmarks: VMware's documented manual drain of a Cloud Director cell,
# scripted as a runbook would script it. It is deliberately NOT hardened: no deadline, no
# rollback, no journal, no lock; a runbook does exactly this:
#
#   1. vmware-vcd-cell maintenance                 users get the maintenance message
#   2. cell-management-tool ... cell --status      the cell answers (shown to the operator)
#   3. cell-management-tool ... cell --quiesce true
#   4. every 10 s: cell --status until "Job count = 0" and "Is Active = false"
#   5. cell-management-tool ... cell --shutdown
#   6. systemctl stop vmware-vcd                   so the watchdog cannot restart the cell
#
# The password: cell-management-tool either prompts on /dev/tty (useless in a script) or takes
# `-p PASSWORD`, which is what runbooks do. That puts the password in the argv of every tool call,
# readable by any local user in `ps`/`/proc/*/cmdline` and in process-accounting and audit logs:
# exactly the exposure cellctl avoids (it answers the tool's own prompt on a pseudo-terminal).
# It is kept here because it is what the manual procedure costs in practice.
#
# Usage: manual-drain.sh --vcd-home DIR [--systemctl PATH] [--service NAME] [--user NAME]
#                        [--password-file FILE] [--interval SECONDS]
# Without --password-file the password is read from the terminal (not echoed).
set -euo pipefail

vcd_home=/opt/vmware/vcloud-director
systemctl=systemctl
service=vmware-vcd
user=administrator
password_file=
interval=10

usage() {
    echo "usage: $0 --vcd-home DIR [--systemctl PATH] [--service NAME] [--user NAME]" \
        "[--password-file FILE] [--interval SECONDS]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --vcd-home) vcd_home=${2:?}; shift 2 ;;
        --systemctl) systemctl=${2:?}; shift 2 ;;
        --service) service=${2:?}; shift 2 ;;
        --user) user=${2:?}; shift 2 ;;
        --password-file) password_file=${2:?}; shift 2 ;;
        --interval) interval=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done

if [ -n "$password_file" ]; then
    IFS= read -r PW < "$password_file" || true
else
    IFS= read -rs -p "Password for $user: " PW < /dev/tty
    echo >&2
fi

cmt() { "$vcd_home/bin/cell-management-tool" -u "$user" -p "$PW" cell "$@"; }
say() { echo "$(date '+%H:%M:%S') $*" >&2; }

say "turning the maintenance message on"
"$vcd_home/bin/vmware-vcd-cell" maintenance

say "cell status before quiescing:"
cmt --status >&2

say "quiescing the cell"
cmt --quiesce true

while :; do
    status=$(cmt --status)
    if grep -qx 'Job count = 0' <<<"$status" && grep -qx 'Is Active = false' <<<"$status"; then
        break
    fi
    say "still busy: $(grep -m1 '^Job count' <<<"$status" || echo "$status")"
    sleep "$interval"
done

say "drained; shutting the cell down"
cmt --shutdown

say "stopping $service"
"$systemctl" stop "$service"
say "done"
