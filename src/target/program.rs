//! A fault as a clock program in the target's clock domain: each selected clock anchored at its
//! own reading a moment from now, starting from what it reads then (a shape without a step) or
//! from the step's value, and the shape's segments after that.

use crate::error::{Error, Result};
use crate::fake_clock::data_page::{
    MAX_CLOCK_ID, MAX_RATE, MAX_SEGMENTS, Params, Program, RATE_ONE, RATE_SHIFT, Segment, Strobe,
};
use crate::skew::Clock;
use crate::target::clocks;

/// How far ahead of "now" a new program takes over. The tool publishes it within
/// microseconds; until then readers keep the old program, and up to the switch both agree, so
/// a clock never steps backwards at a live change unless the tool is descheduled for longer
/// than this between reading the clocks and publishing (a few scheduler ticks on a loaded
/// machine). The tool checks it still has `PUBLISH_GUARD_NS` of it left right before
/// publishing, and compiles again if not. Invisible to users: the fault starts 50 ms after the
/// command.
pub(crate) const SWITCH_MARGIN_NS: i64 = 50_000_000;

/// How far back the first piece of a program reaches (before it, the clock reads as at its
/// start): a reader preempted between taking its real reading and reading the parameters for
/// longer than this gets a clock that stood still meanwhile.
const HISTORY_NS: i64 = 3_600_000_000_000;

/// How much of the margin must be left when the program is published; else it is compiled
/// again (`switch_still_ahead`).
const PUBLISH_GUARD_NS: i64 = 20_000_000;

/// Where the clock steps to when the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Real time plus this offset (ns).
    Offset(i64),
    /// This wall-clock time (ns since the epoch) for every selected clock.
    At(i64),
}

/// A fault in the program's own terms: the shape after the optional step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    pub step: Option<Step>,
    /// Run at this rate (fixed point, `RATE_SHIFT` bits); 0 freezes.
    pub rate: Option<u64>,
    /// Reach the step gradually at 1 ± this deviation (fixed point) instead of jumping.
    pub slew: Option<u64>,
    /// Stand still this long (ns), then run on.
    pub suspend_ns: Option<u64>,
    /// Alternate between the value and the value plus `.0` ns every `.1` ns.
    pub strobe: Option<(i64, u64)>,
    pub resolution_ns: u64,
    pub slow_reads: bool,
}

impl Spec {
    /// A step (without a slew towards it) jumps anyway: it takes over when published.
    pub(crate) fn takes_over_at_once(&self) -> bool {
        self.step.is_some() && self.slew.is_none()
    }

    /// A plain step by a constant offset: the constant fast path, no program.
    pub(crate) fn is_constant(&self) -> bool {
        matches!(self.step, None | Some(Step::Offset(_)))
            && self.rate.is_none()
            && self.slew.is_none()
            && self.suspend_ns.is_none()
            && self.strobe.is_none()
    }
}

/// The parameters that make `mask`'s clocks in `pid` follow `spec`, continuing from `current`
/// (what the target holds now, if anything) where the shape has no step of its own.
pub(crate) fn compile(
    pid: i32,
    mask: u32,
    spec: &Spec,
    current: Option<&Params>,
) -> Result<Params> {
    let now = clocks::now(pid, mask)?;
    let mut params = Params {
        mask,
        resolution_ns: spec.resolution_ns,
        slow_reads: spec.slow_reads,
        ..Params::default()
    };
    // No step: a constant offset stays what it is (a program is continued below).
    let keeps_constant = spec.step.is_some() || current.is_none_or(|c| c.program.is_none());
    if spec.is_constant() && keeps_constant {
        for id in selected(mask) {
            params.offsets_ns[id] = match (spec.step, current) {
                (Some(Step::Offset(ns)), _) => ns,
                (_, Some(c)) if c.reading(id, now[id]).is_some() => c.offsets_ns[id],
                _ => 0,
            }
            .saturating_add(rounding_bias(id, spec, current));
        }
        return Ok(params);
    }
    let mut program = Program {
        segments: Vec::with_capacity(MAX_SEGMENTS),
        strobe: spec.strobe.map(|(delta_ns, period_ns)| Strobe {
            period_ns,
            delta_ns,
        }),
        anchors_ns: [0; MAX_CLOCK_ID + 1],
        bases_ns: [0; MAX_CLOCK_ID + 1],
    };
    let first = selected(mask).next().unwrap_or(0);
    // A step is a jump anyway: it takes over as soon as it is published, so that a caller
    // (`ManualClock`) can rely on it when the call returns. A shape that continues from the
    // current value takes over a moment later, once it is surely published.
    let margin = if spec.takes_over_at_once() {
        0
    } else {
        SWITCH_MARGIN_NS
    };
    let live = |id: usize, at: i64| current.filter(|c| c.reading(id, at).is_some());
    let old = live(first, now[first]).and_then(|c| c.program.as_ref());
    // A change whose switch is still well ahead has not been seen by anyone: a new change
    // replaces it at the same switch instead of queueing behind it (rapid changes would
    // otherwise pile up pieces faster than a program can hold them). One that is about to take
    // over (or has) is queued behind.
    let pending = old
        .map(|o| o.anchors_ns[first])
        .filter(|&a| a > now[first].saturating_add(PUBLISH_GUARD_NS));
    let anchor_first = match pending {
        Some(switch) if margin > 0 => switch,
        _ => now[first].saturating_add(margin),
    };
    // Every clock advances at real speed, so the new anchors lie the same distance past the old
    // ones: the old program's pieces carry over exactly, and a reader that took its real
    // reading before the switch (and was preempted before reading the parameters) gets what
    // the old program gives for it.
    let shift = old.map(|o| anchor_first.wrapping_sub(o.anchors_ns[first]));
    let new_pieces = if spec.slew.is_some() || spec.suspend_ns.is_some() {
        2
    } else {
        1
    };
    match (old, shift) {
        (Some(o), Some(shift)) => {
            let moved = o.moved_at(shift);
            let translate = |s: &Segment| Segment {
                start_ns: s.start_ns.wrapping_sub(shift),
                value_ns: s.value_ns.wrapping_sub(moved),
                rate: s.rate,
            };
            let before: Vec<Segment> = o
                .segments
                .iter()
                .map(translate)
                .filter(|s| s.start_ns < 0)
                .collect();
            // The most recent pieces, the one in force just before the switch last.
            let keep = (MAX_SEGMENTS - new_pieces).max(1);
            let from = before.len().saturating_sub(keep);
            if before.is_empty() {
                // The old program's segment 0 (in force before all its starts): first again
                // here, it covers everything before the switch. The fake picks the last
                // segment whose start is reached, so the new pieces win from the switch on.
                program
                    .segments
                    .push(translate(o.segment_at(shift.wrapping_sub(1))));
            } else {
                program.segments.extend_from_slice(&before[from..]);
            }
        }
        // A constant offset (or real time) runs at real speed, as far back as any reader
        // could have taken its real reading.
        _ => program.segments.push(Segment {
            start_ns: -HISTORY_NS,
            value_ns: -HISTORY_NS,
            rate: RATE_ONE,
        }),
    }
    for id in selected(mask) {
        let carried = match (old, shift) {
            (Some(o), Some(shift)) if live(id, now[id]).is_some() => {
                Some(o.anchors_ns[id].wrapping_add(shift))
            }
            _ => None,
        };
        let anchor = carried.unwrap_or(now[id].saturating_add(margin));
        // What the clock reads at the switch under the current parameters, before rounding
        // and strobe (the new program rounds and strobes on its own).
        let reads = match live(id, anchor) {
            Some(c) => match &c.program {
                Some(o) => {
                    o.bases_ns[id].wrapping_add(o.moved_at(anchor.wrapping_sub(o.anchors_ns[id])))
                }
                None => anchor.saturating_add(c.offsets_ns[id]),
            },
            None => anchor,
        };
        program.anchors_ns[id] = anchor;
        program.bases_ns[id] = match (spec.step, spec.slew) {
            // A slew starts from the current value and moves towards the step.
            (_, Some(_)) | (None, _) => reads,
            (Some(Step::Offset(ns)), None) => anchor.saturating_add(ns),
            (Some(Step::At(wall)), None) => wall,
        }
        .saturating_add(rounding_bias(id, spec, current));
        params.offsets_ns[id] = program.bases_ns[id].saturating_sub(anchor);
    }
    let rate = spec.rate.unwrap_or(RATE_ONE).min(MAX_RATE);
    if let Some(deviation) = spec.slew {
        // Every selected clock moves by the distance the first one has to go.
        let anchor = program.anchors_ns[first];
        let target = match spec.step {
            Some(Step::Offset(ns)) => anchor.saturating_add(ns),
            Some(Step::At(wall)) => wall,
            None => program.bases_ns[first],
        };
        let distance = target.saturating_sub(program.bases_ns[first]);
        push_slew(&mut program, distance, deviation, pid)?;
    } else if let Some(suspend) = spec.suspend_ns {
        let suspend = i64::try_from(suspend).unwrap_or(i64::MAX);
        program.segments.push(Segment {
            start_ns: 0,
            value_ns: 0,
            rate: 0,
        });
        program.segments.push(Segment {
            start_ns: suspend,
            value_ns: 0,
            rate,
        });
    } else {
        program.segments.push(Segment {
            start_ns: 0,
            value_ns: 0,
            rate,
        });
    }
    debug_assert!(program.segments.len() <= MAX_SEGMENTS);
    params.program = Some(program);
    Ok(params)
}

/// Whether `params`' switch still lies far enough ahead to publish them now (always for a
/// constant offset or a step, which take over at once).
pub(crate) fn switch_still_ahead(pid: i32, spec: &Spec, params: &Params) -> Result<bool> {
    let Some(program) = &params.program else {
        return Ok(true);
    };
    if spec.takes_over_at_once() {
        return Ok(true);
    }
    let Some(first) = selected(params.mask).next() else {
        return Ok(true);
    };
    let now = clocks::now(pid, 1 << first)?;
    Ok(now[first].saturating_add(PUBLISH_GUARD_NS) < program.anchors_ns[first])
}

/// The segments of a slew: at 1 ± `deviation` until `distance` is made up, then at 1.
fn push_slew(program: &mut Program, distance: i64, deviation: u64, pid: i32) -> Result<()> {
    if deviation == 0 || deviation > RATE_ONE {
        return Err(Error::Unsupported {
            pid,
            reason: "a slew rate must be above 0 and at most 100%".into(),
        });
    }
    let rate = if distance >= 0 {
        RATE_ONE + deviation
    } else {
        RATE_ONE - deviation
    };
    // Time to make up `distance` at `deviation`: |distance| / deviation, in ns.
    let span = ((distance.unsigned_abs() as u128) << RATE_SHIFT) / deviation as u128;
    let span = i64::try_from(span).unwrap_or(i64::MAX);
    let slewing = Segment {
        start_ns: 0,
        value_ns: 0,
        rate,
    };
    program.segments.push(slewing);
    // Exactly where the slewing segment gets to: the next one continues from there.
    let arrived = Program {
        segments: vec![slewing],
        strobe: None,
        anchors_ns: program.anchors_ns,
        bases_ns: program.bases_ns,
    }
    .shape_at(span);
    program.segments.push(Segment {
        start_ns: span,
        value_ns: arrived,
        rate: RATE_ONE,
    });
    Ok(())
}

/// What a monotonic-family clock `id` gains when `spec` starts rounding its readings: rounding
/// down would otherwise take it back below what it read a moment before (by up to the
/// resolution); one resolution less a nanosecond ahead, `floor` becomes `ceil` at the switch.
/// The realtime family rounds down as asked: it may step back, as an administrator's clock
/// change may.
fn rounding_bias(id: usize, spec: &Spec, current: Option<&Params>) -> i64 {
    let monotonic = Clock::from_id(id as u32).is_some_and(|c| c.affects_timers());
    let newly = current.is_none_or(|c| c.resolution_ns != spec.resolution_ns);
    if monotonic && newly && spec.resolution_ns > 1 {
        i64::try_from(spec.resolution_ns - 1).unwrap_or(i64::MAX)
    } else {
        0
    }
}

fn selected(mask: u32) -> impl Iterator<Item = usize> {
    (0..=MAX_CLOCK_ID).filter(move |id| mask & (1 << id) != 0)
}

impl crate::skew::Skew {
    /// The fault in the program's terms.
    pub(crate) fn spec(&self) -> Spec {
        use crate::skew::Step as UserStep;
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Spec {
            step: self.step().map(|step| match step {
                UserStep::Offset(o) => Step::Offset(o.as_nanos()),
                UserStep::At(at) => Step::At(at.as_nanos()),
            }),
            rate: self.speed().map(|r| fixed_point(r.as_ppb())),
            slew: self.slew().map(|s| fixed_point(u64::from(s.as_ppb()))),
            suspend_ns: self.suspend().map(nanos),
            strobe: self.strobe().map(|(o, p)| (o.as_nanos(), nanos(p))),
            resolution_ns: self.resolution().map_or(0, nanos),
            slow_reads: self.slow_reads(),
        }
    }
}

/// A factor in parts per billion as the program's fixed point (`RATE_SHIFT` fraction bits),
/// rounded to nearest.
fn fixed_point(ppb: u64) -> u64 {
    let fixed = ((u128::from(ppb) << RATE_SHIFT) + 500_000_000) / 1_000_000_000;
    u64::try_from(fixed).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const REALTIME: u32 = 1;
    const BOTH: u32 = 0b11; // realtime and monotonic

    fn me() -> i32 {
        std::process::id() as i32
    }

    fn program(p: &Params) -> &Program {
        p.program.as_ref().expect("a program")
    }

    fn constant(offset: i64, mask: u32) -> Params {
        compile(
            me(),
            mask,
            &Spec {
                step: Some(Step::Offset(offset)),
                ..Spec::default()
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_plain_offset_is_the_constant_fast_path() {
        let p = constant(-600 * S, BOTH);
        assert!(p.program.is_none());
        assert_eq!(p.offsets_ns[0], -600 * S);
        assert_eq!(p.offsets_ns[1], -600 * S);
        assert_eq!(p.reading(0, 1_000 * S), Some(400 * S));
    }

    #[test]
    fn a_rate_continues_from_what_the_clock_reads_at_the_switch() {
        let old = constant(3_600 * S, BOTH);
        let spec = Spec {
            rate: Some(2 * RATE_ONE),
            ..Spec::default()
        };
        let new = compile(me(), BOTH, &spec, Some(&old)).unwrap();
        for id in [0, 1] {
            let anchor = program(&new).anchors_ns[id];
            // Old and new agree at the switch and before it (the slope then is the old one).
            assert_eq!(new.reading(id, anchor), old.reading(id, anchor));
            assert_eq!(new.reading(id, anchor - S), old.reading(id, anchor - S));
            // Then the clock gains a second every second.
            assert_eq!(
                new.reading(id, anchor + 10 * S),
                Some(anchor + 3_600 * S + 20 * S)
            );
        }
    }

    fn past_the_switch() {
        std::thread::sleep(std::time::Duration::from_nanos(
            SWITCH_MARGIN_NS as u64 + 5_000_000,
        ));
    }

    #[test]
    fn freezing_a_rate_keeps_the_value_and_never_goes_back() {
        let fast = compile(
            me(),
            REALTIME,
            &Spec {
                rate: Some(2 * RATE_ONE),
                ..Spec::default()
            },
            None,
        )
        .unwrap();
        past_the_switch();
        let frozen = compile(
            me(),
            REALTIME,
            &Spec {
                rate: Some(0),
                ..Spec::default()
            },
            Some(&fast),
        )
        .unwrap();
        let anchor = program(&frozen).anchors_ns[0];
        let fast_anchor = program(&fast).anchors_ns[0];
        assert!(fast_anchor < anchor);
        let at_switch = frozen.reading(0, anchor).unwrap();
        assert_eq!(Some(at_switch), fast.reading(0, anchor));
        // Before its switch the new program gives what the old one gives, on both sides of the
        // old switch …
        for r in [
            fast_anchor - S,
            fast_anchor,
            (fast_anchor + anchor) / 2,
            anchor - 1,
        ] {
            assert_eq!(frozen.reading(0, r), fast.reading(0, r), "at {r}");
        }
        // … and after it stands still.
        assert_eq!(frozen.reading(0, anchor + 100 * S), Some(at_switch));
    }

    #[test]
    fn a_change_before_the_last_one_took_over_replaces_it() {
        let spec = |rate| Spec {
            rate: Some(rate),
            ..Spec::default()
        };
        let a = compile(me(), BOTH, &spec(2 * RATE_ONE), None).unwrap();
        let b = compile(me(), BOTH, &spec(0), Some(&a)).unwrap();
        for id in [0, 1] {
            let switch = program(&a).anchors_ns[id];
            // Same switch; before it real time (as under `a`), after it frozen (not doubled).
            assert_eq!(program(&b).anchors_ns[id], switch);
            assert_eq!(b.reading(id, switch - S), a.reading(id, switch - S));
            assert_eq!(b.reading(id, switch + S), Some(switch));
        }
        assert!(program(&b).segments.len() <= MAX_SEGMENTS);
    }

    #[test]
    fn suspend_stands_still_then_runs_on_behind() {
        let spec = Spec {
            suspend_ns: Some(10 * S as u64),
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, None).unwrap();
        let anchor = program(&p).anchors_ns[0];
        assert_eq!(p.reading(0, anchor + 5 * S), Some(anchor));
        assert_eq!(p.reading(0, anchor + 10 * S), Some(anchor));
        assert_eq!(p.reading(0, anchor + 25 * S), Some(anchor + 15 * S));
    }

    #[test]
    fn a_suspend_can_start_from_a_step() {
        let spec = Spec {
            step: Some(Step::Offset(-60 * S)),
            suspend_ns: Some(S as u64),
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, None).unwrap();
        let anchor = program(&p).anchors_ns[0];
        assert_eq!(p.reading(0, anchor + S / 2), Some(anchor - 60 * S));
        assert_eq!(p.reading(0, anchor + 3 * S), Some(anchor - 58 * S));
    }

    #[test]
    fn a_slew_reaches_the_offset_at_the_given_rate_and_then_runs_at_one() {
        let old = constant(0, REALTIME);
        let spec = Spec {
            step: Some(Step::Offset(S)),
            slew: Some(RATE_ONE / 2_000), // 500 ppm
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, Some(&old)).unwrap();
        let prog = program(&p);
        let anchor = prog.anchors_ns[0];
        // No jump at the start.
        assert_eq!(p.reading(0, anchor), Some(anchor));
        // 1 s at 500 ppm takes 2000 s; half-way, half the distance.
        let arrive = prog.segments.last().unwrap().start_ns;
        assert!((arrive - 2_000 * S).abs() <= 1, "{arrive}");
        let half = p.reading(0, anchor + 1_000 * S).unwrap() - (anchor + 1_000 * S);
        assert!((half - S / 2).abs() <= 1, "{half}");
        // After arriving: real + 1 s exactly (within the fixed point), at rate 1.
        for later in [arrive, arrive + 1, arrive + 3_600 * S] {
            let off = p.reading(0, anchor + later).unwrap() - (anchor + later);
            assert!((off - S).abs() <= 1, "{later}: {off}");
        }
    }

    #[test]
    fn a_slew_back_runs_slow() {
        let old = constant(10 * S, REALTIME);
        let spec = Spec {
            step: Some(Step::Offset(0)),
            slew: Some(RATE_ONE / 20),
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, Some(&old)).unwrap();
        let prog = program(&p);
        let anchor = prog.anchors_ns[0];
        assert_eq!(p.reading(0, anchor), Some(anchor + 10 * S));
        assert_eq!(prog.segments[1].rate, RATE_ONE - RATE_ONE / 20);
        let arrive = prog.segments.last().unwrap().start_ns;
        assert!((arrive - 200 * S).abs() <= 1, "{arrive}");
        let off = p.reading(0, anchor + 300 * S).unwrap() - (anchor + 300 * S);
        assert!(off.abs() <= 1, "{off}");
    }

    #[test]
    fn at_steps_every_selected_clock_to_the_date() {
        let wall = 2_147_483_640 * S; // 2038-01-19T03:14:00Z
        let spec = Spec {
            step: Some(Step::At(wall)),
            rate: Some(RATE_ONE),
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, None).unwrap();
        let anchor = program(&p).anchors_ns[0];
        assert_eq!(p.reading(0, anchor), Some(wall));
        assert_eq!(p.reading(0, anchor + 9 * S), Some(wall + 9 * S));
    }

    #[test]
    fn a_strobe_flips_every_period() {
        let spec = Spec {
            strobe: Some((5 * S, S as u64 / 10)),
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, None).unwrap();
        let anchor = program(&p).anchors_ns[0];
        let off = |e: i64| p.reading(0, anchor + e).unwrap() - (anchor + e);
        assert_eq!(off(S / 20), 0);
        assert_eq!(off(S / 10 + 1), 5 * S);
        assert_eq!(off(S / 5 + 1), 0);
        assert_eq!(p.lowest_offset(0), 0);
    }

    #[test]
    fn rates_above_the_maximum_are_capped() {
        let spec = Spec {
            rate: Some(u64::MAX),
            ..Spec::default()
        };
        let p = compile(me(), REALTIME, &spec, None).unwrap();
        assert_eq!(program(&p).segments.last().unwrap().rate, MAX_RATE);
    }

    #[test]
    fn a_chain_of_live_changes_keeps_what_each_program_gave_before_its_switch() {
        let spec = |rate| Spec {
            rate: Some(rate),
            ..Spec::default()
        };
        let a = compile(me(), BOTH, &spec(2 * RATE_ONE), None).unwrap();
        past_the_switch();
        let b = compile(me(), BOTH, &spec(0), Some(&a)).unwrap();
        past_the_switch();
        let c = compile(me(), BOTH, &spec(RATE_ONE / 2), Some(&b)).unwrap();
        for id in [0, 1] {
            let (aa, ba, ca) = (
                program(&a).anchors_ns[id],
                program(&b).anchors_ns[id],
                program(&c).anchors_ns[id],
            );
            assert!(aa < ba && ba < ca);
            // A reader whose real reading predates a switch gets what was in force then.
            for r in [aa, (aa + ba) / 2, ba, (ba + ca) / 2, ca] {
                let history = if r < ba {
                    a.reading(id, r)
                } else {
                    b.reading(id, r)
                };
                assert_eq!(c.reading(id, r), history, "clock {id} at {r}");
            }
            // And the new shape from its own switch on.
            assert_eq!(
                c.reading(id, ca + 2 * S),
                Some(c.reading(id, ca).unwrap() + S)
            );
        }
    }
}
