//! `timeskew status`: whether each target is injected, and its skew. Reads only; changes
//! nothing.

use std::io::Write;

use serde::Serialize;
use timeskew::Status;
use timeskew::follow::Follower;

use crate::args::TargetArgs;
use crate::backend::{Backend, for_each, resolve};
use crate::error::CliError;
use crate::output::{format_status, report};

/// What `status` shows of one target: its state, and the follower tracing it.
#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    status: Status,
    /// Traced by a timeskew follower (`inject --follow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    followed_by: Option<Follower>,
}

fn format_shown(s: &Shown) -> String {
    let line = format_status(&s.status);
    match s.followed_by {
        None => line,
        Some(f) => format!(
            "{line}; followed by timeskew (tracer thread {}, pid {}): every program it execs \
             gets the follow's fault, `timeskew inject` changes it, `timeskew recover` ends it",
            f.tracer, f.pid
        ),
    }
}

/// Runs `timeskew status` on the targets `args` select.
pub fn status(
    args: &TargetArgs,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let pids = resolve(args)?;
    let results = for_each(&pids, |pid| {
        backend.status(pid).map(|status| Shown {
            status,
            followed_by: backend.follower(pid),
        })
    });
    report(args, results, format_shown, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::testing::{Fake, parse};

    fn run_status(backend: &Fake, args: &[&str]) -> (Result<(), CliError>, String, String) {
        let args = match parse(args).unwrap().command {
            Command::Status(a) => a,
            other => panic!("{args:?} parsed as {other:?}"),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = status(&args, backend, &mut out, &mut err);
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn library_errors_pass_through() {
        let fake = Fake::default();
        let (result, out, _) = run_status(&fake, &["status", "--pid", "4"]);
        let e = result.unwrap_err();
        assert!(matches!(
            e,
            CliError::Timeskew(timeskew::Error::NoSuchProcess { pid: 4 })
        ));
        assert_eq!(e.to_string(), "pid 4: no such process");
        assert_eq!(out, "");
    }
}
