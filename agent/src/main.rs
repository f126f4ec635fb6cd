use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kdump-agent",
    version,
    about = "Keeps kdump ready when RAM changes"
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
