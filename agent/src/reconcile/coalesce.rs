//! When a burst of changes is acted on. Pure: the caller passes `now`.
//!
//! A burst is acted on once it has been quiet for the quiet period, and never later than the
//! maximum delay after its first change. A lone burst (a hot-add after a quiet spell) uses the
//! configured `quiet_period` and `max_delay` exactly, so a single hot-add is as fast as ever.
//!
//! A scale-up is a *streak* of bursts: each begins less than `quiet_period_max` after the
//! previous change. Each reload is a window without a capture kernel (`kexec_file_load` frees
//! the old image, then reads, parses and digests the new one: seconds under TCG), and a reload
//! in the middle of a streak is outdated by the next DIMM. Within a streak:
//! - the quiet period becomes `quiet_period` plus twice the longest of the streak's last
//!   [`RECENT_GAPS`] gaps between DIMMs (capped at `quiet_period_max`): the gaps of a steady
//!   pace, even one jittering to twice their length plus `quiet_period`, no longer count as
//!   quiet, and one stalled gap long ago does not slow the end of the streak. A gap shorter
//!   than half of `quiet_period` is between the blocks of one DIMM, and does not count;
//! - the maximum delay is `max_delay_bound`: a streak is acted on when it pauses, and while it
//!   does not, once per bound;
//! - its quiet period runs from the end of a load in flight, not from before it: the load
//!   competes with the onlining it would wait for, and a gap it caused is no pause;
//! - for the same reason, the time one of the agent's loads was in flight does not count in the
//!   gap before the next change: onlining that stalls during a load does not end the streak.
//!
//! No starvation: a change is acted on at most `max_delay_bound` after it happened (the burst
//! holding it began no earlier, and no burst waits longer than that after its first change).
use std::time::{Duration, Instant};

use super::Timing;

/// How many of a streak's latest gaps set its quiet period.
pub const RECENT_GAPS: usize = 8;

/// Changes not yet acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub first: Instant,
    pub last: Instant,
    pub events: u64,
    /// The burst continues a streak (false: a lone burst).
    pub streak: bool,
}

/// The pending burst and what the streak it belongs to has shown so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coalescer {
    burst: Option<Burst>,
    /// The latest change seen, acted on or not, moved later by the time a load of ours was in
    /// flight after it: a gap counts only time without one.
    last_change: Option<Instant>,
    /// When the agent's load in flight began.
    loading: Option<Instant>,
    /// The latest gaps between two changes in the current streak (a ring, zero where unfilled).
    gaps: [Duration; RECENT_GAPS],
    /// Where the next gap goes in `gaps`.
    next_gap: usize,
}

impl Coalescer {
    /// One change at `now`: extends the pending burst or starts one.
    pub fn note(&mut self, now: Instant, timing: &Timing) {
        let since = self.last_change.map(|t| now.saturating_duration_since(t));
        self.last_change = Some(now);
        if let Some(burst) = &mut self.burst {
            let streak = burst.streak;
            burst.last = now;
            burst.events += 1;
            if let (true, Some(gap)) = (streak, since) {
                self.push_gap(gap.min(timing.quiet_period_max), timing);
            }
            return;
        }
        let streak = since.is_some_and(|gap| gap < timing.quiet_period_max);
        match since {
            Some(gap) if streak => self.push_gap(gap, timing),
            _ => (self.gaps, self.next_gap) = ([Duration::ZERO; RECENT_GAPS], 0),
        }
        self.burst = Some(Burst {
            first: now,
            last: now,
            events: 1,
            streak,
        });
    }

    fn push_gap(&mut self, gap: Duration, timing: &Timing) {
        if gap < timing.quiet_period / 2 {
            return;
        }
        self.gaps[self.next_gap] = gap;
        self.next_gap = (self.next_gap + 1) % RECENT_GAPS;
    }

    pub fn pending(&self) -> Option<Burst> {
        self.burst
    }

    pub fn pending_events(&self) -> u64 {
        self.burst.map_or(0, |b| b.events)
    }

    /// When the pending burst is to be acted on.
    pub fn due(&self, timing: &Timing) -> Option<Instant> {
        let b = self.burst?;
        let (quiet, delay) = self.limits(b.streak, timing);
        Some((b.last + quiet).min(b.first + delay))
    }

    /// The quiet period and maximum delay for a lone burst, or one that continues a streak.
    fn limits(&self, streak: bool, timing: &Timing) -> (Duration, Duration) {
        if !streak {
            return (timing.quiet_period, timing.max_delay);
        }
        let recent = self.gaps.iter().max().copied().unwrap_or_default();
        let quiet = (timing.quiet_period + recent.saturating_mul(2))
            .min(timing.quiet_period_max)
            .max(timing.quiet_period);
        (quiet, timing.max_delay_bound.max(timing.max_delay))
    }

    /// Takes the pending burst if it is due at `now`.
    pub fn take_due(&mut self, now: Instant, timing: &Timing) -> bool {
        if self.due(timing).is_some_and(|d| d <= now) {
            self.burst = None;
            true
        } else {
            false
        }
    }

    /// The agent's load began at `now`.
    pub fn load_started(&mut self, now: Instant) {
        self.loading = Some(now);
    }

    /// A load ended at `now`: a streak's pending burst is quiet only from here, and the time
    /// the load was in flight is no gap.
    pub fn load_ended(&mut self, now: Instant) {
        if let Some(burst) = self.burst.as_mut().filter(|b| b.streak) {
            burst.last = burst.last.max(now);
        }
        let began = self.loading.take().unwrap_or(now);
        if let Some(last) = self.last_change {
            self.last_change = Some(last + now.saturating_duration_since(began.max(last)));
        }
    }

    /// Drops the pending burst (it was answered another way); the streak is kept.
    pub fn clear(&mut self) {
        self.burst = None;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `events` (ms after t0) and acts on each burst when due, as the reconciler does
    /// with loads that take no time; returns the times acted on, in ms.
    fn acts(events: &[u64], timing: &Timing) -> Vec<u64> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + MS * u32::try_from(ms).unwrap();
        let mut c = Coalescer::default();
        let mut out = Vec::new();
        for &e in events {
            if let Some(d) = c.due(timing).filter(|&d| d <= at(e)) {
                assert!(c.take_due(d, timing));
                out.push(u64::try_from((d - t0).as_millis()).unwrap());
            }
            c.note(at(e), timing);
        }
        if let Some(d) = c.due(timing) {
            out.push(u64::try_from((d - t0).as_millis()).unwrap());
        }
        out
    }

    #[test]
    fn a_lone_burst_uses_the_configured_quiet_period_and_max_delay() {
        let t = Timing::default();
        assert_eq!(acts(&[0, 10, 20], &t), [270]);
        let storm: Vec<u64> = (0..100).map(|i| i * 100).collect();
        assert_eq!(acts(&storm, &t)[0], 5000);
    }

    #[test]
    fn a_steady_scale_up_is_acted_on_first_at_once_then_rarely() {
        let t = Timing::default();
        // 24 DIMMs of two blocks each, one DIMM every 500 ms.
        let events: Vec<u64> = (0..24).flat_map(|i| [i * 500, i * 500 + 20]).collect();
        let acted = acts(&events, &t);
        // The first DIMM as fast as a lone hot-add; the rest once, 1210 ms (quiet + twice the
        // longest recent gap, 480 ms) after the last block.
        assert_eq!(acted, [270, 11520 + 1210]);
        // bench-scale-up-6.1: 48 DIMMs of one block each, one every 500 ms (23.5 s, within
        // the 30 s bound): still twice, 1250 ms (quiet + 2 x 500 ms) after the last block.
        let events: Vec<u64> = (0..48).map(|i| i * 500).collect();
        assert_eq!(acts(&events, &t), [250, 23_500 + 1250]);
    }

    #[test]
    fn a_stalled_gap_long_ago_does_not_slow_the_end_of_a_streak() {
        let t = Timing::default();
        // One DIMM of four blocks every 500 ms, but one gap of 1200 ms early on: it sets the
        // quiet period (250 + 2 x 1200 ms, capped at 2 s) only until eight gaps of the pace
        // have followed it; the gaps between blocks do not count.
        let dimms = (0..4)
            .map(|i| i * 500)
            .chain((0..20).map(|i| 2700 + i * 500));
        let events: Vec<u64> = dimms.flat_map(|d| (0..4).map(move |b| d + b)).collect();
        let last = *events.last().unwrap();
        assert_eq!(acts(&events, &t), [253, last + 250 + 2 * 497]);
        // Shortly after it, the stall still counts.
        let events = [0, 500, 1000, 2200, 2700];
        assert_eq!(acts(&events, &t), [250, 2700 + 2000]);
    }

    #[test]
    fn a_streak_is_quiet_only_from_the_end_of_a_load() {
        let t = Timing::default();
        let t0 = Instant::now();
        let mut c = Coalescer::default();
        c.note(t0, &t);
        assert!(c.take_due(t0 + 250 * MS, &t));
        // A change during the load continues the streak: quiet 250 + 2 x 300 ms after it,
        // or after the load's end if that is later.
        c.note(t0 + 300 * MS, &t);
        assert_eq!(c.due(&t), Some(t0 + 1150 * MS));
        c.load_ended(t0 + 2000 * MS);
        assert_eq!(c.due(&t), Some(t0 + 2850 * MS));
        // The end of a load changes nothing for a lone burst.
        let mut lone = Coalescer::default();
        lone.note(t0, &t);
        lone.load_ended(t0 + 100 * MS);
        assert_eq!(lone.due(&t), Some(t0 + 250 * MS));
    }

    #[test]
    fn the_time_of_our_load_is_no_gap() {
        let t = Timing::default();
        let t0 = Instant::now();
        let at = |ms: u32| t0 + MS * ms;
        let mut c = Coalescer::default();
        c.note(t0, &t);
        assert!(c.take_due(at(250), &t));
        c.load_started(at(250));
        c.load_ended(at(5000));
        // 5.2 s after the last change, 0.45 s of it without a load: the streak goes on, its
        // quiet period 250 + 2 x 450 ms.
        c.note(at(5200), &t);
        assert!(c.pending().is_some_and(|b| b.streak));
        assert_eq!(c.due(&t), Some(at(5200 + 250 + 2 * 450)));
        // The same gap without a load ends a streak: the next burst is a lone one.
        let mut idle = Coalescer::default();
        idle.note(t0, &t);
        assert!(idle.take_due(at(250), &t));
        idle.note(at(5200), &t);
        assert!(idle.pending().is_some_and(|b| !b.streak));
        assert_eq!(idle.due(&t), Some(at(5450)));
    }

    #[test]
    fn a_quiet_spell_ends_the_streak() {
        let t = Timing::default();
        let acted = acts(&[0, 500, 1000, 10_000], &t);
        assert_eq!(acted.last(), Some(&10_250));
    }

    proptest! {
        #[test]
        fn every_change_is_acted_on_within_the_bound(
            gaps in prop::collection::vec(0u64..2500, 1..400),
        ) {
            let t = Timing::default();
            let events: Vec<u64> = gaps.iter().scan(0, |s, g| { *s += g; Some(*s) }).collect();
            let acted = acts(&events, &t);
            let bound = u64::try_from(t.max_delay_bound.as_millis()).unwrap();
            for &e in &events {
                let next = acted.iter().find(|&&a| a >= e);
                prop_assert!(next.is_some_and(|&a| a <= e + bound), "change at {} starved", e);
            }
            // Never more acts than bursts, never two at once.
            prop_assert!(acted.len() <= events.len());
            for pair in acted.windows(2) {
                prop_assert!(pair[0] < pair[1]);
            }
        }

        #[test]
        fn a_jittering_scale_up_shorter_than_the_bound_is_acted_on_twice(
            dimms in prop::collection::vec((400u64..900, 0u64..50), 2..30),
        ) {
            // One DIMM every 400-900 ms, two blocks 0-50 ms apart (gaps between DIMMs jittering
            // from 350 to 900 ms); under 27 s in all, within the 30 s bound.
            let t = Timing::default();
            let events: Vec<u64> = dimms
                .iter()
                .scan(0, |s, &(pace, block)| { *s += pace; Some([*s, *s + block]) })
                .flatten()
                .collect();
            let acted = acts(&events, &t);
            // The first DIMM as a lone hot-add, then the whole rest once it stops.
            prop_assert_eq!(acted.len(), 2, "acted at {:?}", acted);
            prop_assert_eq!(acted[0], events[1] + 250);
            let last = *events.last().unwrap();
            prop_assert!(acted[1] > last && acted[1] <= last + 2000);
        }

        #[test]
        fn a_lone_burst_is_acted_on_as_before(
            gaps in prop::collection::vec(0u64..250, 1..200),
        ) {
            let t = Timing::default();
            let events: Vec<u64> = gaps.iter().scan(0, |s, g| { *s += g; Some(*s) }).collect();
            let end = 5000;
            let events: Vec<u64> = events.into_iter().filter(|&e| e < end).collect();
            let acted = acts(&events, &t);
            let due = (events.last().unwrap() + 250).min(events[0] + 5000);
            prop_assert_eq!(acted, vec![due]);
        }

        #[test]
        fn a_streak_acts_no_more_often_than_the_old_rule(
            gaps in prop::collection::vec(0u64..2500, 1..300),
        ) {
            let t = Timing::default();
            let old = Timing {
                quiet_period_max: t.quiet_period,
                max_delay_bound: t.max_delay,
                ..t
            };
            let events: Vec<u64> = gaps.iter().scan(0, |s, g| { *s += g; Some(*s) }).collect();
            prop_assert!(acts(&events, &t).len() <= acts(&events, &old).len());
        }
    }
}
