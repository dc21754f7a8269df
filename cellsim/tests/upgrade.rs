//! Upgrades and health: fake installer packages, `vcd-version`, the database `upgrade` tool and
//! the HTTP health endpoint of `cellsim serve`, all driven through the real binary.

mod support;

use nix::sys::signal::{Signal, kill};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::*;

const PROCEED: &str = "Would you like to proceed with the upgrade? [y/n] ";
const CONFIGURE: &str = "Would you like to run the configuration script now? [y/n] ";
const SERVICE_RUNNING: &str = "The VMware Cloud Director service is running. Stop it before upgrading.\n";
const UP: (u16, &str) = (200, "Service is up.");
const UNAVAILABLE: (u16, &str) = (503, "Service Unavailable");

fn make_executable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o744)).unwrap();
}

/// `printf INPUT | ./package.bin ARGS`, as scripted VMware installs do.
fn install(package: &Path, input: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(package);
    cmd.args(args);
    detach(&mut cmd);
    run_input(cmd, input.as_bytes())
}

fn vcd_version(cell: &Cell) -> String {
    let out = cell.tool("vcd-version", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn installer_records(cell: &Cell) -> Vec<Value> {
    cell.invocations()
        .into_iter()
        .filter(|r| r["tool"] == "installer")
        .collect()
}

fn health(server: &Server) -> (u16, String) {
    server.health()
}

fn expect(server: &Server, want: (u16, &str)) {
    let (status, body) = health(server);
    assert_eq!((status, body.as_str()), want);
}

// ---- packages ----

#[test]
fn package_is_a_non_executable_shell_script_named_like_vmwares() {
    let cell = Cell::create(&["--stopped"]);
    let path = cell.package("10.6.1", &["--build", "24300000"]);
    assert!(path.is_absolute());
    assert_eq!(
        path.file_name().unwrap(),
        "vmware-vcloud-director-distribution-10.6.1-24300000.bin"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let script = std::fs::read_to_string(&path).unwrap();
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    // Not executable until the user makes it so.
    let denied = Command::new(&path).stdin(Stdio::null()).output();
    assert_eq!(denied.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    // The same version gets the same default build number.
    let a = cell.package("10.6.2", &[]);
    let b = cell.package("10.6.2", &[]);
    assert_eq!(a, b);
    let build = a
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix("vmware-vcloud-director-distribution-10.6.2-")
        .unwrap()
        .strip_suffix(".bin")
        .unwrap()
        .to_string();
    assert!(build.len() >= 7 && build.bytes().all(|b| b.is_ascii_digit()), "{build}");
}

#[test]
fn ok_package_installs_its_version_with_answers_piped_in() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1.22914446"]);
    assert_eq!(vcd_version(&cell), "10.5.1.22914446\n");
    let pkg = cell.package("10.6.1", &["--install-time", "200ms", "--build", "24300000"]);
    make_executable(&pkg);
    let out = install(&pkg, "y\nn\n", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(&format!("{PROCEED}y\n")), "{stdout}");
    assert!(stdout.contains(&format!("{CONFIGURE}n\n")), "{stdout}");
    assert!(
        stdout.contains("You can run the configuration script later: /opt/vmware/vcloud-director/bin/configure"),
        "{stdout}"
    );
    let progress = stdout.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(progress, 5, "{stdout}");
    assert!(stdout.find(PROCEED) < stdout.find("[100%]"));
    assert_eq!(vcd_version(&cell), "10.6.1\n");
    let show = cell.show();
    assert_eq!(show["version"], "10.6.1");
    // The database is not touched by the installer.
    assert_eq!(show["db_version"], "10.5.1.22914446");

    let recs = installer_records(&cell);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["argv"], serde_json::json!([]));
    assert_eq!(recs[0]["exit_code"], 0);
    assert_eq!(recs[0]["stdin_tty"], false);
    assert_eq!(recs[0]["had_tty"], false);
}

#[test]
fn installer_refuses_a_running_service() {
    let cell = Cell::create(&["--version", "10.5.1"]);
    let pkg = cell.package("10.6.1", &["--install-time", "0s"]);
    make_executable(&pkg);
    let out = install(&pkg, "y\nn\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), SERVICE_RUNNING);
    assert!(!text(&out.stdout).contains("[ 20%]"));
    assert_eq!(cell.show()["version"], "10.5.1");
    assert_eq!(installer_records(&cell)[0]["exit_code"], 1);

    // After a stop it goes through.
    assert!(cell.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    assert_eq!(install(&pkg, "y\nn\n", &[]).status.code(), Some(0));
    assert_eq!(cell.show()["version"], "10.6.1");
}

#[test]
fn installer_aborts_without_a_yes() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1"]);
    let pkg = cell.package("10.6.1", &["--install-time", "0s"]);
    make_executable(&pkg);
    for (input, message) in [
        ("", "No answer on standard input: upgrade aborted.\n"),
        ("n\n", "Upgrade aborted.\n"),
        ("yes please\n", "Upgrade aborted.\n"),
    ] {
        let out = install(&pkg, input, &[]);
        assert_eq!(out.status.code(), Some(1), "{input:?}");
        assert_eq!(text(&out.stderr), message, "{input:?}");
        assert!(text(&out.stdout).contains(PROCEED));
        assert!(!text(&out.stdout).contains("Installing"), "{input:?}");
    }
    assert_eq!(cell.show()["version"], "10.5.1");
    // Unknown options are refused before anything happens.
    let out = install(&pkg, "y\nn\n", &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(installer_records(&cell).len(), 4);
    assert_eq!(installer_records(&cell)[3]["argv"], serde_json::json!(["--frobnicate"]));
}

#[test]
fn failing_package_exits_1_after_some_progress_and_changes_nothing() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1"]);
    let pkg = cell.package("10.6.1", &["--kind", "fail", "--install-time", "100ms"]);
    make_executable(&pkg);
    let out = install(&pkg, "y\nn\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[ 20%]") && !stdout.contains("[100%]"), "{stdout}");
    assert!(!stdout.contains(CONFIGURE));
    assert!(text(&out.stderr).starts_with("Error: "), "{}", text(&out.stderr));
    assert_eq!(vcd_version(&cell), "10.5.1\n");
}

#[test]
fn nochange_package_claims_success_and_changes_nothing() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1"]);
    let pkg = cell.package("10.6.1", &["--kind", "nochange", "--install-time", "0s"]);
    make_executable(&pkg);
    let out = install(&pkg, "y\nn\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("has been installed"));
    assert_eq!(vcd_version(&cell), "10.5.1\n");
}

#[test]
fn hanging_package_hangs_after_the_first_prompt() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1"]);
    let pkg = cell.package("10.6.1", &["--kind", "hang"]);
    make_executable(&pkg);
    let mut cmd = Command::new(&pkg);
    detach(&mut cmd);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    {
        use std::io::Write;
        let mut stdin = child.0.stdin.take().unwrap();
        stdin.write_all(b"y\nn\n").unwrap();
    }
    let rec = wait_until("the hang's record", || installer_records(&cell).pop());
    assert_eq!(rec["exit_code"], Value::Null);
    assert!(child.running());
    kill(child.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().signal(), Some(Signal::SIGTERM as i32));
    assert_eq!(vcd_version(&cell), "10.5.1\n");
}

// ---- the database upgrade tool ----

#[test]
fn db_upgrade_refuses_an_active_cell() {
    let cell = Cell::create(&["--version", "10.5.1"]);
    cell.sim_ok("set", &["version=10.6.1"]);
    let out = run_input(cell.command("upgrade"), b"y\ny\n");
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("Welcome to the vCloud Director upgrade utility\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "This utility will apply several updates to the database. Please\nensure you have created a backup of your database prior to continuing.\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("Do you want to upgrade the database? [y/n] y\n"));
    assert!(stdout.contains("Have you backed up your database? [y/n] y\n"));
    assert!(
        text(&out.stderr).starts_with("The upgrade utility detected an active cell"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cell.show()["db_version"], "10.5.1");

    // A cell shut down by the tool but with its service (watchdog) running is still refused.
    cell.cell_ok(&["--shutdown"]);
    let out = run_input(cell.command("upgrade"), b"y\n");
    let out2 = {
        let mut cmd = cell.command("upgrade");
        cmd.arg("--backup-completed");
        run_input(cmd, b"y\n")
    };
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out2.status.code(), Some(1));
    assert!(text(&out2.stderr).contains("detected an active cell"));
    assert_eq!(cell.show()["db_version"], "10.5.1");
    let recs: Vec<Value> = cell
        .invocations()
        .into_iter()
        .filter(|r| r["tool"] == "upgrade")
        .collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[2]["argv"], serde_json::json!(["--backup-completed"]));
}

#[test]
fn db_upgrade_on_a_stopped_cell_records_the_installed_version() {
    let cell = Cell::create(&["--stopped", "--version", "10.5.1"]);
    let pkg = cell.package("10.6.1", &["--install-time", "0s"]);
    make_executable(&pkg);
    assert_eq!(install(&pkg, "y\nn\n", &[]).status.code(), Some(0));
    assert_eq!(cell.show()["db_version"], "10.5.1");

    // Without --backup-completed the backup is asked for; no backup, no upgrade.
    let out = run_input(cell.command("upgrade"), b"y\nn\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(cell.show()["db_version"], "10.5.1");
    // Declining the upgrade itself.
    let out = run_input(cell.command("upgrade"), b"n\n");
    assert_eq!(out.status.code(), Some(1));

    let mut cmd = cell.command("upgrade");
    cmd.args(["--backup-completed", "--enable-ceip", "false"]);
    let out = run_input(cmd, b"y\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("Have you backed up"), "{stdout}");
    assert!(stdout.contains("Database upgrade complete"), "{stdout}");
    let show = cell.show();
    assert_eq!(show["db_version"], "10.6.1");
    assert_eq!(show["version"], "10.6.1");

    // Bad options: usage, exit 1, nothing asked.
    for args in [
        &["--enable-ceip", "maybe"][..],
        &["--installer-path", "/tmp/x.bin"],
        &["--bogus"],
    ] {
        let mut cmd = cell.command("upgrade");
        cmd.args(args);
        let out = run_input(cmd, b"y\ny\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("usage: upgrade"), "{args:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
}

// ---- the health endpoint ----

#[test]
fn health_follows_start_up_maintenance_and_shutdown() {
    let cell = Cell::create(&["--stopped", "--startup-delay", "1h"]);
    let server = cell.serve();
    expect(&server, UNAVAILABLE);

    // Starting: 503 until the start-up delay has passed.
    assert!(cell.tool("systemctl", &["start", "vmware-vcd"]).status.success());
    assert_eq!(cell.show()["cell"], "starting");
    expect(&server, UNAVAILABLE);
    cell.sim_ok("set", &["startup_delay=300ms"]);
    wait_until("the cell to come up", || (health(&server).0 == 200).then_some(()));
    expect(&server, UP);
    assert_eq!(cell.show()["healthy"], true);

    // Quiesce alone keeps it healthy; the maintenance message does not.
    cell.cell_ok(&["--quiesce", "true"]);
    expect(&server, UP);
    assert!(cell.tool("vmware-vcd-cell", &["maintenance"]).status.success());
    expect(&server, UNAVAILABLE);
    assert!(cell.tool("vmware-vcd-cell", &["stop"]).status.success());
    expect(&server, UP);

    // Shutdown without a watchdog: down, and a start on the still-active service does nothing.
    cell.cell_ok(&["--shutdown"]);
    expect(&server, UNAVAILABLE);
    cell.tool("systemctl", &["start", "vmware-vcd"]);
    expect(&server, UNAVAILABLE);
    // stop then start: starting (503) for the delay, then up.
    cell.sim_ok("set", &["startup_delay=1h"]);
    assert!(cell.tool("systemctl", &["stop", "vmware-vcd"]).status.success());
    assert!(cell.tool("systemctl", &["start", "vmware-vcd"]).status.success());
    expect(&server, UNAVAILABLE);
    cell.sim_ok("set", &["startup_delay=0s"]);
    expect(&server, UP);
}

#[test]
fn health_endpoint_http_details_and_log() {
    let cell = Cell::create(&[]);
    let server = cell.serve();
    let head = server.request("HEAD", "/cloud/server_status", &["Authorization: Basic eDp5"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    assert!(head.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", head.head);
    assert!(head.head.contains("\r\nContent-Length: 14"), "{}", head.head);
    let (status, body) = server.get("/cloud/server_status?probe=1");
    assert_eq!((status, body.as_str()), UP);
    assert_eq!(server.get("/no/such/path").0, 404);
    let post = server.request("POST", "/cloud/server_status", &["Content-Length: 3"]);
    assert_eq!(post.status, 405);
    // HTTP/1.0, as the documented load-balancer monitor sends it.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"GET /cloud/server_status HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.ends_with("\r\n\r\nService is up."), "{raw}");
    // Junk is a 400, an oversized head a 431.
    assert_eq!(server.request("GET", "no-slash", &[]).status, 400);
    let big = format!("X-Big: {}", "a".repeat(20_000));
    assert_eq!(server.request("GET", "/cloud/server_status", &[&big]).status, 431);

    let log = cell.http_log();
    assert_eq!(log.len(), 7, "{log:?}");
    assert_eq!(log[0]["method"], "HEAD");
    assert_eq!(log[0]["path"], "/cloud/server_status");
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["authorization_present"], true);
    assert_eq!(log[1]["path"], "/cloud/server_status?probe=1");
    assert_eq!(log[1]["authorization_present"], false);
    assert_eq!(log[2]["status"], 404);
    humantime::parse_rfc3339(log[0]["at"].as_str().unwrap()).unwrap();
}

#[test]
fn serve_exits_on_sigterm_and_removes_serve_json() {
    let cell = Cell::create(&[]);
    let mut server = cell.serve();
    kill(server.child.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(server.child.wait().code(), Some(0));
    assert!(!cell.dir.join("sim/serve.json").exists());
}

#[test]
fn serve_exits_when_the_cell_directory_is_removed() {
    let cell = Cell::create(&[]);
    let mut server = cell.serve();
    expect(&server, UP);
    std::fs::remove_dir_all(&cell.dir).unwrap();
    assert_eq!(server.child.wait().code(), Some(0));
}

#[test]
fn serve_refuses_other_addresses_and_non_cells() {
    let cell = Cell::create(&[]);
    let out = cell.sim("serve", &["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("loopback only"), "{}", text(&out.stderr));
    let mut cmd = Command::new(SIM);
    cmd.arg("serve").arg(cell.dir.join("bin"));
    assert_eq!(run(cmd).status.code(), Some(1));
}
