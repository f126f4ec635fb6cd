//! `kdump-agent show`: the loaded crash header against the expected one, range by range.
//! Only the running daemon knows the loaded header (its probes captured it).
use clap::Args;

use super::{StateDirArgs, print};
use crate::export::{
    control::{self, Reply},
    show::ShowReport,
};

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ShowArgs) -> anyhow::Result<i32> {
    let (report, note) = match control::request(&args.state.state_dir, "show")? {
        Reply::Answer(answer) => (serde_json::from_value::<ShowReport>(answer)?, String::new()),
        Reply::NoDaemon(why) => (
            ShowReport::unknown(format!(
                "{why}: only `kdump-agent run` captures the loaded header"
            )),
            String::new(),
        ),
    };
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        print(&report.to_text(&note))?;
    }
    Ok(report.exit_code())
}
