//! Relaying the signals timeskew receives (`RELAYED`) to the command, once: not when the
//! command got the same signal already (sent to the whole process group, or by itself).

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, getpid};

use super::Notice;
use super::tracer::Tracer;
use crate::signals::SigInfo;
use crate::target::procfs;

impl<F: FnMut(&Notice<'_>)> Tracer<'_, F> {
    /// Relays a signal timeskew received to the command, unless the command has it already.
    pub(super) fn relay(&mut self, info: SigInfo) -> Result<(), Errno> {
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
        if procfs::signal_pending(self.main.as_raw(), signal) {
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
    pub(super) fn in_command(&self, tid: Pid) -> bool {
        tid == self.main || procfs::has_thread(self.main.as_raw(), tid.as_raw())
    }
}
