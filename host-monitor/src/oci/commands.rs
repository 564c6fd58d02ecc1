//! `start`, `state`, `kill`, `delete` and `ps`: each reads the container's
//! directory and its process, and acts.

use super::cgroup;
use super::state::{self, Container, Status};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// `start ID`: lets the waiting process boot the guest, and returns.
pub fn start(root: &Path, id: &str) -> Result<(), String> {
    let c = Container::load(root, id)?;
    match c.status() {
        Status::Created => {}
        Status::Running => return Err(format!("container \"{id}\" is already running")),
        Status::Stopped => {
            return Err(format!(
                "container \"{id}\" is not running (it has stopped)"
            ))
        }
    }
    let fifo = state::fifo_of(&c.dir);
    // Non-blocking: if the process is gone there is no reader, and the open
    // fails (ENXIO) instead of hanging.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map_err(|e| format!("cannot start container \"{id}\": {} ({e})", fifo.display()))?;
    std::fs::write(state::started_marker(&c.dir), b"")
        .map_err(|e| format!("cannot record the start of \"{id}\": {e}"))?;
    f.write_all(b"s")
        .map_err(|e| format!("cannot start container \"{id}\": {e}"))
}

/// `state ID`: runc's JSON.
pub fn state(root: &Path, id: &str) -> Result<(), String> {
    let c = Container::load(root, id)?;
    let status = c.status();
    let json = serde_json::json!({
        "ociVersion": "1.0.2",
        "id": c.record.id,
        "pid": if status == Status::Stopped { 0 } else { c.record.pid },
        "status": status.as_str(),
        "bundle": c.record.bundle,
        "rootfs": c.record.bundle.join("rootfs"),
        "created": c.record.created,
        "owner": "",
        "annotations": c.record.annotations,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// `kill [--all] ID [SIGNAL]`.
pub fn kill(root: &Path, id: &str, signal: &str, all: bool) -> Result<(), String> {
    let signo = parse_signal(signal)?;
    let c = Container::load(root, id)?;
    if !c.alive() {
        return if all {
            Ok(())
        } else {
            Err(format!("container \"{id}\" not running"))
        };
    }
    // SAFETY: kill(2) with a pid whose start time we just checked.
    if unsafe { libc::kill(c.record.pid, signo) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) && all {
            return Ok(());
        }
        return Err(format!("cannot signal container \"{id}\": {e}"));
    }
    Ok(())
}

/// `delete [--force] ID`.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), String> {
    let c = Container::load(root, id)?;
    match c.status() {
        Status::Stopped => {}
        // Like runc: a container never started may go without --force.
        Status::Created => stop_now(&c),
        Status::Running if force => stop_now(&c),
        Status::Running => {
            return Err(format!(
                "cannot delete container \"{id}\" that is not stopped: running (use --force)"
            ))
        }
    }
    cgroup::remove(&c.record.cgroups);
    std::fs::remove_dir_all(&c.dir).map_err(|e| format!("cannot remove {}: {e}", c.dir.display()))
}

/// SIGKILLs the container's process and waits (briefly) until it is gone
/// or a zombie: it is the shim's child, not ours, so we cannot reap it.
fn stop_now(c: &Container) {
    // SAFETY: kill(2) with a pid whose start time `status` just checked.
    unsafe { libc::kill(c.record.pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while c.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ps [--format table|json] ID`.
pub fn ps(root: &Path, id: &str, format: &str) -> Result<(), String> {
    let c = Container::load(root, id)?;
    let pids: Vec<i32> = if c.alive() {
        vec![c.record.pid]
    } else {
        Vec::new()
    };
    match format {
        "json" => println!(
            "{}",
            serde_json::to_string(&pids).map_err(|e| e.to_string())?
        ),
        "table" => {
            println!("PID");
            for pid in pids {
                println!("{pid}");
            }
        }
        other => return Err(format!("unknown ps format '{other}': use table or json")),
    }
    Ok(())
}

/// Parses `9`, `KILL`, `SIGKILL` (any case).
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let signo = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => {
            return Err(format!(
                "unknown signal '{text}': give a number or a name such as TERM"
            ))
        }
    };
    Ok(signo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("term"), Ok(15));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("BOGUS").is_err());
    }
}
