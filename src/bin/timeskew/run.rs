//! `timeskew run [--offset OFFSET] [--clock CLOCK]... -- CMD [ARGS...]`: CMD and every program
//! it starts, skewed from their first instruction; timeskew ends as CMD ends.

use std::ffi::OsString;
use std::io::{self, Write};

use clap::{ArgAction, Args};
use timeskew::run::{NotSkewed, Notice, RunError, RunReport};
use timeskew::{ClockSet, Offset, Skew};

use crate::cli::timer_warning;

pub const RUN_EXAMPLES: &str = "\
CMD is skewed before its first instruction, and so is every program it starts: shells, make, test
runners, Go and static binaries (which LD_PRELOAD tools such as faketime cannot reach). Processes
it forks inherit the skew; each exec is skewed as it happens. Nothing is stopped between forks and
execs, so clock reads run at full speed.

Signals: Ctrl-C, Ctrl-Z and fg work as without timeskew; HUP, INT, QUIT, USR1, USR2, ALRM and TERM
sent to timeskew are passed to CMD (once). timeskew exits with CMD's exit status, or is killed by
the signal that killed CMD; 125 if timeskew failed, 126 if CMD could not be executed, 127 if it was
not found. A program that cannot be skewed (e.g. 32-bit) runs with the real clocks, with a warning.
Run by a non-root user, setuid/setgid programs and programs with file capabilities run without
those privileges (the kernel's rule for traced programs), with a warning naming each.
If timeskew itself is killed, CMD carries on; programs it execs afterwards are not skewed.

OFFSET and CLOCK are as for inject; the default offset is 0s (then `timeskew inject --pid` can
change the skew of a running program later without stopping it).

Examples:
  timeskew run --offset -1d -- make test
  timeskew run --offset +90d --clock realtime,monotonic -- ./integration-tests.sh
  timeskew run --offset=-10m -- date";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Offset added to the clocks, e.g. -600s, +2h, 1h30m, -1d
    #[arg(
        long,
        value_name = "OFFSET",
        allow_hyphen_values = true,
        default_value = "0s"
    )]
    pub offset: Offset,

    /// Clock(s) to skew; repeatable or comma-separated [default: realtime]
    #[arg(long = "clock", value_name = "CLOCK", action = ArgAction::Append)]
    pub clocks: Vec<ClockSet>,

    /// The command and its arguments (after `--`)
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// The skew these arguments ask for: realtime unless `--clock` says otherwise.
    pub fn skew(&self) -> Skew {
        self.clocks
            .iter()
            .fold(Skew::new(self.offset), |skew, set| skew.with_clocks(*set))
    }
}

/// Runs the command and ends timeskew the way it ended: this never returns.
pub fn run(args: &RunArgs, err: &mut impl Write) -> ! {
    let skew = args.skew();
    let (program, rest) = args
        .command
        .split_first()
        .expect("clap requires at least CMD");
    // run_with refuses this too; checked first here so that the refusal comes alone, without
    // the timer warning.
    let me = std::process::id() as i32;
    if let Ok(Some(refusal)) = timeskew::skew::deadline::negative_clock(me, &skew.params()) {
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
    use clap::Parser;
    use timeskew::Clock;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = std::iter::once("timeskew").chain(args.iter().copied());
        match Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Run(a) => a,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn strings(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn parses_offset_clocks_and_the_command_with_its_own_flags() {
        let a = run_args(&[
            "run",
            "--offset",
            "-1d",
            "--clock",
            "monotonic",
            "--",
            "sh",
            "-c",
            "date; exit 7",
        ]);
        assert_eq!(a.offset.as_nanos(), -86_400_000_000_000);
        assert_eq!(a.skew().clocks(), ClockSet::from(Clock::Monotonic));
        assert_eq!(strings(&a.command), ["sh", "-c", "date; exit 7"]);

        // Without `--`, everything from the first positional on belongs to the command.
        let a = run_args(&["run", "--offset=-10m", "ls", "-la", "--offset", "x"]);
        assert_eq!(a.offset.as_nanos(), -600_000_000_000);
        assert_eq!(strings(&a.command), ["ls", "-la", "--offset", "x"]);
        assert_eq!(a.skew(), Skew::new(a.offset));
    }

    #[test]
    fn offset_defaults_to_zero_and_a_command_is_required() {
        let a = run_args(&["run", "--", "true"]);
        assert!(a.offset.is_zero());
        let argv = ["timeskew", "run", "--offset", "1s"];
        let e = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{e}"
        );
        let e =
            Cli::try_parse_from(["timeskew", "run", "--offset", "1x", "--", "true"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
    }

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
