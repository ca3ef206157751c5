//! The follower's end of its control socket, and `inject`'s request to it. Other timeskews
//! cannot stop a followed process (it has one tracer: the follower), so they ask the follower:
//! a `recover` to end the experiment (it recovers everything it touched, or slews it back), an
//! `inject` to give the experiment a new fault. The socket and the requests are described in
//! `ops/recover.rs`, where `recover` asks.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use super::{FollowerUpdate, Missed};
use crate::error::{Error, Result};
use crate::ops::follower::{Request, ask, socket_name};
use crate::ops::inject::Fault;
use crate::skew::{Skew, SlewRate};

/// What the follower is asked to do.
pub(crate) enum Asked {
    /// End the experiment; the asker waits for [`Control::answer`].
    End,
    /// End it, slewing every process touched back to real time at this rate.
    SlewBack(SlewRate),
    /// Take this fault (see [`Request::Update`]); answer with [`Reply::send`].
    Update {
        skew: Skew,
        except: Vec<i32>,
        reply: Reply,
    },
}

/// The connection of an `inject` waiting for what the follower did with its fault.
pub(crate) struct Reply(UnixStream);

impl Reply {
    /// `updated TRACER PID N`, then a `failed PID\tPROGRAM\tREASON` line per process missed.
    pub(crate) fn send(mut self, update: &FollowerUpdate) {
        let mut text = format!(
            "updated {} {} {}\n",
            update.follower.tracer, update.follower.pid, update.updated
        );
        for m in &update.failed {
            let clean = |s: &str| s.replace(['\t', '\n'], " ");
            text.push_str(&format!(
                "failed {}\t{}\t{}\n",
                m.pid,
                clean(&m.program),
                clean(&m.reason)
            ));
        }
        // The asker may have given up: nothing to do about it.
        let _ = self.0.write_all(text.as_bytes());
    }
}

/// The follower's end: requests to end are answered (the connection closed) when the follower
/// is done and this is dropped.
pub(crate) struct Control {
    listener: UnixListener,
    waiting: Vec<UnixStream>,
}

/// How long the follower waits for a connected peer's request line.
const REQUEST_WAIT: Duration = Duration::from_millis(100);

impl Control {
    /// Listens for this thread (the tracer).
    pub(crate) fn listen() -> std::io::Result<Control> {
        let tid = nix::unistd::gettid().as_raw();
        let addr = SocketAddr::from_abstract_name(socket_name(tid))?;
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            waiting: Vec::new(),
        })
    }

    /// The next request, if a peer is connected.
    pub(crate) fn next(&mut self) -> Option<Asked> {
        let (stream, _) = self.listener.accept().ok()?;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
        let mut line = String::new();
        let _ = BufReader::new(&stream).read_line(&mut line);
        // A peer that only connects, or sends what we do not read, asks to end all the same (an
        // older timeskew sent one byte): ending is what no follower may refuse. A fault we do
        // not read is refused instead (the asker sees no answer).
        let request = match Request::parse(&line) {
            Some(request) => request,
            None if line.starts_with("update") => {
                log::warn!("a new fault we cannot read ({line:?}) was refused");
                return self.next();
            }
            None => {
                log::warn!("unreadable request {line:?} on the control socket: ending");
                Request::End
            }
        };
        Some(match request {
            Request::End => {
                self.waiting.push(stream);
                Asked::End
            }
            Request::SlewBack(slew) => {
                self.waiting.push(stream);
                Asked::SlewBack(slew)
            }
            Request::Update { fault, except } => Asked::Update {
                skew: fault.skew(),
                except,
                reply: Reply(stream),
            },
        })
    }

    /// Tells the waiting requesters how many processes were recovered (or set slewing back),
    /// then lets them go.
    pub(crate) fn answer(&mut self, recovered: usize, slewed: bool) {
        let how = if slewed { "slewing back" } else { "recovered" };
        for mut stream in self.waiting.drain(..) {
            let _ = writeln!(stream, "ended its follow, {recovered} processes {how}");
        }
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// If `pid` is followed by a timeskew follower, gives that follower's whole experiment the fault
/// `skew`: every process it follows except those of `except` (which the caller changes itself,
/// as `timeskew inject` does), and every process it skews from now on (programs exec'd,
/// processes joining). Returns what the follower did; `None` when `pid` is not followed.
///
/// The follower takes the target lock of each process it updates: call this before taking any
/// of theirs. A follow's deadline stays as it was; with none, `skew`'s own duration (if any)
/// becomes each process's dead man's switch, as with [`follow`](super::follow).
pub fn update_follower_of(pid: i32, skew: &Skew, except: &[i32]) -> Result<Option<FollowerUpdate>> {
    skew.validate()?;
    let request = Request::Update {
        fault: Fault::new(skew),
        except: except.to_vec(),
    };
    let Some((follower, answer)) = ask(
        pid,
        &request,
        "give the follow of the process the new fault",
    )?
    else {
        return Ok(None);
    };
    let mut lines = answer.lines();
    let updated = lines
        .next()
        .and_then(|l| l.strip_prefix("updated "))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .ok_or_else(|| Error::Helper {
            pid,
            message: format!(
                "pid {pid}: the timeskew follower of the process (tracer thread {}, pid {}) did \
                 not take the new fault (answer {answer:?}); it keeps giving newcomers its own — \
                 end the follow and start it again with the new fault",
                follower.tracer, follower.pid
            ),
        })?;
    let failed = lines
        .filter_map(|l| {
            let mut parts = l.strip_prefix("failed ")?.splitn(3, '\t');
            Some(Missed {
                pid: parts.next()?.parse().ok()?,
                program: parts.next()?.into(),
                reason: parts.next()?.into(),
            })
        })
        .collect();
    Ok(Some(FollowerUpdate {
        follower,
        updated,
        failed,
    }))
}
