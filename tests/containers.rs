//! Issue 10: `--container ID` against real podman containers (runc, cgroupfs) of a tiny busybox
//! image: every process of the container reached through its cgroups, conmon left alone, and
//! bad, unknown and vanished ids refused with nothing changed.
//!
//! Needs root, podman, runc and busybox-static (`sudo scripts/install-test-deps.sh`; the test
//! command `sudo scripts/test.sh` runs it). Nothing here skips itself.

mod common;

use std::time::Duration;

use common::container::{Container, bind_with_libraries, image, run_once};
use common::e2e::{LineTarget, cli_json, static_glibc_probe};
use common::*;

/// The skew the tests inject: a bit over a day back, unmistakable in whole seconds.
const OFFSET_S: i64 = -100_000;

/// Two long-lived shells that print `tick <A|B> <date +%s>` every 0.3 s: the main one (the
/// container's pid 1) and a background subshell (a fork, no exec). `$(date +%s)` runs the
/// applet in a forked subshell without exec, so it reads the clock of the shell that forked it.
/// The waits are `read -t` on a fifo nobody writes (a builtin: no process comes and goes).
const TICKERS: &str = r#"mkfifo /tmp/f; exec 3<>/tmp/f; rm /tmp/f
(while true; do echo "tick B $(date +%s)"; read -t 0.3 x <&3; done) &
echo ready
while true; do echo "tick A $(date +%s)"; read -t 0.3 x <&3; done"#;

/// Our real time, in whole seconds.
fn now_s() -> i64 {
    (realtime_ns() / SEC) as i64
}

/// Waits for the next `tick WHO <secs>` lines of the log, skipping those printed before the
/// change, and asserts that `count` in a row read real time shifted by `offset_s` (± 2 s: whole
/// seconds, printed and read a moment apart).
fn assert_ticks(c: &mut Container, who: &str, offset_s: i64, count: usize) {
    let prefix = format!("tick {who} ");
    let shifted = |line: &str| {
        line.strip_prefix(&prefix)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .is_some_and(|v| (v - (now_s() + offset_s)).abs() <= 2)
    };
    let what = format!("`{prefix}<real time {offset_s:+}s>`");
    c.wait_for_line(&what, Duration::from_secs(20), shifted);
    for _ in 1..count {
        let line = c.wait_for_line(&what, Duration::from_secs(20), |l| l.starts_with(&prefix));
        assert!(
            shifted(&line),
            "{who}: {line:?} is not real time {offset_s:+}s"
        );
    }
}

/// The static probe in the container, started with `podman exec -i`, and its host pid.
fn probe_in(c: &Container) -> (LineTarget, i32) {
    let probe = c.exec_target("probe in the container", &["/bin/probe"]);
    let host = c.host_pid_of(probe.pid);
    (probe, host)
}

/// The pids and their `injected` flags in a `status --json` of several targets.
fn injected_by_pid(status: &serde_json::Value) -> Vec<(i64, bool)> {
    status["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets in {status}"))
        .iter()
        .filter(|t| t["ok"] == true)
        .map(|t| {
            (
                t["pid"].as_i64().unwrap(),
                t["report"]["injected"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn injected(status: &serde_json::Value, pid: i32) -> Option<bool> {
    injected_by_pid(status)
        .into_iter()
        .find(|&(p, _)| p == pid as i64)
        .map(|(_, i)| i)
}

fn test_image() -> String {
    image(&[("probe", static_glibc_probe())])
}

#[test]
fn inject_status_recover_by_id_and_prefix_reach_every_process_of_the_container() {
    let mut c = Container::run("every-process", &test_image(), TICKERS);
    let (mut probe, probe_pid) = probe_in(&c);
    let main = c.main_pid();
    let conmon = c.conmon_pid();
    let before = c.host_pids();
    assert!(
        before.contains(&main) && before.contains(&probe_pid) && before.len() >= 3,
        "{before:?}"
    );
    assert!(
        !before.contains(&conmon),
        "conmon {conmon} is in {before:?}"
    );
    let status = cli_json(&["status", "--container", &c.id, "--json"]);
    assert!(
        injected_by_pid(&status).iter().all(|&(_, i)| !i),
        "{status}"
    );

    // Inject by full id: the shells and the probe, not conmon.
    let offset = format!("{OFFSET_S}s");
    let report = cli_json(&[
        "inject",
        "--container",
        &c.id,
        "--offset",
        &offset,
        "--json",
    ]);
    assert_eq!(report["failed"], 0, "{report}");
    let pids: Vec<i64> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ok"] == true)
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    for want in [main, probe_pid] {
        assert!(pids.contains(&(want as i64)), "{want} not in {report}");
    }
    assert!(!pids.contains(&(conmon as i64)), "{report}");

    // Every running process reads the skew: the probe (its own clock_gettime, gettimeofday
    // and time), the main shell (A) and the background shell (B).
    let off_ns = OFFSET_S as i128 * SEC;
    let sample = probe.now();
    sample.assert_realtime_shift("realtime", 1, off_ns, 0);
    sample.assert_realtime_shift("gtod", 1_000, off_ns, 0);
    sample.assert_realtime_shift("time", SEC, off_ns, COARSE_TICK);
    assert_ticks(&mut c, "A", OFFSET_S, 3);
    assert_ticks(&mut c, "B", OFFSET_S, 3);

    // A process started later (podman exec) is new: not skewed without --follow.
    let out = c.exec(&["date", "+%s"]);
    let fresh: i64 = stdout(&out).trim().parse().expect("date +%s");
    assert!(
        (fresh - now_s()).abs() <= 2,
        "podman exec date said {fresh}"
    );

    // status by the 12-digit prefix: the same processes, injected; conmon untouched.
    let status = cli_json(&["status", "--container", c.short_id(), "--json"]);
    for pid in [main, probe_pid] {
        assert_eq!(injected(&status, pid), Some(true), "{pid}: {status}");
    }
    let conmon_status = cli_json(&["status", "--pid", &conmon.to_string(), "--json"]);
    assert_eq!(conmon_status["injected"], false, "{conmon_status}");

    // recover by the prefix: real time again everywhere.
    let report = cli_json(&["recover", "--container", c.short_id(), "--json"]);
    assert_eq!(report["failed"], 0, "{report}");
    let status = cli_json(&["status", "--container", c.short_id(), "--json"]);
    assert!(
        injected_by_pid(&status).iter().all(|&(_, i)| !i),
        "{status}"
    );
    probe.now().assert_realtime_shift("realtime", 1, 0, 0);
    assert_ticks(&mut c, "A", 0, 2);
    assert_ticks(&mut c, "B", 0, 2);
    drop(probe);
}

#[test]
fn a_name_resolves_through_podman_and_combines_with_pid_and_tree() {
    let c = Container::run("by-name", &test_image(), TICKERS);
    let main = c.main_pid();
    let conmon = c.conmon_pid();
    let status = cli_json(&["status", "--container", &c.name, "--json"]);
    assert_eq!(injected(&status, main), Some(false), "{status}");
    assert_eq!(injected(&status, conmon), None, "{status}");
    // Named with --pid, conmon joins the selection; --tree adds nothing outside the container
    // but conmon's own children (the container's first process).
    let conmon_s = conmon.to_string();
    let args = [
        "status",
        "--container",
        &c.name,
        "--pid",
        &conmon_s,
        "--tree",
        "--json",
    ];
    let status = cli_json(&args);
    assert_eq!(injected(&status, conmon), Some(false), "{status}");
    assert_eq!(injected(&status, main), Some(false), "{status}");
    // The human report names each process and counts them.
    let text = timeskew_ok(&["status", "--container", &c.name]);
    assert!(
        text.contains(&format!("pid {main}: not injected")) && text.contains("targets succeeded"),
        "{text}"
    );
}

/// deploy/timeskew-job.yaml's situation, with podman instead of a kubelet: timeskew in a
/// privileged container of its own, in the host's PID namespace but its own cgroup namespace,
/// with the host's cgroup tree mounted at /host/sys/fs/cgroup (its own /sys/fs/cgroup shows only
/// itself), given the id in Kubernetes' `containerd://` form.
#[test]
fn from_a_privileged_container_with_the_hosts_cgroups_as_the_kubernetes_job_does() {
    let img = test_image();
    let mut c = Container::run("job-target", &img, TICKERS);
    let mut args: Vec<String> = [
        "--privileged",
        "--pid=host",
        "--cgroupns=private",
        "-v",
        "/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
    ]
    .map(String::from)
    .into();
    args.extend(bind_with_libraries(std::path::Path::new(timeskew_bin())));
    let id = format!("containerd://{}", c.id);
    let offset = format!("{OFFSET_S}s");
    let bin = timeskew_bin();
    args.extend(
        [
            img.as_str(),
            bin,
            "inject",
            "--container",
            &id,
            "--offset",
            &offset,
            "--duration",
            "2s",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_once("job", &args);
    assert!(
        out.status.success() && stdout(&out).contains("targets succeeded"),
        "the job failed ({}):\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    // The ticks the container printed meanwhile were skewed; after the deadline, real again.
    assert_ticks(&mut c, "A", OFFSET_S, 1);
    assert_ticks(&mut c, "A", 0, 2);
    assert_ticks(&mut c, "B", 0, 2);
    let status = cli_json(&["status", "--container", &c.id, "--json"]);
    assert!(
        injected_by_pid(&status).iter().all(|&(_, i)| !i),
        "{status}"
    );
}

/// Runs the CLI expecting failure with `code`; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = timeskew(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "timeskew {args:?}: {}\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

#[test]
fn bad_unknown_and_vanished_ids_are_clear_errors_and_change_nothing() {
    let img = test_image();
    let c = Container::run("errors", &img, TICKERS);
    let main = c.main_pid();

    // Not an id: usage errors (exit 2) saying what an id looks like.
    let e = fails(
        &["inject", "--container", "869bc329f6e", "--offset", "1s"],
        2,
    );
    assert!(
        e.contains("11 hex digits are too few") && e.contains("at least 12"),
        "{e}"
    );
    let e = fails(&["status", "--container", "not/an-id"], 2);
    assert!(e.contains("not a container id"), "{e}");
    let e = fails(&["recover", "--container", &format!("{}0", c.id)], 2);
    assert!(e.contains("65 hex digits"), "{e}");

    // An id no container has: the containers found are listed, and what to check.
    let e = fails(
        &["inject", "--container", "000000000000", "--offset", "1s"],
        1,
    );
    assert!(
        e.starts_with("timeskew: container 000000000000: no running container has an id starting with 000000000000")
            && e.contains(&format!("podman {}", c.short_id()))
            && e.contains("podman ps --no-trunc"),
        "{e}"
    );
    // An unknown name: podman's answer.
    let e = fails(
        &[
            "inject",
            "--container",
            "timeskew-no-such-container",
            "--offset",
            "1s",
        ],
        1,
    );
    assert!(e.contains("no container of that name"), "{e}");

    // A container removed: its id no longer matches anything.
    let mut gone = Container::run("vanished", &img, TICKERS);
    let gone_id = gone.id.clone();
    gone.remove();
    let e = fails(&["inject", "--container", &gone_id, "--offset", "1s"], 1);
    assert!(
        e.contains(&format!(
            "no running container has an id starting with {gone_id}"
        )),
        "{e}"
    );
    let e = fails(&["status", "--container", &gone_id[..12]], 1);
    assert!(e.contains("no running container"), "{e}");

    // Nothing was changed.
    let status = cli_json(&["status", "--container", &c.id, "--json"]);
    assert_eq!(injected(&status, main), Some(false), "{status}");
    assert!(
        injected_by_pid(&status).iter().all(|&(_, i)| !i),
        "{status}"
    );
}
