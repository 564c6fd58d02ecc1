//! The `flint` command line.

use clap::{Args, Parser, Subcommand};
use hypercall_abi::{MEM_SIZE_MAX, PAGE_SIZE, STACK_SIZE_MIN};
use std::path::PathBuf;
use std::time::Duration;

/// Run Flint unikernel images as KVM micro-VMs.
#[derive(Debug, Parser)]
#[command(name = "flint", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `flint` does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot IMAGE in a new micro-VM and wait for it; the exit status is the
    /// guest's (0-255), or 101 panic, 124 timeout, 125 could not start,
    /// 139 guest fault.
    Run(RunArgs),
}

/// Options of `flint run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Guest console output goes to stdout. Sizes accept K, M and G \
suffixes (powers of 1024). Set FLINT_TIMINGS=1 for the same output as --timings."
)]
pub struct RunArgs {
    /// Guest RAM (a multiple of 4K, at most 3G); it is mapped lazily, so
    /// untouched memory costs the host nothing.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_mem)]
    pub mem: u64,

    /// Guest stack size (a multiple of 4K, at least 16K).
    #[arg(long, value_name = "SIZE", default_value = "256K", value_parser = parse_stack)]
    pub stack: u64,

    /// Stop the guest after SECS seconds of wall time (status 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print the monitor's start-up phases to stderr.
    #[arg(long)]
    pub timings: bool,

    /// The Flint image (an ELF built by `cargo xtask build <app>`).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Arguments for the app, after `--`; joined by single spaces into the
    /// guest's command line (at most 4096 bytes).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Parses `4096`, `64K`, `16M`, `1G` (also `16MiB`, `16m`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(digits_end);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 4096, 64K, 16M or 1G"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("'{text}' has an unknown suffix; use K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a positive size that fits in 64 bits"))
}

/// Parses `--mem`: a size, a multiple of 4 KiB, at most 3 GiB.
pub fn parse_mem(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if !size.is_multiple_of(PAGE_SIZE) || size > MEM_SIZE_MAX {
        return Err(format!(
            "guest RAM must be a multiple of 4K and at most 3G, not {text}"
        ));
    }
    Ok(size)
}

/// Parses `--stack`: a size, a multiple of 4 KiB, at least 16 KiB.
pub fn parse_stack(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if !size.is_multiple_of(PAGE_SIZE) || size < STACK_SIZE_MIN {
        return Err(format!(
            "the stack must be a multiple of 4K and at least 16K, not {text}"
        ));
    }
    Ok(size)
}

/// Parses a positive number of seconds, e.g. `5` or `0.5`.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{text}' is not a positive number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "abc", "0", "16X", "-1", "99999999999999999999G", "1.5M"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn mem_and_stack_sizes_follow_the_layout_rules() {
        assert_eq!(parse_mem("3G"), Ok(3 << 30));
        assert!(parse_mem("5G").is_err());
        assert!(parse_mem("6000").is_err());
        assert_eq!(parse_stack("16K"), Ok(16 << 10));
        assert!(parse_stack("8K").is_err());
        assert!(parse_stack("20000").is_err());
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
