//! `timeskew status`: whether each target is injected, and its skew. Reads only; changes
//! nothing.

use std::io::Write;

use crate::args::TargetArgs;
use crate::backend::{Backend, for_each, resolve};
use crate::error::CliError;
use crate::output::{format_status, report};

/// Runs `timeskew status` on the targets `args` select.
pub fn status(
    args: &TargetArgs,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let pids = resolve(args)?;
    let results = for_each(&pids, |pid| backend.status(pid));
    report(args, results, format_status, out, err)
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
