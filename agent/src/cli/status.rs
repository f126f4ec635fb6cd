//! `kdump-agent status`: is kdump ready on this node, and if not, why.
use clap::Args;

use super::SystemArgs;
use crate::{
    capabilities::Feature, daemon, events::EventSource, state::AgentState, status::StatusReport,
};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The source `run` would pick on this node, from its capabilities.
fn likely_source(state: &AgentState) -> EventSource {
    let has = |f| state.capability(f).is_some_and(|c| c.available);
    if has(Feature::Bpf) && has(Feature::RingBuf) && (has(Feature::Fentry) || has(Feature::Kprobes))
    {
        EventSource::Ebpf
    } else {
        EventSource::Uevent
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let mut state = daemon::initial_state(
        &args.system.procfs(),
        &args.system.sysfs(),
        &args.system.boot,
    )?;
    state.event_source = likely_source(&state);
    let report = StatusReport::from_state(&state);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            report.to_text(" (what `kdump-agent run` would use here)")
        );
    }
    Ok(report.exit_code())
}
