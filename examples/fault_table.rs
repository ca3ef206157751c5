//! What a target sees under each fault shape: a table for docs/faults.md. Starts the `probe`
//! example, applies each shape in turn (realtime only), and samples the offset of the probe's
//! CLOCK_REALTIME from real time every quarter second. Run as root, after `cargo build
//! --examples`: `cargo run --example fault_table`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timeskew::{Offset, Skew};

fn real_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let probe = exe.with_file_name("probe");
    let mut child = Command::new(probe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    output.read_line(&mut line)?; // ready
    let pid = child.id() as i32;
    let mut offset_ms = move || -> Result<f64, Box<dyn std::error::Error>> {
        let before = real_ns();
        writeln!(input, "now")?;
        line.clear();
        output.read_line(&mut line)?;
        let after = real_ns();
        let rt: i128 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("realtime=")?.parse().ok())
            .ok_or("no realtime")?;
        Ok((rt - (before + after) / 2) as f64 / 1e6)
    };
    let secs = |s: i64| Offset::from_nanos(s * 1_000_000_000);
    let ms = Duration::from_millis;
    let shapes: Vec<(&str, Skew)> = vec![
        ("--offset -2s", Skew::new(secs(-2))),
        ("--rate 2", Skew::rate("2".parse()?)),
        ("--rate 0.5", Skew::rate("0.5".parse()?)),
        ("--rate +500ppm", Skew::rate("+500ppm".parse()?)),
        ("--freeze", Skew::freeze()),
        ("--suspend 1s", Skew::as_is().with_suspend(ms(1000))),
        (
            "--offset 1s --slew 50%",
            Skew::new(secs(1)).with_slew("50%".parse()?),
        ),
        (
            "--strobe 1s --period 500ms",
            Skew::as_is().with_strobe(secs(1), ms(500)),
        ),
        ("--resolution 300ms", Skew::as_is().with_resolution(ms(300))),
    ];
    let at = [0u64, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500];
    print!("| shape |");
    for t in at {
        print!(" {:.2} s |", t as f64 / 1000.0);
    }
    println!();
    println!("|---|{}", "---|".repeat(at.len()));
    for (name, skew) in shapes {
        timeskew::recover(pid)?;
        timeskew::inject(pid, &skew)?;
        let start = Instant::now();
        print!("| `{name}` |");
        for t in at {
            while start.elapsed() < Duration::from_millis(t) {
                std::thread::sleep(Duration::from_millis(1));
            }
            print!(" {:+.0} |", offset_ms()?);
        }
        println!();
    }
    timeskew::recover(pid)?;
    child.kill()?;
    child.wait()?;
    Ok(())
}
