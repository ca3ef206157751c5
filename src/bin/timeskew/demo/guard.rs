//! The parent's handle on the demo's child: it starts the child, asks it for readings, checks
//! that it exits normally, and kills and reaps it whatever happened (on drop).

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::child::READY;
use super::readings::Readings;
use crate::args::DEMO_CHILD_COMMAND;
use crate::error::CliError;

/// How long the parent waits for one answer. This synchronises nothing (every answer is awaited
/// by reading a line); it turns a child left stopped or hung into an error instead of a hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running child; dropping it kills and reaps the child and joins the thread reading its
/// output, whatever happened before.
#[derive(Debug)]
pub(super) struct DemoChild {
    process: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<io::Result<String>>,
    reader: Option<JoinHandle<()>>,
    reaped: bool,
    /// How long to wait for one answer (see [`ANSWER_TIMEOUT`]).
    timeout: Duration,
}

impl DemoChild {
    /// Starts `timeskew __demo-child` and waits for its `ready`.
    pub(super) fn spawn() -> Result<DemoChild, CliError> {
        let exe = std::env::current_exe().map_err(|e| {
            CliError::io(
                "cannot find the timeskew executable to run the demo child",
                e,
            )
        })?;
        let mut command = Command::new(exe);
        command.arg(DEMO_CHILD_COMMAND);
        DemoChild::start(command)
    }

    /// Starts `command` as the child and waits for its `ready`.
    fn start(mut command: Command) -> Result<DemoChild, CliError> {
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                let program = command.get_program().to_string_lossy();
                CliError::io(format!("cannot start the demo child {program}"), e)
            })?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take();
        let (tx, lines) = mpsc::channel();
        // From here on the guard owns the child: any error below kills and reaps it.
        let mut child = DemoChild {
            process,
            stdin,
            lines,
            reader: None,
            reaped: false,
            timeout: ANSWER_TIMEOUT,
        };
        let stdout = stdout.ok_or_else(|| CliError::Demo("the child has no stdout pipe".into()))?;
        let reader = std::thread::Builder::new()
            .name("demo-child-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let failed = line.is_err();
                    if tx.send(line).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| CliError::io("cannot start a thread to read the demo child", e))?;
        child.reader = Some(reader);
        let first = child.answer()?;
        if first != READY {
            return Err(CliError::Demo(format!(
                "the child said {first:?} instead of {READY:?}"
            )));
        }
        Ok(child)
    }

    pub(super) fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    /// Asks the child to read its clocks and returns what it saw.
    pub(super) fn ask(&mut self) -> Result<Readings, CliError> {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "read").and_then(|()| stdin.flush()),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(e) = sent {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe => CliError::Demo(self.ended()),
                _ => CliError::io("cannot write to the demo child", e),
            });
        }
        let line = self.answer()?;
        Readings::parse(&line).map_err(CliError::Demo)
    }

    /// The next line the child prints.
    fn answer(&mut self) -> Result<String, CliError> {
        match self.lines.recv_timeout(self.timeout) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(CliError::io("cannot read from the demo child", e)),
            Err(RecvTimeoutError::Timeout) => Err(CliError::Demo(format!(
                "the child (pid {pid}) did not answer within {:?}; if it is still stopped, \
                 `grep -E 'State|TracerPid' /proc/{pid}/status` shows by whom",
                self.timeout,
                pid = self.pid()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(CliError::Demo(self.ended())),
        }
    }

    /// Reaps a child whose output ended and says how it ended.
    fn ended(&mut self) -> String {
        let pid = self.pid();
        // It closed its output, so it is exiting or gone; the kill only makes sure of it.
        let _ = self.process.kill();
        match self.process.wait() {
            Ok(status) => {
                self.reaped = true;
                format!("the child (pid {pid}) ended unexpectedly: {status}")
            }
            Err(e) => format!("the child (pid {pid}) stopped answering (wait failed: {e})"),
        }
    }

    /// Closes the child's input and checks that it exits normally.
    pub(super) fn finish(&mut self) -> Result<(), CliError> {
        drop(self.stdin.take());
        match self.lines.recv_timeout(self.timeout) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(Ok(line)) => {
                return Err(CliError::Demo(format!(
                    "the child printed {line:?} after its input ended"
                )));
            }
            Ok(Err(e)) => return Err(CliError::io("cannot read from the demo child", e)),
            Err(RecvTimeoutError::Timeout) => {
                return Err(CliError::Demo(format!(
                    "the child (pid {}) did not exit within {:?} after its input ended",
                    self.pid(),
                    self.timeout
                )));
            }
        }
        let status = self
            .process
            .wait()
            .map_err(|e| CliError::io("cannot wait for the demo child", e))?;
        self.reaped = true;
        if status.success() {
            Ok(())
        } else {
            Err(CliError::Demo(format!(
                "the child (pid {}) exited with {status}",
                self.pid()
            )))
        }
    }
}

impl Drop for DemoChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !self.reaped {
            let pid = self.pid();
            match self.process.kill() {
                Ok(()) => match self.process.wait() {
                    Ok(_) => self.reaped = true,
                    Err(e) => log::warn!("demo: cannot reap the child (pid {pid}): {e}"),
                },
                Err(e) => log::warn!("demo: cannot kill the child (pid {pid}): {e}"),
            }
        }
        // The reader ends when the child's stdout closes, which a reaped child guarantees.
        if self.reaped
            && let Some(reader) = self.reader.take()
            && reader.join().is_err()
        {
            log::warn!("demo: the thread reading the child's output panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::readings::{NS_PER_S, seen_at};

    const S: i128 = NS_PER_S;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    const QUICK: Duration = Duration::from_millis(300);

    /// True while `pid` exists (as a live process or an unreaped zombie).
    fn exists(pid: i32) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    }

    fn demo_err(result: Result<impl std::fmt::Debug, CliError>) -> String {
        match result {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn guard_talks_to_a_well_behaved_child_and_sees_it_exit() {
        let line = seen_at(7 * S, 8 * S).to_line();
        let script = format!("echo ready; while read l; do echo '{line}'; done");
        let mut child = DemoChild::start(sh(&script)).unwrap();
        assert_eq!(child.ask().unwrap(), seen_at(7 * S, 8 * S));
        assert_eq!(child.ask().unwrap(), seen_at(7 * S, 8 * S));
        let pid = child.pid();
        child.finish().unwrap();
        drop(child);
        assert!(!exists(pid), "reaped");
    }

    #[test]
    fn guard_rejects_a_child_without_the_handshake() {
        let e = demo_err(DemoChild::start(sh("echo hello; exec sleep 100")));
        assert!(e.contains("said \"hello\" instead of \"ready\""), "{e}");
        let e = demo_err(DemoChild::start(sh("exit 0")));
        assert!(e.contains("ended unexpectedly: exit status: 0"), "{e}");
    }

    #[test]
    fn guard_reports_a_child_that_dies() {
        let mut child = DemoChild::start(sh("echo ready; read l; exit 3")).unwrap();
        let e = demo_err(child.ask());
        assert!(e.contains("ended unexpectedly: exit status: 3"), "{e}");
    }

    #[test]
    fn guard_times_out_on_a_silent_child_and_kills_it() {
        let mut child = DemoChild::start(sh("echo ready; exec sleep 100")).unwrap();
        child.timeout = QUICK;
        let pid = child.pid();
        let e = demo_err(child.ask());
        assert!(
            e.contains(&format!("(pid {pid}) did not answer within 300ms")),
            "{e}"
        );
        assert!(exists(pid));
        drop(child);
        assert!(!exists(pid), "killed and reaped by the guard");
    }

    #[test]
    fn guard_rejects_garbage_and_a_child_that_keeps_talking() {
        let mut child = DemoChild::start(sh("echo ready; read l; echo nonsense; cat")).unwrap();
        let e = demo_err(child.ask());
        assert!(
            e.contains("unexpected line from the child: \"nonsense\""),
            "{e}"
        );
        // `cat` echoes nothing more and exits at end of input: a clean finish.
        child.finish().unwrap();

        let mut child =
            DemoChild::start(sh("echo ready; read l; echo late; exec sleep 100")).unwrap();
        let e = demo_err(child.finish());
        assert!(e.contains("printed \"late\" after its input ended"), "{e}");
    }
}
