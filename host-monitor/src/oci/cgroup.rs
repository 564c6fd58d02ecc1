//! Putting a container's process in `linux.cgroupsPath`, as runc does with
//! its cgroupfs driver, so containerd's metrics (read from the cgroup of
//! the pid in the pid file) and the memory limit apply to the monitor.
//!
//! Both layouts are handled: cgroup v2 alone (`/sys/fs/cgroup` is the
//! unified hierarchy) and v1 (one hierarchy per controller under
//! `/sys/fs/cgroup/`, perhaps with v2 at `/sys/fs/cgroup/unified`, as on
//! the machines this was written on). Systemd's `slice:prefix:name` form
//! is refused: these hosts run no systemd.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Creates the cgroup `path` in every hierarchy, sets the memory limit if
/// one is given, and moves `pid` in. Returns the directories made, for
/// [`remove`].
pub fn enter(path: &str, pid: i32, memory_limit: Option<u64>) -> Result<Vec<PathBuf>, String> {
    if path.contains(':') {
        return Err(format!(
            "cgroupsPath '{path}' is in systemd's slice:prefix:name form; flint-oci uses \
             cgroupfs paths (set SystemdCgroup = false in the containerd runtime options)"
        ));
    }
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("cgroupsPath '{path}' must not contain '.' or '..'"));
    }
    let root = Path::new(CGROUP_ROOT);
    let mut made = Vec::new();
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(relative);
        join(&dir, pid, memory_limit.map(|l| ("memory.max", l)))?;
        made.push(dir);
        return Ok(made);
    }
    let entries = std::fs::read_dir(root)
        .map_err(|e| format!("cannot list the cgroup hierarchies in {CGROUP_ROOT}: {e}"))?;
    let mut hierarchies: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // A symlink such as cpu -> cpu,cpuacct names a hierarchy twice.
        .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect();
    hierarchies.sort();
    for hierarchy in hierarchies {
        let name = hierarchy
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let dir = hierarchy.join(relative);
        let limit = match name.as_deref() {
            Some("memory") => memory_limit.map(|l| ("memory.limit_in_bytes", l)),
            Some("unified") => memory_limit.map(|l| ("memory.max", l)),
            _ => None,
        };
        if name.as_deref() == Some("cpuset") {
            if let Err(e) = inherit_cpuset(&hierarchy, relative) {
                remove(&made);
                return Err(e);
            }
        }
        match join(&dir, pid, limit) {
            Ok(()) => made.push(dir),
            // The v2 side of a hybrid host holds no controllers the
            // container needs; runc joins it only when it can.
            Err(_) if name.as_deref() == Some("unified") => {}
            Err(e) => {
                remove(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

fn join(dir: &Path, pid: i32, limit: Option<(&str, u64)>) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
    if let Some((file, bytes)) = limit {
        std::fs::write(dir.join(file), bytes.to_string()).map_err(|e| {
            format!(
                "cannot set the memory limit in {}: {e}",
                dir.join(file).display()
            )
        })?;
    }
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| {
        format!(
            "cannot move process {pid} into cgroup {}: {e}",
            dir.display()
        )
    })
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and no
/// process may join it until it has some: each level of `relative` gets
/// its parent's (as runc does).
fn inherit_cpuset(hierarchy: &Path, relative: &Path) -> Result<(), String> {
    let mut parent = hierarchy.to_path_buf();
    for component in relative.components() {
        let dir = parent.join(component);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            if mine.trim().is_empty() {
                let theirs = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                std::fs::write(dir.join(file), theirs.trim())
                    .map_err(|e| format!("cannot set {} in cgroup {}: {e}", file, dir.display()))?;
            }
        }
        parent = dir;
    }
    Ok(())
}

/// Removes the cgroup directories [`enter`] made (best effort: a cgroup
/// that still has processes stays).
pub fn remove(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}
