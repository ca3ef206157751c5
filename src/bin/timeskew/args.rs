//! The command line's shape: the clap derive model, its help texts, and the checks clap cannot
//! make flag by flag. Parsing only; what each command does lives in its own module.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Args, Parser, Subcommand};
use timeskew::select::Selection;
use timeskew::{ClockSet, Offset, Skew};

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
    Recover(TargetArgs),
    /// Show whether a process is injected and its skew
    #[command(after_help = STATUS_EXAMPLES)]
    Status(TargetArgs),
    /// Run a command with skewed clocks, and every program it starts
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Show timeskew working on a throwaway child process (needs root)
    #[command(after_help = DEMO_EXAMPLES)]
    Demo,
    /// The demo's child process (internal)
    #[command(name = DEMO_CHILD_COMMAND, hide = true)]
    DemoChild,
}

/// The skew itself, shared by `inject` and `run` (which gives `--offset` a default and its own
/// example, see [`RunArgs`]).
#[derive(Debug, Args)]
pub struct SkewArgs {
    /// Offset added to the clocks, e.g. -600s, +2h, 1h30m, -1.5s
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub offset: Offset,

    /// Clock(s) to skew; repeatable or comma-separated [default: realtime]
    #[arg(long = "clock", value_name = "CLOCK", action = ArgAction::Append)]
    pub clocks: Vec<ClockSet>,
}

impl SkewArgs {
    /// The skew these arguments ask for: realtime unless `--clock` says otherwise.
    pub fn skew(&self) -> Skew {
        self.clocks
            .iter()
            .fold(Skew::new(self.offset), |skew, set| skew.with_clocks(*set))
    }
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub skew_args: SkewArgs,

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

    /// The skew these arguments ask for, ending after `--duration` if given.
    pub fn skew(&self) -> Skew {
        let skew = self.skew_args.skew();
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

/// `run`'s `--offset` is optional: with 0s, `inject` can set the skew later without a stop.
fn run_offset(offset: Arg) -> Arg {
    offset
        .required(false)
        .default_value("0s")
        .help("Offset added to the clocks, e.g. -600s, +2h, 1h30m, -1d")
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
        assert_eq!(a.skew_args.offset, secs(600));
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
            assert_eq!(inject_args(args).skew_args.offset, secs(-600), "{args:?}");
        }
        // Values that look like short flags (-h is help, -v is verbose) are still offsets.
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-1h"])
                .skew_args
                .offset,
            secs(-3600)
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-1.5s"])
                .skew_args
                .offset
                .as_nanos(),
            -1_500_000_000
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "+2h"])
                .skew_args
                .offset,
            secs(7200)
        );
        assert_eq!(
            inject_args(&["inject", "--pid", "1", "--offset", "-10µs"])
                .skew_args
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

    // --- run ------------------------------------------------------------------------------------

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Run(a) => a,
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
        assert_eq!(a.skew_args.offset.as_nanos(), -86_400_000_000_000);
        assert_eq!(
            a.skew_args.skew().clocks(),
            ClockSet::from(Clock::Monotonic)
        );
        assert_eq!(strings(&a.command), ["sh", "-c", "date; exit 7"]);

        // Without `--`, everything from the first positional on belongs to the command.
        let a = run_args(&["run", "--offset=-10m", "ls", "-la", "--offset", "x"]);
        assert_eq!(a.skew_args.offset.as_nanos(), -600_000_000_000);
        assert_eq!(strings(&a.command), ["ls", "-la", "--offset", "x"]);
        assert_eq!(a.skew_args.skew(), Skew::new(a.skew_args.offset));
    }

    #[test]
    fn offset_defaults_to_zero_and_a_command_is_required() {
        let a = run_args(&["run", "--", "true"]);
        assert!(a.skew_args.offset.is_zero());
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
}
