//! `kdump-agent reload`: asks the running daemon to reconcile now and prints what it did.
use clap::Args;

use super::StateDirArgs;
use crate::export::{
    control::{self, Reply},
    status::EXIT_NOT_READY,
};

#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub state: StateDirArgs,
}

/// Exit 0 when kdump is ready afterwards, 3 when not.
pub fn run(args: ReloadArgs) -> anyhow::Result<i32> {
    let answer = match control::request_within(
        &args.state.state_dir,
        "reload",
        control::RELOAD_TIMEOUT,
    )? {
        Reply::Answer(answer) => answer,
        Reply::NoDaemon(why) => anyhow::bail!(
            "{why}: no reload confirmed (`kdump-agent run` does them; `kdump-agent status` says what is loaded)"
        ),
    };
    let text = |key: &str| answer.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let ready = answer.get("ready").and_then(|v| v.as_bool()) == Some(true);
    let verdict = if ready {
        "kdump: ready".to_owned()
    } else {
        format!("kdump: not ready: {}", text("reason"))
    };
    super::print(&format!("{}\n{verdict}\n", text("outcome")))?;
    Ok(if ready { 0 } else { EXIT_NOT_READY })
}
