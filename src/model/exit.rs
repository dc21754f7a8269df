//! Exit codes: a public contract (orchestrators branch on them): never renumber, only add.
//! Data only, so the command line's help and the error type can both render it.

/// Exit codes, stable. Rendered into `--help` and mirrored in README.md.
pub mod code {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CONFIG: i32 = 3;
    pub const LOCKED: i32 = 4;
    pub const PRECHECK: i32 = 5;
    pub const CREDENTIALS: i32 = 6;
    pub const VENDOR_TOOL: i32 = 7;
    pub const SERVICE: i32 = 8;
    pub const STATE: i32 = 9;
    pub const DEADLINE: i32 = 10;
    pub const ROLLBACK_INCOMPLETE: i32 = 11;
    pub const CONFLICT: i32 = 12;
    pub const LAST_CELL: i32 = 13;
    pub const NOT_A_CELL: i32 = 14;
    pub const SLOT: i32 = 15;
    pub const PACKAGE: i32 = 20;
    pub const INSTALL: i32 = 21;
    pub const UNHEALTHY: i32 = 22;
    pub const DB_UPGRADE: i32 = 23;
    pub const UNDELIVERED: i32 = 24;
    pub const PREFLIGHT_FAILED: i32 = 25;
    pub const MAINTENANCE_COMMAND: i32 = 26;
    pub const SIGHUP: i32 = 129;
    pub const SIGINT: i32 = 130;
    pub const SIGTERM: i32 = 143;
}

/// (code, name, meaning): the documented table.
pub const EXIT_CODES: &[(i32, &str, &str)] = &[
    (
        code::OK,
        "ok",
        "done: drained/shut down/resumed as asked (also `forced`)",
    ),
    (
        code::INTERNAL,
        "internal",
        "unexpected internal error (a bug): see the message",
    ),
    (code::USAGE, "usage", "bad command line"),
    (
        code::CONFIG,
        "config",
        "bad or unsafe config file, URL or CELLCTL_* value",
    ),
    (code::LOCKED, "locked", "another cellctl run holds this cell's lock"),
    (code::PRECHECK, "precheck", "preflight failed; nothing was changed"),
    (
        code::CREDENTIALS,
        "credentials",
        "password missing, unsafe or unusable file, or rejected",
    ),
    (
        code::VENDOR_TOOL,
        "vendor-tool",
        "cell-management-tool failed, hung or printed no status",
    ),
    (
        code::SERVICE,
        "service",
        "the service manager failed or the service did not stop",
    ),
    (
        code::STATE,
        "state",
        "state directory unsafe or unwritable, or journal corrupt",
    ),
    (
        code::DEADLINE,
        "deadline",
        "deadline reached; this run's changes were undone",
    ),
    (
        code::ROLLBACK_INCOMPLETE,
        "rollback-incomplete",
        "could not undo this run's changes; journal kept, run `cellctl resume`",
    ),
    (
        code::CONFLICT,
        "conflict",
        "a recorded run or the cell's state does not allow this command now",
    ),
    (
        code::LAST_CELL,
        "last-cell",
        "redundancy guard: too few other active cells, or the API could not tell (fails closed)",
    ),
    (
        code::NOT_A_CELL,
        "not-a-cell",
        "status: no VCD cell here (the service unit or cell-management-tool is missing)",
    ),
    (
        code::SLOT,
        "slot",
        "lock service unreachable, or the fleet-wide slot still full after --lock-wait; nothing changed",
    ),
    (
        code::PACKAGE,
        "package",
        "package refused before anything changed: file, mode, checksum, type or version (appliance: vamicli does not offer the package's version, or it cannot be unpacked)",
    ),
    (
        code::INSTALL,
        "install",
        "the installer (appliance: vamicli) failed, hung, or the installed version did not change",
    ),
    (
        code::UNHEALTHY,
        "unhealthy",
        "the cell did not answer healthy by the deadline after start",
    ),
    (code::DB_UPGRADE, "db-upgrade", "the database upgrade tool failed"),
    (
        code::UNDELIVERED,
        "undelivered",
        "report flush: some reports are still queued or were rejected by the receiver",
    ),
    (
        code::PREFLIGHT_FAILED,
        "preflight-failed",
        "`cellctl preflight` found a failing check (nothing was changed)",
    ),
    (
        code::MAINTENANCE_COMMAND,
        "maintenance-command",
        "maintain: the COMMAND failed; the cell is left drained: `cellctl maintain --continue` or `cellctl resume`",
    ),
    (
        code::SIGHUP,
        "hangup",
        "SIGHUP (terminal gone); changes undone unless shutdown had begun",
    ),
    (
        code::SIGINT,
        "interrupted",
        "SIGINT; changes undone unless shutdown had begun",
    ),
    (
        code::SIGTERM,
        "terminated",
        "SIGTERM; changes undone unless shutdown had begun",
    ),
];

/// The documented name of an exit code ("internal" for one not in the table).
pub fn name_of(c: i32) -> &'static str {
    EXIT_CODES
        .iter()
        .find(|(k, _, _)| *k == c)
        .map_or("internal", |(_, n, _)| *n)
}

/// Render the exit-code table for `--help` and the man page.
pub fn help() -> String {
    use std::fmt::Write;
    let mut s = String::from("Exit codes:\n");
    for (c, name, what) in EXIT_CODES {
        let _ = writeln!(s, "  {c:>3}  {name:<20} {what}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<i32> = EXIT_CODES.iter().map(|(c, _, _)| *c).collect();
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(n, codes.len(), "duplicate exit code in the table");
    }
}
