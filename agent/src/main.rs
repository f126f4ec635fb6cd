use clap::{Parser, Subcommand, ValueEnum};
use kdump_agent::cli;

#[derive(Parser)]
#[command(
    name = "kdump-agent",
    version,
    about = "Keeps kdump ready when RAM changes"
)]
struct Cli {
    /// Log format: human-readable or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: watch memory hotplug and kexec loads, export readiness.
    Run(Box<cli::run::RunArgs>),
    /// Is kdump ready on this node? Asks the daemon. Exit 0 when ready, 3 when not.
    Status(cli::status::StatusArgs),
    /// The same status computed in one shot, without a daemon.
    Check(cli::check::CheckArgs),
    /// The loaded crash header against the expected one, range by range (exit 3 when stale or unknown).
    Show(cli::show::ShowArgs),
    /// Build, print, parse or compare a crash ELF header (elfcorehdr).
    Header(cli::header::HeaderArgs),
    /// Ask the running daemon to reconcile now; prints what it did. Exit 0 when ready, 3 when not.
    Reload(cli::reload::ReloadArgs),
}

/// Exit code for errors (bad input, unreadable files, busy address); 3 means "not ready".
const EXIT_ERROR: i32 = 2;

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => cli::run::run(*args),
        Command::Status(args) => cli::status::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Show(args) => cli::show::run(args),
        Command::Header(args) => cli::header::run(args),
        Command::Reload(args) => cli::reload::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kdump-agent: error: {e:#}");
            std::process::exit(EXIT_ERROR);
        }
    }
}
