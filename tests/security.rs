//! What cellctl refuses because it runs as root (issue 15): files that others could have
//! written (the config, the commands it names, the state directory), symlinks planted in the
//! state directory, plain-HTTP URLs that would carry the password in cleartext, and secret
//! files that are not regular files or not a short secret.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// uid of `nobody`: an owner that is neither root nor this test's user.
const NOBODY: u32 = 65534;

fn cell() -> Cell {
    Cell::new(&["--quiesce-delay", "200ms"])
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Changing a file's owner to another user needs root; without it the owner checks cannot be
/// set up, and the test says so instead of passing silently.
fn can_chown() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("NOTE: not root, so a file owned by another user cannot be made: owner check not exercised");
    false
}

fn chown_to_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), None).unwrap();
}

fn one_line(r: &Run) {
    assert_eq!(r.stderr.trim().lines().count(), 1, "not one line: {}", r.stderr);
}

fn executable(c: &Cell, name: &str, mode: u32) -> std::path::PathBuf {
    let p = c.tmp.path().join(name);
    std::fs::write(&p, "#!/bin/sh\necho 10.6.0\n").unwrap();
    chmod(&p, mode);
    p
}

// --- 1. The config file and the commands it names ------------------------------------------

#[test]
fn group_writable_config_is_refused_with_the_fix() {
    let c = cell();
    chmod(&c.config, 0o664);
    let r = c.run(&["drain"]);
    r.assert_code(3);
    one_line(&r);
    let cfg = c.config.display().to_string();
    assert!(r.stderr.contains(&cfg), "{}", r.stderr);
    assert!(r.stderr.contains("664"), "mode not named: {}", r.stderr);
    assert!(r.stderr.contains(&format!("chmod go-w {cfg}")), "{}", r.stderr);
    assert!(c.invocations().is_empty(), "the cell was touched");
}

#[test]
fn world_writable_config_is_refused() {
    let c = cell();
    chmod(&c.config, 0o646);
    let r = c.run(&["--json", "status"]);
    r.assert_code(3);
    assert_eq!(r.json()["error"]["kind"], "config");
    assert!(r.stderr.contains("chmod go-w"), "{}", r.stderr);
}

#[test]
fn config_owned_by_another_user_is_refused() {
    if !can_chown() {
        return;
    }
    let c = cell();
    chown_to_nobody(&c.config);
    let r = c.run(&["drain"]);
    r.assert_code(3);
    one_line(&r);
    assert!(r.stderr.contains(&format!("uid {NOBODY}")), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("chown root {}", c.config.display())),
        "{}",
        r.stderr
    );
    assert!(c.invocations().is_empty());
}

#[test]
fn private_config_with_safe_commands_is_accepted() {
    let c = cell();
    let inst = executable(&c, "installer", 0o755);
    let ver = executable(&c, "version", 0o700);
    std::fs::write(
        &c.config,
        format!("[install]\ncommand = [{inst:?}, \"{{package}}\"]\nversion_command = [{ver:?}]\n"),
    )
    .unwrap();
    c.run(&["--json", "status"]).assert_code(0);
    // Bare names are found on PATH at run time, and a path that does not exist runs nothing.
    std::fs::write(
        &c.config,
        "[install]\ncommand = [\"rpm\", \"-Uvh\", \"{package}\"]\nversion_command = [\"/nonexistent/vcd-version\"]\n",
    )
    .unwrap();
    c.run(&["--json", "status"]).assert_code(0);
}

#[test]
fn group_writable_install_command_is_refused() {
    let c = cell();
    let inst = executable(&c, "installer", 0o775);
    std::fs::write(&c.config, format!("[install]\ncommand = [{inst:?}, \"{{package}}\"]\n")).unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(3);
    one_line(&r);
    let p = inst.display().to_string();
    assert!(r.stderr.contains("[install] command"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("chmod go-w {p}")), "{}", r.stderr);
    assert!(c.invocations().is_empty());
}

#[test]
fn world_writable_version_command_is_refused() {
    let c = cell();
    let ver = executable(&c, "version", 0o757);
    std::fs::write(&c.config, format!("[install]\nversion_command = [{ver:?}]\n")).unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(3);
    assert!(r.stderr.contains("[install] version_command"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("chmod go-w {}", ver.display())),
        "{}",
        r.stderr
    );
}

#[test]
fn install_command_owned_by_another_user_is_refused() {
    if !can_chown() {
        return;
    }
    let c = cell();
    let inst = executable(&c, "installer", 0o755);
    chown_to_nobody(&inst);
    std::fs::write(&c.config, format!("[install]\ncommand = [{inst:?}, \"{{package}}\"]\n")).unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(3);
    assert!(
        r.stderr.contains(&format!("chown root {}", inst.display())),
        "{}",
        r.stderr
    );
}

// --- 2. The state directory ----------------------------------------------------------------

#[test]
fn group_writable_state_dir_is_refused_with_the_fix() {
    let c = cell();
    std::fs::create_dir(&c.state).unwrap();
    chmod(&c.state, 0o770);
    let r = c.run(&["--json", "drain"]);
    r.assert_code(9);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    let dir = c.state.display().to_string();
    assert!(msg.contains(&dir) && msg.contains("770"), "{msg}");
    assert!(msg.contains(&format!("chmod 700 {dir}")), "{msg}");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0, "the cell was changed");
}

#[test]
fn state_dir_owned_by_another_user_is_refused() {
    if !can_chown() {
        return;
    }
    let c = cell();
    std::fs::create_dir(&c.state).unwrap();
    chmod(&c.state, 0o700);
    chown_to_nobody(&c.state);
    let r = c.run(&["--json", "drain"]);
    r.assert_code(9);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&format!("uid {NOBODY}")), "{msg}");
    assert!(msg.contains(&format!("chown {}", nix::unistd::geteuid())), "{msg}");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
}

#[test]
fn a_new_state_dir_is_private() {
    let c = cell();
    c.run(&["drain", "--poll-interval", "100ms"]).assert_code(0);
    let mode = std::fs::metadata(&c.state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn planted_lock_symlink_is_refused_and_its_target_untouched() {
    let c = cell();
    std::fs::create_dir(&c.state).unwrap();
    chmod(&c.state, 0o700);
    let victim = c.tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, c.state.join("lock")).unwrap();
    let r = c.run(&["--json", "drain"]);
    r.assert_code(9);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("symbolic link") && msg.contains(&c.state.join("lock").display().to_string()),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
}

#[test]
fn planted_journal_symlink_is_refused() {
    let c = cell();
    std::fs::create_dir(&c.state).unwrap();
    chmod(&c.state, 0o700);
    let victim = c.tmp.path().join("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    std::os::unix::fs::symlink(&victim, c.state.join("current.json")).unwrap();
    let r = c.run(&["--json", "drain"]);
    r.assert_code(9);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("symbolic link") && msg.contains("current.json"), "{msg}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "{}");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
}

// --- 3. HTTPS only ---------------------------------------------------------------------------

fn run(cmd: &mut std::process::Command) -> Run {
    Run::from(cmd.output().unwrap())
}

#[test]
fn plain_http_api_url_is_refused() {
    let c = cell();
    for (how, mut cmd) in [
        ("--api-url", {
            let mut x = c.cellctl();
            x.args(["--api-url", "http://127.0.0.1:9"]);
            x
        }),
        ("CELLCTL_API_URL", {
            let mut x = c.cellctl();
            x.env("CELLCTL_API_URL", "HTTP://127.0.0.1:9");
            x
        }),
    ] {
        let r = run(cmd.arg("status"));
        r.assert_code(3);
        one_line(&r);
        assert!(r.stderr.contains("--api-url"), "{how}: {}", r.stderr);
        assert!(r.stderr.contains("https://"), "{how}: {}", r.stderr);
        assert!(r.stderr.contains("--insecure-allow-http"), "{how}: {}", r.stderr);
    }
}

#[test]
fn other_schemes_are_refused_too() {
    let c = cell();
    let r = run(c.cellctl().args(["--api-url", "ftp://127.0.0.1:9", "status"]));
    r.assert_code(3);
    assert!(r.stderr.contains("https://"), "{}", r.stderr);
}

#[test]
fn plain_http_health_url_is_refused() {
    let c = cell();
    let r = run(c
        .cellctl()
        .args(["--health-url", "http://127.0.0.1:9/cloud/server_status", "drain"]));
    r.assert_code(3);
    one_line(&r);
    assert!(r.stderr.contains("--health-url"), "{}", r.stderr);
    assert!(c.invocations().is_empty());
}

fn secret_file(c: &Cell) -> std::path::PathBuf {
    let p = c.tmp.path().join("report-secret");
    std::fs::write(&p, "webhook-secret\n").unwrap();
    chmod(&p, 0o600);
    p
}

#[test]
fn plain_http_report_url_is_refused() {
    let c = cell();
    let secret = secret_file(&c);
    std::fs::write(
        &c.config,
        format!("[report]\nurls = [\"http://127.0.0.1:9/hook\"]\nsecret_file = {secret:?}\n"),
    )
    .unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(3);
    one_line(&r);
    assert!(r.stderr.contains("[report] urls"), "{}", r.stderr);
    assert!(c.invocations().is_empty());
    let r = run(c.cellctl().args(["--report-url", "http://127.0.0.1:9/other", "drain"]));
    r.assert_code(3);
    assert!(r.stderr.contains("--report-url"), "{}", r.stderr);
}

#[test]
fn insecure_allow_http_lets_plain_http_through_loudly() {
    let c = cell();
    let r = run(c.cellctl().args([
        "--insecure-allow-http",
        "--api-url",
        "http://127.0.0.1:9",
        "--json",
        "status",
    ]));
    r.assert_code(0);
    assert_eq!(
        r.stderr.matches("cleartext").count(),
        1,
        "one warning expected: {}",
        r.stderr
    );
    assert!(r.stderr.contains("--api-url"), "{}", r.stderr);
    let r = run(c.cellctl().env("CELLCTL_INSECURE_ALLOW_HTTP", "1").args([
        "--health-url",
        "http://127.0.0.1:9/cloud/server_status",
        "--json",
        "status",
    ]));
    r.assert_code(0);
    assert!(r.stderr.contains("cleartext"), "{}", r.stderr);
    // With every URL on https the opt-in changes nothing and says nothing.
    let r = run(c.cellctl().args(["--insecure-allow-http", "--json", "status"]));
    r.assert_code(0);
    assert!(!r.stderr.contains("cleartext"), "{}", r.stderr);
}

// --- 4. Secret files: regular and short ------------------------------------------------------

/// Far longer than cellctl takes to refuse a file; reached only if it blocked on one.
const BLOCKED: std::time::Duration = std::time::Duration::from_secs(30);

/// Run with a time limit: reading a FIFO would block forever, and a test must fail, not hang.
fn run_bounded(cmd: &mut std::process::Command) -> Run {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(BLOCKED) {
        Run::from(out.unwrap())
    } else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("cellctl was still running after {BLOCKED:?}: it blocked on the file");
    }
}

#[test]
fn fifo_password_file_is_refused_without_blocking() {
    let c = cell();
    let fifo = c.tmp.path().join("pw.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut cmd = c.cellctl_without_password();
    cmd.arg("--password-file").arg(&fifo).arg("drain");
    let r = run_bounded(&mut cmd);
    r.assert_code(6);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert!(c.invocations().is_empty());
}

#[test]
fn fifo_systemd_credential_is_refused_without_blocking() {
    let c = cell();
    let creds = c.tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    nix::unistd::mkfifo(
        &creds.join("vcd-password"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut cmd = c.cellctl_without_password();
    cmd.env("CREDENTIALS_DIRECTORY", &creds).arg("drain");
    let r = run_bounded(&mut cmd);
    r.assert_code(6);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
}

#[test]
fn directory_password_file_is_refused() {
    let c = cell();
    let dir = c.tmp.path().join("pwdir");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let r = run(c
        .cellctl_without_password()
        .arg("--password-file")
        .arg(&dir)
        .arg("drain"));
    r.assert_code(6);
    one_line(&r);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert!(r.stderr.contains("directory"), "{}", r.stderr);
}

#[test]
fn oversized_password_file_is_refused() {
    let c = cell();
    // The right password on the first line: only the size refuses it.
    let mut text = format!("{PASSWORD}\n");
    text.push_str(&"#".repeat(5000));
    std::fs::write(&c.pwfile, text).unwrap();
    let r = c.run(&["drain"]);
    r.assert_code(6);
    one_line(&r);
    assert!(r.stderr.contains("4 KiB"), "{}", r.stderr);
    assert!(c.invocations().is_empty());
}

#[test]
fn fifo_webhook_secret_file_is_refused_without_blocking() {
    let c = cell();
    let fifo = c.tmp.path().join("secret.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::write(
        &c.config,
        format!("[report]\nurls = [\"https://127.0.0.1:9/hook\"]\nsecret_file = {fifo:?}\n"),
    )
    .unwrap();
    let mut cmd = c.cellctl();
    cmd.arg("drain");
    let r = run_bounded(&mut cmd);
    r.assert_code(3);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert!(c.invocations().is_empty());
}

#[test]
fn leak_checks_know_the_api_logins_basic_form() {
    // base64("administrator@System:Sim-Secret-4711"), from `printf %s ... | base64`: the leak
    // checks search for this form too, so the encoder they use must agree with coreutils.
    assert_eq!(password_forms()[1], "YWRtaW5pc3RyYXRvckBTeXN0ZW06U2ltLVNlY3JldC00NzEx");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
}
