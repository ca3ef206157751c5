//! `timeskew recover`: undo the injection in each target; one that is not injected is left
//! alone, which is success.

use std::io::Write;

use crate::args::RecoverArgs;
use crate::backend::{Backend, for_each, resolve};
use crate::error::CliError;
use crate::output::{format_recover, format_status, report};

/// Runs `timeskew recover` on the targets `args` select; with `--slew`, a gradual return whose
/// progress `status` shows.
pub fn recover(
    args: &RecoverArgs,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let pids = resolve(args)?;
    if args.slew.is_none() {
        backend.end_followers(&pids);
    }
    if let Some(slew) = args.slew {
        let results = for_each(&pids, |pid| backend.recover_slewed(pid, slew));
        return report(args, results, format_status, out, err);
    }
    let results = for_each(&pids, |pid| backend.recover(pid));
    report(args, results, format_recover, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::testing::{Fake, parse};

    fn run_recover(backend: &Fake, args: &[&str]) -> (Result<(), CliError>, String, String) {
        let args = match parse(args).unwrap().command {
            Command::Recover(a) => a,
            other => panic!("{args:?} parsed as {other:?}"),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = recover(&args, backend, &mut out, &mut err);
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn recover_of_a_clean_process_is_success() {
        let fake = Fake::default();
        let (result, out, _) = run_recover(&fake, &["recover", "--pid", "8"]);
        result.unwrap();
        assert_eq!(out, "pid 8: not injected, nothing to do\n");
        let (result, out, _) = run_recover(&fake, &["recover", "--pid", "8", "--json"]);
        result.unwrap();
        assert_eq!(
            out,
            "{\"pid\":8,\"was_injected\":false,\"restored\":0,\"skipped\":[],\"stopped_for\":0,\"threads\":0}\n"
        );
        let fake = Fake {
            injected: true,
            ..Fake::default()
        };
        let (result, out, _) = run_recover(&fake, &["recover", "--pid", "8"]);
        result.unwrap();
        assert_eq!(
            out,
            "pid 8: recovered, restored 3 vDSO entries (stopped 0 µs, 0 threads)\n"
        );
    }
}
