//! The kernel's process-event connector (netlink, `NETLINK_CONNECTOR`, `CN_IDX_PROC`): a
//! message for every fork and exec on the machine, so a process that joins a followed cgroup
//! from outside (`podman exec`, `kubectl exec`, `nsenter`) is seen the moment it forks or execs.
//! Needs CAP_NET_ADMIN; without it the follower falls back to rescanning the cgroups.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, NetlinkAddr, bind, recv, send};

/// `include/uapi/linux/connector.h` and `cn_proc.h`: not in the libc crate.
const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// `struct nlmsghdr` and `struct cn_msg`, before the `struct proc_event`.
const NLMSG_HDR: usize = 16;
const CN_MSG_HDR: usize = 20;

/// One event of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcEvent {
    /// A new process (not a thread): `child` forked by `parent` (both process ids).
    Fork { parent: i32, child: i32, at_ns: u64 },
    /// Process `pid` exec'd a new program; `at_ns` is CLOCK_MONOTONIC (as `ktime_get_ns`).
    Exec { pid: i32, at_ns: u64 },
}

/// What one read of the socket brought.
pub(crate) enum Received {
    Events(Vec<ProcEvent>),
    /// Nothing queued.
    Empty,
    /// The kernel dropped events (the socket's buffer overflowed): whoever relies on them must
    /// look at the processes again.
    Lost,
}

/// A subscribed, non-blocking proc-connector socket.
pub(crate) struct ProcEvents {
    fd: OwnedFd,
}

impl ProcEvents {
    /// Subscribes to process events. EPERM without CAP_NET_ADMIN.
    pub(crate) fn subscribe() -> nix::Result<ProcEvents> {
        // SAFETY: socket(2) with constant arguments; on success we own the new descriptor.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        let raw = Errno::result(raw)?;
        // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Port id 0: the kernel assigns one (a process may hold several such sockets).
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, CN_IDX_PROC))?;
        // A bigger buffer rides out bursts of hundreds of execs while we inject.
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
        let mut msg = Vec::with_capacity(NLMSG_HDR + CN_MSG_HDR + 4);
        let len = (NLMSG_HDR + CN_MSG_HDR + 4) as u32;
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&std::process::id().to_ne_bytes());
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
        msg.extend_from_slice(&4u16.to_ne_bytes()); // len of the payload
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        send(fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        Ok(ProcEvents { fd })
    }

    /// Reads every message queued now.
    pub(crate) fn read(&self) -> Received {
        let mut events = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => parse(&buf[..n], &mut events),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => return Received::Lost,
                Err(e) => {
                    log::debug!("proc connector: recv failed: {e}");
                    return Received::Lost;
                }
            }
        }
        if events.is_empty() {
            Received::Empty
        } else {
            Received::Events(events)
        }
    }
}

impl AsFd for ProcEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The events of one datagram (one or more netlink messages).
fn parse(mut bytes: &[u8], out: &mut Vec<ProcEvent>) {
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    while let Some(len) = u32_at(bytes, 0) {
        let len = len as usize;
        if len < NLMSG_HDR || len > bytes.len() {
            return;
        }
        let msg = &bytes[..len];
        // struct proc_event: what, cpu, timestamp_ns, then the event's data.
        let ev = NLMSG_HDR + CN_MSG_HDR;
        let what = u32_at(msg, ev);
        let at_ns = u64_at(msg, ev + 8).unwrap_or(0);
        let data = ev + 16;
        let field = |i: usize| u32_at(msg, data + 4 * i).map(|v| v as i32);
        match what {
            Some(PROC_EVENT_FORK) => {
                // parent_pid, parent_tgid, child_pid, child_tgid: a new thread has a child_pid
                // other than its child_tgid.
                if let (Some(parent), Some(child_pid), Some(child)) = (field(1), field(2), field(3))
                    && child_pid == child
                {
                    out.push(ProcEvent::Fork {
                        parent,
                        child,
                        at_ns,
                    });
                }
            }
            Some(PROC_EVENT_EXEC) => {
                if let Some(pid) = field(1) {
                    out.push(ProcEvent::Exec { pid, at_ns });
                }
            }
            _ => {}
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        let next = (len + 3) & !3;
        bytes = bytes.get(next..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket sees a fork and an exec of a child we start.
    #[test]
    fn sees_our_own_child_fork_and_exec() {
        let events = ProcEvents::subscribe().expect("root has CAP_NET_ADMIN");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let (mut forked, mut execed) = (false, false);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !(forked && execed) && std::time::Instant::now() < deadline {
            let mut fds = [nix::poll::PollFd::new(
                events.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            if let Received::Events(list) = events.read() {
                for e in list {
                    match e {
                        ProcEvent::Fork { child, .. } if child == pid => forked = true,
                        ProcEvent::Exec { pid: p, .. } if p == pid => execed = true,
                        _ => {}
                    }
                }
            }
        }
        assert!(forked && execed, "fork seen: {forked}, exec seen: {execed}");
    }

    #[test]
    fn a_truncated_message_is_ignored() {
        let mut out = Vec::new();
        parse(&[40, 0, 0, 0, 1, 2], &mut out);
        parse(&[], &mut out);
        assert!(out.is_empty());
    }
}
