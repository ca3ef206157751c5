//! Looking at a thread through `/proc` alone — its system call file, `stat`, stack — and the
//! first look at every thread, before anything is written, shared out between threads of ours
//! (`creations_settled` acts on what it finds; the window's look in `threads.rs` reuses these).

use super::*;

/// The first look at many threads is shared out between at most this many threads of ours …
const LOOK_PARTS: usize = 4;
/// … each reading at least this many (a thread of ours costs more than reading a few).
const LOOK_PART_MIN: usize = 128;
/// SIGTRAP's bit in a signal mask.
const TRAP: u64 = 1 << (libc::SIGTRAP - 1);

/// Into how many parts a look at `n` threads is shared out: one per CPU, at most `LOOK_PARTS`,
/// each of `LOOK_PART_MIN` threads at least.
pub(super) fn look_parts(n: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    cpus.min(LOOK_PARTS).min(n / LOOK_PART_MIN).max(1)
}

/// What `/proc/PID/task/TID/syscall` says: running, or blocked with its user-space stack and
/// instruction pointers (in a system call or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Running,
    Blocked {
        in_syscall: bool,
        nr: i64,
        sp: u64,
        pc: u64,
    },
    Gone,
}

pub(super) fn seen(tgid: i32, tid: i32) -> Seen {
    // Fault point `syscall-file` (test builds): the file reads as unreadable.
    let readable = crate::fault::point(tgid, "syscall-file").is_ok();
    let Some(text) = readable
        .then(|| procfs::task_file(tgid, tid, "syscall"))
        .flatten()
    else {
        // Gone only if it is: a thread taken for gone is never looked at again, and one still
        // there is stopped and looked at instead.
        if procfs::thread_alive(tgid, tid) {
            log::debug!("pid {tgid}: thread {tid}: its syscall file could not be read");
            return Seen::Running;
        }
        return Seen::Gone;
    };
    parse_seen(&text)
}

pub(super) fn parse_seen(text: &str) -> Seen {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    match fields.as_slice() {
        [nr, .., sp, pc] if fields.len() >= 3 => match (nr.parse::<i64>(), hex(sp), hex(pc)) {
            (Ok(nr), Some(sp), Some(pc)) => Seen::Blocked {
                in_syscall: nr >= 0,
                nr,
                sp,
                pc,
            },
            _ => Seen::Running,
        },
        _ => Seen::Running,
    }
}

/// System calls that create a thread or a process.
pub(super) const CREATING: [i64; 4] = [
    libc::SYS_clone,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_clone3,
];

/// State, blocked and ignored signals of a thread from its `stat` line (fields 3, 33, 34).
pub(super) fn stat_signals(pid: i32, tid: i32) -> Option<(char, u64, u64)> {
    let text = procfs::task_file(pid, tid, "stat")?;
    let rest: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = rest.first()?.chars().next()?;
    let blocked = rest.get(29)?.parse().ok()?;
    let ignored = rest.get(30)?.parse().ok()?;
    Some((state, blocked, ignored))
}

/// What the first look at a thread found.
pub(super) struct FirstLook {
    pub(super) tid: i32,
    pub(super) seen: Seen,
    /// Its scheduler counters, read before `seen`, with the file kept open; only when noting.
    pub(super) counters: Option<([u64; 3], procfs::SchedCounters)>,
    /// Blocked outside the planned windows with no saved context inside one: it may be
    /// passed over in the window check while its counters stand still.
    pub(super) outside: bool,
    /// Its state and blocked and ignored signals (`stat_signals`).
    signals: Option<(char, u64, u64)>,
}

/// Whether `ip` is inside one of the `planned` windows (start, length): past its first byte.
pub(super) fn inside_planned(planned: &[(u64, usize)], ip: u64) -> bool {
    planned
        .iter()
        .any(|&(addr, len)| ip > addr && ip < addr + len as u64)
}

/// The span of every window (start, length): no address outside it is inside one.
pub(super) fn span(windows: impl Iterator<Item = (u64, u64)>) -> (u64, u64) {
    windows.fold((u64::MAX, 0), |(lo, hi), (a, l)| {
        (lo.min(a.saturating_add(1)), hi.max(a.saturating_add(l)))
    })
}

/// A saved context inside a window on `tid`'s stack above `sp` (its stack found in `maps`),
/// said as the refusal; `Some(None)`: none; `None`: the stack cannot be read. `bounds`: the
/// span of every window, `inside`: whether an address is inside one.
pub(super) fn context_on_stack(
    mem: &BoundMem,
    maps: &[Mapping],
    (lo, hi): (u64, u64),
    inside: impl Fn(u64) -> bool,
    tid: i32,
    sp: u64,
) -> Option<Option<String>> {
    let sp = sp & !7;
    let i = maps.partition_point(|m| m.end <= sp);
    let Some(stack) = maps.get(i).filter(|m| m.start <= sp) else {
        return Some(None);
    };
    let end = stack
        .end
        .min(sp.saturating_add(crate::ptrace::windows::STACK_SCAN));
    let words = mem
        .read(sp, (end - sp) as usize, "read a thread's stack")
        .ok()?;
    // Nearly every word is far from the windows: one compare passes it over.
    Some(
        words
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8")))
            .find(|w| (lo..hi).contains(w) && inside(*w))
            .map(|w| {
                format!(
                    "thread {tid} was interrupted at {w:#x}, inside the instructions to be \
                     replaced, by a signal handler that is still running"
                )
            }),
    )
}

/// What the first look reads against: the windows an injection will write, the mappings (to
/// find each thread's stack) and the memory.
struct Looker<'a> {
    pid: i32,
    planned: &'a [(u64, usize)],
    /// The span of the planned windows (`span`), once for every thread.
    bounds: (u64, u64),
    maps: &'a [Mapping],
    mem: &'a BoundMem,
    /// Also each thread's scheduler counters and stack (an injection; see `FirstLook`).
    noting: bool,
}

impl Looker<'_> {
    fn look(&self, tid: i32) -> FirstLook {
        let pid = self.pid;
        let counters = self
            .noting
            .then(|| {
                let kept = procfs::SchedCounters::open(pid, tid);
                kept.read().map(|c| (c, kept))
            })
            .flatten();
        let signals = stat_signals(pid, tid);
        let seen = seen(pid, tid);
        let outside = match seen {
            Seen::Blocked {
                in_syscall: true,
                nr,
                sp,
                pc,
            } if counters.is_some() && !CREATING.contains(&nr) => {
                let inside = |ip| inside_planned(self.planned, ip);
                !inside(pc)
                    && context_on_stack(self.mem, self.maps, self.bounds, inside, tid, sp)
                        == Some(None)
            }
            _ => false,
        };
        FirstLook {
            tid,
            seen,
            counters,
            outside,
            signals,
        }
    }

    /// Looks at `tids` in `parts` threads of ours (the reads are CPU work in the kernel).
    fn look_all(&self, tids: &[i32], parts: usize) -> Vec<FirstLook> {
        if parts <= 1 {
            return tids.iter().map(|&t| self.look(t)).collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = tids
                .chunks(tids.len().div_ceil(parts))
                .map(|part| {
                    scope.spawn(move || part.iter().map(|&t| self.look(t)).collect::<Vec<_>>())
                })
                .collect();
            let joined = handles.into_iter().map(|h| h.join());
            joined
                .flat_map(|looks| looks.unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }
}

impl LiveSession {
    /// Reads the mappings the look finds stacks in (through any thread that can show them:
    /// the leader may be a zombie); `false` when they cannot be read or are not needed (a
    /// recover): no thread is passed over in the window then.
    pub(super) fn maps_for_look(&mut self) -> bool {
        if self.planned.is_empty() {
            return false;
        }
        let maps = self.live_maps();
        let noting = maps.is_some();
        self.maps = maps.unwrap_or_default();
        noting
    }

    /// Looks at `tids` through `/proc`: state and signal masks, system call file, and with
    /// `noting` each one's scheduler counters and, if blocked in a system call outside the
    /// planned windows, its stack (`FirstLook::outside`). Shared out between threads of ours,
    /// one per CPU (at most `LOOK_PARTS`). Nothing here needs the tracer thread.
    pub(super) fn first_looks(&self, tids: &[i32], noting: bool) -> Vec<FirstLook> {
        let looker = Looker {
            pid: self.pid,
            planned: &self.planned,
            bounds: span(self.planned.iter().map(|&(a, l)| (a, l as u64))),
            maps: &self.maps,
            mem: &self.mem,
            noting,
        };
        looker.look_all(tids, look_parts(tids.len()))
    }

    /// What the first look's `stat` reads say before anything is written: a thread in a
    /// job-control stop ends the change (as job control stopping it later would), and one that
    /// blocks or ignores SIGTRAP — which a breakpoint trap would reset — sends the change to
    /// the all-stop path. Read in the look, not while attaching: one `stat` per thread there
    /// was half of the attach's time (1,000 threads: ≈ 9 of 18 ms).
    pub(super) fn signals_allow(&self, looks: &[FirstLook]) -> Result<Option<Fallback>> {
        let pid = self.pid;
        if looks
            .iter()
            .any(|l| l.signals.is_some_and(|(state, ..)| state == 'T'))
        {
            return Err(Error::StoppedByJobControl {
                pid,
                signal: None,
                meanwhile: false,
            });
        }
        let masked = looks
            .iter()
            .filter_map(|l| Some((l.tid, l.signals?)))
            .filter(|(_, (_, blocked, ignored))| (blocked | ignored) & TRAP != 0);
        for (tid, (_, mut blocked, mut ignored)) in masked {
            // glibc blocks every signal in a thread while it starts: look again briefly.
            for _ in 0..10 {
                std::thread::sleep(Duration::from_micros(200));
                match stat_signals(pid, tid) {
                    Some((_, b, i)) => (blocked, ignored) = (b, i),
                    None => (blocked, ignored) = (0, 0),
                }
                if (blocked | ignored) & TRAP == 0 {
                    break;
                }
            }
            if (blocked | ignored) & TRAP != 0 {
                let how = if ignored & TRAP != 0 {
                    "ignores"
                } else {
                    "blocks"
                };
                return Ok(Some(Fallback(format!(
                    "thread {tid} {how} SIGTRAP, which a breakpoint trap would reset"
                ))));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_syscall_lines() {
        assert_eq!(parse_seen("running\n"), Seen::Running);
        assert_eq!(
            parse_seen("-1 0x7ffd1000 0x401000\n"),
            Seen::Blocked {
                in_syscall: false,
                nr: -1,
                sp: 0x7ffd_1000,
                pc: 0x40_1000
            }
        );
        assert_eq!(
            parse_seen("202 0x1 0x2 0x3 0x4 0x5 0x6 0x7ffd2000 0x7f0012345678\n"),
            Seen::Blocked {
                in_syscall: true,
                nr: 202,
                sp: 0x7ffd_2000,
                pc: 0x7f00_1234_5678
            }
        );
    }

    #[test]
    fn own_stat_signals_parse() {
        let me = std::process::id() as i32;
        let (state, _, _) = stat_signals(me, me).expect("own stat");
        assert!(matches!(state, 'R' | 'S'));
    }
}
