//! A network namespace the test made itself (`ip netns add`), deleted on
//! drop even when the test fails. TAP devices and private addresses live
//! only in there, never in the host's own namespace (DESIGN.md).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::tool::{run_tool, skip, tool_or_skip, ToolOut};

/// Names are `flint-t-<pid>-<n>`: the PID lets a later run remove what a
/// killed run left behind.
const PREFIX: &str = "flint-t-";

/// Bit of CAP_NET_ADMIN in the capability sets of /proc/self/status.
const CAP_NET_ADMIN: u32 = 12;

/// Bit of CAP_SYS_ADMIN (`ip netns add` mounts).
const CAP_SYS_ADMIN: u32 = 21;

/// A network namespace; dropping it deletes it.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates a fresh namespace, or says loudly why the calling test is
    /// skipped (no `ip`, no CAP_NET_ADMIN / CAP_SYS_ADMIN, `ip netns add`
    /// refused) and returns None.
    pub fn create_or_skip() -> Option<NetNs> {
        if !tool_or_skip("ip", "iproute2") {
            return None;
        }
        NetNs::try_create().map_err(|why| skip(&why)).ok()
    }

    /// Creates a fresh namespace, or says why it cannot.
    pub fn try_create() -> Result<NetNs, String> {
        if !xtask::packages::on_path("ip") {
            return Err("`ip` is not installed (apt-get install iproute2)".into());
        }
        for (cap, name) in [
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        ] {
            if !has_capability(cap) {
                return Err(format!(
                    "this process lacks {name}, which creating a network namespace and a TAP device needs (run as root)"
                ));
            }
        }
        remove_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = ip(&["netns", "add", &name]);
        if !out.ok() {
            return Err(format!(
                "`{}` failed ({:?}): {}",
                out.argv,
                out.code,
                out.stderr.trim()
            ));
        }
        Ok(NetNs { name })
    }

    /// `ip -n NAME ARGS`; fails the test if it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> ToolOut {
        let mut all = vec!["-n", &self.name];
        all.extend(args);
        let out = ip(&all);
        if !out.ok() {
            out.fail("configuring the test's network namespace failed");
        }
        out
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Runs `program args` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str], limit: Duration) -> ToolOut {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend(args);
        run_tool("ip", &all, limit)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = ip(&["netns", "del", &self.name]);
        if !out.ok() {
            eprintln!(
                "warning: could not delete the test's network namespace {}: {}",
                self.name,
                out.stderr.trim()
            );
        }
    }
}

fn ip(args: &[&str]) -> ToolOut {
    run_tool("ip", args, Duration::from_secs(20))
}

/// True if `bit` is set in this process's effective capabilities.
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Deletes `flint-t-<pid>-*` namespaces whose test process is gone (a test
/// run killed before its drop guards ran).
fn remove_stale() {
    let list = ip(&["netns", "list"]);
    for name in list
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
