//! `flint`: the Flint host monitor's command line.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use host_monitor::cli::{Cli, Command};
use host_monitor::outcome::STATUS_START_FAILED;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `flint` alone. Still one line: ABI.md section 5 promises
            // exactly one stderr line with every status the monitor decides.
            eprintln!("flint: no command given; try 'flint run --help' or 'flint --help'");
            std::process::exit(STATUS_START_FAILED);
        }
        Err(e) => {
            // One line, and status 125 (not clap's 2): a bad option is the
            // monitor refusing to start, like a bad image.
            let text = e.render().to_string();
            let message = one_line(&text);
            let help = match std::env::args().nth(1) {
                Some(command)
                    if command != "run" && Cli::command().find_subcommand(&command).is_some() =>
                {
                    format!("flint {command} --help")
                }
                _ => "flint run --help".to_owned(),
            };
            eprintln!("flint: {message}; see '{help}'");
            std::process::exit(STATUS_START_FAILED);
        }
    };
    let status = match cli.command {
        Command::Run(args) => host_monitor::run::run(args),
        Command::Fleet(args) => host_monitor::fleet::parent::run(args),
        Command::FleetWorker(args) => host_monitor::fleet::worker_main(args),
        Command::Daemon(args) => host_monitor::daemon::run(args),
        Command::Client(command) => host_monitor::client::run(command),
    };
    std::process::exit(status);
}

/// Clap's error as one line: its first paragraph, without the usage text.
fn one_line(text: &str) -> String {
    let paragraph: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    let joined = paragraph.join(" ");
    let message = joined.trim_start_matches("error: ").trim();
    if message.is_empty() {
        "invalid arguments".to_owned()
    } else {
        message.to_owned()
    }
}
