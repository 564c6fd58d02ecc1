//! Running programs: echo the command, fail with a typed error.

use std::process::Command;

use crate::{Error, Result};

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion; a non-zero exit is an [`Error::Failed`].
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            command: describe(cmd),
            status,
        })
    }
}

/// True if `program` can be started and exits 0 (for `--version` probes).
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `cargo` to run: the one that started us, if any.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::root());
    cmd
}
