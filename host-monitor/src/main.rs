//! `flint`: the Flint host monitor's command line.

use clap::error::ErrorKind;
use clap::Parser;
use host_monitor::cli::{Cli, Command};
use host_monitor::outcome::STATUS_START_FAILED;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // One line, and status 125 (not clap's 2): a bad option is the
            // monitor refusing to start, like a bad image.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "flint: {}; see 'flint run --help'",
                first.trim_start_matches("error: ")
            );
            std::process::exit(STATUS_START_FAILED);
        }
    };
    let status = match cli.command {
        Command::Run(args) => host_monitor::run::run(args),
    };
    std::process::exit(status);
}
