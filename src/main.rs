//! `backstop`: the operator's command line over the Backstop core. Every command takes
//! `--json`, exits 0 only on success, shows a progress bar only when stderr is a terminal, and
//! uses the standard AWS configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials). The
//! commands are in `cli/`, one file each; what they print is in `render`.

mod cli;
mod progress;
mod render;

use std::io::IsTerminal;
use std::process::ExitCode;

use backstop_core::Error;
use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    // Known before parsing, so an argument error is answered in JSON too.
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => return render::failure(json, &Error::InvalidInput(clap_message(&e))),
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => render::failure(json, &e),
    }
}

/// clap's message without its `error: ` prefix and usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKSTOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
