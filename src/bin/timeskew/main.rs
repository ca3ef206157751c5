//! `timeskew`, the command line of the library: `inject`, `recover`, `status`, `run` and `demo`.
//!
//! Exit status: 0 on success, 1 when a command fails (one line `timeskew: <error>` on stderr,
//! plus its causes with `-v`), 2 for usage errors (clap's own message).

#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;
mod demo;
mod isolate;
mod run;
mod schedule;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors print clap's message and exit 2; --help and --version exit 0.
    let cli = cli::Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(cli::log_level(cli.verbose).as_str()),
    )
    .init();

    // Holds the target locks until the report is printed (dropped at the end of main).
    let backend = isolate::Isolated::default();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    match cli::run(&cli.command, &backend, &mut out, &mut err) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(err, "{}", cli::error_report(&e, cli.verbose > 0));
            ExitCode::FAILURE
        }
    }
}
