//! `kdump-agent status`: is kdump ready on this node, and if not, why. Asks the running daemon;
//! without one, computes the same report in one shot (as `check` does) and says so.
use clap::Args;

use super::{StateDirArgs, SystemArgs, check};
use crate::export::{
    control::{self, Reply},
    status::StatusReport,
};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let (report, note) = match control::request(&args.state.state_dir, "status")? {
        Reply::Answer(answer) => (
            serde_json::from_value::<StatusReport>(answer)?,
            " (from the running daemon)".to_string(),
        ),
        Reply::NoDaemon(why) => (
            check::one_shot(&args.system)?,
            format!(" ({why}: computed in one shot; what `run` would use)"),
        ),
    };
    check::print(&report, args.json, &note)
}
