//! `timeskew run [--offset OFFSET] [--clock CLOCK]... -- CMD [ARGS...]`: CMD and every program
//! it starts, skewed from their first instruction; timeskew ends as CMD ends.

use std::io::{self, Write};

use timeskew::run::{NotSkewed, Notice, RunError, RunReport};

use crate::args::RunArgs;
use crate::output::timer_warning;

/// Runs the command and ends timeskew the way it ended: this never returns.
pub fn run(args: &RunArgs, err: &mut impl Write) -> ! {
    let skew = args.skew_args.skew();
    let (program, rest) = args
        .command
        .split_first()
        .expect("clap requires at least CMD");
    // run_with refuses this too; checked first here so that the refusal comes alone, without
    // the timer warning.
    let me = std::process::id() as i32;
    if let Ok(Some(refusal)) = skew.negative_clock(me) {
        let e = RunError::NegativeClock {
            program: program.to_string_lossy().into_owned(),
            refusal,
        };
        let _ = writeln!(err, "timeskew: {e}");
        std::process::exit(e.exit_code())
    }
    if let Some(warning) = timer_warning(&skew) {
        let _ = writeln!(err, "timeskew: warning: {warning}");
    }
    let result = timeskew::run::run_with_notices(program, rest, &skew, |n: &Notice<'_>| {
        let line = match n {
            Notice::NotSkewed(n) => not_skewed(n),
            Notice::PrivilegesDropped(p) => p.to_string(),
        };
        let _ = writeln!(io::stderr(), "timeskew: warning: {line}");
    });
    match result {
        Ok(report) => {
            log::info!("{}", summary(&program.to_string_lossy(), &report));
            report.outcome.exit_like()
        }
        Err(e) => {
            let _ = writeln!(err, "timeskew: {e}");
            std::process::exit(e.exit_code())
        }
    }
}

/// `pid 123 (/usr/bin/foo) runs with the real clocks: <reason>`
pub fn not_skewed(n: &NotSkewed<'_>) -> String {
    format!(
        "pid {} ({}) runs with the real clocks: {}",
        n.pid, n.program, n.error
    )
}

/// `make: exited with 0; 12 programs skewed`
fn summary(program: &str, r: &RunReport) -> String {
    let ended = match r.outcome {
        timeskew::run::ExitOutcome::Exited(code) => format!("exited with {code}"),
        timeskew::run::ExitOutcome::Signaled { signal, .. } => format!("killed by {signal}"),
    };
    let mut line = format!("{program}: {ended}; {} programs skewed", r.skewed);
    if r.not_skewed > 0 {
        line.push_str(&format!(", {} not skewed", r.not_skewed));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_warning_lines() {
        let r = RunReport {
            outcome: timeskew::run::ExitOutcome::Signaled {
                signal: nix::sys::signal::Signal::SIGTERM,
                core_dumped: false,
            },
            skewed: 3,
            not_skewed: 1,
        };
        assert_eq!(
            summary("make", &r),
            "make: killed by SIGTERM; 3 programs skewed, 1 not skewed"
        );
        let error = timeskew::Error::Unsupported {
            pid: 9,
            reason: "it is a 32-bit process".into(),
        };
        let n = NotSkewed {
            pid: 9,
            program: "/opt/old",
            error: &error,
        };
        assert_eq!(
            not_skewed(&n),
            "pid 9 (/opt/old) runs with the real clocks: pid 9: cannot skew this process: it is \
             a 32-bit process"
        );
    }
}
