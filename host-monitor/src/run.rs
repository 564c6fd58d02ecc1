//! `flint run`: one image, one instance, the guest's status as ours.

use crate::cli::RunArgs;
use crate::image::Image;
use crate::instance::{Config, Instance, StartError};
use crate::net::spec;
use crate::outcome::{Outcome, STATUS_START_FAILED};
use crate::signals;
use crate::timings::Timings;

/// Runs the instance `args` describes and returns the exit status. If a
/// stop signal ends it, the process dies by that signal instead.
pub fn run(args: RunArgs) -> i32 {
    let timings = args.timings || env_flag("FLINT_TIMINGS");
    let stats = args.stats || env_flag("FLINT_STATS");
    let net = match spec::resolve(args.net_args()) {
        Ok(net) => net,
        Err(e) => return refuse(&e),
    };
    if let Err(e) = signals::install() {
        return refuse(&format!("cannot catch SIGTERM and SIGINT: {e}"));
    }
    let config = Config {
        mem_size: args.mem,
        stack_size: args.stack,
        timeout: args.timeout,
        cmdline: args.args.join(" "),
        timings,
        net,
    };
    let mut timings = Timings::new(config.timings);
    let image = match Image::load(&args.image, config.mem_size) {
        Ok(image) => image,
        Err(e) => return refuse(&e),
    };
    timings.mark("read image");
    let mut instance = match Instance::start_timed(&image, &config, timings) {
        Ok(instance) => instance,
        // The network's errors name the option at fault, not the image.
        Err(e @ StartError::Net(_)) => return refuse(&e),
        Err(e) => return refuse(&format!("{}: {e}", args.image.display())),
    };
    let outcome = instance.run();
    instance.timings().report();
    if stats {
        instance.stats().report();
    }
    if let Some(line) = outcome.verdict() {
        eprintln!("{line}");
    }
    if let Outcome::Signalled(signo) = outcome {
        // Close the TAP device and the listening sockets before dying.
        drop(instance);
        signals::die_by(signo);
    }
    outcome.status()
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

fn refuse(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("flint: {error}");
    STATUS_START_FAILED
}
