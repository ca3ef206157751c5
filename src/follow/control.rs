//! Ending a follow from another timeskew. A follower traces the processes it follows, so no
//! other process can stop them to recover them; `recover` instead asks the follower to end the
//! experiment (it recovers everything it touched) and waits until it has.
//!
//! The follower listens on an abstract Unix socket named after its tracer thread, the id the
//! followed processes show as `TracerPid`: nothing on disk, gone with the follower.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::target::procfs;

fn name(tracer: i32) -> String {
    format!("timeskew-follow.{tracer}")
}

/// The follower's end of it: pending requests are answered (the connection closed) when the
/// follower is done and this is dropped.
pub(crate) struct Control {
    listener: UnixListener,
    waiting: Vec<UnixStream>,
}

impl Control {
    /// Listens for this thread (the tracer).
    pub(crate) fn listen() -> std::io::Result<Control> {
        let tid = nix::unistd::gettid().as_raw();
        let addr = SocketAddr::from_abstract_name(name(tid))?;
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            waiting: Vec::new(),
        })
    }

    /// True when someone asked us to end (their connection is kept until we are done).
    pub(crate) fn requested(&mut self) -> bool {
        while let Ok((mut stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let mut byte = [0u8; 1];
            // The request is one byte; a peer that only connects is a request all the same.
            let _ = stream.read(&mut byte);
            self.waiting.push(stream);
        }
        !self.waiting.is_empty()
    }

    /// Tells the waiting requesters how many processes were recovered, then lets them go.
    pub(crate) fn answer(&mut self, recovered: usize) {
        for mut stream in self.waiting.drain(..) {
            let _ = writeln!(stream, "recovered {recovered}");
        }
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// How long a `recover` waits for a follower to end its experiment.
const END_WAIT: Duration = Duration::from_secs(60);

/// If `pid` is traced by a timeskew follower, asks it to end its experiment and waits until it
/// has recovered what it touched; returns the follower's tracer thread id. `None` when `pid` is
/// not traced by a follower (not traced at all, or by something else).
pub fn end_follower_of(pid: i32) -> Result<Option<i32>> {
    let Some((tracer, _)) = procfs::tracer_of(pid) else {
        return Ok(None);
    };
    let Ok(addr) = SocketAddr::from_abstract_name(name(tracer)) else {
        return Ok(None);
    };
    let Ok(mut stream) = UnixStream::connect_addr(&addr) else {
        return Ok(None);
    };
    log::info!("pid {pid} is followed by timeskew (tracer {tracer}): asking it to end");
    let failed = |e: std::io::Error| Error::Io {
        pid,
        step: "ask the timeskew follower of the process to end its experiment",
        source: e,
    };
    stream.write_all(b"e").map_err(failed)?;
    stream.set_read_timeout(Some(END_WAIT)).map_err(failed)?;
    let mut answer = String::new();
    match stream.read_to_string(&mut answer) {
        Ok(_) => {
            log::info!("the follower ended: {}", answer.trim());
            Ok(Some(tracer))
        }
        Err(e) => Err(failed(std::io::Error::new(
            e.kind(),
            format!(
                "the follower (tracer thread {tracer}) did not end within {} s: {e}",
                END_WAIT.as_secs()
            ),
        ))),
    }
}
