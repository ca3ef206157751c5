//! The command line: arguments (clap derive), running one command against a [`Backend`], and
//! the human and JSON forms of the reports. Output goes to `Write`rs so all of it is testable.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

use timeskew::select::Selection;
use timeskew::{
    ClockOffset, ClockSet, InjectAction, InjectReport, Offset, RecoverReport, Skew, Status,
};

use crate::demo;
use crate::schedule;

const MAIN_EXAMPLES: &str = "\
Examples:
  timeskew inject --pid 1234 --offset -600s      # its wall clock runs 10 minutes behind
  timeskew inject --pid 1234 --offset +1h --clock realtime,monotonic
  timeskew status --pid 1234 --json
  timeskew recover --pid 1234
  timeskew run --offset -1d -- make test         # a command and all it starts, skewed
  sudo timeskew demo                             # watch it work on a throwaway process

timeskew attaches with ptrace: run it as root or with CAP_SYS_PTRACE.";

const INJECT_EXAMPLES: &str = "\
OFFSET is an optional sign and one or more <number><unit> parts, units ns, us (µs), ms, s, m, h, d;
fractions are fine: -600s, +2h, 1h30m, -1.5s, 250ms, -10us. At most 100 years either way.

CLOCK is realtime (default), monotonic, monotonic-raw, realtime-coarse, monotonic-coarse, boottime,
tai, or the C name (CLOCK_MONOTONIC); repeat --clock or separate with commas. gettimeofday() and
time() follow realtime.

Running inject again on an injected process replaces its skew at once, without stopping it.
A deadline the process computes from a skewed clock and hands to the kernel as an absolute time
fires early or late by the offset: timeskew warns when monotonic/boottime clocks are skewed (their
timers are the common case); realtime timers (e.g. pthread_cond_timedwait's default) move too.
The skew covers the process and children it forks later, not programs it execs.

Examples:
  timeskew inject --pid 1234 --offset -600s
  timeskew inject --pid 1234 --offset=-1.5s --json
  timeskew inject --pid 1234 --offset +1h --clock realtime --clock monotonic
  timeskew inject --pid 1234 --offset 36h --clock realtime,boottime";

const RECOVER_EXAMPLES: &str = "\
Puts the original vDSO entries back; the process reads real time again. A process that is not
injected is left alone (exit status 0). The timeskew pages stay mapped and are reused by the next
inject.

Examples:
  timeskew recover --pid 1234
  timeskew recover --pid 1234 --json";

const STATUS_EXAMPLES: &str = "\
Examples:
  timeskew status --pid 1234
  timeskew status --pid 1234 --json | jq .injected";

const DEMO_EXAMPLES: &str = "\
Starts a throwaway copy of timeskew that prints its clocks, then injects -600s, updates live to
+1h on realtime and monotonic, and recovers, showing the real time beside what the child saw at
each step. Needs root (or CAP_SYS_PTRACE). Exits non-zero if any step fails or any reading is off.

Example:
  sudo timeskew demo";

/// Shift the clocks of a running Linux process.
///
/// timeskew redirects the process's vDSO clock functions (clock_gettime, gettimeofday, time) to
/// code that adds an offset, so the process, and nothing else on the machine, sees a different
/// time. The change lives in the process and can be updated, inspected and undone later.
#[derive(Debug, Parser)]
#[command(name = "timeskew", version, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// More log output: -v info, -vv debug, -vvv trace (RUST_LOG overrides); -v also prints an
    /// error's causes.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Skew the clocks of a running process (or change the skew of an injected one)
    #[command(after_help = INJECT_EXAMPLES)]
    Inject(CheckedInjectArgs),
    /// Undo an injection: the process reads real time again
    #[command(after_help = RECOVER_EXAMPLES)]
    Recover(TargetArgs),
    /// Show whether a process is injected and its skew
    #[command(after_help = STATUS_EXAMPLES)]
    Status(TargetArgs),
    /// Run a command with skewed clocks, and every program it starts
    #[command(after_help = crate::run::RUN_EXAMPLES)]
    Run(crate::run::RunArgs),
    /// Show timeskew working on a throwaway child process (needs root)
    #[command(after_help = DEMO_EXAMPLES)]
    Demo,
    /// The demo's child process (internal)
    #[command(name = demo::CHILD_COMMAND, hide = true)]
    DemoChild,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    /// Offset added to the clocks, e.g. -600s, +2h, 1h30m, -1.5s
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub offset: Offset,

    /// Clock(s) to skew; repeatable or comma-separated [default: realtime]
    #[arg(long = "clock", value_name = "CLOCK", action = ArgAction::Append)]
    pub clocks: Vec<ClockSet>,

    /// End the skew after D (e.g. 10s, 5m): the deadline is stored in the target, which returns
    /// to real time on its own even if timeskew dies; timeskew waits and then recovers
    /// (Ctrl-C or SIGTERM recovers at once) unless --detach
    #[arg(long, value_name = "D", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// With --duration: return right after injecting and leave the deadline to the target
    #[arg(long, requires = "duration", conflicts_with = "every")]
    pub detach: bool,

    /// With --duration: repeat the injection every D (measured from the start of each round)
    /// until interrupted or --count rounds
    #[arg(long, value_name = "D", requires = "duration", value_parser = parse_positive_duration)]
    pub every: Option<Duration>,

    /// With --every: stop after N rounds
    #[arg(long, value_name = "N", requires = "every", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

impl InjectArgs {
    /// What clap cannot check flag by flag: `--every` must leave room for `--duration` (each
    /// round skews for the duration, then recovers; the next starts `--every` after the
    /// previous one started, so an equal or shorter period would run rounds back to back).
    fn check(&self) -> Result<(), clap::Error> {
        if let (Some(every), Some(duration)) = (self.every, self.duration)
            && every <= duration
        {
            let show = |d: Duration| Offset::from_nanos(d.as_nanos() as i64);
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--every {} must be longer than --duration {}: each round skews for \
                     --duration, then recovers, and the next round starts --every after the \
                     previous one started; give a longer --every or a shorter --duration",
                    show(every),
                    show(duration)
                ),
            ));
        }
        Ok(())
    }

    /// The skew these arguments ask for: realtime unless `--clock` says otherwise.
    pub fn skew(&self) -> Skew {
        let skew = self
            .clocks
            .iter()
            .fold(Skew::new(self.offset), |skew, set| skew.with_clocks(*set));
        match self.duration {
            Some(d) => skew.for_duration(d),
            None => skew,
        }
    }
}

/// [`InjectArgs`], checked as a whole once clap has parsed each flag: a failed check is a usage
/// error like clap's own (exit status 2, with the usage line).
#[derive(Debug)]
pub struct CheckedInjectArgs(pub InjectArgs);

impl std::ops::Deref for CheckedInjectArgs {
    type Target = InjectArgs;
    fn deref(&self) -> &InjectArgs {
        &self.0
    }
}

impl clap::FromArgMatches for CheckedInjectArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        let args = InjectArgs::from_arg_matches_mut(matches)?;
        args.check()?;
        Ok(CheckedInjectArgs(args))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)?;
        self.0.check()
    }
}

impl Args for CheckedInjectArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        InjectArgs::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        InjectArgs::augment_args_for_update(cmd)
    }

    fn group_id() -> Option<clap::Id> {
        InjectArgs::group_id()
    }
}

/// Which processes a command acts on.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Process to act on; repeatable
    #[arg(
        long = "pid",
        value_name = "PID",
        value_parser = clap::value_parser!(i32).range(1..),
        action = ArgAction::Append,
        required_unless_present = "cgroups"
    )]
    pub pids: Vec<i32>,

    /// Also every descendant of each selected process
    #[arg(long)]
    pub tree: bool,

    /// Every process in this cgroup directory and below (v1 or v2), e.g.
    /// /sys/fs/cgroup/system.slice/etcd.service; repeatable
    #[arg(long = "cgroup", value_name = "PATH", action = ArgAction::Append)]
    pub cgroups: Vec<PathBuf>,

    /// Print the report as JSON (one object; with several targets, a summary object per step)
    #[arg(long)]
    pub json: bool,
}

impl TargetArgs {
    pub fn selection(&self) -> Selection {
        Selection {
            pids: self.pids.clone(),
            tree: self.tree,
            cgroups: self.cgroups.clone(),
        }
    }

    /// One `--pid` and nothing else: reports keep the one-object form scripts rely on.
    pub fn is_single(&self) -> bool {
        self.pids.len() == 1 && !self.tree && self.cgroups.is_empty()
    }
}

/// A duration for --duration/--every: an offset without sign, greater than zero.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let offset: Offset = text
        .parse()
        .map_err(|e: timeskew::ParseOffsetError| e.to_string())?;
    if text.starts_with(['-', '+']) || offset.as_nanos() <= 0 {
        return Err(format!(
            "{text:?}: a duration is positive and unsigned, e.g. 10s or 1m"
        ));
    }
    Ok(Duration::from_nanos(offset.as_nanos() as u64))
}

/// The log level for `-v` repeated `verbose` times.
pub fn log_level(verbose: u8) -> log::LevelFilter {
    match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

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

/// The operations the commands run; the binary uses `isolate::Isolated` (the library, each change
/// made in a helper process), tests use a fake.
pub trait Backend {
    fn inject(&self, pid: i32, skew: &Skew) -> timeskew::Result<InjectReport>;
    fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport>;
    fn status(&self, pid: i32) -> timeskew::Result<Status>;
    /// Lets go of the target locks held since the last changes (see `isolate.rs`).
    fn release_locks(&self) {}
}

/// Runs `command`: results to `out`, warnings to `err`.
pub fn run(
    command: &Command,
    backend: &impl Backend,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        Command::Inject(args) => schedule::inject(args, backend, out, err),
        Command::Recover(args) => {
            let pids = resolve(args)?;
            let results = for_each(&pids, |pid| backend.recover(pid));
            report(args, results, format_recover, out, err)
        }
        Command::Status(args) => {
            let pids = resolve(args)?;
            let results = for_each(&pids, |pid| backend.status(pid));
            report(args, results, format_status, out, err)
        }
        Command::Run(args) => crate::run::run(args, err),
        Command::Demo => demo::run(backend, out),
        Command::DemoChild => demo::child(&mut io::stdin().lock(), out),
    }
}

/// The processes `args` select now.
pub fn resolve(args: &TargetArgs) -> Result<Vec<i32>, CliError> {
    let pids = args.selection().resolve()?;
    if pids.is_empty() {
        return Err(CliError::NothingSelected(format!(
            "the cgroups {:?} hold no process",
            args.cgroups
        )));
    }
    Ok(pids)
}

/// The result of one operation on one target.
pub struct Outcome<T> {
    pub pid: i32,
    pub result: timeskew::Result<T>,
}

/// Runs `op` on every pid; a failure does not stop the others.
pub fn for_each<T>(pids: &[i32], op: impl Fn(i32) -> timeskew::Result<T>) -> Vec<Outcome<T>> {
    pids.iter()
        .map(|&pid| Outcome {
            pid,
            result: op(pid),
        })
        .collect()
}

/// Prints the outcomes: for a single `--pid` exactly as before (one line or one JSON object,
/// an error fails the command); for a selection, one line per target plus a summary, or one
/// JSON object `{"targets": [...], "succeeded": n, "failed": m, "gone": g}`; any failure makes
/// the exit status 1. A process found through `--tree`/`--cgroup` that exited before we reached
/// it (or became a zombie, not yet reaped by its parent) is "gone", not a failure: there is
/// nothing left to skew or undo in it.
pub fn report<T: Serialize>(
    args: &TargetArgs,
    mut outcomes: Vec<Outcome<T>>,
    human: fn(&T) -> String,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    if outcomes.len() == 1 && args.is_single() {
        return match outcomes.remove(0).result {
            Ok(v) => emit(out, args.json, &v, human),
            Err(e) => Err(CliError::Timeskew(e)),
        };
    }
    let gone = |o: &Outcome<T>| !args.pids.contains(&o.pid) && is_gone(o.pid, &o.result);
    let gone_count = outcomes.iter().filter(|o| gone(o)).count();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count() - gone_count;
    let succeeded = outcomes.len() - failed - gone_count;
    if args.json {
        let targets: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(v) => serde_json::json!({"pid": o.pid, "ok": true, "report": v}),
                Err(e) => serde_json::json!({
                    "pid": o.pid, "ok": false, "gone": gone(o), "error": e.to_string()
                }),
            })
            .collect();
        let summary = serde_json::json!({
            "targets": targets,
            "succeeded": succeeded,
            "failed": failed,
            "gone": gone_count,
        });
        serde_json::to_writer(&mut *out, &summary).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        for o in &outcomes {
            match &o.result {
                Ok(v) => writeln!(out, "{}", human(v))?,
                Err(_) if gone(o) => writeln!(out, "pid {}: exited meanwhile, skipped", o.pid)?,
                Err(e) => writeln!(err, "timeskew: {e}")?,
            }
        }
        let mut summary = format!("{succeeded} of {} targets succeeded", outcomes.len());
        if gone_count > 0 {
            let _ = write!(summary, ", {gone_count} exited meanwhile");
        }
        writeln!(out, "{summary}")?;
    }
    out.flush()?;
    if failed > 0 {
        return Err(CliError::Partial {
            failed,
            total: outcomes.len(),
        });
    }
    Ok(())
}

/// Whether `result`, a failure on `pid`, only says that the process has exited: it vanished
/// while we worked, or it is a zombie now (e.g. `recover --tree` with a child its parent has not
/// reaped yet, refused as a zombie).
pub fn is_gone<T>(pid: i32, result: &timeskew::Result<T>) -> bool {
    match result {
        Ok(_) => false,
        Err(timeskew::Error::NoSuchProcess { .. } | timeskew::Error::ProcessGone { .. }) => true,
        Err(_) => timeskew::select::has_exited(pid),
    }
}

/// Writes `value` as one line of JSON, or as `human` text.
fn emit<T: Serialize>(
    out: &mut impl Write,
    json: bool,
    value: &T,
    human: fn(&T) -> String,
) -> Result<(), CliError> {
    if json {
        serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", human(value))?;
    }
    out.flush()?;
    Ok(())
}

/// The warning for a skew that moves absolute timers, or `None`.
pub fn timer_warning(skew: &Skew) -> Option<String> {
    let offset = skew.offset();
    let clocks: ClockSet = skew
        .clocks()
        .iter()
        .filter(|c| c.affects_timers())
        .collect();
    if clocks.is_empty() || offset.is_zero() {
        return None;
    }
    let effect = if offset.as_nanos() > 0 {
        format!("fire {offset} late")
    } else {
        let magnitude = Offset::from_nanos(offset.as_nanos().saturating_neg());
        format!("fire up to {magnitude} early (at once if the wait is shorter than that)")
    };
    Some(format!(
        "skewing {clocks} shifts absolute deadlines: a deadline the process computes from the \
         skewed clock and hands to the kernel (clock_nanosleep with TIMER_ABSTIME, timerfd with \
         TFD_TIMER_ABSTIME, pthread_cond_timedwait with CLOCK_MONOTONIC) will {effect}, because \
         the kernel measures it on the real clock; relative sleeps and timeouts (nanosleep, poll, \
         epoll_wait) are unaffected"
    ))
}

/// An offset with an explicit sign: `+3600s`, `-600s`, `0s`.
pub fn signed(offset: Offset) -> String {
    if offset.as_nanos() > 0 {
        format!("+{offset}")
    } else {
        offset.to_string()
    }
}

/// `realtime,monotonic +3600s` — clocks with equal offsets grouped, in report order.
pub fn format_clocks(clocks: &[ClockOffset]) -> String {
    let mut groups: Vec<(Offset, ClockSet)> = Vec::new();
    for c in clocks {
        match groups.iter_mut().find(|(offset, _)| *offset == c.offset) {
            Some((_, set)) => {
                set.insert(c.clock);
            }
            None => groups.push((c.offset, ClockSet::from(c.clock))),
        }
    }
    if groups.is_empty() {
        return "no clock skewed".into();
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(offset, set)| format!("{set} {}", signed(*offset)))
        .collect();
    parts.join(", ")
}

/// `0.4 ms`, `45 µs`.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 100 {
        format!("{micros} µs")
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// `1 thread`, `3 threads`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `pid 123: injected, realtime -600s (trampoline 0x7f…, stopped 0.4 ms, 3 threads)`
pub fn format_inject(r: &InjectReport) -> String {
    let verb = match r.action {
        InjectAction::Injected => "injected",
        InjectAction::Updated => "updated",
        InjectAction::Repatched => "injected again",
    };
    let mut details = Vec::new();
    if let Some(addr) = r.status.trampoline {
        details.push(format!("trampoline {addr:#x}"));
    }
    match r.action {
        InjectAction::Updated => details.push("live update, not stopped".into()),
        _ => {
            details.push(format!("stopped {}", format_duration(r.stopped_for)));
            details.push(count(r.threads, "thread", "threads"));
        }
    }
    if r.action == InjectAction::Repatched {
        details.push("reused pages of an earlier injection".into());
    }
    if let Some(d) = r.status.expires_in {
        details.push(format!("ends by itself in {:.1} s", d.as_secs_f64()));
    }
    format!(
        "pid {}: {verb}, {} ({})",
        r.status.pid,
        format_clocks(&r.status.clocks),
        details.join(", ")
    )
}

/// `pid 123: recovered, restored 3 vDSO entries` or `pid 123: not injected, nothing to do`
pub fn format_recover(r: &RecoverReport) -> String {
    if !r.was_injected {
        return format!("pid {}: not injected, nothing to do", r.pid);
    }
    let mut line = format!(
        "pid {}: recovered, restored {} (stopped {}, {})",
        r.pid,
        count(r.restored, "vDSO entry", "vDSO entries"),
        format_duration(r.stopped_for),
        count(r.threads, "thread", "threads")
    );
    if !r.skipped.is_empty() {
        let _ = write!(
            line,
            "; left {} alone because someone else has patched it since: {}",
            count(r.skipped.len(), "entry", "entries"),
            r.skipped.join(", ")
        );
    }
    line
}

/// `pid 123: injected, realtime -600s (trampoline 0x7f…, layout v1, generation 2)`
pub fn format_status(s: &Status) -> String {
    let mut details = Vec::new();
    if let Some(addr) = s.trampoline {
        details.push(format!("trampoline {addr:#x}"));
    }
    if let Some(version) = s.layout_version {
        details.push(format!("layout v{version}"));
    }
    if s.trampoline.is_some() {
        details.push(format!("generation {}", s.generation));
    }
    match s.expires_in {
        Some(d) if d.is_zero() => details.push("deadline passed: real time passes through".into()),
        Some(d) => details.push(format!("ends in {:.1} s", d.as_secs_f64())),
        None => {}
    }
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join(", "))
    };
    if s.injected {
        format!(
            "pid {}: injected, {}{details}",
            s.pid,
            format_clocks(&s.clocks)
        )
    } else if s.trampoline.is_some() {
        format!(
            "pid {}: not injected; pages of an earlier injection remain and the next inject \
             reuses them{details}",
            s.pid
        )
    } else {
        format!("pid {}: not injected", s.pid)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use clap::CommandFactory;
    use clap::error::ErrorKind;
    use timeskew::Clock;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("timeskew").chain(args.iter().copied()))
    }

    fn inject_args(args: &[&str]) -> InjectArgs {
        match parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Inject(a) => a.0,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(cli) => panic!("{args:?} should fail, parsed as {cli:?}"),
            Err(e) => e,
        }
    }

    fn secs(s: i64) -> Offset {
        Offset::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn inject_parses_pid_offset_and_default_clock() {
        let a = inject_args(&["inject", "--pid", "123", "--offset", "600s"]);
        assert_eq!(a.targets.pids, vec![123]);
        assert!(a.targets.is_single());
        assert_eq!(a.offset, secs(600));
        assert!(!a.targets.json);
        assert_eq!(a.duration, None);
        assert_eq!(a.skew(), Skew::new(secs(600)));
        assert_eq!(a.skew().clocks(), ClockSet::from(Clock::Realtime));
    }

    #[test]
    fn negative_offsets_with_and_without_equals() {
        for args in [
            &["inject", "--pid", "1", "--offset", "-600s"][..],
            &["inject", "--pid", "1", "--offset=-600s"],
            &["inject", "--offset", "-600s", "--pid", "1"],
            &["inject", "--offset=-10m", "--pid", "1"],
        ] {
            assert_eq!(inject_args(args).offset, secs(-600), "{args:?}");
        }
        // Values that look like short flags (-h is help, -v is verbose) are still offsets.
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-1h"]).offset,
            secs(-3600)
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-1.5s"])
                .offset
                .as_nanos(),
            -1_500_000_000
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "+2h"]).offset,
            secs(7200)
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-10µs"])
                .offset
                .as_nanos(),
            -10_000
        );
    }

    #[test]
    fn clocks_are_repeatable_and_comma_separated() {
        let a = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "1h",
            "--clock",
            "monotonic,boottime",
            "--clock",
            "CLOCK_TAI",
        ]);
        assert_eq!(a.skew().clocks().to_string(), "monotonic,boottime,tai");
        let a = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "1h",
            "--clock=realtime",
            "--clock",
            "monotonic",
            "--json",
        ]);
        assert_eq!(a.skew().clocks().to_string(), "realtime,monotonic");
        assert!(a.targets.json);
        let a = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "1h",
            "--clock",
            "monotonic",
        ]);
        assert_eq!(
            a.skew().clocks(),
            ClockSet::from(Clock::Monotonic),
            "replaces the default"
        );
    }

    #[test]
    fn verbose_counts_anywhere() {
        assert_eq!(parse(&["status", "--pid", "1"]).unwrap().verbose, 0);
        assert_eq!(parse(&["-v", "status", "--pid", "1"]).unwrap().verbose, 1);
        assert_eq!(parse(&["-vv", "status", "--pid", "1"]).unwrap().verbose, 2);
        assert_eq!(
            parse(&["status", "--pid", "1", "-v", "--verbose", "-v"])
                .unwrap()
                .verbose,
            3
        );
        assert_eq!(log_level(0), log::LevelFilter::Warn);
        assert_eq!(log_level(1), log::LevelFilter::Info);
        assert_eq!(log_level(2), log::LevelFilter::Debug);
        assert_eq!(log_level(3), log::LevelFilter::Trace);
        assert_eq!(log_level(9), log::LevelFilter::Trace);
    }

    #[test]
    fn missing_arguments_are_usage_errors() {
        let e = parse_err(&["inject", "--offset", "-600s"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--pid"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse_err(&["inject", "--pid", "1"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--offset"), "{e}");
        assert_eq!(
            parse_err(&["recover"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_err(&["status", "--json"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_err(&[]).kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            parse_err(&["frobnicate"]).kind(),
            ErrorKind::InvalidSubcommand
        );
    }

    #[test]
    fn bad_offsets_carry_the_parser_message() {
        let e = parse_err(&["inject", "--pid", "1", "--offset", "1h3x"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        let msg = e.to_string();
        assert!(
            msg.contains(
                "invalid offset \"1h3x\": unknown unit \"x\" at byte 3; valid units: ns, us, µs, ms, s, m, h, d"
            ),
            "{msg}"
        );
        let e = parse_err(&["inject", "--pid", "1", "--offset=-600"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("did you mean -600s?"), "{e}");
        let e = parse_err(&["inject", "--pid", "1", "--offset", "600"]);
        assert!(e.to_string().contains("missing unit"), "{e}");
        assert!(e.to_string().contains("did you mean 600s?"), "{e}");
        let e = parse_err(&["inject", "--pid", "1", "--offset", "-40000d"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("100 years"), "{e}");
    }

    #[test]
    fn unknown_clocks_are_rejected() {
        let e = parse_err(&["inject", "--pid", "1", "--offset", "1s", "--clock", "wall"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("unknown clock \"wall\""), "{e}");
        assert!(
            e.to_string().contains("valid clocks: realtime, monotonic"),
            "{e}"
        );
        let e = parse_err(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "1s",
            "--clock",
            "realtime,nope",
        ]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("unknown clock \"nope\""), "{e}");
        let e = parse_err(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "1s",
            "--clock",
            "process_cputime_id",
        ]);
        assert!(e.to_string().contains("cannot be skewed"), "{e}");
    }

    #[test]
    fn bad_pids_are_rejected() {
        for pid in ["0", "abc", "1.5", "99999999999"] {
            let e = parse_err(&["status", "--pid", pid]);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "--pid {pid}");
        }
        assert!(parse(&["status", "--pid", "-5"]).is_err());
    }

    #[test]
    fn several_targets_trees_and_cgroups() {
        let a = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--pid",
            "2",
            "--tree",
            "--cgroup",
            "/sys/fs/cgroup/x",
            "--offset",
            "1s",
        ]);
        assert_eq!(a.targets.pids, vec![1, 2]);
        assert!(a.targets.tree && !a.targets.is_single());
        assert_eq!(a.targets.cgroups, vec![PathBuf::from("/sys/fs/cgroup/x")]);
        // A cgroup alone is a selection; nothing at all is not.
        assert!(parse(&["status", "--cgroup", "/sys/fs/cgroup/x"]).is_ok());
        assert_eq!(
            parse_err(&["status"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn duration_every_count_detach() {
        let a = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "-600s",
            "--duration",
            "10s",
            "--every",
            "1m",
            "--count",
            "3",
        ]);
        assert_eq!(a.duration, Some(Duration::from_secs(10)));
        assert_eq!(a.every, Some(Duration::from_secs(60)));
        assert_eq!(a.count, Some(3));
        assert_eq!(a.skew().duration(), Some(Duration::from_secs(10)));
        let a = inject_args(&[
            "inject",
            "--pid",
            "1",
            "--offset",
            "1s",
            "--duration",
            "1.5s",
            "--detach",
        ]);
        assert!(a.detach);
        assert_eq!(a.duration, Some(Duration::from_millis(1500)));
        for bad in [
            &["inject", "--pid", "1", "--offset", "1s", "--detach"][..],
            &["inject", "--pid", "1", "--offset", "1s", "--every", "1m"],
            &[
                "inject",
                "--pid",
                "1",
                "--offset",
                "1s",
                "--duration",
                "1s",
                "--count",
                "2",
            ],
        ] {
            assert_eq!(
                parse_err(bad).kind(),
                ErrorKind::MissingRequiredArgument,
                "{bad:?}"
            );
        }
        for bad in ["-1s", "0s", "+5s", "5"] {
            let arg = format!("--duration={bad}");
            let e = parse_err(&["inject", "--pid", "1", "--offset", "1s", &arg]);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
        }
        assert_eq!(
            parse_err(&[
                "inject",
                "--pid",
                "1",
                "--offset",
                "1s",
                "--duration",
                "1s",
                "--every",
                "1m",
                "--detach"
            ])
            .kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn every_must_be_longer_than_duration() {
        let with = |duration: &str, every: &str| {
            parse(&[
                "inject",
                "--pid",
                "1",
                "--offset",
                "1s",
                "--duration",
                duration,
                "--every",
                every,
            ])
        };
        for (duration, every) in [("2s", "1s"), ("2s", "2s"), ("1m", "59.5s")] {
            let e = with(duration, every).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{e}");
            assert_eq!(e.exit_code(), 2);
            let text = e.to_string();
            assert!(
                text.contains("--every ") && text.contains("must be longer than --duration "),
                "{text}"
            );
        }
        let e = with("2s", "1s").unwrap_err().to_string();
        assert!(
            e.starts_with("error: --every 1s must be longer than --duration 2s: "),
            "{e}"
        );
        match with("2s", "2.001s").unwrap().command {
            Command::Inject(a) => assert_eq!(a.every, Some(Duration::from_millis(2001))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_zombie_found_through_a_tree_is_gone_not_a_failure() {
        // Our own child, exited and not reaped yet: a zombie until the `wait` below.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !zombie() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let was_zombie = zombie();
        let refused = || -> timeskew::Result<RecoverReport> {
            Err(timeskew::Error::Unsupported {
                pid,
                reason: "it is a zombie (it has exited and waits to be reaped)".into(),
            })
        };
        let args = TargetArgs {
            pids: vec![1],
            tree: true,
            cgroups: vec![],
            json: false,
        };
        let outcomes = vec![Outcome {
            pid,
            result: refused(),
        }];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let reported = report(&args, outcomes, format_recover, &mut out, &mut err);
        let gone_while_zombie = is_gone(pid, &refused());
        child.wait().unwrap();
        assert!(was_zombie, "pid {pid} should have become a zombie");
        assert!(gone_while_zombie);
        assert!(reported.is_ok(), "{reported:?}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "pid {pid}: exited meanwhile, skipped\n0 of 1 targets succeeded, 1 exited meanwhile\n"
            )
        );
        assert!(err.is_empty());
        // Reaped: gone as well; a live process that fails is not.
        assert!(is_gone(pid, &refused()));
        let me = std::process::id() as i32;
        assert!(!is_gone(me, &refused()));
        assert!(!is_gone(pid, &Ok(())));
    }

    #[test]
    fn selection_report_counts_failures_and_processes_that_exited() {
        let args = TargetArgs {
            pids: vec![1],
            tree: true,
            cgroups: vec![],
            json: true,
        };
        let outcomes = vec![
            Outcome {
                pid: 1,
                result: Ok(status(1, &[(Clock::Realtime, secs(-600))])),
            },
            // Found through --tree, gone before we got there: not a failure.
            Outcome {
                pid: 2,
                result: Err(timeskew::Error::NoSuchProcess { pid: 2 }),
            },
            // A live process that cannot be skewed: a failure.
            Outcome {
                pid: std::process::id() as i32,
                result: Err(timeskew::Error::Unsupported {
                    pid: 3,
                    reason: "it is a 32-bit process".into(),
                }),
            },
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = report(&args, outcomes, format_status, &mut out, &mut err).unwrap_err();
        assert!(
            matches!(
                e,
                CliError::Partial {
                    failed: 1,
                    total: 3
                }
            ),
            "{e}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (
                v["succeeded"].as_u64(),
                v["failed"].as_u64(),
                v["gone"].as_u64()
            ),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(v["targets"][1]["gone"], true);
        assert_eq!(v["targets"][2]["gone"], false);

        // A pid named with --pid that does not exist is a failure, not "gone".
        let args = TargetArgs {
            json: false,
            pids: vec![1, 2],
            ..args
        };
        let outcomes = vec![Outcome {
            pid: 2,
            result: Err::<Status, _>(timeskew::Error::NoSuchProcess { pid: 2 }),
        }];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(report(&args, outcomes, format_status, &mut out, &mut err).is_err());
        assert!(String::from_utf8(err).unwrap().contains("no such process"));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("0 of 1 targets succeeded")
        );
    }

    #[test]
    fn other_subcommands_parse() {
        match parse(&["recover", "--pid", "42", "--json"])
            .unwrap()
            .command
        {
            Command::Recover(TargetArgs {
                pids,
                tree: false,
                json: true,
                ..
            }) if pids == [42] => {}
            other => panic!("{other:?}"),
        }
        match parse(&["status", "--pid", "42"]).unwrap().command {
            Command::Status(TargetArgs {
                pids, json: false, ..
            }) if pids == [42] => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["demo"]).unwrap().command, Command::Demo));
        assert!(matches!(
            parse(&[demo::CHILD_COMMAND]).unwrap().command,
            Command::DemoChild
        ));
        assert_eq!(
            parse_err(&["status", "--pid", "1", "--offset", "1s"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn help_shows_examples_and_hides_the_demo_child() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("timeskew inject --pid 1234 --offset -600s"),
            "{help}"
        );
        assert!(!help.contains(demo::CHILD_COMMAND), "{help}");
        for sub in ["inject", "recover", "status", "demo"] {
            let mut cmd = Cli::command();
            let help = cmd
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(help.contains("Example"), "{sub}: {help}");
        }
        let e = parse_err(&["inject", "--help"]);
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        assert_eq!(e.exit_code(), 0);
    }

    // --- formatting ---------------------------------------------------------------------------

    fn status(pid: i32, clocks: &[(Clock, Offset)]) -> Status {
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
        }
    }

    fn inject_report(action: InjectAction, clocks: &[(Clock, Offset)]) -> InjectReport {
        InjectReport {
            action,
            stopped_for: Duration::from_micros(400),
            threads: 3,
            status: status(123, clocks),
        }
    }

    #[test]
    fn formats_inject_reports() {
        let r = inject_report(InjectAction::Injected, &[(Clock::Realtime, secs(-600))]);
        assert_eq!(
            format_inject(&r),
            "pid 123: injected, realtime -600s (trampoline 0x7f1234567000, stopped 0.4 ms, 3 threads)"
        );
        let r = inject_report(
            InjectAction::Updated,
            &[
                (Clock::Realtime, secs(3600)),
                (Clock::Monotonic, secs(3600)),
            ],
        );
        assert_eq!(
            format_inject(&r),
            "pid 123: updated, realtime,monotonic +3600s (trampoline 0x7f1234567000, live update, not stopped)"
        );
        let mut r = inject_report(
            InjectAction::Repatched,
            &[
                (Clock::Realtime, Offset::from_nanos(-1_500_000_000)),
                (Clock::Boottime, secs(5)),
            ],
        );
        r.threads = 1;
        r.stopped_for = Duration::from_micros(45);
        assert_eq!(
            format_inject(&r),
            "pid 123: injected again, realtime -1.5s, boottime +5s (trampoline 0x7f1234567000, \
             stopped 45 µs, 1 thread, reused pages of an earlier injection)"
        );
        let r = inject_report(InjectAction::Injected, &[]);
        assert!(format_inject(&r).contains("injected, no clock skewed"));
    }

    #[test]
    fn formats_recover_reports() {
        let mut r = RecoverReport {
            pid: 77,
            was_injected: false,
            restored: 0,
            skipped: vec![],
            stopped_for: Duration::ZERO,
            threads: 0,
        };
        assert_eq!(format_recover(&r), "pid 77: not injected, nothing to do");
        r.was_injected = true;
        r.restored = 3;
        r.threads = 2;
        r.stopped_for = Duration::from_micros(420);
        assert_eq!(
            format_recover(&r),
            "pid 77: recovered, restored 3 vDSO entries (stopped 0.4 ms, 2 threads)"
        );
        r.restored = 1;
        r.threads = 1;
        assert_eq!(
            format_recover(&r),
            "pid 77: recovered, restored 1 vDSO entry (stopped 0.4 ms, 1 thread)"
        );
        r.restored = 2;
        r.skipped = vec!["__vdso_time".into()];
        assert_eq!(
            format_recover(&r),
            "pid 77: recovered, restored 2 vDSO entries (stopped 0.4 ms, 1 thread); left 1 entry \
             alone because someone else has patched it since: __vdso_time"
        );
    }

    #[test]
    fn formats_status() {
        let mut s = status(
            9,
            &[(Clock::Realtime, secs(-600)), (Clock::Monotonic, secs(10))],
        );
        s.generation = 2;
        assert_eq!(
            format_status(&s),
            "pid 9: injected, realtime -600s, monotonic +10s (trampoline 0x7f1234567000, layout v1, generation 2)"
        );
        s.injected = false;
        s.clocks.clear();
        assert!(
            format_status(&s)
                .starts_with("pid 9: not injected; pages of an earlier injection remain")
        );
        let s = Status {
            pid: 9,
            injected: false,
            trampoline: None,
            layout_version: None,
            clocks: vec![],
            generation: 0,
            expires_in: None,
        };
        assert_eq!(format_status(&s), "pid 9: not injected");
    }

    #[test]
    fn json_is_one_line_with_the_report_fields() {
        let r = inject_report(
            InjectAction::Injected,
            &[(Clock::MonotonicRaw, Offset::from_nanos(-1_500_000_000))],
        );
        let mut out = Vec::new();
        emit(&mut out, true, &r, format_inject).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["action"], "injected");
        assert_eq!(v["stopped_for"], 400);
        assert_eq!(v["threads"], 3);
        assert_eq!(v["status"]["pid"], 123);
        assert_eq!(v["status"]["clocks"][0]["clock"], "monotonic-raw");
        assert_eq!(v["status"]["clocks"][0]["offset"], "-1.5s");
    }

    // --- running commands against a fake backend ---------------------------------------------

    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        injected: bool,
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
            })
        }
        fn status(&self, pid: i32) -> timeskew::Result<Status> {
            Err(timeskew::Error::NoSuchProcess { pid })
        }
    }

    fn run_args(backend: &Fake, args: &[&str]) -> (Result<(), CliError>, String, String) {
        let cli = parse(args).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = run(&cli.command, backend, &mut out, &mut err);
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn inject_runs_with_the_parsed_skew() {
        let fake = Fake::default();
        let (result, out, err) = run_args(&fake, &["inject", "--pid", "123", "--offset=-10m"]);
        result.unwrap();
        assert_eq!(*fake.calls.borrow(), ["inject 123 realtime -600s"]);
        assert_eq!(
            out,
            "pid 123: injected, realtime -600s (trampoline 0x7f1234567000, stopped 0.4 ms, 3 threads)\n"
        );
        assert_eq!(err, "", "no warning for realtime");
    }

    #[test]
    fn inject_warns_when_timers_are_affected() {
        let fake = Fake::default();
        let (result, out, err) = run_args(
            &fake,
            &[
                "inject",
                "--pid",
                "5",
                "--offset",
                "+1h",
                "--clock",
                "realtime,monotonic",
                "--json",
            ],
        );
        result.unwrap();
        assert!(
            err.starts_with("timeskew: warning: skewing monotonic shifts absolute deadlines"),
            "{err}"
        );
        for needle in [
            "TIMER_ABSTIME",
            "timerfd",
            "pthread_cond_timedwait",
            "fire 3600s late",
            "relative sleeps",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert_eq!(err.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"]["pid"], 5);

        let skew = Skew::new(secs(-600)).with_clock(Clock::Boottime);
        let w = timer_warning(&skew).unwrap();
        assert!(w.contains("skewing boottime"), "{w}");
        assert!(w.contains("fire up to 600s early"), "{w}");
        assert_eq!(
            timer_warning(&Skew::new(Offset::ZERO).with_clock(Clock::Monotonic)),
            None
        );
        assert_eq!(
            timer_warning(&Skew::new(secs(1)).with_clock(Clock::Tai)),
            None
        );
    }

    #[test]
    fn recover_of_a_clean_process_is_success() {
        let fake = Fake::default();
        let (result, out, _) = run_args(&fake, &["recover", "--pid", "8"]);
        result.unwrap();
        assert_eq!(out, "pid 8: not injected, nothing to do\n");
        let (result, out, _) = run_args(&fake, &["recover", "--pid", "8", "--json"]);
        result.unwrap();
        assert_eq!(
            out,
            "{\"pid\":8,\"was_injected\":false,\"restored\":0,\"skipped\":[],\"stopped_for\":0,\"threads\":0}\n"
        );
        let fake = Fake {
            injected: true,
            ..Fake::default()
        };
        let (result, out, _) = run_args(&fake, &["recover", "--pid", "8"]);
        result.unwrap();
        assert_eq!(
            out,
            "pid 8: recovered, restored 3 vDSO entries (stopped 0 µs, 0 threads)\n"
        );
    }

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

    #[test]
    fn failed_inject_prints_no_warning() {
        struct Gone;
        impl Backend for Gone {
            fn inject(&self, pid: i32, _: &Skew) -> timeskew::Result<InjectReport> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
            fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
            fn status(&self, pid: i32) -> timeskew::Result<Status> {
                Err(timeskew::Error::NoSuchProcess { pid })
            }
        }
        let cli = parse(&[
            "inject",
            "--pid",
            "3",
            "--offset",
            "1h",
            "--clock",
            "monotonic",
        ])
        .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = run(&cli.command, &Gone, &mut out, &mut err).unwrap_err();
        assert_eq!(error_report(&e, true), "timeskew: pid 3: no such process");
        assert!(out.is_empty() && err.is_empty());
    }

    /// Over several rounds the summary counts the failures out of every injection attempted
    /// (it said "2 of 2" for 2 failures out of 6).
    #[test]
    fn rounds_count_failures_out_of_all_attempts() {
        struct OneRefuses(Fake);
        impl Backend for OneRefuses {
            fn inject(&self, pid: i32, skew: &Skew) -> timeskew::Result<InjectReport> {
                if pid == 2 {
                    return Err(timeskew::Error::Unsupported {
                        pid,
                        reason: "test".into(),
                    });
                }
                self.0.inject(pid, skew)
            }
            fn recover(&self, pid: i32) -> timeskew::Result<RecoverReport> {
                self.0.recover(pid)
            }
            fn status(&self, pid: i32) -> timeskew::Result<Status> {
                self.0.status(pid)
            }
        }
        let backend = OneRefuses(Fake {
            calls: RefCell::new(Vec::new()),
            injected: true,
        });
        let cli = parse(&[
            "inject",
            "--pid",
            "1",
            "--pid",
            "2",
            "--pid",
            "3",
            "--offset",
            "1s",
            "--duration",
            "1ms",
            "--every",
            "2ms",
            "--count",
            "2",
        ])
        .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = run(&cli.command, &backend, &mut out, &mut err).unwrap_err();
        assert_eq!(e.to_string(), "2 of 6 targets failed (see above)");
    }

    #[test]
    fn library_errors_pass_through() {
        let fake = Fake::default();
        let (result, out, _) = run_args(&fake, &["status", "--pid", "4"]);
        let e = result.unwrap_err();
        assert!(matches!(
            e,
            CliError::Timeskew(timeskew::Error::NoSuchProcess { pid: 4 })
        ));
        assert_eq!(e.to_string(), "pid 4: no such process");
        assert_eq!(out, "");
    }
}
