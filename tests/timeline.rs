//! The test helpers that read cellsim's group timeline (tests/common/mod.rs `Timeline`): their
//! replay on hand-written timelines, and on a real group driven through the simulated tools.

mod common;

use common::*;

fn line(at: u64, cell: &str, event: &str) -> String {
    format!(r#"{{"at_ms":{at},"cell":"{cell}","event":"{event}","detail":null}}"#)
}

/// Two cells: a is drained and stopped, b serves throughout but is quiesced for a while.
fn rolling() -> Timeline {
    let created = |at, cell| {
        format!(
            r#"{{"at_ms":{at},"cell":"{cell}","event":"created","detail":{{"service":"running","cell":"up","version":"10.5.1"}}}}"#
        )
    };
    let lines = [
        created(0, "a"),
        created(0, "b"),
        // Out of order on purpose: lazy events are written late.
        line(300, "a", "service_stopped"),
        line(100, "a", "quiesced"),
        line(200, "a", "shut_down"),
        line(400, "b", "quiesced"),
        line(500, "b", "unquiesced"),
        line(600, "a", "service_started"),
        line(700, "a", "cell_up"),
    ];
    Timeline::parse(&lines.join("\n"))
}

#[test]
fn events_are_sorted_and_replayed_per_cell() {
    let t = rolling();
    assert!(t.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert_eq!(t.cells(), ["a", "b"]);
    assert_eq!(t.serving_at(0), ["a", "b"]);
    assert_eq!(t.serving_at(99), ["a", "b"]);
    // Quiesced is not serving, though the cell is up and its service runs.
    assert_eq!(t.serving_at(100), ["b"]);
    assert!(t.cell_at("a", 150).up && t.cell_at("a", 150).service_running);
    assert_eq!(t.running_at(250), ["a", "b"]);
    assert_eq!(t.running_at(300), ["b"]);
    assert_eq!(t.serving_at(450), Vec::<String>::new());
    assert_eq!(t.serving_at(500), ["b"]);
    // Started but not up yet: not serving; a restart clears the quiesce.
    let starting = t.cell_at("a", 650);
    assert!(starting.service_running && !starting.up && !starting.quiesced);
    assert_eq!(t.serving_at(700), ["a", "b"]);
    assert_eq!(t.max_down(), 2);
    assert_eq!(t.outages(), [(400, Some(500))]);
    assert_eq!(t.named("quiesced").len(), 2);
    assert_eq!(t.of("a").len(), 6);
}

#[test]
fn a_group_that_never_loses_service_has_max_down_one() {
    let text = [
        line(10, "a", "maintenance_on"),
        line(20, "a", "maintenance_off"),
        line(30, "b", "service_stopped"),
        line(40, "b", "service_started"),
        line(50, "b", "cell_up"),
        line(60, "c", "reboot"),
        line(70, "c", "boot"),
        line(70, "c", "service_started"),
        line(80, "c", "cell_up"),
    ]
    .join("\n");
    let t = Timeline::parse(&text);
    // Cells without a `created` event start as created by default: running and serving.
    assert_eq!(t.serving_at(0), ["a", "b", "c"]);
    assert_eq!(t.serving_at(10), ["b", "c"]);
    assert_eq!(t.serving_at(65), ["a", "b"]);
    assert_eq!(t.max_down(), 1);
    assert!(t.outages().is_empty());
}

#[test]
fn a_refused_start_and_an_open_outage() {
    let text = [
        line(10, "a", "service_stopped"),
        line(20, "a", "service_started"),
        line(20, "a", "start_refused"),
        line(30, "a", "cell_up"),
    ]
    .join("\n");
    let t = Timeline::parse(&text);
    assert_eq!(t.outages(), [(10, Some(30))]);
    let t = Timeline::parse(&text.lines().take(3).collect::<Vec<_>>().join("\n"));
    let a = t.cell_at("a", 25);
    assert!(a.service_running && !a.up);
    assert_eq!(t.outages(), [(10, None)]);
    assert_eq!(Timeline::parse("").max_down(), 0);
}

#[test]
fn a_real_group_records_every_cell_in_one_timeline() {
    let group = tempfile::tempdir().unwrap();
    let a = Cell::in_group(group.path(), "a", &["--startup-delay", "300ms"]);
    let b = Cell::in_group(group.path(), "b", &[]);
    let cmt = |c: &Cell, args: &[&str]| {
        let out = std::process::Command::new(c.dir.join("bin/cell-management-tool"))
            .args(["-u", "administrator", "-p", PASSWORD, "cell"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let systemctl = |c: &Cell, verb: &str| {
        let out = std::process::Command::new(c.dir.join("bin/systemctl"))
            .args([verb, "vmware-vcd"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    cmt(&a, &["--quiesce", "true"]);
    cmt(&a, &["--shutdown"]);
    systemctl(&a, "stop");
    systemctl(&a, "start");
    // The start-up delay runs out unobserved; `cellsim timeline` brings the cells up to now.
    wait_for("a up", || Timeline::of_group(group.path()).named("cell_up").len() == 1);
    let t = Timeline::of_group(group.path());
    let a_events: Vec<&str> = t.of("a").iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        a_events,
        [
            "created",
            "quiesced",
            "shut_down",
            "service_stopped",
            "service_started",
            "cell_up"
        ]
    );
    assert_eq!(t.of("b").len(), 1);
    let up = t.named("cell_up")[0].at_ms;
    let started = t.named("service_started")[0].at_ms;
    assert!(up >= started + 300, "cell_up carries the moment the start-up ended");
    assert_eq!(t.max_down(), 1);
    assert_eq!(t.serving_at(up), ["a", "b"]);
    // The same file, read directly, and through a member's DIR.
    assert_eq!(Timeline::read(&group.path().join("timeline.jsonl")).events, t.events);
    assert_eq!(Timeline::of_cell(&b.dir).events, t.events);
}
