mod common;
#[path = "common/e2e.rs"]
mod e2e;
use e2e::*;
use std::process::Command;
use std::time::Duration;

fn ticks(t: &mut LineTarget) -> i128 {
    let a = t.now().get("ticks");
    std::thread::sleep(Duration::from_millis(300));
    t.now().get("ticks") - a
}

fn spawn(which: &str) -> LineTarget {
    match which {
        "c" => LineTarget::spawn("c", Command::new(static_glibc_probe())),
        "go" => LineTarget::spawn("go", Command::new(go_static_probe())),
        "py" => {
            let mut c = Command::new("python3");
            c.arg(sources().join("probe.py"));
            LineTarget::spawn("py", c)
        }
        "jvm" => {
            let mut c = Command::new("java");
            c.arg("-cp").arg(java_classes()).arg("Probe");
            LineTarget::spawn("jvm", c)
        }
        "node" => {
            let mut c = Command::new("node");
            c.arg(sources().join("probe.js"));
            LineTarget::spawn("node", c)
        }
        _ => unreachable!(),
    }
}

#[test]
fn experiment() {
    for which in ["c", "go", "py", "jvm", "node"] {
        for off in ["+1h", "-10m"] {
            let mut t = spawn(which);
            let base = ticks(&mut t);
            inject_json(t.pid, "-600s", "realtime");
            let rt = ticks(&mut t);
            inject_json(t.pid, off, "realtime,monotonic");
            let during = ticks(&mut t);
            let cpu0 = cpu(t.pid);
            std::thread::sleep(Duration::from_millis(500));
            let cpu1 = cpu(t.pid);
            recover_json(t.pid);
            let after = ticks(&mut t);
            std::thread::sleep(Duration::from_millis(500));
            let after2 = ticks(&mut t);
            eprintln!(
                "EXP {which} {off}: base {base} rt-only {rt} during {during} (cpu {:.0}%) after-recover {after} later {after2}",
                (cpu1 - cpu0) as f64 / 50.0 * 100.0 / 1.0 / 1.0
            );
        }
    }
}

fn cpu(pid: i32) -> i64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<i64>().unwrap() + f[12].parse::<i64>().unwrap()
}
