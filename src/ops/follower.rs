//! Asking a follower, from another timeskew (or the library): a follower traces the processes
//! it follows, so no other process can stop them to change them; other timeskews ask it
//! instead, on an abstract Unix socket named after its tracer thread (the id the followed
//! processes show as `TracerPid`): nothing on disk, gone with the follower. One request a
//! connection, one line; the follower answers and closes. The follower's side of the socket is
//! `follow/control.rs`.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ops::inject::Fault;
use crate::ops::status::follower_of;
use crate::report::Follower;
use crate::skew::SlewRate;

/// The abstract socket name of the follower whose tracer thread is `tracer`.
pub(crate) fn socket_name(tracer: i32) -> String {
    format!("timeskew-follow.{tracer}")
}

/// What another timeskew asks a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// End the experiment, recovering everything it touched (`recover`).
    End,
    /// End it, every process touched slewing back to real time (`recover --slew`).
    SlewBack(SlewRate),
    /// From now on this fault, for every process of the experiment but `except` (the processes
    /// the asking `inject` changes itself) and every newcomer.
    Update { fault: Fault, except: Vec<i32> },
}

impl Request {
    /// `end`, `slew PPB`, `update FAULT… except PID…`.
    pub(crate) fn to_line(&self) -> String {
        match self {
            Request::End => "end".into(),
            Request::SlewBack(slew) => format!("slew {}", slew.as_ppb()),
            Request::Update { fault, except } => {
                let mut line = format!("update {} except", fault.to_words());
                for pid in except {
                    line.push_str(&format!(" {pid}"));
                }
                line
            }
        }
    }

    /// The inverse of [`to_line`](Request::to_line); `None` for a line it does not write.
    pub(crate) fn parse(line: &str) -> Option<Request> {
        let line = line.trim();
        if line == "end" {
            return Some(Request::End);
        }
        if let Some(ppb) = line.strip_prefix("slew ") {
            return SlewRate::from_ppb(ppb.parse().ok()?).map(Request::SlewBack);
        }
        let (fault, except) = line.strip_prefix("update ")?.split_once(" except")?;
        Some(Request::Update {
            fault: Fault::from_words(fault)?,
            except: except
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .ok()?,
        })
    }
}

/// How long a request waits for the follower's answer (ending: its recovery of everything).
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Sends `request` to the follower tracing `pid` and returns it with its answer (the text up
/// to its close); `None` when `pid` is not followed (not traced, traced by something else, or
/// by a follower that no longer listens).
pub(crate) fn ask(
    pid: i32,
    request: &Request,
    step: &'static str,
) -> Result<Option<(Follower, String)>> {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let Some(follower) = follower_of(pid) else {
        return Ok(None);
    };
    let Ok(addr) = SocketAddr::from_abstract_name(socket_name(follower.tracer)) else {
        return Ok(None);
    };
    let Ok(mut stream) = UnixStream::connect_addr(&addr) else {
        return Ok(None);
    };
    let failed = |e: std::io::Error| Error::Io {
        pid,
        step,
        source: std::io::Error::new(
            e.kind(),
            format!(
                "{e}; the follower is tracer thread {} of pid {} (`timeskew status --pid {pid}`); \
                 retry, or end the follow with Ctrl-C or SIGTERM to `timeskew inject --follow`",
                follower.tracer, follower.pid
            ),
        ),
    };
    stream
        .write_all(format!("{}\n", request.to_line()).as_bytes())
        .map_err(failed)?;
    stream.set_read_timeout(Some(ANSWER_WAIT)).map_err(failed)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| {
        failed(std::io::Error::new(
            e.kind(),
            format!("no answer within {} s ({e})", ANSWER_WAIT.as_secs()),
        ))
    })?;
    Ok(Some((follower, answer)))
}

/// If `pid` is followed by a timeskew follower, asks it to end its experiment and waits until it
/// has: every process it touched recovered (`slew`: `None`), or slewing back to real time at
/// `slew` (their hooks left in place, as [`recover_slewed`](crate::recover_slewed) leaves them), and none traced any
/// more. Returns the follower's tracer thread id; `None` when `pid` is not followed.
/// [`recover`](crate::recover) and [`recover_slewed`](crate::recover_slewed) call it first.
pub fn end_follower_of(pid: i32, slew: Option<SlewRate>) -> Result<Option<i32>> {
    let request = match slew {
        None => Request::End,
        Some(slew) => Request::SlewBack(slew),
    };
    let Some((follower, answer)) = ask(
        pid,
        &request,
        "ask the timeskew follower of the process to end its experiment",
    )?
    else {
        return Ok(None);
    };
    log::info!(
        "pid {pid} was followed by timeskew (tracer {}, pid {}): {}",
        follower.tracer,
        follower.pid,
        answer.trim()
    );
    Ok(Some(follower.tracer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_travel_whole() {
        let fault = Fault::new(&crate::skew::Skew::new("-600s".parse().unwrap()));
        for request in [
            Request::End,
            Request::SlewBack("500ppm".parse().unwrap()),
            Request::Update {
                fault,
                except: vec![],
            },
            Request::Update {
                fault,
                except: vec![12, 345],
            },
        ] {
            let line = request.to_line();
            assert_eq!(
                Request::parse(&format!("{line}\n")),
                Some(request),
                "{line}"
            );
        }
        for bad in ["", "e", "slew 0", "slew x", "update - - 1 except", "update"] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }
}
