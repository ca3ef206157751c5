//! `timeskew`, the command line of the library: `inject`, `recover`, `status`, `run` and `demo`.
//!
//! Exit status: 0 on success, 1 when a command fails (one line `timeskew: <error>` on stderr,
//! plus its causes with `-v`), 2 for usage errors (clap's own message).
//!
//! Modules, each importing only those below it: the commands (`inject`, `recover`, `status`,
//! `run`, `demo`) use `args` (the command line's shape), `backend` (what they run against, over
//! each target; `isolate` is its helper process), `output` (human and JSON reports) and `error`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod args;
mod backend;
mod demo;
mod error;
mod follow;
mod inject;
mod isolate;
mod output;
mod recover;
mod run;
mod status;
#[cfg(test)]
mod testing;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::backend::{Backend, Isolated};
use crate::error::{CliError, error_report};

fn main() -> ExitCode {
    // Usage errors print clap's message and exit 2; --help and --version exit 0.
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(log_level(cli.verbose).as_str()),
    )
    // Microseconds: the steps of a change take tens to hundreds of them.
    .format_timestamp_micros()
    .init();
    // Holds the target locks until the report is printed (dropped at the end of main).
    let backend = Isolated::default();
    let mut out = io::stdout().lock();
    let mut err = io::stderr();
    match dispatch(&cli.command, &backend, &mut out, &mut err) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(err, "{}", error_report(&e, cli.verbose > 0));
            ExitCode::FAILURE
        }
    }
}

/// Runs `command`: results to `out`, warnings to `err`.
fn dispatch(
    command: &Command,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        Command::Inject(args) => inject::inject(args, backend, out, err),
        Command::Recover(args) => recover::recover(args, backend, out, err),
        Command::Status(args) => status::status(args, backend, out, err),
        Command::Run(args) => run::run(args, err),
        Command::Demo => demo::run(backend, out),
        Command::DemoChild => demo::child(&mut io::stdin().lock(), out),
    }
}

/// The log level for `-v` repeated `verbose` times.
fn log_level(verbose: u8) -> log::LevelFilter {
    match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        assert_eq!(log_level(0), log::LevelFilter::Warn);
        assert_eq!(log_level(1), log::LevelFilter::Info);
        assert_eq!(log_level(2), log::LevelFilter::Debug);
        assert_eq!(log_level(3), log::LevelFilter::Trace);
        assert_eq!(log_level(9), log::LevelFilter::Trace);
    }
}
