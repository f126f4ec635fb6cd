//! `cargo xtask`: the developer entry point.
mod architecture;
mod bench_fleet;
mod fleet;
mod fuzz;
mod lab;
mod package;
mod paths;
mod run;
mod setup;
mod support;
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
    /// Format check, clippy, every test, then the VM lab.
    Test,
    /// Build the .deb and the .rpm (static binary, systemd unit, default arguments) into
    /// target/packages/.
    Package,
    /// Fuzz the iomem and crash ELF header parsers (nightly, cargo-fuzz; not part of `test`).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (iomem, elfcorehdr).
        #[arg(long)]
        target: Option<String>,
    },
    /// Regenerate deploy/prometheusrule.yaml and deploy/grafana-dashboard.yaml from the rules
    /// file and the dashboard.
    FleetGen,
    /// Measure the shipped agent: RSS and CPU idle and in a 4,096-event storm, /metrics latency
    /// under concurrent scrapers while events stream.
    BenchFleet {
        /// Length of the idle measurement.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// Length of each wrk run (/healthz baseline, then /metrics).
        #[arg(long, default_value_t = 30)]
        scrape_seconds: u64,
        /// Concurrent scrapers (wrk connections).
        #[arg(long, default_value_t = 50)]
        connections: u32,
        /// Serve over TLS with basic auth (--web.config.file); wrk scrapes https.
        #[arg(long)]
        tls: bool,
        /// Also write the figures to this JSON file (docs/bench/ keeps the quoted runs).
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
    },
    /// A 6.1 guest with kdump-agent: status, hot-add 512 MiB, status, crash, does the dump
    /// cover all RAM?
    Demo {
        /// QEMU accelerator: tcg (default) or kvm.
        #[arg(long, value_enum, default_value_t)]
        accel: lab::machine::Accel,
    },
    /// The VM lab: real Debian kernels under QEMU, hot-plugged DIMMs, real crashes.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Run { args } => run::run(&args),
        Command::Test => test::run(),
        Command::Package => package::run(),
        Command::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
        Command::FleetGen => fleet::generate(&paths::root()),
        Command::BenchFleet {
            idle_seconds,
            scrape_seconds,
            connections,
            tls,
            json,
        } => bench_fleet::run(&bench_fleet::Options {
            idle_seconds,
            scrape_seconds,
            connections,
            tls,
            json,
        }),
        Command::Lab { command } => lab::main(command),
        Command::Demo { accel } => lab::demo::main(accel),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
