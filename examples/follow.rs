//! An experiment on a process tree with `timeskew::follow`: a shell that runs `date` (a new
//! program each time) is followed for two seconds with its clock an hour back; every `date` it
//! starts meanwhile is skewed before its first instruction, and the shell is recovered at the
//! end. Run as root: `cargo run --example follow` (`RUST_LOG=timeskew::follow=info` also shows
//! what the follower does, such as why a program could not be skewed).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timeskew::select::Selection;
use timeskew::{FollowEnd, Offset, Skew};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let mut shell = Command::new("sh")
        .args(["-c", "echo ready; while true; do date +%s; sleep 0.1; done"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(shell.stdout.take().ok_or("no stdout")?).lines();
    lines.next().ok_or("the shell ended")??; // "ready": it runs
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let selection = Selection {
        pids: vec![shell.id() as i32],
        tree: true,
        ..Selection::default()
    };
    let skew = Skew::new("-3600s".parse::<Offset>()?);
    let end = FollowEnd {
        deadline: Some(Instant::now() + Duration::from_secs(2)),
        stop: None,
    };
    let report = timeskew::follow(&selection, &skew, end, |started| {
        for (pid, outcome) in &started {
            println!(
                "pid {pid}: {}",
                if outcome.is_ok() {
                    "skewed"
                } else {
                    "not skewed"
                }
            );
        }
    })?;
    std::thread::sleep(Duration::from_millis(300)); // a few more `date`s, after the end
    shell.kill()?;
    shell.wait()?;
    let seen = reader.join().map_err(|_| "reader panicked")?;

    let real = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let skewed = seen
        .iter()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .filter(|v| (v - (real - 3600)).abs() <= 5)
        .count();
    println!(
        "{} programs exec'd during the follow, {} skewed before their first instruction \
         (median {:.0} µs from the exec stop); {} of the {} dates printed read an hour back; \
         {} process(es) recovered",
        report.execs,
        report.execs_skewed,
        report.exec_to_skew.median_us,
        skewed,
        seen.len(),
        report.recovered
    );
    assert!(
        report.execs > 5 && report.execs_skewed == report.execs,
        "{report:?}"
    );
    // `date` and `sleep` are both exec'd; the dates printed before and after read real time.
    assert!(skewed >= 5 && skewed < seen.len(), "{seen:?}");
    Ok(())
}
