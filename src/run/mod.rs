//! `timeskew run`: a command skewed from its first instruction, and every program it starts.
//!
//! This file is the public API; the ptrace event loop is in `tracer`, the signal relay in
//! `relay`, the check for lost setuid/capability privileges in `privileges`, and the command
//! held just before its exec in `held_child`.
//!
//! The command is forked, held just before its `execvp`, attached with PTRACE_SEIZE (options
//! TRACEEXEC, TRACEFORK, TRACEVFORK and TRACECLONE, so every process and thread it creates is
//! traced as well) and released. From then on only these stops happen, each handled at once:
//!
//! - **exec** (PTRACE_EVENT_EXEC): the new program has a fresh, unpatched vDSO and one thread;
//!   [`inject_traced`](crate::inject_traced) patches it before its first instruction runs — Go
//!   and static binaries included, which LD_PRELOAD tools cannot reach.
//! - **fork, vfork, clone**: the new process or thread is traced automatically and continued. A
//!   forked child inherits the patched vDSO (its copy of our pages), so it needs nothing until it
//!   execs. A vfork parent waits in the kernel until its child has exec'd, as always.
//! - **signals** (signal-delivery-stop): passed on unchanged.
//! - **job control** (group-stop, PTRACE_EVENT_STOP): the tracee is left stopped with
//!   PTRACE_LISTEN, so SIGSTOP/SIGTSTP/SIGCONT, Ctrl-Z and `fg` work as without timeskew. When
//!   the command itself stops (a stop from inside the job, or the terminal's), timeskew stops
//!   itself with the same signal, so the shell sees the job stopped; when timeskew is continued
//!   it continues the command. A stop sent to the command by a process outside the job (a
//!   pause nemesis, `kill -STOP` of its pid) is the command's alone: its SIGCONT comes to the
//!   command, never to timeskew, which therefore keeps running (stopped, it would leave the
//!   command hanging at its next exec or fork).
//!
//! There is no PTRACE_SYSCALL: between those events every program runs at full speed, and
//! clock reads cost what they cost after any injection.
//!
//! # Choices
//!
//! - **No PTRACE_O_EXITKILL.** Like `nice`, `timeout` or `faketime`, timeskew is a wrapper: if it
//!   is killed (SIGKILL, a crash), the command carries on instead of being killed with it. The
//!   kernel detaches the tracees; programs already running keep their skew (it lives in their
//!   memory), programs they exec later start with the real clocks. Termination signals sent to
//!   timeskew do not end it: they are relayed (below), and timeskew ends when the command does.
//! - **A failed injection never stops the command.** The program runs with the real clocks and
//!   the caller is told (pid, program, reason) through the `on_not_skewed` callback of
//!   [`run_with`]; [`run`] logs a warning. Killing the user's build or test run because one
//!   32-bit helper cannot be skewed would be worse than a loud warning; [`RunReport`] counts both.
//! - **Privileges.** The kernel does not grant a program exec'd under a tracer that lacks
//!   CAP_SYS_PTRACE (timeskew run by a non-root user) what its setuid/setgid bits or file
//!   capabilities would give it: it runs with the caller's privileges. Nothing can change that
//!   rule, so each such program is reported ([`Notice::PrivilegesDropped`]; a warning from the
//!   binary) instead of failing later without a clue.
//! - **Signals.** HUP, INT, QUIT, USR1, USR2, ALRM and TERM sent to timeskew are relayed to the
//!   command, once: not when the kernel sent them (a terminal's Ctrl-C or hangup goes to the whole
//!   foreground process group, which holds the command too), not when a process of the command's
//!   own tree sent them, and not when the command already has the same signal pending or
//!   waiting for us (a `kill` of the whole process group from outside).
//! - **The command's end is timeskew's end.** [`run`] returns when the command (the first
//!   process) exits; descendants still running (`server &`) are detached and go on, keeping their
//!   skew. [`ExitOutcome::exit_like`] ends the caller with the same exit code or signal.
//!
//! # Caveats for library callers
//!
//! [`run`] blocks SIGCHLD and the relayed signals in the calling thread, sets SIGCHLD to its
//! default action and traces from a helper thread (so that every tracee is detached when it
//! returns), restoring all of it afterwards; the command gets the caller's original signal mask.
//! In a program with other threads, those threads should block the same signals: otherwise one
//! of them may take a SIGCHLD meant for the tracer, which then notices the event up to
//! 100 ms late. Run one command at a time per process. A program traced by `run` cannot be
//! debugged or straced at the same time (a process has one tracer).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::unistd::getpid;

use crate::error::Error;
use crate::signals;
use crate::skew::Skew;
use crate::target::{clocks, procfs};

mod held_child;
mod privileges;
mod relay;
mod tracer;

use tracer::trace;

/// Signals timeskew relays to the command instead of dying of them.
pub const RELAYED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
];

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled { signal: Signal, core_dumped: bool },
}

impl ExitOutcome {
    /// What a shell shows in `$?`: the exit code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitOutcome::Exited(code) => code,
            ExitOutcome::Signaled { signal, .. } => 128 + signal as i32,
        }
    }

    /// Ends the calling process as the command ended, so its parent sees the same wait status:
    /// `exit(code)`, or the same signal raised on itself with its default action restored (no
    /// core file of timeskew's own is written).
    pub fn exit_like(self) -> ! {
        match self {
            ExitOutcome::Exited(code) => std::process::exit(code),
            ExitOutcome::Signaled { signal, .. } => signals::die_by(signal),
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// How the command ended.
    pub outcome: ExitOutcome,
    /// Programs skewed: one per exec, the command's own included.
    pub skewed: u64,
    /// Programs that could not be skewed and ran with the real clocks.
    pub not_skewed: u64,
}

/// A program that runs with the real clocks because the injection into it failed.
#[derive(Debug)]
pub struct NotSkewed<'a> {
    pub pid: i32,
    /// The program's path (`/proc/PID/exe`).
    pub program: &'a str,
    pub error: &'a Error,
}

/// A program that started without the privileges its setuid/setgid bits or file capabilities
/// give it, because it was exec'd under a tracer that lacks CAP_SYS_PTRACE.
#[derive(Debug)]
pub struct PrivilegesDropped<'a> {
    pub pid: i32,
    /// The program's path (`/proc/PID/exe`).
    pub program: &'a str,
    /// What it went without: `its setuid bit (owner uid 0)`, `its file capabilities
    /// (cap_net_raw)`, joined with `and`.
    pub lost: &'a str,
}

impl std::fmt::Display for PrivilegesDropped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}) runs without {}: the kernel does not grant them to a program started \
             under a tracer without CAP_SYS_PTRACE (timeskew run by a non-root user); run \
             timeskew as root, or give it CAP_SYS_PTRACE, if the program needs them",
            self.pid, self.program, self.lost
        )
    }
}

/// What [`run_with_notices`] tells its caller while the command runs.
#[derive(Debug)]
pub enum Notice<'a> {
    /// A program runs with the real clocks: the injection into it failed.
    NotSkewed(NotSkewed<'a>),
    /// A program runs without its setuid/setgid/file-capability privileges.
    PrivilegesDropped(PrivilegesDropped<'a>),
}

/// Why the command could not be run (once it runs, [`run`] only fails if it loses track of it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `execvp` failed: not found, not executable, …
    #[error("cannot run {program}: {}", source.desc())]
    Exec { program: String, source: Errno },

    /// A system call needed to start it failed.
    #[error("cannot start {program}: {step} failed: {}", source.desc())]
    Start {
        program: String,
        step: &'static str,
        source: Errno,
    },

    /// Attaching to it failed (permissions, Yama, seccomp, …).
    #[error("cannot trace {program}: {source}")]
    Trace {
        program: String,
        #[source]
        source: Error,
    },

    /// The skew would make a clock read negative (checked before the command starts).
    #[error("{refusal}; {program} was not started")]
    NegativeClock {
        program: String,
        refusal: crate::skew::NegativeClock,
    },

    /// Waiting for it failed: its status is unknown.
    #[error("lost track of {program} (pid {pid}): waitpid failed: {}", source.desc())]
    Wait {
        program: String,
        pid: i32,
        source: Errno,
    },
}

impl RunError {
    /// The exit status tools like `env`, `nice` and `timeout` use: 127 when the command was not
    /// found, 126 when it could not be executed, 125 when timeskew itself failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec {
                source: Errno::ENOENT,
                ..
            } => 127,
            RunError::Exec { .. } => 126,
            _ => 125,
        }
    }
}

/// Runs `program` (searched in `PATH`) with `args`, skewed as `skew` says from its first
/// instruction, and every program it starts, until it exits. It inherits stdin, stdout, stderr,
/// the environment and the working directory. A program that cannot be skewed runs unskewed
/// and is logged with `log::warn!`; see [`run_with`] to handle that yourself.
///
/// ```no_run
/// let skew = timeskew::Skew::new("-1d".parse()?);
/// let report = timeskew::run::run("make", ["test"], &skew)?;
/// report.outcome.exit_like(); // end as `make test` ended
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run<I, S>(program: impl AsRef<OsStr>, args: I, skew: &Skew) -> Result<RunReport, RunError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_notices(program, args, skew, |notice: &Notice<'_>| match notice {
        Notice::NotSkewed(n) => log::warn!(
            "pid {} ({}) runs with the real clocks: {}",
            n.pid,
            n.program,
            n.error
        ),
        Notice::PrivilegesDropped(p) => log::warn!("{p}"),
    })
}

/// [`run`], calling `on_not_skewed` for each program that runs unskewed.
pub fn run_with<I, S>(
    program: impl AsRef<OsStr>,
    args: I,
    skew: &Skew,
    mut on_not_skewed: impl FnMut(&NotSkewed<'_>) + Send,
) -> Result<RunReport, RunError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_notices(program, args, skew, |notice: &Notice<'_>| {
        if let Notice::NotSkewed(n) = notice {
            on_not_skewed(n)
        }
    })
}

/// [`run`], calling `on_notice` for each program that runs unskewed and each that runs without
/// the privileges of its setuid/setgid bits or file capabilities.
pub fn run_with_notices<I, S>(
    program: impl AsRef<OsStr>,
    args: I,
    skew: &Skew,
    on_notice: impl FnMut(&Notice<'_>) + Send,
) -> Result<RunReport, RunError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = program.as_ref();
    let name = program.to_string_lossy().into_owned();
    // The command starts in our time namespace: what our clocks read is what it will read.
    // (Each exec is checked again; this refuses before anything of the user's runs.)
    if let Ok(Some(refusal)) = clocks::negative_clock(getpid().as_raw(), &skew.params()) {
        return Err(RunError::NegativeClock {
            program: name,
            refusal,
        });
    }
    let mut argv = vec![program.to_os_string()];
    argv.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
    let argv: Vec<CString> = argv
        .into_iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| RunError::Exec {
            program: name.clone(),
            source: Errno::EINVAL,
        })?;
    let start_error = |step, source| RunError::Start {
        program: name.clone(),
        step,
        source,
    };

    let waited = waited_signals();
    let mut old_mask = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut old_mask))
        .map_err(|e| start_error("blocking signals", e))?;
    let old_sigchld = match signals::sigchld_default() {
        Ok(old) => old,
        Err(e) => {
            restore_mask(&old_mask);
            return Err(start_error("setting SIGCHLD to its default", e));
        }
    };

    let traced = std::thread::scope(|scope| {
        let tracer = std::thread::Builder::new()
            .name("timeskew-run".into())
            .spawn_scoped(scope, || {
                let traced = trace(
                    &name,
                    &argv,
                    skew,
                    &old_mask,
                    &old_sigchld,
                    &waited,
                    on_notice,
                );
                (traced, nix::unistd::gettid().as_raw())
            });
        match tracer {
            Ok(handle) => handle.join().map(|(traced, tid)| {
                // What the command left running is detached by the kernel as this thread
                // ends: returned before that, a caller could find it still traced (seen in CI).
                procfs::wait_own_thread_gone(tid, Duration::from_secs(2));
                traced
            }),
            Err(e) => Ok(Err(start_error(
                "starting the tracer thread",
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
            ))),
        }
    });

    // Signals meant for the command that arrived after it ended have nobody to go to.
    while let Ok(Some(info)) = signals::sigtimedwait(&waited, Duration::ZERO) {
        if info.signal != Signal::SIGCHLD {
            log::debug!(
                "{name} has ended: dropping {} from pid {}",
                info.signal,
                info.pid
            );
        }
    }
    if let Err(e) = signals::sigchld_restore(&old_sigchld) {
        log::warn!("could not restore the SIGCHLD disposition: {e}");
    }
    restore_mask(&old_mask);
    match traced {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// SIGCHLD (a tracee stopped or exited) and the relayed signals: the tracer takes them with
/// `sigtimedwait`.
fn waited_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in RELAYED {
        set.add(s);
    }
    set
}

fn restore_mask(old: &SigSet) {
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None) {
        log::warn!("could not restore the signal mask: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_env_and_timeout() {
        let exec = |source| RunError::Exec {
            program: "x".into(),
            source,
        };
        assert_eq!(exec(Errno::ENOENT).exit_code(), 127);
        assert_eq!(exec(Errno::EACCES).exit_code(), 126);
        let start = RunError::Start {
            program: "x".into(),
            step: "fork",
            source: Errno::EAGAIN,
        };
        assert_eq!(start.exit_code(), 125);
        assert_eq!(
            exec(Errno::ENOENT).to_string(),
            "cannot run x: No such file or directory"
        );
    }

    #[test]
    fn shell_codes() {
        assert_eq!(ExitOutcome::Exited(7).shell_code(), 7);
        let killed = ExitOutcome::Signaled {
            signal: Signal::SIGTERM,
            core_dumped: false,
        };
        assert_eq!(killed.shell_code(), 143);
    }
}
