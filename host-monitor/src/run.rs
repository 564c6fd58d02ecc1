//! `flint run`: one image, one instance, the guest's status as ours.

use crate::cli::RunArgs;
use crate::image::Image;
use crate::instance::{Config, Instance};
use crate::outcome::STATUS_START_FAILED;
use crate::timings::Timings;

/// Runs the instance `args` describes and returns the exit status.
pub fn run(args: RunArgs) -> i32 {
    let timings = args.timings || std::env::var_os("FLINT_TIMINGS").is_some_and(|v| v == "1");
    let config = Config {
        mem_size: args.mem,
        stack_size: args.stack,
        timeout: args.timeout,
        cmdline: args.args.join(" "),
        timings,
    };
    let mut timings = Timings::new(config.timings);
    let image = match Image::load(&args.image, config.mem_size) {
        Ok(image) => image,
        Err(e) => return refuse(&e),
    };
    timings.mark("read image");
    let mut instance = match Instance::start_timed(&image, &config, timings) {
        Ok(instance) => instance,
        Err(e) => return refuse(&format!("{}: {e}", args.image.display())),
    };
    let outcome = instance.run();
    instance.timings().report();
    if let Some(line) = outcome.verdict() {
        eprintln!("{line}");
    }
    outcome.status()
}

fn refuse(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("flint: {error}");
    STATUS_START_FAILED
}
