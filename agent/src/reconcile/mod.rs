//! The reconcile state machine: events, timer ticks, header checks and load results in,
//! actions out. Pure: no clock is read and nothing is touched here; the daemon passes `now`,
//! performs the actions and feeds their results back as inputs.
//!
//! One action is in flight at a time (a `Verify` or a load). A burst of changes is coalesced
//! (`coalesce`): the agent acts once the burst has been quiet for `quiet_period`, and never
//! later than `max_delay` after its first event; within a streak of bursts (a scale-up) the
//! quiet period grows up to `quiet_period_max` and the max delay is `max_delay_bound`.
use std::{
    fmt,
    time::{Duration, Instant},
};

pub mod coalesce;
pub mod header;

use self::coalesce::Coalescer;
use crate::model::{
    events::Event, header::HeaderStatus, load::LoadOutcome, mode::Mode, units::bytes,
};

/// How long another loader's crash load may hold back checks: far longer than any load takes,
/// short enough that a lost exit record does not stop the agent for good.
pub const FOREIGN_LOAD_PATIENCE: Duration = Duration::from_secs(60);

/// Timing knobs (`--quiet-period`, `--max-delay`) and the retry backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Act once no change has been seen for this long.
    pub quiet_period: Duration,
    /// ... but never later than this after the first change of a burst.
    pub max_delay: Duration,
    /// Within a streak of bursts, the quiet period grows by twice its longest recent gap, up to this;
    /// a burst that begins sooner than this after the previous change continues the streak.
    pub quiet_period_max: Duration,
    /// Within a streak, the maximum delay: no change waits longer.
    pub max_delay_bound: Duration,
    /// Wait before the first retry of a failed reload; doubles per failure.
    pub backoff_base: Duration,
    /// Upper bound of the retry wait.
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            quiet_period: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            quiet_period_max: Duration::from_secs(2),
            max_delay_bound: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl Timing {
    /// The wait before retry number `failures` (1 = after the first failure).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }
}

/// How far a stale header is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Staleness {
    /// System RAM the header does not list (would be missing from the dump).
    pub missing_bytes: u64,
    /// Header ranges that are no longer System RAM (reading them can hang the dump).
    pub excess_bytes: u64,
    /// Online CPUs without a `PT_NOTE` (their registers would be lost).
    pub missing_cpu_notes: u32,
    /// Of the missing bytes, those no reload through the node's loader lists.
    pub beyond_reload_bytes: u64,
}

impl Staleness {
    /// Whether a reload can make the header any better: it is off by more than the RAM no
    /// reload through the node's loader lists.
    pub fn reload_can_fix(&self) -> bool {
        self.missing_bytes > self.beyond_reload_bytes
            || self.excess_bytes > 0
            || self.missing_cpu_notes > 0
    }
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} missing, {} excess",
            bytes(self.missing_bytes),
            bytes(self.excess_bytes)
        )?;
        if self.beyond_reload_bytes > 0 {
            write!(
                f,
                ", {} of it beyond any reload",
                bytes(self.beyond_reload_bytes)
            )?;
        }
        match self.missing_cpu_notes {
            0 => Ok(()),
            n => write!(f, ", {n} online CPU(s) without a note"),
        }
    }
}

/// What the loaded header says compared with the RAM the kernel has now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderState {
    /// The loaded header lists exactly the expected RAM.
    Fresh,
    /// The loaded header differs from the expected RAM.
    Stale(Staleness),
    /// The header's content is not known (loaded before the agent started, not captured).
    Unknown,
}

impl HeaderState {
    /// The reconciler's view of a verdict: unknown when nothing is known of the content.
    pub fn of(status: &HeaderStatus) -> Self {
        match status.provenance {
            None => Self::Unknown,
            Some(_) if status.stale => Self::Stale(Staleness {
                missing_bytes: status.missing_bytes,
                excess_bytes: status.excess_bytes,
                missing_cpu_notes: status.missing_cpu_notes.len() as u32,
                beyond_reload_bytes: status.beyond_reload.as_ref().map_or(0, |b| b.bytes),
            }),
            Some(_) => Self::Fresh,
        }
    }
}

/// The answer to [`Action::Verify`]: the crash image and its header, as of now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderCheck {
    /// `/sys/kernel/kexec_crash_loaded`.
    pub loaded: bool,
    pub header: HeaderState,
    /// The loaded header was captured by a probe rather than inferred.
    pub verified: bool,
}

/// Why the agent reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadReason {
    /// RAM changed and the loaded header no longer matches it (or cannot be vouched for).
    RamChanged,
    /// The RAM still matches, but an online CPU has no note in the header (added since the load).
    CpusChanged,
    /// No crash kernel is loaded.
    NotLoaded,
    /// Kernel-managed mode, but the kernel did not bring the header up to date.
    VerificationFailed,
    /// The operator asked (`kdump-agent reload`) and the header needed it.
    Requested,
    /// A previous reload failed; this is the retry after the backoff.
    Retry,
}

impl ReloadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RamChanged => "ram-changed",
            Self::CpusChanged => "cpus-changed",
            Self::NotLoaded => "not-loaded",
            Self::VerificationFailed => "verification-failed",
            Self::Requested => "requested",
            Self::Retry => "retry",
        }
    }
}

impl fmt::Display for ReloadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the operator must hear about; raised on transitions, not repeated every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// The header is stale and this agent will not reload (observe, or no way to reload).
    Stale(Staleness),
    /// Kernel-managed mode, but the kernel's header is stale after a change.
    KernelUpdateFailed(Staleness),
    /// Still stale right after the agent's own load.
    StaleAfterReload(Staleness),
    /// Stale only by RAM no reload through the node's loader lists: the agent does not reload.
    BeyondReload(Staleness),
    /// A reload failed (refused or rejected); the next try is after `retry_in`.
    ReloadFailed { failures: u32, retry_in: Duration },
    /// The rollback to the last known good image failed too.
    RollbackFailed { retry_in: Duration },
    /// No crash kernel is loaded and this agent cannot load one.
    NoCaptureKernel,
}

/// What the daemon must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Rescan RAM, compare the loaded header with it, answer with [`Input::Checked`].
    Verify,
    /// Validate the recipe and load it; answer with [`Input::Loaded`].
    Reload {
        reason: ReloadReason,
    },
    /// Load the last known good image at once; answer with [`Input::Loaded`].
    Rollback,
    Alert(Alert),
}

/// Everything the state machine reacts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Event(Event),
    /// `kdump-agent reload`: reconcile now.
    ReloadRequested,
    Checked(HeaderCheck),
    Loaded(LoadOutcome),
    /// The daemon re-detected the mode (after each load and at start).
    Mode(Mode),
    /// Time passed; the daemon sends this at [`Reconciler::next_deadline`].
    Tick,
}

/// Why a `Verify` is in flight: decides what a stale answer leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// A burst of changes ended.
    Change,
    /// The operator asked.
    Requested,
    /// The retry timer fired.
    Retry,
    /// Right after the agent's own load or rollback.
    AfterLoad,
    /// Start-up or a mode change: learn the state, act only if nothing is loaded.
    Survey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Verifying(Trigger),
    Reloading,
    RollingBack,
}

/// What `status` shows about reconciliation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconcileView {
    pub mode: Mode,
    /// Changes seen and not yet acted on.
    pub pending_events: u64,
    /// When the pending burst will be acted on.
    pub due: Option<Instant>,
    /// Consecutive failed reloads (0 after a success).
    pub failures: u32,
    pub retry_at: Option<Instant>,
    /// The latest answer to `Verify`.
    pub last_check: Option<HeaderCheck>,
}

/// The state machine. Create it, feed it inputs with [`Reconciler::handle`], perform the actions.
#[derive(Debug)]
pub struct Reconciler {
    timing: Timing,
    mode: Mode,
    /// A reload strategy and a recipe exist (`--reload` is not `off`).
    can_reload: bool,
    /// A last-known-good copy exists to roll back to.
    has_last_good: bool,
    phase: Phase,
    burst: Coalescer,
    requested: bool,
    survey: bool,
    failures: u32,
    retry_at: Option<Instant>,
    last_check: Option<HeaderCheck>,
    /// The alert raised for the current condition, so it is not repeated every check.
    alerted: Option<Alert>,
    /// When another loader entered a crash load that has not returned yet.
    foreign_load: Option<Instant>,
}

impl Reconciler {
    /// A reconciler that surveys the state at the first `Tick`.
    pub fn new(timing: Timing, mode: Mode, can_reload: bool, has_last_good: bool) -> Self {
        Self {
            timing,
            mode,
            can_reload,
            has_last_good,
            phase: Phase::Idle,
            burst: Coalescer::default(),
            requested: false,
            survey: true,
            failures: 0,
            retry_at: None,
            last_check: None,
            alerted: None,
            foreign_load: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The agent gained a way to reload (a recipe adopted from another loader's load).
    pub fn set_can_reload(&mut self, can_reload: bool) {
        self.can_reload = can_reload;
    }

    /// Whether a rollback image exists (the loader keeps one after each successful load).
    pub fn set_last_good(&mut self, has_last_good: bool) {
        self.has_last_good = has_last_good;
    }

    pub fn view(&self) -> ReconcileView {
        ReconcileView {
            mode: self.mode,
            pending_events: self.burst.pending_events(),
            due: self.burst.due(&self.timing),
            failures: self.failures,
            retry_at: self.retry_at,
            last_check: self.last_check,
        }
    }

    /// When the daemon must send the next `Tick` (None: only inputs can wake it).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Idle || self.mode == Mode::Unsupported {
            return None;
        }
        // Work that falls due during another loader's load waits for it (or for the patience).
        let after_foreign = |t: Instant| self.foreign_load_until().map_or(t, |f| t.max(f));
        let burst = self.burst.due(&self.timing).map(after_foreign);
        let retry = self.retry_at.map(after_foreign);
        match (burst, retry) {
            (Some(b), Some(r)) => Some(b.min(r)),
            (b, r) => b.or(r),
        }
    }

    /// Feeds one input at time `now` and returns the actions to perform, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Mode(mode) => {
                if mode != self.mode {
                    self.mode = mode;
                    self.alerted = None;
                    self.survey = true;
                    if mode == Mode::Unsupported {
                        // Nothing can be loaded or checked: drop whatever was under way.
                        self.phase = Phase::Idle;
                        self.burst.clear();
                        self.requested = false;
                        self.retry_at = None;
                    }
                }
            }
            _ if self.mode == Mode::Unsupported => return actions,
            // The agent's own loads are not news: counting them would re-verify, and a header
            // still stale after our load would reload again instead of backing off.
            Input::Event(e) if e.is_own() => {}
            Input::Event(Event::KexecLoadStarted { .. }) => self.foreign_load = Some(now),
            // Every other event means the RAM (or what is known of it) may have changed; a
            // loss forces the same full re-check.
            Input::Event(e) => {
                if matches!(e, Event::KexecLoad(_) | Event::Lost { .. }) {
                    self.foreign_load = None;
                }
                self.note_change(now);
            }
            Input::ReloadRequested => self.requested = true,
            Input::Tick => {}
            Input::Checked(check) => {
                if let Phase::Verifying(trigger) = self.phase {
                    self.phase = Phase::Idle;
                    self.last_check = Some(check);
                    self.decide(now, trigger, check, &mut actions);
                }
            }
            Input::Loaded(outcome) => match self.phase {
                Phase::Reloading => {
                    self.phase = Phase::Idle;
                    self.burst.load_ended(now);
                    self.reloaded(now, outcome, &mut actions);
                }
                Phase::RollingBack => {
                    self.phase = Phase::Idle;
                    self.rolled_back(now, outcome, &mut actions);
                }
                Phase::Idle | Phase::Verifying(_) => {}
            },
        }
        if self.phase == Phase::Idle && self.mode != Mode::Unsupported {
            self.start_due(now, &mut actions);
        }
        actions
    }

    fn note_change(&mut self, now: Instant) {
        self.burst.note(now, &self.timing);
    }

    /// Until when another loader's crash load holds back checks and reloads: the kernel freed
    /// the old image at its start, and judging before it returns would reload over it (the
    /// load would fail on the busy kexec lock) for nothing.
    fn foreign_load_until(&self) -> Option<Instant> {
        self.foreign_load.map(|t| t + FOREIGN_LOAD_PATIENCE)
    }

    /// Starts the next due piece of work, if any (only called when idle).
    fn start_due(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.requested && self.foreign_load_until().is_some_and(|until| now < until) {
            return;
        }
        let trigger = if self.requested {
            self.requested = false;
            // An explicit request answers now and makes a pending burst redundant.
            self.burst.clear();
            Trigger::Requested
        } else if self.burst.take_due(now, &self.timing) {
            Trigger::Change
        } else if self.retry_at.is_some_and(|r| r <= now) {
            self.retry_at = None;
            Trigger::Retry
        } else if self.survey {
            Trigger::Survey
        } else {
            return;
        };
        self.survey = false;
        self.phase = Phase::Verifying(trigger);
        actions.push(Action::Verify);
    }

    fn decide(
        &mut self,
        now: Instant,
        trigger: Trigger,
        check: HeaderCheck,
        out: &mut Vec<Action>,
    ) {
        if let (true, HeaderState::Stale(s)) = (check.loaded, check.header)
            && !s.reload_can_fix()
            && trigger != Trigger::Requested
        {
            // Another load would list the same RAM and open a window without a capture
            // kernel for nothing: no reload, no retry, until the RAM or the header changes,
            // or the operator asks (the node's loader may have changed).
            self.failures = 0;
            self.retry_at = None;
            self.alert(Alert::BeyondReload(s), out);
            return;
        }
        let reason = match (check.loaded, check.header) {
            (false, _) => Some(ReloadReason::NotLoaded),
            (true, HeaderState::Fresh) => None,
            (true, HeaderState::Stale(s)) => Some(match (self.mode, trigger) {
                (Mode::KernelManaged, _) => ReloadReason::VerificationFailed,
                (_, Trigger::Requested) => ReloadReason::Requested,
                (_, Trigger::Retry) => ReloadReason::Retry,
                _ if s.missing_bytes == 0 && s.excess_bytes == 0 && s.missing_cpu_notes > 0 => {
                    ReloadReason::CpusChanged
                }
                _ => ReloadReason::RamChanged,
            }),
            // Content unknown: after a change it cannot be vouched for, unless the kernel
            // manages it (then only a captured update can tell).
            (true, HeaderState::Unknown) => match (self.mode, trigger) {
                (Mode::KernelManaged, _) => None,
                (_, Trigger::Change) => Some(ReloadReason::RamChanged),
                (_, Trigger::Requested) => Some(ReloadReason::Requested),
                (_, Trigger::Retry) => Some(ReloadReason::Retry),
                _ => None,
            },
        };
        let Some(reason) = reason else {
            self.alerted = None;
            if trigger == Trigger::Retry {
                // The condition cleared without us (another loader, the kernel): stop retrying.
                self.failures = 0;
            }
            return;
        };
        let stale = match check.header {
            HeaderState::Stale(s) => Some(s),
            HeaderState::Fresh | HeaderState::Unknown => None,
        };
        // The operator's request overrides the backoff; our own fresh load is never redone at once.
        let may_reload = self.can_reload
            && matches!(self.mode, Mode::AgentManaged | Mode::KernelManaged)
            && (self.retry_at.is_none() || trigger == Trigger::Requested)
            && trigger != Trigger::AfterLoad;
        if may_reload {
            if let (Mode::KernelManaged, Some(s)) = (self.mode, stale) {
                self.alert(Alert::KernelUpdateFailed(s), out);
            }
            self.retry_at = None;
            self.phase = Phase::Reloading;
            self.burst.load_started(now);
            out.push(Action::Reload { reason });
            return;
        }
        if trigger == Trigger::AfterLoad && self.burst.pending().is_some() {
            // RAM changed while we loaded: the pending burst reloads once it is quiet.
            return;
        }
        if trigger == Trigger::AfterLoad && self.can_reload && self.retry_at.is_none() {
            // Our own load did not make it current: retry after a backoff rather than loop.
            self.failures += 1;
            self.retry_at = Some(now + self.timing.backoff(self.failures));
            if let Some(s) = stale {
                self.alert(Alert::StaleAfterReload(s), out);
                return;
            }
        }
        if self.retry_at.is_some() {
            // A retry is scheduled; it re-checks and acts.
            return;
        }
        match (check.loaded, stale) {
            (false, _) => self.alert(Alert::NoCaptureKernel, out),
            (true, Some(s)) if self.mode == Mode::KernelManaged => {
                self.alert(Alert::KernelUpdateFailed(s), out)
            }
            (true, Some(s)) => self.alert(Alert::Stale(s), out),
            (true, None) => {}
        }
    }

    fn reloaded(&mut self, now: Instant, outcome: LoadOutcome, out: &mut Vec<Action>) {
        match outcome {
            LoadOutcome::Loaded => {
                self.failures = 0;
                self.retry_at = None;
                self.alerted = None;
                self.phase = Phase::Verifying(Trigger::AfterLoad);
                out.push(Action::Verify);
            }
            LoadOutcome::Failed {
                still_loaded: false,
            } if self.has_last_good => {
                self.failures += 1;
                self.phase = Phase::RollingBack;
                out.push(Action::Rollback);
            }
            LoadOutcome::Refused | LoadOutcome::Failed { .. } => self.schedule_retry(now, out),
        }
    }

    fn rolled_back(&mut self, now: Instant, outcome: LoadOutcome, out: &mut Vec<Action>) {
        let retry_in = self.timing.backoff(self.failures);
        self.retry_at = Some(now + retry_in);
        if outcome == LoadOutcome::Loaded {
            // Back to the last good image (the kernel built its header from today's RAM);
            // the recipe that failed is retried after the backoff only if still needed.
            self.phase = Phase::Verifying(Trigger::AfterLoad);
            out.push(Action::Verify);
            self.alert(
                Alert::ReloadFailed {
                    failures: self.failures,
                    retry_in,
                },
                out,
            );
        } else {
            self.alert(Alert::RollbackFailed { retry_in }, out);
        }
    }

    fn schedule_retry(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.failures += 1;
        let retry_in = self.timing.backoff(self.failures);
        self.retry_at = Some(now + retry_in);
        self.alert(
            Alert::ReloadFailed {
                failures: self.failures,
                retry_in,
            },
            out,
        );
    }

    /// Raises `alert` unless the same condition was already raised.
    fn alert(&mut self, alert: Alert, out: &mut Vec<Action>) {
        let repeats = match (self.alerted, alert) {
            (Some(Alert::ReloadFailed { .. }), Alert::ReloadFailed { .. }) => false,
            (Some(previous), alert) => previous == alert,
            (None, _) => false,
        };
        self.alerted = Some(alert);
        if !repeats {
            out.push(Action::Alert(alert));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::events::{EventSource, HotplugAction};

    const MS: Duration = Duration::from_millis(1);

    fn online() -> Input {
        Input::Event(Event::Memory {
            action: HotplugAction::Online,
            phys_start: Some(0x1_0000_0000),
            bytes: Some(128 << 20),
            source: EventSource::Ebpf,
            ktime_ns: None,
        })
    }

    fn check(loaded: bool, header: HeaderState) -> Input {
        Input::Checked(HeaderCheck {
            loaded,
            header,
            verified: true,
        })
    }

    fn stale(missing_bytes: u64) -> HeaderState {
        HeaderState::Stale(Staleness {
            beyond_reload_bytes: 0,
            missing_bytes,
            excess_bytes: 0,
            missing_cpu_notes: 0,
        })
    }

    const FRESH: Input = Input::Checked(HeaderCheck {
        loaded: true,
        header: HeaderState::Fresh,
        verified: true,
    });

    /// A reconciler past its start-up survey (which found a fresh header), at `t0`.
    fn settled(mode: Mode, can_reload: bool) -> (Reconciler, Instant) {
        let t0 = Instant::now();
        let mut r = Reconciler::new(Timing::default(), mode, can_reload, true);
        assert_eq!(r.handle(t0, Input::Tick), [Action::Verify]);
        assert_eq!(r.handle(t0, FRESH), []);
        assert_eq!(r.next_deadline(), None);
        (r, t0)
    }

    fn reload(reason: ReloadReason) -> Action {
        Action::Reload { reason }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t = Timing::default();
        let waits: Vec<_> = (1..=8).map(|n| t.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(t.backoff(u32::MAX), t.backoff_max);
    }

    #[test]
    fn another_loaders_load_in_flight_holds_back_checks_until_it_returns_or_patience_ends() {
        let started = || {
            Input::Event(Event::KexecLoadStarted {
                pid: 7,
                comm: "kexec".into(),
            })
        };
        let (mut r, t0) = settled(Mode::KernelManaged, true);
        assert_eq!(r.handle(t0, started()), []);
        assert_eq!(r.handle(t0 + 100 * MS, online()), []);
        // The burst is quiet at +350 ms, but the old image is gone until the load returns.
        assert_eq!(r.handle(t0 + 400 * MS, Input::Tick), []);
        assert_eq!(r.next_deadline(), Some(t0 + FOREIGN_LOAD_PATIENCE));
        let returned = Input::Event(Event::KexecLoad(crate::model::events::KexecLoad {
            syscall: crate::model::elfcorehdr::LoadPath::KexecFileLoad,
            pid: 7,
            comm: "kexec".into(),
            flags: 2,
            unload: false,
            by_agent: false,
            result: 0,
            duration_ns: Some(13_000_000_000),
            header: None,
            files: None,
            ktime_ns: 1,
        }));
        // Its return is a change too, and the burst held back is long overdue: checked at once.
        let back = t0 + 13 * Duration::from_secs(1);
        assert_eq!(r.handle(back, returned), [Action::Verify]);
        assert_eq!(
            r.handle(back, check(true, stale(512 << 20))),
            [
                Action::Alert(Alert::KernelUpdateFailed(Staleness {
                    beyond_reload_bytes: 0,
                    missing_bytes: 512 << 20,
                    excess_bytes: 0,
                    missing_cpu_notes: 0
                })),
                reload(ReloadReason::VerificationFailed)
            ]
        );
        // An exit record that never comes holds nothing back past the patience.
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, started());
        r.handle(t0, online());
        assert_eq!(r.handle(t0 + FOREIGN_LOAD_PATIENCE - MS, Input::Tick), []);
        assert_eq!(
            r.handle(t0 + FOREIGN_LOAD_PATIENCE, Input::Tick),
            [Action::Verify]
        );
        // The operator's request does not wait.
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, started());
        assert_eq!(r.handle(t0, Input::ReloadRequested), [Action::Verify]);
    }

    #[test]
    fn a_storm_of_thousands_of_block_events_is_one_reload() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        for i in 0..3840 {
            let now = t0 + MS * i;
            assert_eq!(r.handle(now, online()), [], "event {i}");
        }
        let last = t0 + MS * 3839;
        // 3840 blocks (a 32 -> 512 GiB scale-up), one per millisecond: one quiet period after the last.
        assert_eq!(r.next_deadline(), Some(last + 250 * MS));
        assert_eq!(r.view().pending_events, 3840);
        assert_eq!(r.handle(last + 250 * MS - MS, Input::Tick), []);
        assert_eq!(r.handle(last + 250 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(last + 250 * MS, check(true, stale(512 << 20))),
            [reload(ReloadReason::RamChanged)]
        );
        assert_eq!(r.next_deadline(), None, "nothing to wake for while loading");
        assert_eq!(
            r.handle(last + 300 * MS, Input::Loaded(LoadOutcome::Loaded)),
            [Action::Verify]
        );
        assert_eq!(r.handle(last + 300 * MS, FRESH), []);
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.view().pending_events, 0);
    }

    #[test]
    fn a_burst_that_never_goes_quiet_is_acted_on_at_max_delay() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        let mut actions = Vec::new();
        for i in 0..100 {
            let now = t0 + 100 * MS * i;
            actions.extend(r.handle(now, Input::Tick).into_iter().map(|a| (now, a)));
            r.handle(now, online());
        }
        assert_eq!(actions, [(t0 + Duration::from_secs(5), Action::Verify)]);
    }

    #[test]
    fn the_quiet_period_restarts_with_each_event() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        assert_eq!(r.next_deadline(), Some(t0 + 250 * MS));
        r.handle(t0 + 200 * MS, online());
        assert_eq!(r.next_deadline(), Some(t0 + 450 * MS));
        assert_eq!(r.handle(t0 + 449 * MS, Input::Tick), []);
        assert_eq!(r.handle(t0 + 450 * MS, Input::Tick), [Action::Verify]);
    }

    #[test]
    fn lost_events_and_iomem_changes_are_changes_too() {
        for event in [
            Event::IomemChanged,
            Event::Lost {
                count: 3,
                source: EventSource::Uevent,
            },
        ] {
            let (mut r, t0) = settled(Mode::AgentManaged, true);
            r.handle(t0, Input::Event(event));
            assert_eq!(r.handle(t0 + 250 * MS, Input::Tick), [Action::Verify]);
        }
    }

    #[test]
    fn a_change_that_left_the_header_fresh_loads_nothing() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        assert_eq!(r.handle(t0 + 250 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(r.handle(t0 + 250 * MS, FRESH), []);
    }

    #[test]
    fn unsupported_does_nothing_at_all() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(Timing::default(), Mode::Unsupported, true, true);
        for input in [Input::Tick, online(), Input::ReloadRequested, FRESH] {
            assert_eq!(r.handle(t0 + Duration::from_secs(10), input), []);
        }
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn becoming_unsupported_drops_the_work_under_way() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(r.handle(t0 + 250 * MS, Input::Mode(Mode::Unsupported)), []);
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.handle(t0 + 260 * MS, check(true, stale(1))), []);
        // Back to agent-managed: a fresh survey, nothing stuck in flight.
        assert_eq!(
            r.handle(t0 + 300 * MS, Input::Mode(Mode::AgentManaged)),
            [Action::Verify]
        );
    }

    #[test]
    fn observe_alerts_once_per_condition_and_never_reloads() {
        let (mut r, t0) = settled(Mode::Observe, false);
        let s = Staleness {
            beyond_reload_bytes: 0,
            missing_bytes: 512 << 20,
            excess_bytes: 0,
            missing_cpu_notes: 0,
        };
        r.handle(t0, online());
        assert_eq!(r.handle(t0 + 250 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, HeaderState::Stale(s))),
            [Action::Alert(Alert::Stale(s))]
        );
        // 300 ms after the first change: a streak, quiet period 250 + 2 x 300 ms.
        r.handle(t0 + 300 * MS, online());
        assert_eq!(r.handle(t0 + 1149 * MS, Input::Tick), []);
        assert_eq!(r.handle(t0 + 1150 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t0 + 1150 * MS, check(true, HeaderState::Stale(s))),
            []
        );
        assert_eq!(
            r.handle(t0 + 1600 * MS, Input::ReloadRequested),
            [Action::Verify]
        );
        assert_eq!(r.handle(t0 + 1600 * MS, FRESH), []);
        assert_eq!(
            r.handle(t0 + 1700 * MS, Input::ReloadRequested),
            [Action::Verify]
        );
        assert_eq!(
            r.handle(t0 + 1700 * MS, check(true, HeaderState::Stale(s))),
            [Action::Alert(Alert::Stale(s))],
            "a new stale condition after a fresh one is alerted again"
        );
    }

    /// arm64 kexec-tools and a virtio-mem grow: the header misses only RAM that loader never
    /// lists. No reload (it would list the same RAM again), one alert, no retry timer.
    #[test]
    fn a_gap_no_reload_can_close_is_alerted_once_and_never_reloaded() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        let beyond = Staleness {
            missing_bytes: 512 << 20,
            excess_bytes: 0,
            missing_cpu_notes: 0,
            beyond_reload_bytes: 512 << 20,
        };
        assert!(!beyond.reload_can_fix());
        r.handle(t0, online());
        assert_eq!(r.handle(t0 + 250 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, HeaderState::Stale(beyond))),
            [Action::Alert(Alert::BeyondReload(beyond))]
        );
        assert_eq!(r.next_deadline(), None, "no retry is scheduled");
        // More of the same grow: checked again, not alerted again, not reloaded.
        r.handle(t0 + 300 * MS, online());
        assert_eq!(r.handle(t0 + 1450 * MS, Input::Tick), [Action::Verify]);
        let more = Staleness {
            missing_bytes: 640 << 20,
            beyond_reload_bytes: 640 << 20,
            ..beyond
        };
        assert_eq!(
            r.handle(t0 + 1450 * MS, check(true, HeaderState::Stale(more))),
            [Action::Alert(Alert::BeyondReload(more))]
        );
        // The operator's request is tried once; still the same gap after it: no retry.
        assert_eq!(
            r.handle(t0 + 1500 * MS, Input::ReloadRequested),
            [Action::Verify]
        );
        assert_eq!(
            r.handle(t0 + 1500 * MS, check(true, HeaderState::Stale(more))),
            [reload(ReloadReason::Requested)]
        );
        assert_eq!(
            r.handle(t0 + 2000 * MS, Input::Loaded(LoadOutcome::Loaded)),
            [Action::Verify]
        );
        assert_eq!(
            r.handle(t0 + 2000 * MS, check(true, HeaderState::Stale(more))),
            [Action::Alert(Alert::BeyondReload(more))]
        );
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.view().failures, 0);
    }

    /// A DIMM (plain System RAM) on top of the virtio-mem RAM: the reload brings the DIMM back;
    /// what is left after it is beyond any reload, so there is no retry loop.
    #[test]
    fn a_partly_closable_gap_is_reloaded_once_then_left() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        let both = Staleness {
            missing_bytes: 1024 << 20,
            excess_bytes: 0,
            missing_cpu_notes: 0,
            beyond_reload_bytes: 512 << 20,
        };
        let left = Staleness {
            missing_bytes: 512 << 20,
            ..both
        };
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, HeaderState::Stale(both))),
            [reload(ReloadReason::RamChanged)]
        );
        assert_eq!(
            r.handle(t0 + 900 * MS, Input::Loaded(LoadOutcome::Loaded)),
            [Action::Verify]
        );
        assert_eq!(
            r.handle(t0 + 900 * MS, check(true, HeaderState::Stale(left))),
            [Action::Alert(Alert::BeyondReload(left))]
        );
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.view().failures, 0);
    }

    #[test]
    fn observe_with_a_recipe_still_never_reloads() {
        let (mut r, t0) = settled(Mode::Observe, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(false, HeaderState::Unknown)),
            [Action::Alert(Alert::NoCaptureKernel)]
        );
    }

    #[test]
    fn agent_managed_without_a_way_to_reload_alerts() {
        let (mut r, t0) = settled(Mode::AgentManaged, false);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, stale(7))),
            [Action::Alert(Alert::Stale(Staleness {
                beyond_reload_bytes: 0,
                missing_bytes: 7,
                excess_bytes: 0,
                missing_cpu_notes: 0,
            }))]
        );
    }

    #[test]
    fn kernel_managed_only_verifies_while_the_kernel_keeps_up() {
        let (mut r, t0) = settled(Mode::KernelManaged, true);
        r.handle(t0, online());
        assert_eq!(r.handle(t0 + 250 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(r.handle(t0 + 250 * MS, FRESH), []);
        // Content not captured: nothing to judge, so no reload.
        r.handle(t0 + 300 * MS, online());
        assert_eq!(r.handle(t0 + 1450 * MS, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t0 + 1450 * MS, check(true, HeaderState::Unknown)),
            []
        );
    }

    #[test]
    fn kernel_managed_reloads_when_verification_fails() {
        let (mut r, t0) = settled(Mode::KernelManaged, true);
        let s = Staleness {
            beyond_reload_bytes: 0,
            missing_bytes: 128 << 20,
            excess_bytes: 0,
            missing_cpu_notes: 0,
        };
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, HeaderState::Stale(s))),
            [
                Action::Alert(Alert::KernelUpdateFailed(s)),
                reload(ReloadReason::VerificationFailed)
            ]
        );
    }

    #[test]
    fn kernel_managed_without_a_recipe_alerts_only() {
        let (mut r, t0) = settled(Mode::KernelManaged, false);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, stale(1))),
            [Action::Alert(Alert::KernelUpdateFailed(Staleness {
                beyond_reload_bytes: 0,
                missing_bytes: 1,
                excess_bytes: 0,
                missing_cpu_notes: 0,
            }))]
        );
    }

    #[test]
    fn an_unknown_header_is_reloaded_after_a_change_not_at_start() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(Timing::default(), Mode::AgentManaged, true, false);
        assert_eq!(r.handle(t0, Input::Tick), [Action::Verify]);
        assert_eq!(r.handle(t0, check(true, HeaderState::Unknown)), []);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        assert_eq!(
            r.handle(t0 + 250 * MS, check(true, HeaderState::Unknown)),
            [reload(ReloadReason::RamChanged)]
        );
    }

    #[test]
    fn start_up_loads_when_nothing_is_loaded_and_reloads_a_stale_persisted_header() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(Timing::default(), Mode::AgentManaged, true, false);
        assert_eq!(r.handle(t0, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t0, check(false, HeaderState::Unknown)),
            [reload(ReloadReason::NotLoaded)]
        );
        let mut r = Reconciler::new(Timing::default(), Mode::AgentManaged, true, false);
        r.handle(t0, Input::Tick);
        assert_eq!(
            r.handle(t0, check(true, stale(1))),
            [reload(ReloadReason::RamChanged)]
        );
    }

    #[test]
    fn a_refused_reload_keeps_the_old_image_and_retries_with_backoff() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        r.handle(t0 + 250 * MS, check(true, stale(1)));
        let t1 = t0 + 260 * MS;
        assert_eq!(
            r.handle(t1, Input::Loaded(LoadOutcome::Refused)),
            [Action::Alert(Alert::ReloadFailed {
                failures: 1,
                retry_in: Duration::from_secs(1)
            })]
        );
        // A change while backing off, 410 ms after the first, 400 ms of it without a load in
        // flight: a streak, due 250 + 2 x 400 ms after it, later than the retry.
        r.handle(t1 + 150 * MS, online());
        assert_eq!(r.next_deadline(), Some(t1 + Duration::from_secs(1)));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.handle(t2, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t2, check(true, stale(2))),
            [reload(ReloadReason::Retry)]
        );
        assert_eq!(
            r.handle(
                t2,
                Input::Loaded(LoadOutcome::Failed { still_loaded: true })
            ),
            [Action::Alert(Alert::ReloadFailed {
                failures: 2,
                retry_in: Duration::from_secs(2)
            })]
        );
        // The change is acted on while backing off, quiet from the end of the failed load:
        // verified, not hammered into the loader.
        let due = t2 + 1050 * MS;
        assert_eq!(r.next_deadline(), Some(due));
        assert_eq!(r.handle(due - MS, Input::Tick), []);
        assert_eq!(r.handle(due, Input::Tick), [Action::Verify]);
        assert_eq!(r.handle(due, check(true, stale(2))), []);
        assert_eq!(r.next_deadline(), Some(t2 + Duration::from_secs(2)));
        let t3 = t2 + Duration::from_secs(2);
        r.handle(t3, Input::Tick);
        r.handle(t3, check(true, stale(2)));
        assert_eq!(
            r.handle(t3, Input::Loaded(LoadOutcome::Loaded)),
            [Action::Verify]
        );
        assert_eq!(r.handle(t3, FRESH), []);
        assert_eq!(r.view().failures, 0);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_load_that_freed_the_old_image_rolls_back_at_once() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        r.handle(t0 + 250 * MS, check(true, stale(1)));
        let t1 = t0 + 300 * MS;
        assert_eq!(
            r.handle(
                t1,
                Input::Loaded(LoadOutcome::Failed {
                    still_loaded: false
                })
            ),
            [Action::Rollback]
        );
        assert_eq!(
            r.handle(t1, Input::Loaded(LoadOutcome::Loaded)),
            [
                Action::Verify,
                Action::Alert(Alert::ReloadFailed {
                    failures: 1,
                    retry_in: Duration::from_secs(1)
                })
            ]
        );
        // The rollback loaded against today's RAM: fresh, so the retry only re-checks.
        assert_eq!(r.handle(t1, FRESH), []);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.handle(t2, Input::Tick), [Action::Verify]);
        assert_eq!(r.handle(t2, FRESH), []);
        assert_eq!(r.view().failures, 0);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_failed_rollback_alerts_and_retries_the_load() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        r.handle(t0 + 250 * MS, check(true, stale(1)));
        r.handle(
            t0 + 300 * MS,
            Input::Loaded(LoadOutcome::Failed {
                still_loaded: false,
            }),
        );
        let t1 = t0 + 400 * MS;
        assert_eq!(
            r.handle(
                t1,
                Input::Loaded(LoadOutcome::Failed {
                    still_loaded: false
                })
            ),
            [Action::Alert(Alert::RollbackFailed {
                retry_in: Duration::from_secs(1)
            })]
        );
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.handle(t2, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(t2, check(false, HeaderState::Unknown)),
            [reload(ReloadReason::NotLoaded)]
        );
    }

    #[test]
    fn without_a_last_good_image_a_failed_load_backs_off() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(Timing::default(), Mode::AgentManaged, true, false);
        r.handle(t0, Input::Tick);
        r.handle(t0, check(false, HeaderState::Unknown));
        assert_eq!(
            r.handle(
                t0,
                Input::Loaded(LoadOutcome::Failed {
                    still_loaded: false
                })
            ),
            [Action::Alert(Alert::ReloadFailed {
                failures: 1,
                retry_in: Duration::from_secs(1)
            })]
        );
    }

    #[test]
    fn the_operator_overrides_the_backoff() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        r.handle(t0 + 250 * MS, check(true, stale(1)));
        r.handle(t0 + 300 * MS, Input::Loaded(LoadOutcome::Refused));
        assert_eq!(
            r.handle(t0 + 400 * MS, Input::ReloadRequested),
            [Action::Verify]
        );
        assert_eq!(
            r.handle(t0 + 400 * MS, check(true, stale(1))),
            [reload(ReloadReason::Requested)]
        );
        assert_eq!(r.view().retry_at, None);
    }

    #[test]
    fn a_request_with_a_fresh_header_loads_nothing() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        assert_eq!(r.handle(t0, Input::ReloadRequested), [Action::Verify]);
        assert_eq!(r.handle(t0, FRESH), []);
    }

    #[test]
    fn changes_during_a_load_make_one_more_reload_without_counting_a_failure() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        r.handle(t0 + 250 * MS, check(true, stale(1)));
        for i in 0..10 {
            assert_eq!(r.handle(t0 + 300 * MS + MS * i, online()), []);
            assert_eq!(r.next_deadline(), None, "busy loading");
        }
        let t1 = t0 + 2000 * MS;
        assert_eq!(
            r.handle(t1, Input::Loaded(LoadOutcome::Loaded)),
            [Action::Verify]
        );
        // The changes continue a streak: its quiet period (250 + 2 x 300 ms) runs from the
        // end of the load, then one more reload.
        assert_eq!(r.handle(t1, check(true, stale(1))), []);
        let due = t1 + 850 * MS;
        assert_eq!(r.next_deadline(), Some(due));
        assert_eq!(r.handle(due, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(due, check(true, stale(1))),
            [reload(ReloadReason::RamChanged)]
        );
        assert_eq!(r.view().failures, 0);
    }

    #[test]
    fn stale_right_after_our_own_load_backs_off_instead_of_looping() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        r.handle(t0 + 250 * MS, Input::Tick);
        r.handle(t0 + 250 * MS, check(true, stale(1)));
        r.handle(t0 + 300 * MS, Input::Loaded(LoadOutcome::Loaded));
        let s = Staleness {
            beyond_reload_bytes: 0,
            missing_bytes: 1,
            excess_bytes: 0,
            missing_cpu_notes: 0,
        };
        assert_eq!(
            r.handle(t0 + 300 * MS, check(true, HeaderState::Stale(s))),
            [Action::Alert(Alert::StaleAfterReload(s))]
        );
        assert_eq!(r.next_deadline(), Some(t0 + 1300 * MS));
    }

    #[test]
    fn results_nobody_waits_for_are_ignored() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        assert_eq!(r.handle(t0, Input::Loaded(LoadOutcome::Loaded)), []);
        assert_eq!(r.handle(t0, check(false, HeaderState::Unknown)), []);
        assert_eq!(r.next_deadline(), None);
    }

    /// The coalescing rule written out directly: the times at which bursts are acted on. A
    /// burst (first, last, in a streak) is due after the quiet period or the max delay; within a
    /// streak (a burst begun less than `quiet_period_max` after the previous change) the quiet
    /// period grows by twice the longest of the streak's last eight gaps of at least half the
    /// quiet period, bounded, and the max delay is the bound.
    fn oracle(events: &[Instant], timing: &Timing) -> Vec<Instant> {
        let due = |(first, last, streak): (Instant, Instant, bool), gaps: &[Duration]| {
            if !streak {
                return (last + timing.quiet_period).min(first + timing.max_delay);
            }
            let between_dimms = gaps.iter().filter(|&&g| g >= timing.quiet_period / 2);
            let recent = between_dimms
                .rev()
                .take(8)
                .max()
                .copied()
                .unwrap_or_default();
            let quiet = (timing.quiet_period + 2 * recent).min(timing.quiet_period_max);
            (last + quiet).min(first + timing.max_delay_bound)
        };
        let mut acts = Vec::new();
        let mut burst: Option<(Instant, Instant, bool)> = None;
        let (mut prev, mut gaps) = (None::<Instant>, Vec::new());
        for &t in events {
            if let Some(b) = burst.filter(|&b| due(b, &gaps) <= t) {
                acts.push(due(b, &gaps));
                burst = None;
            }
            let since = prev.map(|p| t - p);
            prev = Some(t);
            burst = Some(match (burst, since) {
                (Some((first, _, s)), since) => {
                    if let (true, Some(g)) = (s, since) {
                        gaps.push(g.min(timing.quiet_period_max));
                    }
                    (first, t, s)
                }
                (None, Some(g)) if g < timing.quiet_period_max => {
                    gaps.push(g);
                    (t, t, true)
                }
                (None, _) => {
                    gaps.clear();
                    (t, t, false)
                }
            });
        }
        acts.extend(burst.map(|b| due(b, &gaps)));
        acts
    }

    /// The probes' record of the agent's own load (or of the window it closed).
    fn own(window: bool) -> Input {
        Input::Event(if window {
            Event::UnprotectedWindow(crate::model::events::UnprotectedWindow {
                duration_ns: 1,
                pid: 1,
                comm: "kdump-agent".into(),
                by_agent: true,
                ktime_ns: 1,
            })
        } else {
            let mut load = crate::model::events::KexecLoad::distro_file_load(None, None);
            load.by_agent = true;
            Event::KexecLoad(load)
        })
    }

    /// Drives a reconciler like the daemon does: ticks at its deadlines, RAM changes per
    /// event, loads that take `load_time` and build their header from the RAM at the call.
    /// Returns the reload start times and the final check.
    fn simulate(events: &[Instant], load_time: Duration, t0: Instant) -> (Vec<Instant>, bool) {
        simulate_with_own(events, load_time, t0, &[])
    }

    /// [`simulate`], with the probes reporting each of the agent's loads `own_ms[i]` after
    /// it started (before, at or after its end; cycling through the list).
    fn simulate_with_own(
        events: &[Instant],
        load_time: Duration,
        t0: Instant,
        own_ms: &[(u64, bool)],
    ) -> (Vec<Instant>, bool) {
        let mut r = Reconciler::new(Timing::default(), Mode::AgentManaged, true, true);
        let (mut ram, mut header) = (0u64, 0u64);
        let mut loading: Option<(Instant, u64)> = None;
        let mut reloads = Vec::new();
        let mut queue: Vec<(Instant, Input)> = vec![(t0, Input::Tick)];
        let mut own_pending: Vec<(Instant, bool)> = Vec::new();
        let mut next_event = 0;
        loop {
            // The next thing to happen: a queued answer, a load completing, a deadline, an event.
            let input = if let Some(q) = queue.pop() {
                q
            } else {
                let candidates = [
                    loading.map(|(t, _)| t),
                    r.next_deadline(),
                    events.get(next_event).copied(),
                    own_pending.iter().map(|&(t, _)| t).min(),
                ];
                let Some(now) = candidates.into_iter().flatten().min() else {
                    break;
                };
                if let Some(i) = own_pending.iter().position(|&(t, _)| t == now) {
                    let (_, window) = own_pending.remove(i);
                    (now, own(window))
                } else if loading.is_some_and(|(t, _)| t == now) {
                    header = loading.take().unwrap().1;
                    (now, Input::Loaded(LoadOutcome::Loaded))
                } else if r.next_deadline() == Some(now) {
                    (now, Input::Tick)
                } else {
                    next_event += 1;
                    ram += 1;
                    (now, online())
                }
            };
            let now = input.0;
            for action in r.handle(now, input.1) {
                match action {
                    Action::Verify => {
                        let state = if header == ram {
                            HeaderState::Fresh
                        } else {
                            stale(1)
                        };
                        queue.push((now, check(true, state)));
                    }
                    Action::Reload { .. } => {
                        if let Some(&(ms, window)) = own_ms.get(reloads.len() % own_ms.len().max(1))
                        {
                            own_pending.push((now + MS * u32::try_from(ms).unwrap(), window));
                        }
                        reloads.push(now);
                        loading = Some((now + load_time, ram));
                    }
                    Action::Rollback | Action::Alert(_) => panic!("unexpected {action:?}"),
                }
            }
            assert!(queue.len() <= 1, "one action in flight at a time");
        }
        (reloads, header == ram)
    }

    fn times(t0: Instant, gaps_ms: &[u64]) -> Vec<Instant> {
        gaps_ms
            .iter()
            .scan(t0 + Duration::from_secs(1), |t, &gap| {
                *t += MS * u32::try_from(gap).unwrap();
                Some(*t)
            })
            .collect()
    }

    #[test]
    fn the_agents_own_load_records_are_not_changes() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        assert_eq!(r.handle(t0, own(false)), []);
        assert_eq!(r.handle(t0, own(true)), []);
        assert_eq!(r.next_deadline(), None, "nothing to verify");
        assert_eq!(r.view().pending_events, 0);
    }

    #[test]
    fn stale_after_our_load_with_its_own_records_backs_off_once() {
        let (mut r, t0) = settled(Mode::AgentManaged, true);
        r.handle(t0, online());
        let due = t0 + 250 * MS;
        assert_eq!(r.handle(due, Input::Tick), [Action::Verify]);
        assert_eq!(
            r.handle(due, check(true, stale(512 << 20))),
            [reload(ReloadReason::RamChanged)]
        );
        // The probes report our load while it runs, and its window after.
        assert_eq!(r.handle(due + 10 * MS, own(false)), []);
        assert_eq!(
            r.handle(due + 20 * MS, Input::Loaded(LoadOutcome::Loaded)),
            [Action::Verify]
        );
        let after = r.handle(due + 20 * MS, check(true, stale(512 << 20)));
        assert_eq!(
            after,
            [Action::Alert(Alert::StaleAfterReload(Staleness {
                beyond_reload_bytes: 0,
                missing_bytes: 512 << 20,
                excess_bytes: 0,
                missing_cpu_notes: 0,
            }))]
        );
        assert_eq!(r.handle(due + 30 * MS, own(true)), []);
        assert_eq!(
            r.next_deadline(),
            Some(due + 20 * MS + Timing::default().backoff(1)),
            "a retry after the backoff, not a reload loop"
        );
    }

    proptest! {
        /// Whatever the gap, an agent that may reload does so exactly when a reload can make
        /// the header better than RAM its loader never lists.
        #[test]
        fn it_reloads_exactly_when_a_reload_can_fix_the_header(
            missing in 0u64..4,
            beyond in 0u64..4,
            excess in 0u64..2,
            cpus in 0u32..2,
        ) {
            let s = Staleness {
                missing_bytes: missing << 27,
                beyond_reload_bytes: missing.min(beyond) << 27,
                excess_bytes: excess << 27,
                missing_cpu_notes: cpus,
            };
            prop_assume!(missing + excess + u64::from(cpus) > 0);
            let (mut r, t0) = settled(Mode::AgentManaged, true);
            r.handle(t0, online());
            r.handle(t0 + 250 * MS, Input::Tick);
            let actions = r.handle(t0 + 250 * MS, check(true, HeaderState::Stale(s)));
            let reloads = actions.iter().any(|a| matches!(a, Action::Reload { .. }));
            prop_assert_eq!(reloads, s.reload_can_fix());
            prop_assert_eq!(
                s.reload_can_fix(),
                missing > beyond.min(missing) || excess > 0 || cpus > 0
            );
        }

        #[test]
        fn any_burst_within_max_delay_is_exactly_one_reload_after_the_quiet_period(
            gaps in prop::collection::vec(0u64..250, 1..400),
        ) {
            let t0 = Instant::now();
            let mut events = times(t0, &gaps);
            let timing = Timing::default();
            let end = events[0] + timing.max_delay;
            events.retain(|&t| t < end);
            let (reloads, fresh) = simulate(&events, Duration::ZERO, t0);
            let due = (*events.last().unwrap() + timing.quiet_period)
                .min(events[0] + timing.max_delay);
            prop_assert_eq!(reloads, vec![due]);
            prop_assert!(fresh);
        }

        #[test]
        fn reloads_happen_exactly_when_the_coalescing_rule_says(
            gaps in prop::collection::vec(0u64..2500, 1..300),
        ) {
            let t0 = Instant::now();
            let events = times(t0, &gaps);
            let (reloads, fresh) = simulate(&events, Duration::ZERO, t0);
            prop_assert_eq!(reloads, oracle(&events, &Timing::default()));
            prop_assert!(fresh);
        }

        #[test]
        fn slow_loads_never_lose_a_change_nor_load_twice_at_once(
            gaps in prop::collection::vec(0u64..2500, 1..200),
            load_ms in 0u64..3000,
            own_ms in prop::collection::vec((0u64..4000, any::<bool>()), 1..4),
        ) {
            let t0 = Instant::now();
            let events = times(t0, &gaps);
            let load_time = MS * u32::try_from(load_ms).unwrap();
            let (reloads, fresh) = simulate(&events, load_time, t0);
            prop_assert!(fresh, "the last header covers the last change");
            prop_assert!(reloads.len() <= events.len());
            for pair in reloads.windows(2) {
                prop_assert!(pair[1] >= pair[0] + load_time, "loads overlap");
            }
            // The probes' records of our own loads, in any order around them, change nothing.
            let with_own = simulate_with_own(&events, load_time, t0, &own_ms);
            prop_assert_eq!(&with_own, &(reloads.clone(), fresh));
            // Never later than the bound after a change, unless a load was in flight: RAM
            // that stops changing is covered within it, however long the scale-up.
            let timing = Timing::default();
            for &e in &events {
                let next = reloads.iter().find(|&&r| r >= e);
                let bound = e + timing.max_delay_bound + load_time;
                prop_assert!(next.is_some_and(|&r| r <= bound), "change at {:?} late", e - t0);
            }
        }
    }
}
