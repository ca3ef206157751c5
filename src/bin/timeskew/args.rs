//! The command line's shape: the clap derive model, its help texts, and the checks clap cannot
//! make flag by flag. Parsing only; what each command does lives in its own module.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Args, Parser, Subcommand};
use timeskew::select::Selection;
use timeskew::{At, ClockSet, Offset, Rate, ShapeError, Skew, SlewRate};

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

const RUN_EXAMPLES: &str = "\
CMD is skewed before its first instruction, and so is every program it starts: shells, make, test
runners, Go and static binaries (which LD_PRELOAD tools such as faketime cannot reach). Processes
it forks inherit the skew; each exec is skewed as it happens. Nothing is stopped between forks and
execs, so clock reads run at full speed.

Signals: Ctrl-C, Ctrl-Z and fg work as without timeskew; HUP, INT, QUIT, USR1, USR2, ALRM and TERM
sent to timeskew are passed to CMD (once). timeskew exits with CMD's exit status, or is killed by
the signal that killed CMD; 125 if timeskew failed, 126 if CMD could not be executed, 127 if it was
not found. A program that cannot be skewed (e.g. 32-bit) runs with the real clocks, with a warning.
Run by a non-root user, setuid/setgid programs and programs with file capabilities run without
those privileges (the kernel's rule for traced programs), with a warning naming each.
If timeskew itself is killed, CMD carries on; programs it execs afterwards are not skewed.

OFFSET and CLOCK are as for inject; the default offset is 0s (then `timeskew inject --pid` can
change the skew of a running program later without stopping it).

Examples:
  timeskew run --offset -1d -- make test
  timeskew run --offset +90d --clock realtime,monotonic -- ./integration-tests.sh
  timeskew run --offset=-10m -- date";

const DEMO_EXAMPLES: &str = "\
Starts a throwaway copy of timeskew that prints its clocks, then injects -600s, updates live to
+1h on realtime and monotonic, and recovers, showing the real time beside what the child saw at
each step. Needs root (or CAP_SYS_PTRACE). Exits non-zero if any step fails or any reading is off.

Example:
  sudo timeskew demo";

/// The hidden subcommand that runs the demo's child (the demo starts this executable with it).
pub const DEMO_CHILD_COMMAND: &str = "__demo-child";

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
    Recover(RecoverArgs),
    /// Show whether a process is injected and its skew
    #[command(after_help = STATUS_EXAMPLES)]
    Status(TargetArgs),
    /// Run a command with skewed clocks, and every program it starts
    #[command(after_help = RUN_EXAMPLES)]
    Run(CheckedRunArgs),
    /// Show timeskew working on a throwaway child process (needs root)
    #[command(after_help = DEMO_EXAMPLES)]
    Demo,
    /// The demo's child process (internal)
    #[command(name = DEMO_CHILD_COMMAND, hide = true)]
    DemoChild,
}

/// The offset and the clocks, shared by `inject` and `run` (which gives `--offset` a default
/// and its own example, see [`RunArgs`]); `inject` alone adds the other faults ([`ShapeArgs`]).
#[derive(Debug, Args)]
pub struct SkewArgs {
    /// Step the clocks OFFSET from real time, e.g. -600s, +2h, 1h30m, -1.5s (one of the faults)
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub offset: Option<Offset>,

    /// Clock(s) to skew; repeatable or comma-separated [default: realtime]
    #[arg(long = "clock", value_name = "CLOCK", action = ArgAction::Append)]
    pub clocks: Vec<ClockSet>,
}

impl SkewArgs {
    /// The skew these arguments ask for: realtime unless `--clock` says otherwise; no
    /// `--offset` is 0s (`run`'s default).
    pub fn skew(&self) -> Skew {
        self.select_clocks(Skew::new(self.offset.unwrap_or_default()))
    }

    /// `skew` with the `--clock` selection.
    fn select_clocks(&self, skew: Skew) -> Skew {
        self.clocks
            .iter()
            .fold(skew, |skew, set| skew.with_clocks(*set))
    }
}

/// The faults besides `--offset`, for `inject` only: `run` skews each program as it starts,
/// where a time, a rate or a strobe would begin again at every exec, so it refuses them
/// (clap's unknown-argument error) until that is designed. Which combine is
/// [`Skew::validate`]'s rule, checked in [`InjectArgs::check`].
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// Step the clocks so that they read TIME now, then run on: RFC 3339
    /// (2038-01-19T03:14:00Z, 2026-12-31T23:59:50+01:00), "YYYY-MM-DD HH:MM:SS" in UTC, or
    /// @UNIXSECONDS; not with --offset; realtime, realtime-coarse and tai only
    #[arg(long, value_name = "TIME", conflicts_with = "offset")]
    pub at: Option<At>,

    /// From now on the clocks run at R times real speed, from the value they read (after
    /// --offset or --at, if given): a factor (2, 0.5, 1.0001) or a deviation (+500ppm, -50ppm,
    /// +10%), 0 to 1000; not with --slew, --suspend or --strobe
    #[arg(long, value_name = "R", allow_hyphen_values = true)]
    pub rate: Option<Rate>,

    /// The clocks stand still from now on (--rate 0, with the same rules)
    #[arg(long, conflicts_with = "rate")]
    pub freeze: bool,

    /// With --offset or --at: get there gradually, the clocks running at 1 ± RATE (500ppm,
    /// 5%, at most 100%) until they do, then at real speed; not with --rate, --freeze,
    /// --suspend or --strobe
    #[arg(long, value_name = "RATE")]
    pub slew: Option<SlewRate>,

    /// The clocks stand still for D, then run on, D behind (after --offset or --at, if given);
    /// not with --rate, --freeze, --slew or --strobe
    #[arg(long, value_name = "D", value_parser = parse_positive_duration)]
    pub suspend: Option<Duration>,

    /// With --period: the clocks alternate between their offset and that offset + D (e.g. 1s,
    /// -500ms) every P, until --duration ends it or recover; realtime clocks only; not with
    /// --rate, --freeze, --slew or --suspend
    #[arg(
        long,
        value_name = "D",
        allow_hyphen_values = true,
        requires = "period",
        value_parser = parse_strobe
    )]
    pub strobe: Option<Offset>,

    /// With --strobe: how long each phase lasts
    #[arg(long, value_name = "P", requires = "strobe", value_parser = parse_positive_duration)]
    pub period: Option<Duration>,

    /// Every reading of the selected clocks is rounded down to a multiple of R (1ms, 15ms, 1s;
    /// at most 1h); alone or with any fault
    #[arg(long, value_name = "R", value_parser = parse_resolution)]
    pub resolution: Option<Duration>,

    /// Reads of the selected clocks go through the real system call instead of the vDSO; alone
    /// or with any fault
    #[arg(long)]
    pub slow_reads: bool,
}

impl ShapeArgs {
    /// `skew` with these faults added.
    fn apply(&self, mut skew: Skew) -> Skew {
        if let Some(rate) = self.rate {
            skew = skew.with_rate(rate);
        }
        if self.freeze {
            skew = skew.with_rate(Rate::ZERO);
        }
        if let Some(slew) = self.slew {
            skew = skew.with_slew(slew);
        }
        if let Some(d) = self.suspend {
            skew = skew.with_suspend(d);
        }
        // clap requires --period with --strobe, and the other way round.
        if let (Some(extra), Some(period)) = (self.strobe, self.period) {
            skew = skew.with_strobe(extra, period);
        }
        if let Some(r) = self.resolution {
            skew = skew.with_resolution(r);
        }
        if self.slow_reads {
            skew = skew.with_slow_reads();
        }
        skew
    }
}

/// `recover`: which processes, and how to return to real time.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    /// Return to real time gradually, the clocks running at 1 ± RATE (500ppm, 5%, at most
    /// 100%) until they read real time
    #[arg(long, value_name = "RATE")]
    pub slew: Option<SlewRate>,
}

impl std::ops::Deref for RecoverArgs {
    type Target = TargetArgs;
    fn deref(&self) -> &TargetArgs {
        &self.targets
    }
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub skew_args: SkewArgs,

    #[command(flatten)]
    pub shape: ShapeArgs,

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

    /// Keep watching the selection until the experiment ends (--duration, Ctrl-C, SIGTERM, or
    /// `timeskew recover` of it from another shell): every program a selected process execs,
    /// every child it forks and every process that joins the selected cgroups or containers
    /// gets the same fault; all are recovered at the end
    #[arg(long, conflicts_with_all = ["detach", "every"])]
    pub follow: bool,
}

impl CheckArgs for InjectArgs {
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
        self.skew().validate().map_err(|e| {
            use clap::error::ErrorKind;
            let kind = match e {
                ShapeError::NoFault | ShapeError::SlewWithoutTarget => {
                    ErrorKind::MissingRequiredArgument
                }
                ShapeError::Value { .. } => ErrorKind::ValueValidation,
                _ => ErrorKind::ArgumentConflict,
            };
            clap::Error::raw(kind, e.to_string())
        })
    }
}

impl InjectArgs {
    /// The skew these arguments ask for, ending after `--duration` if given.
    pub fn skew(&self) -> Skew {
        let step = match (self.skew_args.offset, self.shape.at) {
            (Some(offset), _) => Skew::new(offset),
            (None, Some(at)) => Skew::at(at),
            (None, None) => Skew::as_is(),
        };
        let skew = self.shape.apply(self.skew_args.select_clocks(step));
        match self.duration {
            Some(d) => skew.for_duration(d),
            None => skew,
        }
    }
}

/// Arguments with a check clap cannot make flag by flag ([`Checked`] runs it).
pub trait CheckArgs: Args + clap::FromArgMatches {
    fn check(&self) -> Result<(), clap::Error>;
}

/// `T`, checked as a whole once clap has parsed each flag: a failed check is a usage error
/// like clap's own (exit status 2, with the usage line).
#[derive(Debug)]
pub struct Checked<T>(pub T);

/// The arguments of `inject`, checked.
pub type CheckedInjectArgs = Checked<InjectArgs>;
/// The arguments of `run`, checked.
pub type CheckedRunArgs = Checked<RunArgs>;

impl<T> std::ops::Deref for Checked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: CheckArgs> clap::FromArgMatches for Checked<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        let args = T::from_arg_matches_mut(matches)?;
        args.check()?;
        Ok(Checked(args))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)?;
        self.0.check()
    }
}

impl<T: CheckArgs> Args for Checked<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        T::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        T::augment_args_for_update(cmd)
    }

    fn group_id() -> Option<clap::Id> {
        T::group_id()
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
        required_unless_present_any = ["cgroups", "containers"]
    )]
    pub pids: Vec<i32>,

    /// Also every descendant of each selected process
    #[arg(long)]
    pub tree: bool,

    /// Every process in this cgroup directory and below (v1 or v2), e.g.
    /// /sys/fs/cgroup/system.slice/etcd.service; repeatable
    #[arg(long = "cgroup", value_name = "PATH", action = ArgAction::Append)]
    pub cgroups: Vec<PathBuf>,

    /// Every process of this container (docker, containerd/Kubernetes, CRI-O, podman), found
    /// through its cgroups: the full id, a unique prefix of at least 12 hex digits, or a name
    /// (when podman or docker is installed to look it up); run on the container's host;
    /// repeatable
    #[arg(
        long = "container",
        value_name = "ID",
        value_parser = parse_container,
        action = ArgAction::Append
    )]
    pub containers: Vec<String>,

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
            containers: self.containers.clone(),
        }
    }

    /// One `--pid` and nothing else: reports keep the one-object form scripts rely on.
    pub fn is_single(&self) -> bool {
        self.pids.len() == 1 && !self.tree && self.cgroups.is_empty() && self.containers.is_empty()
    }
}

/// `--container`: the text as given, once its form is right (a short or non-hex id is a usage
/// error); finding the container is the selection's job, when the command runs.
fn parse_container(text: &str) -> Result<String, String> {
    text.parse::<timeskew::select::ContainerRef>()
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// `timeskew run [--offset OFFSET] [--clock CLOCK]... -- CMD [ARGS...]`
#[derive(Debug, Args)]
#[command(mut_arg("offset", run_offset))]
pub struct RunArgs {
    #[command(flatten)]
    pub skew_args: SkewArgs,

    /// The command and its arguments (after `--`)
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

/// The flags of [`ShapeArgs`], which `run` does not take.
const INJECT_ONLY_FLAGS: [&str; 9] = [
    "--at",
    "--rate",
    "--freeze",
    "--slew",
    "--suspend",
    "--strobe",
    "--period",
    "--resolution",
    "--slow-reads",
];

impl CheckArgs for RunArgs {
    /// CMD takes every argument from the first one clap does not know, so `run --rate 2 -- x`
    /// would run a program called `--rate`: refuse an inject-only fault there as a usage error.
    fn check(&self) -> Result<(), clap::Error> {
        let first = self.command.first().and_then(|a| a.to_str()).unwrap_or("");
        let flag = first.split_once('=').map_or(first, |(flag, _)| flag);
        if let Some(flag) = INJECT_ONLY_FLAGS.iter().find(|f| **f == flag) {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::UnknownArgument,
                format!(
                    "{flag} is for inject only: run takes --offset and --clock (inject one \
                     into the running program with timeskew inject --pid)"
                ),
            ));
        }
        Ok(())
    }
}

/// `run`'s `--offset` is optional: with 0s, `inject` can set the skew later without a stop.
fn run_offset(offset: Arg) -> Arg {
    offset
        .required(false)
        .default_value("0s")
        .help("Offset added to the clocks, e.g. -600s, +2h, 1h30m, -1d")
}

/// A `--strobe` offset: any non-zero offset.
fn parse_strobe(text: &str) -> Result<Offset, String> {
    let offset: Offset = text
        .parse()
        .map_err(|e: timeskew::ParseOffsetError| e.to_string())?;
    if offset.is_zero() {
        return Err(format!(
            "{text:?}: a strobe of 0s changes nothing; give a non-zero offset such as 1s or -1s"
        ));
    }
    Ok(offset)
}

/// A `--resolution`: a positive duration of at most an hour.
fn parse_resolution(text: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(text)?;
    if d > timeskew::skew::MAX_RESOLUTION {
        return Err(format!("{text:?}: a resolution is at most 1h (3600s)"));
    }
    Ok(d)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;
    use timeskew::Clock;

    use super::*;
    use crate::testing::{inject_args, parse, parse_err, secs};

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn inject_parses_pid_offset_and_default_clock() {
        let a = inject_args(&["inject", "--pid", "123", "--offset", "600s"]);
        assert_eq!(a.targets.pids, vec![123]);
        assert!(a.targets.is_single());
        assert_eq!(a.skew_args.offset, Some(secs(600)));
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
            assert_eq!(inject_args(args).skew().offset(), secs(-600), "{args:?}");
        }
        // Values that look like short flags (-h is help, -v is verbose) are still offsets.
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-1h"])
                .skew()
                .offset(),
            secs(-3600)
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-1.5s"])
                .skew()
                .offset()
                .as_nanos(),
            -1_500_000_000
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "+2h"])
                .skew()
                .offset(),
            secs(7200)
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-10µs"])
                .skew()
                .offset()
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
    fn containers_by_id_prefix_or_name_and_bad_ids_are_usage_errors() {
        let full = "869bc329f6ee7a2039b72fb75914cb95de406988d28f9286eca7ddf7399533e3";
        for cmd in ["inject", "recover", "status"] {
            let mut args = vec![cmd, "--container", full, "--container", "869bc329f6ee"];
            if cmd == "inject" {
                args.extend(["--offset", "1s"]);
            }
            let targets = match parse(&args)
                .unwrap_or_else(|e| panic!("{cmd}: {e}"))
                .command
            {
                Command::Inject(a) => a.0.targets,
                Command::Recover(a) => a.targets,
                Command::Status(a) => a,
                other => panic!("{other:?}"),
            };
            assert_eq!(targets.containers, [full, "869bc329f6ee"]);
            assert!(targets.pids.is_empty() && !targets.is_single());
            assert_eq!(
                targets.selection().containers,
                [full, "869bc329f6ee"],
                "{cmd}"
            );
        }
        let a = match parse(&["status", "--container", "web-1", "--pid", "5"])
            .unwrap()
            .command
        {
            Command::Status(a) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (a.containers.as_slice(), a.pids.as_slice()),
            (&["web-1".to_string()][..], &[5][..])
        );
        assert!(!a.is_single());
        for (bad, part) in [
            ("869bc329f6e", "11 hex digits are too few"),
            ("abc", "at least 12"),
            ("not/an-id", "not a container id"),
            ("", "empty"),
        ] {
            let e = parse_err(&["status", "--container", bad]);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}: {e}");
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(part), "{bad}: {e}");
        }
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
    fn other_subcommands_parse() {
        match parse(&["recover", "--pid", "42", "--json"])
            .unwrap()
            .command
        {
            Command::Recover(RecoverArgs {
                targets:
                    TargetArgs {
                        pids,
                        tree: false,
                        json: true,
                        ..
                    },
                slew: None,
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
            parse(&[DEMO_CHILD_COMMAND]).unwrap().command,
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
        assert!(!help.contains(DEMO_CHILD_COMMAND), "{help}");
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

    // --- fault shapes ---------------------------------------------------------------------------

    /// `inject --pid 1` followed by `args`.
    fn shape(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec!["inject", "--pid", "1"];
        all.extend_from_slice(args);
        parse(&all)
    }

    fn shape_skew(args: &[&str]) -> Skew {
        match shape(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Inject(a) => a.skew(),
            other => panic!("{other:?}"),
        }
    }

    fn shape_err(args: &[&str]) -> (ErrorKind, String) {
        let e = shape(args).expect_err(&format!("{args:?} should fail"));
        assert_eq!(e.exit_code(), 2, "{e}");
        (e.kind(), e.to_string())
    }

    #[test]
    fn every_fault_parses_into_the_skew() {
        let at: timeskew::At = "2038-01-19T03:14:00Z".parse().unwrap();
        let rate = |s: &str| s.parse::<Rate>().unwrap();
        let slew: SlewRate = "500ppm".parse().unwrap();
        let d = Duration::from_secs;
        let cases: Vec<(&[&str], Skew)> = vec![
            (&["--at", "2038-01-19T03:14:00Z"], Skew::at(at)),
            (&["--at", "2038-01-19 03:14:00"], Skew::at(at)),
            (&["--at=@2147483640"], Skew::at(at)),
            (&["--rate", "2"], Skew::rate(rate("2"))),
            (&["--rate", "-50ppm"], Skew::rate(rate("0.99995"))),
            (&["--rate=+10%"], Skew::rate(rate("1.1"))),
            (&["--freeze"], Skew::freeze()),
            (&["--rate", "0"], Skew::freeze()),
            (
                &["--offset", "-2s", "--slew", "500ppm"],
                Skew::new(secs(-2)).with_slew(slew),
            ),
            (
                &["--at", "@2147483640", "--slew", "0.05%"],
                Skew::at(at).with_slew(slew),
            ),
            (&["--suspend", "5s"], Skew::as_is().with_suspend(d(5))),
            (
                &["--offset", "1h", "--suspend", "5s"],
                Skew::new(secs(3600)).with_suspend(d(5)),
            ),
            (
                &["--strobe", "-1s", "--period", "10s"],
                Skew::as_is().with_strobe(secs(-1), d(10)),
            ),
            (
                &["--resolution", "15ms"],
                Skew::as_is().with_resolution(Duration::from_millis(15)),
            ),
            (
                &["--resolution", "1h"],
                Skew::as_is().with_resolution(d(3600)),
            ),
            (&["--slow-reads"], Skew::as_is().with_slow_reads()),
            (
                &["--offset", "0s", "--slow-reads"],
                Skew::new(Offset::ZERO).with_slow_reads(),
            ),
            (
                &["--offset", "1s", "--rate", "2", "--clock", "monotonic"],
                Skew::new(secs(1))
                    .with_rate(rate("2"))
                    .with_clock(timeskew::Clock::Monotonic),
            ),
            (
                &[
                    "--at",
                    "@2147483640",
                    "--freeze",
                    "--resolution",
                    "1s",
                    "--slow-reads",
                ],
                Skew::at(at)
                    .with_rate(Rate::ZERO)
                    .with_resolution(d(1))
                    .with_slow_reads(),
            ),
            (
                &[
                    "--suspend",
                    "1s",
                    "--duration",
                    "10s",
                    "--clock",
                    "boottime",
                ],
                Skew::as_is()
                    .with_suspend(d(1))
                    .with_clock(timeskew::Clock::Boottime)
                    .for_duration(d(10)),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(shape_skew(args), want, "{args:?}");
        }
        // The plain offset stays exactly what it was.
        assert_eq!(shape_skew(&["--offset", "-600s"]), Skew::new(secs(-600)));
    }

    #[test]
    fn fault_conflicts_are_usage_errors_naming_both_flags() {
        let cases: &[(&[&str], ErrorKind, &[&str])] = &[
            (
                &[],
                ErrorKind::MissingRequiredArgument,
                &[
                    "no fault given",
                    "--offset, --at, --rate, --freeze, --suspend, --strobe, --resolution or --slow-reads",
                ],
            ),
            (
                &["--offset", "1s", "--at", "@5"],
                ErrorKind::ArgumentConflict,
                &["--offset", "--at"],
            ),
            (
                &["--rate", "2", "--freeze"],
                ErrorKind::ArgumentConflict,
                &["--rate", "--freeze"],
            ),
            (
                &["--slew", "5%"],
                ErrorKind::MissingRequiredArgument,
                &["--slew needs an offset", "--offset or --at"],
            ),
            (
                &["--suspend", "1s", "--slew", "5%"],
                ErrorKind::ArgumentConflict,
                &["--slew cannot be combined with --suspend"],
            ),
            (
                &["--strobe", "1s"],
                ErrorKind::MissingRequiredArgument,
                &["--period"],
            ),
            (
                &["--period", "1s", "--offset", "1s"],
                ErrorKind::MissingRequiredArgument,
                &["--strobe"],
            ),
            (
                &["--rate", "2", "--offset", "1s", "--slew", "5%"],
                ErrorKind::ArgumentConflict,
                &["--rate cannot be combined with --slew"],
            ),
            (
                &["--freeze", "--suspend", "1s"],
                ErrorKind::ArgumentConflict,
                &["--freeze cannot be combined with --suspend"],
            ),
            (
                &["--rate", "2", "--strobe", "1s", "--period", "2s"],
                ErrorKind::ArgumentConflict,
                &["--rate cannot be combined with --strobe"],
            ),
            (
                &["--suspend", "1s", "--strobe", "1s", "--period", "2s"],
                ErrorKind::ArgumentConflict,
                &["--suspend cannot be combined with --strobe"],
            ),
            (
                &[
                    "--offset", "1s", "--slew", "5%", "--strobe", "1s", "--period", "2s",
                ],
                ErrorKind::ArgumentConflict,
                &["--slew cannot be combined with --strobe"],
            ),
            (
                &["--at", "@5", "--clock", "realtime,monotonic"],
                ErrorKind::ArgumentConflict,
                &["--at cannot be used with --clock monotonic"],
            ),
            (
                &["--at", "@5", "--clock", "boottime"],
                ErrorKind::ArgumentConflict,
                &["--at cannot be used with --clock boottime"],
            ),
            (
                &[
                    "--strobe",
                    "1s",
                    "--period",
                    "2s",
                    "--clock",
                    "monotonic-coarse",
                ],
                ErrorKind::ArgumentConflict,
                &["--strobe cannot be used with --clock monotonic-coarse"],
            ),
        ];
        for (args, kind, parts) in cases {
            let (got, msg) = shape_err(args);
            assert_eq!(got, *kind, "{args:?}: {msg}");
            for p in *parts {
                assert!(msg.contains(p), "{args:?}: {p:?} not in {msg}");
            }
        }
    }

    #[test]
    fn bad_fault_values_quote_the_text() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--rate", "-2"],
                "invalid rate \"-2\": a clock cannot run backwards; use --offset to step back",
            ),
            (&["--rate", "1001"], "more than the limit of 1000"),
            (&["--rate", "500ppm"], "a deviation needs a sign"),
            (&["--rate", "+5ppx"], "unknown unit \"ppx\" at byte 2"),
            (
                &["--offset", "1s", "--slew", "500"],
                "invalid slew rate \"500\": missing unit after \"500\": add ppm or %",
            ),
            (&["--offset", "1s", "--slew", "0%"], "more than 0"),
            (&["--offset", "1s", "--slew", "101%"], "at most 100%"),
            (
                &["--at", "1969-12-31T23:59:59Z"],
                "before 1970-01-01T00:00:00Z",
            ),
            (&["--at", "@-1"], "before 1970"),
            (
                &["--at", "2038-01-19T03:14:00"],
                "missing UTC offset at byte 19",
            ),
            (&["--at", "2038/01/19 03:14:00"], "expected '-' at byte 4"),
            (
                &["--at", "2038-02-30 00:00:00"],
                "not a valid date and time",
            ),
            (&["--suspend", "0s"], "a duration is positive"),
            (&["--suspend=-1s"], "a duration is positive"),
            (
                &["--strobe", "0s", "--period", "1s"],
                "a strobe of 0s changes nothing",
            ),
            (
                &["--strobe", "1x", "--period", "1s"],
                "unknown unit \"x\" at byte 1",
            ),
            (
                &["--strobe", "1s", "--period", "0s"],
                "a duration is positive",
            ),
            (&["--resolution", "0ms"], "a duration is positive"),
            (&["--resolution", "1h1ns"], "at most 1h"),
        ];
        for (args, part) in cases {
            let (kind, msg) = shape_err(args);
            assert_eq!(kind, ErrorKind::ValueValidation, "{args:?}: {msg}");
            assert!(msg.contains(part), "{args:?}: {part:?} not in {msg}");
        }
    }

    #[test]
    fn run_refuses_the_inject_only_faults() {
        for flag in [
            &["--at", "@5"][..],
            &["--rate", "2"],
            &["--freeze"],
            &["--slew", "5%"],
            &["--suspend", "1s"],
            &["--strobe", "1s", "--period", "1s"],
            &["--resolution", "1ms"],
            &["--slow-reads"],
            &["--rate=2"],
        ] {
            let mut args = vec!["run"];
            args.extend_from_slice(flag);
            args.extend_from_slice(&["--", "true"]);
            let e = parse_err(&args);
            assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{flag:?}: {e}");
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("is for inject only"), "{e}");
        }
        // After the command's own name, such flags are the command's.
        let a = run_args(&["run", "--", "prog", "--rate", "2"]);
        assert_eq!(strings(&a.command), ["prog", "--rate", "2"]);
    }

    // --- run ------------------------------------------------------------------------------------

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Run(a) => a.0,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn strings(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn parses_offset_clocks_and_the_command_with_its_own_flags() {
        let a = run_args(&[
            "run",
            "--offset",
            "-1d",
            "--clock",
            "monotonic",
            "--",
            "sh",
            "-c",
            "date; exit 7",
        ]);
        assert_eq!(a.skew_args.skew().offset().as_nanos(), -86_400_000_000_000);
        assert_eq!(
            a.skew_args.skew().clocks(),
            ClockSet::from(Clock::Monotonic)
        );
        assert_eq!(strings(&a.command), ["sh", "-c", "date; exit 7"]);

        // Without `--`, everything from the first positional on belongs to the command.
        let a = run_args(&["run", "--offset=-10m", "ls", "-la", "--offset", "x"]);
        assert_eq!(a.skew_args.skew().offset().as_nanos(), -600_000_000_000);
        assert_eq!(strings(&a.command), ["ls", "-la", "--offset", "x"]);
        assert_eq!(a.skew_args.skew(), Skew::new(secs(-600)));
    }

    #[test]
    fn offset_defaults_to_zero_and_a_command_is_required() {
        let a = run_args(&["run", "--", "true"]);
        assert_eq!(a.skew_args.offset, Some(Offset::ZERO));
        assert_eq!(a.skew_args.skew(), Skew::new(Offset::ZERO));
        let argv = ["timeskew", "run", "--offset", "1s"];
        let e = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{e}"
        );
        let e =
            Cli::try_parse_from(["timeskew", "run", "--offset", "1x", "--", "true"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
    }

    #[test]
    fn recover_takes_a_slew() {
        match parse(&["recover", "--pid", "1", "--slew", "5%"])
            .unwrap()
            .command
        {
            Command::Recover(a) => {
                assert_eq!(a.slew, Some("5%".parse().unwrap()));
                assert_eq!(a.pids, [1], "derefs to the targets");
            }
            other => panic!("{other:?}"),
        }
        match parse(&["recover", "--pid", "1"]).unwrap().command {
            Command::Recover(a) => assert_eq!(a.slew, None),
            other => panic!("{other:?}"),
        }
        let e = parse_err(&["recover", "--pid", "1", "--slew", "5"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("add ppm or %"), "{e}");
    }
}
