//! The `fulcrum` command: parse the command line, load the config before binding anything,
//! set up logging and the runtime, turn signals into server controls.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fulcrum::config::Config;
use fulcrum::process;
use fulcrum::server::{self, Control};

/// A layer-4 / layer-7 load-balancing proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The config file.
    #[arg(
        short,
        long,
        global = true,
        env = "FULCRUM_CONFIG",
        default_value = "/etc/fulcrum/fulcrum.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground (the default).
    Run,
    /// Validate the config file as a reload would and print a summary; binds no socket.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", fulcrum::summary::render(&config));
            ExitCode::SUCCESS
        }
        Command::Run => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    fulcrum::logging::init(&config.log);
    process::raise_fd_limit();
    let runtime = match process::runtime(&config.runtime) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(signals(tx));
        server::run(config, rx).await
    });
    // Connections cut off at the drain deadline may still hold tasks: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP reloads; the first SIGTERM or SIGINT drains, a second one exits at once.
async fn signals(tx: tokio::sync::mpsc::Sender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // Never wait here: during a drain nobody reads reloads, and a blocked loop
                // would miss the second stop signal.
                let _ = tx.try_send(Control::Reload);
            }
            _ = term.recv() => stop(&tx, &mut stopping).await,
            _ = int.recv() => stop(&tx, &mut stopping).await,
        }
    }
}

async fn stop(tx: &tokio::sync::mpsc::Sender<Control>, stopping: &mut bool) {
    if *stopping {
        tracing::warn!("second stop signal, exiting now");
        std::process::exit(0);
    }
    *stopping = true;
    let _ = tx.send(Control::Shutdown).await;
}

/// jemalloc, chosen over glibc's allocator and mimalloc by the benchmark (README,
/// "Benchmark"): glibc's per-thread cache overflows under many short connections, and
/// mimalloc keeps half as much memory again per idle connection.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
