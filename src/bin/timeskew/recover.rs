//! `timeskew recover`: undo the injection in each target; one that is not injected is left
//! alone, which is success.

use std::io::Write;

use serde::Serialize;
use timeskew::follow::Follower;
use timeskew::{RecoverReport, Status};

use crate::args::RecoverArgs;
use crate::backend::{Backend, for_each, resolve};
use crate::error::CliError;
use crate::output::{format_recover, format_status, report};

/// What `recover` did to one target (a [`RecoverReport`], or the [`Status`] with `--slew`), and
/// the follow it ended.
#[derive(Serialize)]
struct Recovered<T> {
    #[serde(flatten)]
    report: T,
    /// The target was followed (`inject --follow`): this follower ended its experiment, and
    /// recovered the target (and every process it touched) before we looked.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_follow: Option<Follower>,
}

fn with_follow(line: String, follow: Option<Follower>) -> String {
    match follow {
        None => line,
        Some(f) => format!(
            "{line}; its follow (tracer thread {}, pid {}) ended, and the follower gave it and \
             every process it touched real time back",
            f.tracer, f.pid
        ),
    }
}

fn format_recovered(r: &Recovered<RecoverReport>) -> String {
    with_follow(format_recover(&r.report), r.ended_follow)
}

fn format_slewed(r: &Recovered<Status>) -> String {
    with_follow(format_status(&r.report), r.ended_follow)
}

/// Runs `timeskew recover` on the targets `args` select; with `--slew`, a gradual return whose
/// progress `status` shows.
pub fn recover(
    args: &RecoverArgs,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let pids = resolve(args)?;
    // A follow is one experiment: recovering one of its processes ends it (slewing back with
    // `--slew`), before the locks are taken.
    let ended = backend.end_followers(&pids, args.slew);
    let ended_follow = |pid: i32| ended.iter().find(|(p, _)| *p == pid).map(|(_, f)| *f);
    if let Some(slew) = args.slew {
        let results = for_each(&pids, |pid| {
            backend.recover_slewed(pid, slew).map(|report| Recovered {
                report,
                ended_follow: ended_follow(pid),
            })
        });
        return report(args, results, format_slewed, out, err);
    }
    let results = for_each(&pids, |pid| {
        backend.recover(pid).map(|report| Recovered {
            report,
            ended_follow: ended_follow(pid),
        })
    });
    report(args, results, format_recovered, out, err)
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
