//! What makes the binary exit with status 1, and how it is told: one line `timeskew: <error>`,
//! plus with `-v` each cause the line does not already include.

use std::fmt::Write as _;
use std::io;

/// Everything that can make the binary exit with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Timeskew(#[from] timeskew::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("demo: {0}")]
    Demo(String),
    #[error("{failed} of {total} targets failed (see above)")]
    Partial { failed: usize, total: usize },
    #[error("no process selected: {0}")]
    NothingSelected(String),
    #[error("interrupted by {0}; the skew was recovered")]
    Interrupted(nix::sys::signal::Signal),
}

impl CliError {
    pub fn io(context: impl Into<String>, source: io::Error) -> CliError {
        CliError::Io {
            context: context.into(),
            source,
        }
    }
}

/// `?` on a failed write of our own output.
impl From<io::Error> for CliError {
    fn from(source: io::Error) -> CliError {
        CliError::io("cannot write output", source)
    }
}

/// The lines printed for a failed command: `timeskew: <error>`, and with `verbose` each cause
/// that the message does not already include.
pub fn error_report(error: &CliError, verbose: bool) -> String {
    let mut report = format!("timeskew: {error}");
    if verbose {
        let mut shown = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(c) = cause {
            let text = c.to_string();
            if !shown.contains(&text) {
                let _ = write!(report, "\n  caused by: {text}");
            }
            shown = text;
            cause = c.source();
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_report_adds_new_causes_only_when_verbose() {
        let e = CliError::io(
            "demo: cannot start the child",
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(
            error_report(&e, false),
            "timeskew: demo: cannot start the child: no such file"
        );
        assert_eq!(
            error_report(&e, true),
            error_report(&e, false),
            "cause already shown"
        );

        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let e = CliError::io(
            "reading",
            io::Error::other(Outer(io::Error::other("root cause"))),
        );
        assert_eq!(
            error_report(&e, true),
            "timeskew: reading: outer\n  caused by: root cause"
        );
    }
}
