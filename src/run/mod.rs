//! `timeskew run`: a command skewed from its first instruction, and every program it starts.
//!
//! The command is forked, held just before its `execvp`, attached with PTRACE_SEIZE (options
//! TRACEEXEC, TRACEFORK, TRACEVFORK and TRACECLONE, so every process and thread it creates is
//! traced as well) and released. From then on only these stops happen, each handled at once:
//!
//! - **exec** (PTRACE_EVENT_EXEC): the new program has a fresh, unpatched vDSO and one thread;
//!   [`inject_traced`] patches it before its first instruction runs — Go and static binaries
//!   included, which LD_PRELOAD tools cannot reach.
//! - **fork, vfork, clone**: the new process or thread is traced automatically and continued. A
//!   forked child inherits the patched vDSO (its copy of our pages), so it needs nothing until it
//!   execs. A vfork parent waits in the kernel until its child has exec'd, as always.
//! - **signals** (signal-delivery-stop): passed on unchanged.
//! - **job control** (group-stop, PTRACE_EVENT_STOP): the tracee is left stopped with
//!   PTRACE_LISTEN, so SIGSTOP/SIGTSTP/SIGCONT, Ctrl-Z and `fg` work as without timeskew. When
//!   the command itself stops, timeskew stops itself with the same signal, so the shell sees the
//!   job stopped; when timeskew is continued it continues the command.
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
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, gettid};

use crate::error::Error;
use crate::ops::inject::inject_traced;
use crate::ptrace::raw;
use crate::signals::{self, SigInfo};
use crate::skew::Skew;
use crate::skew::deadline;
use crate::target::procfs;

mod held_child;

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

/// How long the tracer sleeps at most without a SIGCHLD; only matters when another thread of
/// the caller swallowed one (see the module's caveats).
const FALLBACK_WAKEUP: Duration = Duration::from_millis(100);

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
        refusal: crate::skew::deadline::NegativeClock,
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
    if let Ok(Some(refusal)) = deadline::negative_clock(getpid().as_raw(), &skew.params()) {
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
                trace(
                    &name,
                    &argv,
                    skew,
                    &old_mask,
                    &old_sigchld,
                    &waited,
                    on_notice,
                )
            });
        match tracer {
            Ok(handle) => handle.join(),
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

/// The tracer thread: starts the command and follows it until it exits. Tracees still alive
/// when this thread ends are detached by the kernel.
fn trace(
    name: &str,
    argv: &[CString],
    skew: &Skew,
    mask: &SigSet,
    sigchld: &libc::sigaction,
    waited: &SigSet,
    on_notice: impl FnMut(&Notice<'_>),
) -> Result<RunReport, RunError> {
    let child = held_child::fork_held(argv, mask, sigchld).map_err(|source| RunError::Start {
        program: name.to_string(),
        step: "fork",
        source,
    })?;
    let main = child.pid;
    let options = Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        // Only to recognise the one syscall-exit-stop after each exec (see `leave_execve`).
        | Options::PTRACE_O_TRACESYSGOOD;
    let attached = ptrace::seize(main, options)
        .map_err(|e| {
            Error::from_errno(
                main.as_raw(),
                main.as_raw(),
                "attach to the command with PTRACE_SEIZE",
                e,
            )
        })
        .and_then(|()| {
            child.release().map_err(|e| {
                Error::from_errno(main.as_raw(), main.as_raw(), "release the command", e)
            })
        });
    if let Err(source) = attached {
        // It has not exec'd yet: nothing of the user's has run.
        let _ = signal::kill(main, Signal::SIGKILL);
        let _ = waitpid(main, Some(WaitPidFlag::__WALL));
        return Err(RunError::Trace {
            program: name.to_string(),
            source,
        });
    }
    log::debug!("{name}: started as pid {main}, traced");

    let mut tracer = Tracer {
        skew,
        main,
        me: gettid(),
        outcome: None,
        main_execed: false,
        skewed: 0,
        not_skewed: 0,
        recent: Vec::new(),
        older: Vec::new(),
        privileges_drop: !has_cap_sys_ptrace(),
        on_notice,
    };
    let lost = |source| RunError::Wait {
        program: name.to_string(),
        pid: main.as_raw(),
        source,
    };
    while tracer.outcome.is_none() {
        tracer.drain().map_err(lost)?;
        if tracer.outcome.is_some() {
            break;
        }
        let woke = signals::sigtimedwait(waited, FALLBACK_WAKEUP);
        std::mem::swap(&mut tracer.older, &mut tracer.recent);
        tracer.recent.clear();
        match woke {
            Ok(Some(info)) if info.signal != Signal::SIGCHLD => tracer.relay(info).map_err(lost)?,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(lost(e)),
        }
    }
    // Handle what is already queued (an exec to skew, a fork to let go); whatever comes later
    // is the kernel's: it detaches the remaining tracees when this thread ends.
    let _ = tracer.drain();

    let outcome = tracer.outcome.expect("the loop ends with an outcome");
    if !tracer.main_execed
        && outcome == ExitOutcome::Exited(127)
        && let Some(source) = child.exec_error()
    {
        return Err(RunError::Exec {
            program: name.to_string(),
            source,
        });
    }
    Ok(RunReport {
        outcome,
        skewed: tracer.skewed,
        not_skewed: tracer.not_skewed,
    })
}

/// The state of the wait loop.
struct Tracer<'a, F> {
    skew: &'a Skew,
    /// The command: its end is ours.
    main: Pid,
    /// This thread: the tracer of every tracee.
    me: Pid,
    outcome: Option<ExitOutcome>,
    main_execed: bool,
    skewed: u64,
    not_skewed: u64,
    /// Relayable signals the command received (signal, sender) since the last wake-up, and in
    /// the round before: a signal sent to the whole process group reaches it without us.
    recent: Vec<(Signal, i32)>,
    older: Vec<(Signal, i32)>,
    /// We lack CAP_SYS_PTRACE: setuid/setgid/file capabilities do not apply to traced execs.
    privileges_drop: bool,
    on_notice: F,
}

impl<F: FnMut(&Notice<'_>)> Tracer<'_, F> {
    /// Handles every stop and exit already reported, without blocking.
    fn drain(&mut self) -> Result<(), Errno> {
        let flags = libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes the status into the integer we pass. Raw, because nix's
            // WaitStatus cannot hold a real-time signal and the stop would be lost with it.
            let rc = unsafe { libc::waitpid(-1, &mut status, flags) };
            match Errno::result(rc) {
                Ok(0) => return Ok(()),
                Ok(pid) => {
                    let pid = Pid::from_raw(pid);
                    match WaitStatus::from_raw(pid, status) {
                        Ok(status) => self.handle(status),
                        Err(_) => self.handle_realtime(pid, status),
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) if self.outcome.is_some() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// A stop or an end involving a real-time signal (SIGRTMIN+n), which nix cannot name: the
    /// signal is passed on to the tracee, or a command it ended ends with 128 + its number.
    fn handle_realtime(&mut self, pid: Pid, status: libc::c_int) {
        if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            log::trace!("pid {pid}: stopped by signal {sig}");
            if let Err(e) = raw::ptrace_cont(pid, sig) {
                log::debug!("pid {pid}: PTRACE_CONT with signal {sig} failed: {e}");
            }
        } else if libc::WIFSIGNALED(status) && pid == self.main {
            self.outcome = Some(ExitOutcome::Exited(128 + libc::WTERMSIG(status)));
        }
    }

    fn handle(&mut self, status: WaitStatus) {
        log::trace!("{status:?}");
        match status {
            WaitStatus::Exited(pid, code) => {
                if pid == self.main {
                    self.outcome = Some(ExitOutcome::Exited(code));
                }
            }
            WaitStatus::Signaled(pid, signal, core_dumped) => {
                if pid == self.main {
                    self.outcome = Some(ExitOutcome::Signaled {
                        signal,
                        core_dumped,
                    });
                }
            }
            // A signal on its way to the tracee: pass it on.
            WaitStatus::Stopped(pid, signal) => {
                if RELAYED.contains(&signal) && self.in_command(pid) {
                    let sender = ptrace::getsiginfo(pid).map_or(0, |si| signals::sender(&si));
                    self.recent.push((signal, sender));
                }
                self.resume(pid, Some(signal));
            }
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXEC) => {
                if self.leave_execve(pid) {
                    self.exec(pid);
                    self.resume(pid, None);
                }
            }
            WaitStatus::PtraceEvent(pid, signal, libc::PTRACE_EVENT_STOP)
                if is_stop_signal(signal) =>
            {
                self.group_stop(pid, signal);
            }
            // Fork, vfork and clone events, the first stop of a new tracee, the end of a
            // group-stop: nothing to do but continue.
            WaitStatus::PtraceEvent(pid, ..) | WaitStatus::PtraceSyscall(pid) => {
                self.resume(pid, None);
            }
            WaitStatus::Continued(_) | WaitStatus::StillAlive => {}
        }
    }

    fn resume(&self, pid: Pid, signal: Option<Signal>) {
        match ptrace::cont(pid, signal) {
            Ok(()) => {}
            // Killed meanwhile (SIGKILL needs no tracer): its exit comes next.
            Err(Errno::ESRCH) => log::debug!("pid {pid} vanished before it could be continued"),
            Err(e) => log::warn!("pid {pid}: PTRACE_CONT failed: {e}"),
        }
    }

    /// Brings `pid`, stopped at PTRACE_EVENT_EXEC, to the exit of its execve. The event stop is
    /// still inside the system call: the kernel writes execve's result into the return register
    /// after it, which would overwrite the syscall number the injection sets up. One
    /// PTRACE_SYSCALL moves it to the syscall-exit-stop that follows, before any instruction of
    /// the new program (and before any signal is handled). False if the process died.
    fn leave_execve(&mut self, pid: Pid) -> bool {
        if let Err(e) = ptrace::syscall(pid, None) {
            log::debug!("pid {pid}: PTRACE_SYSCALL at exec failed: {e}");
            return false;
        }
        loop {
            match waitpid(pid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceSyscall(_)) => return true,
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    self.handle(status);
                    return false;
                }
                Ok(other) => {
                    // Not expected before the syscall exit; let the loop deal with it.
                    log::warn!("pid {pid}: unexpected stop leaving execve: {other:?}");
                    self.handle(other);
                    return false;
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::debug!("pid {pid}: waiting for the end of execve failed: {e}");
                    return false;
                }
            }
        }
    }

    /// A new program in `pid`, stopped before its first instruction: skew it.
    fn exec(&mut self, pid: Pid) {
        if pid == self.main {
            self.main_execed = true;
        }
        let program = procfs::exe(pid.as_raw())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        if self.privileges_drop
            && let Some(lost) = privileges_lost(pid.as_raw())
        {
            (self.on_notice)(&Notice::PrivilegesDropped(PrivilegesDropped {
                pid: pid.as_raw(),
                program: &program,
                lost: &lost,
            }));
        }
        match inject_traced(pid.as_raw(), self.skew) {
            Ok(report) => {
                self.skewed += 1;
                log::info!(
                    "pid {pid}: {program} skewed, {} (stopped {} µs)",
                    self.skew,
                    report.stopped_for.as_micros()
                );
            }
            Err(error) => {
                // Only SIGKILL ends a process in a ptrace-stop; the injection's own waitpid may
                // have reaped it, taking its status with it.
                if signal::kill(pid, None) == Err(Errno::ESRCH) {
                    if pid == self.main {
                        self.outcome = Some(ExitOutcome::Signaled {
                            signal: Signal::SIGKILL,
                            core_dumped: false,
                        });
                    }
                    return;
                }
                if matches!(error, Error::ProcessGone { .. }) {
                    log::debug!("pid {pid} ({program}) died while being skewed: {error}");
                    return;
                }
                self.not_skewed += 1;
                (self.on_notice)(&Notice::NotSkewed(NotSkewed {
                    pid: pid.as_raw(),
                    program: &program,
                    error: &error,
                }));
            }
        }
    }

    /// `pid` entered a job-control stop: leave it stopped (PTRACE_LISTEN keeps its events coming
    /// to us). When the command itself stops, stop ourselves the same way so the shell sees the
    /// job stopped, and continue the command when we are continued.
    fn group_stop(&mut self, pid: Pid, signal: Signal) {
        match raw::ptrace_listen(pid) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return,
            Err(e) => {
                log::warn!("pid {pid}: PTRACE_LISTEN failed ({e}); continuing it instead");
                self.resume(pid, None);
                return;
            }
        }
        if pid != self.main {
            return;
        }
        log::debug!("the command stopped ({signal}): stopping timeskew too");
        // Directed at this thread, so it stops before the call returns (a stop signal in an
        // orphaned process group is discarded: then we do not stop, and neither should it).
        if let Err(e) = raw::tgkill(getpid().as_raw(), self.me.as_raw(), signal) {
            log::warn!("could not stop timeskew with {signal}: {e}");
        }
        log::debug!("timeskew continued: continuing the command");
        let _ = signal::kill(self.main, Signal::SIGCONT);
    }

    /// Relays a signal timeskew received to the command, unless the command has it already.
    fn relay(&mut self, info: SigInfo) -> Result<(), Errno> {
        let signal = info.signal;
        // The command's own copy may be waiting for us already.
        self.drain()?;
        if self.outcome.is_some() {
            return Ok(());
        }
        let why_not = if info.code > 0 {
            Some("the kernel sent it (a terminal) to the whole process group".to_string())
        } else if info.pid == getpid().as_raw() {
            Some("timeskew sent it to itself".into())
        } else if procfs::tracer_of(info.pid).is_some_and(|(tracer, _)| tracer == self.me.as_raw())
        {
            Some(format!(
                "its sender, pid {}, is part of the command",
                info.pid
            ))
        } else if self.command_has(signal, info.pid) {
            Some("the command received it too (sent to the process group)".into())
        } else {
            None
        };
        match why_not {
            Some(reason) => log::debug!("{signal} from pid {} not relayed: {reason}", info.pid),
            None => {
                log::debug!(
                    "relaying {signal} from pid {} to pid {}",
                    info.pid,
                    self.main
                );
                match signal::kill(self.main, signal) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => log::warn!("could not relay {signal} to pid {}: {e}", self.main),
                }
            }
        }
        Ok(())
    }

    /// Whether the command already got `signal`: pending (read under the kernel's signal lock,
    /// before the thread stops to report it), waiting in a signal-delivery-stop we have not
    /// handled yet, or handled just now.
    fn command_has(&self, signal: Signal, sender: i32) -> bool {
        if pending_signals(self.main).is_some_and(|mask| mask & bit(signal) != 0) {
            return true;
        }
        let threads = procfs::threads(self.main.as_raw()).unwrap_or_default();
        if threads.into_iter().any(|tid| {
            ptrace::getsiginfo(Pid::from_raw(tid)).is_ok_and(|si| si.si_signo == signal as i32)
        }) {
            return true;
        }
        self.recent
            .iter()
            .chain(&self.older)
            .any(|&(s, from)| s == signal && from == sender)
    }

    /// Whether `tid` is a thread of the command's process.
    fn in_command(&self, tid: Pid) -> bool {
        tid == self.main || procfs::has_thread(self.main.as_raw(), tid.as_raw())
    }
}

/// CAP_SYS_PTRACE's bit in the capability sets.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether this process has CAP_SYS_PTRACE in its effective set (root normally has).
fn has_cap_sys_ptrace() -> bool {
    let status = procfs::own_status().unwrap_or_default();
    status_field(&status, "CapEff:")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// What the program `pid` has just exec'd would have gained and did not: the owner of a
/// setuid file that is not its effective uid, the group of a setgid file that is not its
/// effective gid, file capabilities missing from its permitted set. `None` when nothing.
fn privileges_lost(pid: i32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = procfs::exe_metadata(pid).ok()?;
    let status = procfs::status(pid).ok()?;
    // `Uid:`/`Gid:` list real, effective, saved and filesystem ids.
    let effective = |name| {
        status_field(&status, name)?
            .split_whitespace()
            .nth(1)?
            .parse::<u32>()
            .ok()
    };
    let mut lost = Vec::new();
    if meta.mode() & libc::S_ISUID != 0 && effective("Uid:") != Some(meta.uid()) {
        lost.push(format!("its setuid bit (owner uid {})", meta.uid()));
    }
    let setgid = libc::S_ISGID | libc::S_IXGRP;
    if meta.mode() & setgid == setgid && effective("Gid:") != Some(meta.gid()) {
        lost.push(format!("its setgid bit (group gid {})", meta.gid()));
    }
    if let Some(file_caps) = file_capabilities(pid) {
        let permitted = status_field(&status, "CapPrm:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        let missing = file_caps & !permitted;
        if missing != 0 {
            lost.push(format!(
                "its file capabilities ({})",
                capability_names(missing)
            ));
        }
    }
    (!lost.is_empty()).then(|| lost.join(" and "))
}

/// The permitted set of the file capabilities of the program `pid` runs, if it has any.
fn file_capabilities(pid: i32) -> Option<u64> {
    parse_file_capabilities(&procfs::exe_capability_attr(pid)?)
}

/// `struct vfs_cap_data` (revision 1, 2 or 3, little-endian): the permitted set.
fn parse_file_capabilities(data: &[u8]) -> Option<u64> {
    let word = |i: usize| {
        data.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    match word(0)? & 0xff00_0000 {
        0x0100_0000 => word(1).map(u64::from),
        0x0200_0000 | 0x0300_0000 => Some(u64::from(word(1)?) | u64::from(word(3)?) << 32),
        _ => None,
    }
}

/// `cap_net_raw, cap_sys_admin` for a capability mask.
fn capability_names(mask: u64) -> String {
    const NAMES: [&str; 41] = [
        "cap_chown",
        "cap_dac_override",
        "cap_dac_read_search",
        "cap_fowner",
        "cap_fsetid",
        "cap_kill",
        "cap_setgid",
        "cap_setuid",
        "cap_setpcap",
        "cap_linux_immutable",
        "cap_net_bind_service",
        "cap_net_broadcast",
        "cap_net_admin",
        "cap_net_raw",
        "cap_ipc_lock",
        "cap_ipc_owner",
        "cap_sys_module",
        "cap_sys_rawio",
        "cap_sys_chroot",
        "cap_sys_ptrace",
        "cap_sys_pacct",
        "cap_sys_admin",
        "cap_sys_boot",
        "cap_sys_nice",
        "cap_sys_resource",
        "cap_sys_time",
        "cap_sys_tty_config",
        "cap_mknod",
        "cap_lease",
        "cap_audit_write",
        "cap_audit_control",
        "cap_setfcap",
        "cap_mac_override",
        "cap_mac_admin",
        "cap_syslog",
        "cap_wake_alarm",
        "cap_block_suspend",
        "cap_audit_read",
        "cap_perfmon",
        "cap_bpf",
        "cap_checkpoint_restore",
    ];
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            NAMES
                .get(bit)
                .map_or_else(|| format!("capability {bit}"), |n| n.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_stop_signal(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}

fn bit(signal: Signal) -> u64 {
    1u64 << (signal as u32 - 1)
}

/// The signals pending for `pid`'s main thread and for the whole process (`SigPnd` | `ShdPnd`).
fn pending_signals(pid: Pid) -> Option<u64> {
    let status = procfs::status(pid.as_raw()).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(field("SigPnd:")? | field("ShdPnd:")?)
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

    #[test]
    fn file_capabilities_are_parsed_and_named() {
        // setcap cap_net_raw+ep: revision 2, effective flag, permitted bit 13.
        let mut v2 = vec![0x01, 0, 0, 0x02];
        v2.extend([0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_file_capabilities(&v2), Some(1 << 13));
        let mut v3 = v2.clone();
        v3[3] = 0x03;
        v3.extend([0, 0, 0, 0]); // rootid
        v3[12] = 0x01; // permitted bit 32 (cap_mac_override)
        assert_eq!(parse_file_capabilities(&v3), Some(1 << 13 | 1 << 32));
        assert_eq!(parse_file_capabilities(&[0, 0, 0, 0x07]), None);
        assert_eq!(parse_file_capabilities(&[]), None);
        assert_eq!(capability_names(1 << 13), "cap_net_raw");
        assert_eq!(
            capability_names(1 << 21 | 1 << 63),
            "cap_sys_admin, capability 63"
        );
        // A program without setuid bits or capabilities loses nothing.
        assert_eq!(privileges_lost(getpid().as_raw()), None);
        assert!(has_cap_sys_ptrace(), "the tests run as root");
    }

    #[test]
    fn signal_bits_match_proc_status() {
        // SigPnd: bit n-1 for signal n (SIGHUP = 1 → 0x1, SIGTERM = 15 → 0x4000).
        assert_eq!(bit(Signal::SIGHUP), 0x1);
        assert_eq!(bit(Signal::SIGTERM), 0x4000);
        assert!(pending_signals(getpid()).is_some());
    }
}
