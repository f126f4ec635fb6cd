//! `kdump-agent check`: the status computed in one shot, without a daemon (cron, hosts without
//! the DaemonSet).
use clap::Args;

use super::SystemArgs;
use crate::{
    daemon, export::status::StatusReport, model::events::EventSource, state::AgentState,
    sys::capabilities::Feature,
};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The source `run` would pick on this node, from its capabilities.
fn likely_source(state: &AgentState) -> EventSource {
    let has = |f| state.node.capability(f).is_some_and(|c| c.available);
    if has(Feature::Bpf) && has(Feature::RingBuf) && (has(Feature::Fentry) || has(Feature::Kprobes))
    {
        EventSource::Ebpf
    } else {
        EventSource::Uevent
    }
}

pub fn one_shot(system: &SystemArgs) -> anyhow::Result<StatusReport> {
    let mut state = daemon::initial_state(&system.procfs(), &system.sysfs(), &system.boot)?;
    state.observe.event_source = likely_source(&state);
    Ok(StatusReport {
        answered_by: "one-shot".into(),
        ..StatusReport::from_state(&state)
    })
}

/// Prints a report as text or JSON; returns the exit code (0 ready, 3 not ready).
pub fn print(report: &StatusReport, json: bool, source_note: &str) -> anyhow::Result<i32> {
    if json {
        super::print(&format!("{}\n", serde_json::to_string_pretty(report)?))?;
    } else {
        super::print(&report.to_text(source_note))?;
    }
    Ok(report.exit_code())
}

pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let report = one_shot(&args.system)?;
    print(
        &report,
        args.json,
        " (computed in one shot; what `run` would use)",
    )
}
