# cellctl %post ($1 = 1 on install, 2 on upgrade). Makes systemd see new or changed unit files,
# and nothing more: it never enables, starts or restarts a unit (a timer that starts draining
# cells after a package update would be an outage). The operator enables the timer deliberately.

# The state directory (journal, lock, run records): root-only. Created here because
# cargo-generate-rpm 0.21.1 cannot package an empty directory (`dir = true` assets fail to
# build); an existing one is left as it is.
if [ ! -e /var/lib/cellctl ]; then
    install -d -m 0700 -o root -g root /var/lib/cellctl
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
