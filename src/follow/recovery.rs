//! The end of a follow: every process touched, and every process of the selection still
//! holding our hooks (forked while the tracees were let go), recovered — or, after a `recover
//! --slew`, slewing back to real time.

use std::collections::BTreeSet;

use super::Missed;
use super::tracer::Traced;
use crate::error::Error;
use crate::ops::recover::{recover_here, slew_back_here};
use crate::select::{Selection, has_exited};
use crate::target::procfs;

/// Passes over the selection: a process forked during one pass is found by the next.
const PASSES: usize = 3;

pub(super) fn recover_all(selection: &Selection, traced: &mut Traced) {
    let mut done = BTreeSet::new();
    let mut todo: BTreeSet<i32> = traced.touched.clone();
    for _ in 0..PASSES {
        if let Ok(now) = selection.resolve() {
            todo.extend(now);
        }
        todo.retain(|p| !done.contains(p));
        if todo.is_empty() {
            break;
        }
        for pid in std::mem::take(&mut todo) {
            done.insert(pid);
            if has_exited(pid) {
                continue;
            }
            // Not the public `recover`: it would end another follower of an overlapping
            // selection.
            let program = || {
                procfs::exe(pid)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into())
            };
            let recovered = match traced.slew_back {
                None => recover_here(pid).map(|r| {
                    if let Some(why) = r.hooks_left {
                        traced.report.hooks_left.push(Missed {
                            pid,
                            program: program(),
                            reason: why,
                        });
                    }
                    r.was_injected
                }),
                Some(slew) => slew_back_here(pid, slew).map(|s| s.injected),
            };
            match recovered {
                Ok(true) => traced.report.recovered += 1,
                Ok(false) => {}
                Err(Error::NoSuchProcess { .. } | Error::ProcessGone { .. }) => {}
                Err(e) => traced.report.recover_failed.push(Missed {
                    pid,
                    program: program(),
                    reason: e.to_string(),
                }),
            }
        }
    }
}
