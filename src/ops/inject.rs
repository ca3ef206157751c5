//! `inject`: a live update of an injected process, or the hooks installed under one short stop.

use std::time::{Duration, Instant};

use crate::arch::HookPlan;
use crate::error::{Error, Result};
use crate::fake_clock::data_page::Params;
use crate::patch::install::patch;
use crate::patch::live;
use crate::patch::plan::Plan;
use crate::patch::unsafe_to_patch;
use crate::ptrace::StoppedProcess;
use crate::ptrace::live::Fallback;
use crate::report::{InjectAction, InjectReport};
use crate::signals::TerminationDeferred;
use crate::skew::Skew;
use crate::state::publish::write_slot;
use crate::state::status::status_of;
use crate::state::{self, Existing};
use crate::target::Target;
use crate::target::clocks;
use crate::target::program::{self, Spec};

/// Skews the clocks of process `pid` (all its threads) as `skew` says.
///
/// A process that is already injected has its parameters replaced in place, without being
/// stopped. Otherwise the pages are mapped through one thread and the jumps written under the
/// running threads, one short stop per thread at most ([`InjectReport::live`]); where that
/// cannot run (no core-serializing `membarrier`, SIGTRAP blocked or ignored, …) every thread
/// is held instead for the short time the change takes, and the report says why
/// ([`InjectReport::all_stop_reason`]). On any error, everything done so far is undone.
pub fn inject(pid: i32, skew: &Skew) -> Result<InjectReport> {
    skew.validate()?;
    apply(pid, skew.clocks().mask(), &skew.spec(), skew.duration())
}

/// [`inject`] of a fault in the program's own terms, for the clocks of `mask`.
pub(crate) fn apply(
    pid: i32,
    mask: u32,
    spec: &Spec,
    duration: Option<Duration>,
) -> Result<InjectReport> {
    let _lock = Target::lock(pid)?;
    let mut target = Target::open(pid)?;
    let existing = state::find(&target)?;
    // A shape without a step continues from what the target reads now.
    let current = existing
        .as_ref()
        .filter(|e| e.hooks_live)
        .map(|e| &e.data.params);
    let mut params = params_for(pid, mask, spec, duration, current)?;
    if let Some(existing) = &existing
        && existing.hooks_live
    {
        // The new program must be published before its switch: if this thread was held up
        // since it read the clocks, read them again.
        for _ in 0..PUBLISH_ATTEMPTS {
            if program::switch_still_ahead(pid, spec, &params)? {
                break;
            }
            params = params_for(pid, mask, spec, duration, current)?;
        }
        update_params(&target, existing, &params)?;
        return Ok(InjectReport {
            action: InjectAction::Updated,
            stopped_for: Duration::ZERO,
            threads: 0,
            status: status_of(pid, Some(&updated(existing, &params))),
            live: None,
            all_stop_reason: None,
        });
    }
    // Code is written from here on: not into memory another process shares.
    target.check_memory_not_shared()?;
    // Decode, plan and build while the process still runs: the stop covers only the changes.
    let plan = Plan::new(&target, existing.as_ref())?;
    let _deferred = TerminationDeferred::new();
    // One thread at a time (patch/live.rs); where that cannot run, every thread at once.
    let mut reason = None;
    if live::requested() {
        match live::inject(&mut target, &plan, params.clone(), existing.is_some())? {
            Ok(report) => return Ok(report),
            Err(Fallback(why)) => {
                log::info!("pid {pid}: stopping every thread at once: {why}");
                reason = Some(why);
            }
        }
    }
    let (held, started) = hold_clear_of(&mut target, plan.hooks.values())?;
    let mut report = patch(target, &plan, params, held, started)?;
    report.all_stop_reason = reason;
    Ok(report)
}

/// Attempts at compiling a live change early enough to publish it before its switch.
const PUBLISH_ATTEMPTS: u32 = 3;

/// Attempts at finding every thread clear of the hook windows, and the pause after a miss.
const WINDOW_ATTEMPTS: u32 = 40;
const WINDOW_PAUSE: Duration = Duration::from_micros(250);

/// Stops every thread at a moment when none is executing inside a hook window and no signal
/// handler is running on top of code interrupted inside one; otherwise lets them all go and
/// tries again a moment later (bounded), since both last only nanoseconds to microseconds.
fn hold_clear_of(target: &mut Target, hooks: &[HookPlan]) -> Result<(StoppedProcess, Instant)> {
    let inside = |ip: u64| hooks.iter().any(|h| h.contains_strictly(ip));
    let first = Instant::now();
    let mut why = String::new();
    for attempt in 0..WINDOW_ATTEMPTS {
        let held = StoppedProcess::stop(target.pid)?;
        let started = held.held_since();
        target.refresh_maps()?;
        // The plan was made from the vDSO read before stopping: a program exec'd meanwhile has
        // another one.
        let vdso_now = target.maps.iter().find(|m| m.path == "[vdso]");
        if vdso_now.is_none_or(|m| {
            (m.start, (m.end - m.start) as usize) != (target.vdso.base(), target.vdso.len())
        }) {
            return Err(Error::Execed { pid: target.pid });
        }
        match held.window_in_use(&target.mem, &target.maps, inside)? {
            None => return Ok((held, started)),
            Some(reason) => {
                log::debug!("pid {}: attempt {attempt}: {reason}", target.pid);
                why = reason;
            }
        }
        drop(held);
        std::thread::sleep(WINDOW_PAUSE * (attempt + 1).min(8));
    }
    Err(unsafe_to_patch(
        target.pid,
        "vDSO entry",
        format!(
            "{why} — still so after {WINDOW_ATTEMPTS} attempts in {} ms; retry",
            first.elapsed().as_millis()
        ),
    ))
}

/// Injects into `pid`, a single-threaded process that the calling thread already traces and
/// that sits in a ptrace-stop from which a single step runs user code: a signal-delivery,
/// interrupt or syscall-exit stop. Not an event stop *inside* a syscall (PTRACE_EVENT_EXEC,
/// _FORK): resuming from there, the kernel stores that syscall's return value over the
/// injected syscall number — `timeskew run` first moves from the exec event to the
/// syscall-exit stop (PTRACE_SYSCALL), where no instruction of the new program has run yet.
/// The process is left stopped and traced.
pub fn inject_traced(pid: i32, skew: &Skew) -> Result<InjectReport> {
    skew.validate()?;
    let _lock = Target::lock(pid)?;
    let target = Target::open(pid)?;
    let plan = Plan::new(&target, state::find(&target)?.as_ref())?;
    let started = Instant::now();
    let held = StoppedProcess::adopt(pid);
    let inside = |ip: u64| plan.hooks.values().iter().any(|h| h.contains_strictly(ip));
    if let Some(reason) = held.window_in_use(&target.mem, &target.maps, inside)? {
        return Err(unsafe_to_patch(pid, "vDSO entry", reason));
    }
    let params = params_for(
        pid,
        skew.clocks().mask(),
        &skew.spec(),
        skew.duration(),
        None,
    )?;
    patch(target, &plan, params, held, started)
}

/// The data-page parameters for `skew` in `pid`, continuing from `current` (the parameters the
/// target holds, if injected), with the deadlines of `--duration`.
fn params_for(
    pid: i32,
    mask: u32,
    spec: &Spec,
    duration: Option<Duration>,
    current: Option<&Params>,
) -> Result<Params> {
    let mut params = program::compile(pid, mask, spec, current)?;
    // Before anything is changed: no selected clock may read negative in the target.
    clocks::check_not_negative(pid, &params)?;
    if let Some(duration) = duration {
        params.expires_ns = clocks::expiries(pid, params.mask, duration)?;
    }
    Ok(params)
}

/// What `existing` holds after [`update_params`] wrote `params`: the report comes from what was
/// written, without reading the target again.
fn updated(existing: &Existing, params: &Params) -> Existing {
    let mut now = existing.clone();
    now.data.generation = existing.data.generation.wrapping_add(1);
    now.data.params = params.clone();
    now
}

/// Live update: the data page only, no ptrace stop.
fn update_params(target: &Target, existing: &Existing, params: &Params) -> Result<()> {
    write_slot(
        &target.mem,
        existing.data_addr(),
        existing.data.generation,
        params,
    )
}

/// A [`Skew`] as it travels to a follower (`timeskew inject` on a followed process): each part
/// in plain numbers, as one line of words (`-` for a part not set). Not JSON: the library has no
/// JSON dependency of its own, and the skew's JSON is for people (it does not parse back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault(Skew);

/// The parts of a [`Fault`], in the order they travel.
const FAULT_WORDS: usize = 11;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Fault {
    pub(crate) fn new(skew: &Skew) -> Fault {
        Fault(*skew)
    }

    pub(crate) fn skew(self) -> Skew {
        self.0
    }

    /// `offset_ns at_ns clock_mask duration_ns rate_ppb slew_ppb suspend_ns strobe_ns
    /// strobe_period_ns resolution_ns slow_reads`.
    pub(crate) fn to_words(self) -> String {
        fn word<T: ToString>(v: Option<T>) -> String {
            v.map_or_else(|| "-".into(), |v| v.to_string())
        }
        let skew = &self.0;
        let offset = match skew.step() {
            Some(crate::skew::Step::Offset(o)) => Some(o.as_nanos()),
            _ => None,
        };
        [
            word(offset),
            word(skew.at_time().map(|a| a.as_nanos())),
            skew.clocks().mask().to_string(),
            word(skew.duration().map(nanos)),
            word(skew.speed().map(|r| r.as_ppb())),
            word(skew.slew().map(|s| s.as_ppb())),
            word(skew.suspend().map(nanos)),
            word(skew.strobe().map(|(o, _)| o.as_nanos())),
            word(skew.strobe().map(|(_, p)| nanos(p))),
            word(skew.resolution().map(nanos)),
            u8::from(skew.slow_reads()).to_string(),
        ]
        .join(" ")
    }

    /// The inverse of [`to_words`](Fault::to_words); `None` for words no skew writes (a peer of
    /// another version).
    pub(crate) fn from_words(text: &str) -> Option<Fault> {
        use crate::skew::{At, ClockSet, Offset, Rate, SlewRate};
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() != FAULT_WORDS {
            return None;
        }
        // A part: `Ok(None)` when not set, `Err` when it does not parse.
        fn part<T: std::str::FromStr>(w: &str) -> Result<Option<T>, ()> {
            if w == "-" {
                return Ok(None);
            }
            w.parse().map(Some).map_err(|_| ())
        }
        let ns = |w: &str| part::<u64>(w).map(|v| v.map(Duration::from_nanos));
        let offset = part::<i64>(words[0]).ok()?;
        let at = part::<i64>(words[1]).ok()?;
        let mut skew = match (offset, at) {
            (Some(o), _) => Skew::new(Offset::from_nanos(o)),
            (None, Some(a)) => Skew::at(At::from_nanos(a)?),
            (None, None) => Skew::as_is(),
        };
        skew = skew.with_clocks(ClockSet::from_mask(words[2].parse().ok()?)?);
        if let Some(ppb) = part::<u64>(words[4]).ok()? {
            skew = skew.with_rate(Rate::from_ppb(ppb)?);
        }
        if let Some(ppb) = part::<u32>(words[5]).ok()? {
            skew = skew.with_slew(SlewRate::from_ppb(ppb)?);
        }
        if let Some(d) = ns(words[6]).ok()? {
            skew = skew.with_suspend(d);
        }
        match (part::<i64>(words[7]).ok()?, ns(words[8]).ok()?) {
            (Some(o), Some(p)) => skew = skew.with_strobe(Offset::from_nanos(o), p),
            (None, None) => {}
            _ => return None,
        }
        if let Some(d) = ns(words[9]).ok()? {
            skew = skew.with_resolution(d);
        }
        match words[10] {
            "1" => skew = skew.with_slow_reads(),
            "0" => {}
            _ => return None,
        }
        if let Some(d) = ns(words[3]).ok()? {
            skew = skew.for_duration(d);
        }
        Some(Fault(skew))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part of a skew reaches a follower unchanged.
    #[test]
    fn a_fault_travels_whole() {
        let skews = [
            Skew::new("-600s".parse().unwrap()),
            Skew::new("1h".parse().unwrap())
                .with_clock(crate::skew::Clock::Monotonic)
                .with_clock(crate::skew::Clock::Boottime)
                .for_duration(Duration::from_millis(1500)),
            Skew::at("2038-01-19T03:14:00Z".parse().unwrap()).with_rate("10".parse().unwrap()),
            Skew::new("-2s".parse().unwrap()).with_slew("500ppm".parse().unwrap()),
            Skew::as_is()
                .with_suspend(Duration::from_secs(5))
                .with_strobe("1s".parse().unwrap(), Duration::from_secs(10))
                .with_resolution(Duration::from_millis(15))
                .with_slow_reads(),
            Skew::freeze(),
        ];
        for skew in skews {
            let words = Fault::new(&skew).to_words();
            let back = Fault::from_words(&words).map(|f| f.skew());
            assert_eq!(back, Some(skew), "{words}");
        }
        for bad in [
            "",
            "- - 1",
            "- - 1 - - - - 5 - - 0",
            "x - 1 - - - - - - - 0",
        ] {
            assert_eq!(Fault::from_words(bad), None, "{bad:?}");
        }
    }
}
