//! `timeskew demo`: an injection from start to finish on a throwaway child process.
//!
//! The child is this same executable run as `timeskew __demo-child`. It prints `ready`, then one
//! line of clock readings for every line it reads on stdin, and exits at the end of its input.
//! The parent asks for a reading after each step and brackets the request between two readings
//! of its own (unskewed) clocks, so it can check what the child saw without sleeping to
//! synchronise: the child's reading happened after the first and before the second.
//!
//! `child` is that child; `guard` starts and drives it from the parent; `readings` are the clocks
//! it reports; `compare` checks them against the parent's and prints each step's table.

mod child;
mod compare;
mod guard;
mod readings;

use std::io::Write;

use timeskew::{Clock, Offset, Skew};

use crate::args::DEMO_CHILD_COMMAND;
use crate::backend::Backend;
use crate::error::CliError;
use crate::output::{format_inject, format_recover, format_status, signed, timer_warning};
pub use child::child;
use compare::{Expect, compare, table};
use guard::DemoChild;
use readings::{NS_PER_S, RealClocks};

/// The demo. Every path out of it, error or not, kills and reaps the child.
pub fn run(backend: &impl Backend, out: &mut impl Write) -> Result<(), CliError> {
    let mut child = DemoChild::spawn()?;
    let pid = child.pid();
    writeln!(
        out,
        "timeskew demo: started a throwaway child process (pid {pid}, `timeskew {DEMO_CHILD_COMMAND}`) \
         that prints its clocks when asked.\n"
    )?;
    show(out, &mut child, "1/4: before injection", Expect::REAL)?;

    let skew = Skew::new(Offset::from_nanos(-600 * NS_PER_S as i64));
    writeln!(out, "$ timeskew inject --pid {pid} --offset -600s")?;
    let report = backend.inject(pid, &skew)?;
    writeln!(out, "{}\n", format_inject(&report))?;
    let expect = Expect {
        realtime: skew.offset(),
        monotonic: Offset::ZERO,
    };
    show(
        out,
        &mut child,
        "2/4: after inject -600s (realtime)",
        expect,
    )?;

    let skew = Skew::new(Offset::from_nanos(3_600 * NS_PER_S as i64))
        .with_clock(Clock::Realtime)
        .with_clock(Clock::Monotonic);
    writeln!(
        out,
        "$ timeskew inject --pid {pid} --offset +1h --clock realtime,monotonic"
    )?;
    if let Some(warning) = timer_warning(&skew) {
        writeln!(out, "warning: {warning}")?;
    }
    let report = backend.inject(pid, &skew)?;
    writeln!(out, "{}", format_inject(&report))?;
    writeln!(out, "$ timeskew status --pid {pid}")?;
    writeln!(out, "{}\n", format_status(&backend.status(pid)?))?;
    let expect = Expect {
        realtime: skew.offset(),
        monotonic: skew.offset(),
    };
    show(
        out,
        &mut child,
        "3/4: after the live update to +1h (realtime, monotonic)",
        expect,
    )?;

    writeln!(out, "$ timeskew recover --pid {pid}")?;
    writeln!(out, "{}\n", format_recover(&backend.recover(pid)?))?;
    show(out, &mut child, "4/4: after recover", Expect::REAL)?;

    child.finish()?;
    writeln!(
        out,
        "demo passed: the child saw each skew and real time again after recover, and exited normally."
    )?;
    out.flush()?;
    Ok(())
}

/// Asks the child for a reading, prints the step's table, and fails on any wrong row.
fn show(
    out: &mut impl Write,
    child: &mut DemoChild,
    title: &str,
    expect: Expect,
) -> Result<(), CliError> {
    let before = RealClocks::now()?;
    let seen = child.ask()?;
    let after = RealClocks::now()?;
    let rows = compare(before, seen, after, expect);
    writeln!(out, "{}", table(title, &rows))?;
    out.flush()?;
    let wrong: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            format!(
                "{} is off by {} instead of {}",
                r.clock,
                r.difference,
                signed(r.expected)
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(CliError::Demo(format!(
            "step {title}: in the child, {}",
            wrong.join("; ")
        )))
    }
}
