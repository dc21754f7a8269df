//! Issue 14, as an operator meets it: one JSON document even for a refused command line, bad
//! settings named by their source, zero deadlines refused before the cell is touched, `status`
//! that says when there is no cell or a run is live, help and closing lines in words.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn cell() -> Cell {
    Cell::new(&["--quiesce-delay", "200ms"])
}

/// Exactly one JSON document on stdout.
fn one_document(r: &Run) -> Value {
    let lines: Vec<&str> = r.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stdout: {}", r.stdout);
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn a_refused_command_line_is_still_one_document_with_json() {
    let c = cell();
    for (args, command) in [
        (vec!["--json", "drain", "--on-deadline", "bogus"], "drain"),
        (vec!["--json", "drain", "--no-such-flag"], "drain"),
        (vec!["--json", "drain", "--deadline", "soon"], "drain"),
        (vec!["--json", "frobnicate"], "unknown"),
    ] {
        let r = c.run(&args);
        r.assert_code(2);
        let doc = one_document(&r);
        assert_eq!(doc["command"], command, "{args:?}");
        assert_eq!(doc["error"]["kind"], "usage", "{args:?}");
        assert!(!doc["error"]["message"].as_str().unwrap().is_empty());
    }
    // CELLCTL_JSON asks for it as --json does.
    let r = Run::from(
        c.cellctl()
            .env("CELLCTL_JSON", "1")
            .args(["drain", "--bogus"])
            .output()
            .unwrap(),
    );
    r.assert_code(2);
    one_document(&r);
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
}

#[test]
fn a_bad_environment_value_is_a_bad_setting_named_as_such() {
    let c = cell();
    let r = Run::from(
        c.cellctl()
            .env("CELLCTL_DEADLINE", "soon")
            .args(["--json", "drain"])
            .output()
            .unwrap(),
    );
    r.assert_code(3);
    let msg = one_document(&r)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("CELLCTL_DEADLINE") && msg.contains("soon") && msg.contains("environment"),
        "{msg}"
    );
    let r = Run::from(c.cellctl().env("CELLCTL_JSON", "maybe").arg("status").output().unwrap());
    r.assert_code(3);
    assert!(r.stderr.contains("CELLCTL_JSON"), "{}", r.stderr);
    // Typed as a flag, the same value is a usage error.
    c.run(&["--json", "drain", "--deadline", "soon"]).assert_code(2);
}

#[test]
fn a_zero_deadline_is_refused_before_the_cell_is_touched() {
    let c = cell();
    let r = c.run(&["--json", "drain", "--deadline", "0s"]);
    r.assert_code(3);
    let msg = one_document(&r)["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("--deadline") && msg.contains("more than 0"), "{msg}");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
    assert!(c.invocations().iter().all(|i| i["tool"] != "vmware-vcd-cell"));
    assert_eq!(c.show()["in_maintenance"], false);
    c.run(&["--json", "start", "--health-deadline", "0s"]).assert_code(3);
}

#[test]
fn status_says_when_there_is_no_cell_here() {
    let c = cell();
    let r = c.run(&["--json", "--service", "no-such-unit", "status"]);
    r.assert_code(14);
    let doc = one_document(&r);
    assert_eq!(doc["error"]["kind"], "not-a-cell");
    assert!(doc["error"]["message"].as_str().unwrap().contains("no-such-unit"));
    let r = Run::from(
        c.cellctl()
            .args(["--json", "status"])
            .arg("--vcd-home")
            .arg(c.tmp.path().join("no-vcd"))
            .output()
            .unwrap(),
    );
    r.assert_code(14);
    assert!(
        one_document(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cell-management-tool")
    );
}

#[test]
fn status_names_a_live_run_and_its_phase_in_words() {
    let c = cell();
    c.sim(&["jobs", "add", "--never"]);
    let child = c.spawn(&["drain", "--poll-interval", "100ms"]);
    c.wait_phase("waiting");
    let out = c.cellctl().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("pid {}", child.id())) && text.contains("running now"),
        "{text}"
    );
    assert!(text.contains("waiting for jobs to end"), "{text}");
    assert!(
        !text.contains("Waiting {") && !text.contains("resume` undoes"),
        "{text}"
    );
    let doc = c.run(&["--json", "status"]).json();
    assert_eq!(doc["live_run"]["pid"], child.id());
    assert_eq!(doc["live_run"]["command"], "drain");
    signal(&child, Signal::SIGTERM);
    wait_child(child).assert_code(143);
    let doc = c.run(&["--json", "status"]).json();
    assert!(doc.get("live_run").is_none(), "{doc}");
}

#[test]
fn help_puts_a_commands_own_options_first() {
    let c = cell();
    let r = c.run(&["drain", "--help"]);
    r.assert_code(0);
    let own = r.stdout.find("--deadline").unwrap();
    let global = r.stdout.find("Global options").expect("a Global options heading");
    assert!(
        own < global && global < r.stdout.find("--vcd-home").unwrap(),
        "{}",
        r.stdout
    );
    let top = c.run(&["--help"]);
    assert!(top.stdout.contains("Durations (DUR)"), "{}", top.stdout);
}

#[test]
fn the_closing_line_says_what_happened_in_words() {
    let c = cell();
    let r = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let doc = r.json();
    let run = doc["run_id"].as_str().unwrap();
    assert!(r.stderr.contains("drained and shut down"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("run {run}")) && r.stderr.contains("report: "),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("shut_down"), "{}", r.stderr);
}

#[test]
fn report_list_and_refusals_never_push_out_real_runs() {
    let c = cell();
    std::fs::write(&c.config, "[report]\nkeep = 2\n").unwrap();
    let real = c.run(&["--json", "drain", "--poll-interval", "100ms"]);
    real.assert_code(0);
    let run_id = real.json()["run_id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        c.run(&["--json", "drain", "--deadline", "0s"]).assert_code(3);
    }
    let listed = c.run(&["--json", "report", "--list"]);
    listed.assert_code(0);
    let doc = one_document(&listed);
    let all = doc["reports"].as_array().unwrap();
    assert!(
        all.iter()
            .any(|r| r["run_id"] == run_id.as_str() && r["outcome"] == "shut_down"),
        "the real run's report was pushed out: {doc}"
    );
    assert_eq!(all.len(), 3, "two refusals and the real run: {doc}");
    let text = c.run(&["report", "--list"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains("shut_down") && text.stdout.contains("REPORT"),
        "{}",
        text.stdout
    );
}

/// Drive cellctl on a pseudo-terminal (python3's pty, as the tests of reports use python3):
/// answer each password prompt with the next of `answers`, return everything it printed and
/// its exit code.
fn on_terminal(c: &Cell, args: &[&str], answers: &[&str]) -> (String, i32) {
    let script = r#"
import os, pty, select, sys, time, json
args, answers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(args[0], args)
out, given, deadline = b"", 0, time.time() + 60
while time.time() < deadline:
    if not select.select([fd], [], [], 1)[0]:
        continue
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if out.count(b"Password for VCD user") > given and given < len(answers):
        time.sleep(0.2)
        os.write(fd, answers[given].encode() + b"\n")
        given += 1
# A run still going at the deadline is a failure of the test, not a hang of the suite.
done, status = os.waitpid(pid, os.WNOHANG)
if done == 0:
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    out += b"\n(test: killed at its deadline)"
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
"#;
    let cmd = c.cellctl_without_password();
    let mut argv: Vec<String> = vec![cmd.get_program().to_string_lossy().into_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    argv.extend(args.iter().map(|a| (*a).to_string()));
    let mut py = std::process::Command::new("python3");
    py.arg("-c")
        .arg(script)
        .arg(serde_json::to_string(&argv).unwrap())
        .arg(serde_json::to_string(answers).unwrap());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => py.env(k, v),
            None => py.env_remove(k),
        };
    }
    let out = py.output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn the_prompt_asks_again_for_an_empty_or_rejected_password() {
    let c = cell();
    let (out, code) = on_terminal(&c, &["drain", "--poll-interval", "100ms"], &["", "wrong-one", PASSWORD]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the password is empty"), "{out}");
    assert!(out.contains("try again"), "{out}");
    assert!(
        !out.contains("password file"),
        "mentions a file that was not given: {out}"
    );
    assert_eq!(c.show()["service"], "stopped");
    // The rejected password never reached a call that changes the cell.
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 1);
}

#[test]
fn three_rejected_passwords_end_the_run_untouched() {
    let c = cell();
    let (out, code) = on_terminal(&c, &["drain"], &["a", "b", "c"]);
    assert_eq!(code, 6, "{out}");
    assert_eq!(out.matches("Password for VCD user").count(), 3, "{out}");
    assert_eq!(c.calls_with(&["--quiesce", "true"]), 0);
}

#[test]
fn the_live_line_ticks_every_second_and_leaves_no_stale_copies() {
    let c = cell();
    c.sim(&["jobs", "add", "--never"]);
    // Tool polls every 10 s (no API): the line must still move every second.
    let (out, code) = on_terminal(
        &c,
        &["drain", "--deadline", "5s", "--poll-interval", "10s"],
        &[PASSWORD],
    );
    assert_eq!(code, 10, "{out}");
    let redraws = out.matches("\r\x1b[Kwaiting:").count();
    assert!(redraws >= 4, "{redraws} redraws in a 5 s wait: {out:?}");
    assert!(
        out.contains("deadline in 3s") || out.contains("deadline in 2s"),
        "{out:?}"
    );
    for line in out.split('\n').filter(|l| l.contains("deadline reached")) {
        let shown = line.rsplit('\r').next().unwrap_or(line);
        assert!(
            !shown.contains("waiting:"),
            "a stale live line before a log line: {line:?}"
        );
    }
}

#[test]
fn log_lines_carry_timestamps_when_stderr_is_not_a_terminal() {
    let c = cell();
    let r = c.run(&["drain", "--poll-interval", "100ms"]);
    r.assert_code(0);
    let line = r.stderr.lines().find(|l| l.contains("quiescing")).expect("a log line");
    let stamp = line.split_whitespace().next().unwrap_or("");
    assert!(
        humantime::parse_rfc3339_weak(stamp.trim_end_matches('Z')).is_ok() && stamp.ends_with('Z'),
        "no RFC 3339 UTC timestamp: {line}"
    );
}
