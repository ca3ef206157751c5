//! A test that moves a child's clock across midnight by hand: freeze its wall clock just before
//! the new year, look, advance three seconds, look again. Run as root:
//! `cargo run --example manual_clock`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The child prints its own date (bash's printf builtin: no exec, so its clock is the one
    // we move) each time it reads a line.
    let mut child = Command::new("bash")
        .args([
            "-c",
            r#"echo ready; while read _; do TZ=UTC printf '%(%Y-%m-%dT%H:%M:%S)T\n' -1; done"#,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut ready = String::new();
    output.read_line(&mut ready)?; // the child runs: safe to change its clock
    let mut ask = move || -> std::io::Result<String> {
        writeln!(input)?;
        let mut line = String::new();
        output.read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    let pid = child.id() as i32;

    let eve = UNIX_EPOCH + Duration::from_secs(1_798_761_598); // 2026-12-31T23:59:58Z
    let mut clock = timeskew::ManualClock::freeze(pid, eve)?;
    let before = ask()?;
    std::thread::sleep(Duration::from_millis(1_500)); // frozen: real time passes, its does not
    assert_eq!(ask()?, before);
    println!("frozen:   the child reads {before}");

    clock.advance(Duration::from_secs(3))?; // in force when the call returns
    let after = ask()?;
    println!("advanced: the child reads {after}");
    assert_eq!(before, "2026-12-31T23:59:58");
    assert_eq!(after, "2027-01-01T00:00:01");

    clock.recover()?;
    println!("recovered: the child reads {} again", ask()?);
    child.kill()?;
    child.wait()?;
    Ok(())
}
