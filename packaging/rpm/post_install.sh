# cellctl %post ($1 = 1 on install, 2 on upgrade). Makes systemd see new or changed unit files
# and enables, once, cellctl-continue.service (a no-op at boot unless a `maintain` run is recorded
# as rebooting); it never starts or restarts a unit and never enables the timer (a timer that
# starts draining cells after a package update would be an outage).

# The state directory (journal, lock, run records): root-only. Created here because
# cargo-generate-rpm 0.21.1 cannot package an empty directory (`dir = true` assets fail to
# build); an existing one is left as it is.
if [ ! -e /var/lib/cellctl ]; then
    install -d -m 0700 -o root -g root /var/lib/cellctl
fi
# Enabled as `systemctl enable` would (a link; works without a running systemd), once: an
# operator who disables it later is not overridden by an upgrade.
if [ ! -e /var/lib/cellctl/.continue-enabled ]; then
    install -d -m 0755 /etc/systemd/system/multi-user.target.wants
    ln -sf /usr/lib/systemd/system/cellctl-continue.service \
        /etc/systemd/system/multi-user.target.wants/cellctl-continue.service
    : > /var/lib/cellctl/.continue-enabled
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
