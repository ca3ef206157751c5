//! The library in a test: start a child, skew its wall clock, check, put it back.
//! Run as root: `cargo run --example skew_child`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Any process will do; this bash prints its own wall clock (a builtin: no exec) on request.
    let mut child = Command::new("bash")
        .args([
            "-c",
            r#"echo ready; while read _; do printf '%(%s)T\n' -1; done"#,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    output.read_line(&mut line)?; // "ready"

    // The three lines: skew, (look), recover.
    let skew = timeskew::Skew::new("-1h".parse()?);
    let report = timeskew::inject(child.id() as i32, &skew)?;
    println!(
        "injected: {:?}, process held for {:?}",
        report.action, report.stopped_for
    );
    let status = timeskew::status(child.id() as i32)?;
    println!(
        "status: injected={} clocks={:?}",
        status.injected, status.clocks
    );

    writeln!(input)?;
    line.clear();
    output.read_line(&mut line)?;
    let seen: i64 = line.trim().parse()?;
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    println!(
        "the child reads {seen}, the real time is {real}: {} s behind",
        real - seen
    );

    let recovered = timeskew::recover(child.id() as i32)?;
    println!("recovered {} entries", recovered.restored);
    drop(input);
    child.wait()?;
    Ok(())
}
