use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kdump-agent",
    version,
    about = "Keeps kdump ready when RAM changes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Header(kdump_agent::cli::header::HeaderArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Header(args) => kdump_agent::cli::header::run(args)?,
    };
    std::process::exit(code)
}
