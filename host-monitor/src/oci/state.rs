//! A container's state on disk: `ROOT/ID/` holds `state.json` (what
//! `create` decided), the `start` fifo the waiting process reads, and the
//! `started` marker `start` leaves. Whether the container is created,
//! running or stopped is read from its process, never cached.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The default `--root` (runc's is `/run/runc`).
pub const DEFAULT_ROOT: &str = "/run/flint-oci";

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// The process that runs (or will run) the guest.
    pub pid: i32,
    /// Its start time (field 22 of /proc/PID/stat), so a reused pid is not
    /// mistaken for it.
    pub pid_start: u64,
    pub bundle: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    pub annotations: BTreeMap<String, String>,
    /// The cgroup directories the process was put in (removed by `delete`).
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl Status {
    /// The spec's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// One container's directory under the root.
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

/// Checks that `id` is a plain name (it becomes a directory name).
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container id '{id}': use letters, digits, '-', '_', '.' and '+'"
        ))
    }
}

/// `ROOT/ID`.
pub fn dir_of(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// The fifo the waiting process reads `start`'s byte from.
pub fn fifo_of(dir: &Path) -> PathBuf {
    dir.join("start")
}

/// The marker `start` leaves once it has let the guest run.
pub fn started_marker(dir: &Path) -> PathBuf {
    dir.join("started")
}

impl Container {
    /// Loads container `id`; the error says "does not exist" when it does
    /// not (containerd's shim looks for exactly that).
    pub fn load(root: &Path, id: &str) -> Result<Container, String> {
        check_id(id)?;
        let dir = dir_of(root, id);
        let file = dir.join("state.json");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("container \"{id}\" does not exist"))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let record = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is damaged ({e}); delete --force the container",
                file.display()
            )
        })?;
        Ok(Container { dir, record })
    }

    /// Writes the record (atomically: a temporary file renamed over it).
    pub fn save(&self) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(&self.record).map_err(|e| e.to_string())?;
        write_atomic(&self.dir.join("state.json"), &text)
    }

    /// True while the container's process exists and is not a zombie.
    pub fn alive(&self) -> bool {
        process_start(self.record.pid).is_some_and(|start| start == self.record.pid_start)
    }

    /// The container's status now.
    pub fn status(&self) -> Status {
        if !self.alive() {
            Status::Stopped
        } else if started_marker(&self.dir).exists() {
            Status::Running
        } else {
            Status::Created
        }
    }
}

/// The start time of live (not zombie) process `pid`, from /proc.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After ')' come field 3 (state) onwards; starttime is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so readers see all of it or nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
}

/// Now as RFC 3339 in UTC with nanoseconds, e.g. `2026-11-22T04:42:35.123456789Z`.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn ids_are_plain_names() {
        assert!(check_id("abc-1_2.x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        assert!(process_start(pid).is_some());
    }
}
