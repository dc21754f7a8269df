# cellctl %postun ($1 = 0 on erase, 1 on upgrade). Makes systemd forget removed or replaced unit
# files, and nothing more: it never stops or disables a unit. /var/lib/cellctl (run records and
# reports) is left in place.
if [ "$1" = 0 ]; then
    # Erased: the link that enabled cellctl-continue.service would dangle.
    rm -f /etc/systemd/system/multi-user.target.wants/cellctl-continue.service \
        /var/lib/cellctl/.continue-enabled
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
