//! `cargo xtask`: the developer entry point.
mod fleet;
mod paths;
mod run;
mod setup;
mod test;
mod ui;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kdump-agent developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the build and the tests need (idempotent).
    Setup,
    /// Build the agent (with its eBPF probes) and run `kdump-agent run` in the foreground.
    Run {
        /// Arguments passed to `kdump-agent run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Format check, clippy, every test.
    Test,
    /// Regenerate deploy/prometheusrule.yaml and deploy/grafana-dashboard.yaml from the rules
    /// file and the dashboard.
    FleetGen,
}

/// `cargo` in the workspace root, with the project's tools on PATH.
pub fn cargo() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::root());
    cmd
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Run { args } => run::run(&args),
        Command::Test => test::run(),
        Command::FleetGen => fleet::generate(&paths::root()),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
