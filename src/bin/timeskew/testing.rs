//! Fixtures shared by the unit tests of several modules: parsing, reports, a fake backend.

use std::cell::RefCell;
use std::time::Duration;

use clap::Parser;
use timeskew::{
    Clock, ClockOffset, InjectAction, InjectReport, Offset, RecoverReport, Skew, SlewRate, Status,
};

use crate::args::{Cli, Command, InjectArgs};
use crate::backend::Backend;

pub fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("timeskew").chain(args.iter().copied()))
}

pub fn parse_err(args: &[&str]) -> clap::Error {
    match parse(args) {
        Ok(cli) => panic!("{args:?} should fail, parsed as {cli:?}"),
        Err(e) => e,
    }
}

pub fn inject_args(args: &[&str]) -> InjectArgs {
    match parse(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
    {
        Command::Inject(a) => a.0,
        other => panic!("{args:?} parsed as {other:?}"),
    }
}

pub fn secs(s: i64) -> Offset {
    Offset::from_nanos(s * 1_000_000_000)
}

pub fn status(pid: i32, clocks: &[(Clock, Offset)]) -> Status {
    Status {
        pid,
        injected: true,
        trampoline: Some(0x7f12_3456_7000),
        layout_version: Some(1),
        clocks: clocks
            .iter()
            .map(|&(clock, offset)| ClockOffset { clock, offset })
            .collect(),
        generation: 0,
        expires_in: None,
        shape: None,
    }
}

pub fn inject_report(action: InjectAction, clocks: &[(Clock, Offset)]) -> InjectReport {
    InjectReport {
        action,
        stopped_for: Duration::from_micros(400),
        threads: 3,
        status: status(123, clocks),
        live: None,
        all_stop_reason: None,
    }
}

/// Injects anything, recovers as `injected` says, and finds no process for `status`.
#[derive(Default)]
pub struct Fake {
    pub calls: RefCell<Vec<String>>,
    pub injected: bool,
}

impl Backend for Fake {
    fn inject(&self, pid: i32, skew: &Skew) -> timeskew::Result<InjectReport> {
        self.calls.borrow_mut().push(format!("inject {pid} {skew}"));
        let clocks: Vec<(Clock, Offset)> =
            skew.clocks().iter().map(|c| (c, skew.offset())).collect();
        let mut r = inject_report(InjectAction::Injected, &clocks);
        r.status.pid = pid;
        Ok(r)
    }
    fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport> {
        self.calls.borrow_mut().push(format!("recover {pid}"));
        Ok(RecoverReport {
            pid,
            was_injected: self.injected,
            restored: if self.injected { 3 } else { 0 },
            skipped: vec![],
            stopped_for: Duration::ZERO,
            threads: 0,
            live: None,
            all_stop_reason: None,
            hooks_left: None,
        })
    }
    fn recover_slewed(&self, pid: i32, slew: SlewRate) -> timeskew::Result<Status> {
        self.calls
            .borrow_mut()
            .push(format!("recover {pid} --slew {slew}"));
        Err(timeskew::Error::NoSuchProcess { pid })
    }
    fn status(&self, pid: i32) -> timeskew::Result<Status> {
        Err(timeskew::Error::NoSuchProcess { pid })
    }
}
