//! The part of an OCI runtime spec (`BUNDLE/config.json`) that Flint uses,
//! and what it means for the instance: which image, which arguments, how
//! much guest RAM, which ports to publish.

use crate::cli::parse_mem;
use crate::net::spec::{parse_publish, Publish};
use hypercall_abi::{CMDLINE_MAX, MEM_SIZE_MAX, PAGE_SIZE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Annotation: ports to publish, comma-separated `[HOST_IP:]HOST_PORT:GUEST_PORT`
/// (as `flint run --publish`; HOST_IP defaults to 127.0.0.1).
pub const ANNOTATION_PUBLISH: &str = "dev.flint.publish";
/// Annotation: guest RAM (e.g. `64M`) when the spec sets no memory limit;
/// with a limit, the smaller of the two.
pub const ANNOTATION_MEM: &str = "dev.flint.mem";
/// Annotation the CRI plugin puts on a pod's sandbox (pause) container.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Guest RAM when neither a memory limit nor `dev.flint.mem` says otherwise
/// (`flint run`'s default).
pub const MEM_DEFAULT: u64 = 16 << 20;
/// What a memory limit keeps back for the monitor itself (its own RSS, the
/// VM's page tables and KVM's memory are charged to the same cgroup): the
/// guest gets `limit - MONITOR_ALLOWANCE`.
pub const MONITOR_ALLOWANCE: u64 = 16 << 20;
/// The least guest RAM a memory limit may leave.
pub const MEM_MIN: u64 = 4 << 20;

/// The subset of the OCI runtime spec that Flint reads.
#[derive(Debug, Default, Deserialize)]
pub struct Spec {
    #[serde(default)]
    pub process: Option<Process>,
    #[serde(default)]
    pub root: Option<Root>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub linux: Option<Linux>,
}

/// `process`: what to run.
#[derive(Debug, Default, Deserialize)]
pub struct Process {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub args: Vec<String>,
}

/// `root`: the container's root file system.
#[derive(Debug, Default, Deserialize)]
pub struct Root {
    pub path: PathBuf,
}

/// `linux`: resources and the cgroup.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    #[serde(default)]
    pub cgroups_path: Option<String>,
    #[serde(default)]
    pub resources: Option<Resources>,
}

/// `linux.resources`.
#[derive(Debug, Default, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub memory: Option<Memory>,
}

/// `linux.resources.memory`.
#[derive(Debug, Default, Deserialize)]
pub struct Memory {
    /// Bytes; absent, 0 or negative (-1) means unlimited.
    #[serde(default)]
    pub limit: Option<i64>,
}

/// What a container is, decided from its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// A Flint image to boot.
    Guest(GuestPlan),
    /// A CRI pod's sandbox ("pause") container: no VM, it only waits to be
    /// killed.
    Sandbox,
}

/// How to boot the guest: the `flint run` it amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlan {
    /// The image, inside the bundle's rootfs.
    pub image: PathBuf,
    /// The guest's arguments (`process.args[1..]`).
    pub args: Vec<String>,
    /// Guest RAM in bytes.
    pub mem: u64,
    /// Ports to publish.
    pub publish: Vec<Publish>,
}

impl GuestPlan {
    /// The `flint run` command line this plan stands for (without the
    /// program name).
    pub fn run_argv(&self) -> Vec<String> {
        let mut argv = vec!["run".to_owned(), "--mem".to_owned(), self.mem.to_string()];
        for p in &self.publish {
            argv.push("--publish".to_owned());
            argv.push(format!("{}:{}", p.host, p.guest_port));
        }
        argv.push(self.image.display().to_string());
        argv.push("--".to_owned());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

impl Spec {
    /// Reads `BUNDLE/config.json`.
    pub fn load(bundle: &Path) -> Result<Spec, String> {
        let file = bundle.join("config.json");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read the OCI spec {}: {e}", file.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a valid OCI runtime spec: {e}", file.display()))
    }

    /// True for a CRI pod's sandbox container.
    pub fn is_sandbox(&self) -> bool {
        self.annotations
            .get(ANNOTATION_CONTAINER_TYPE)
            .is_some_and(|t| t == "sandbox")
    }

    /// `linux.cgroupsPath`, if set and not empty.
    pub fn cgroups_path(&self) -> Option<&str> {
        self.linux
            .as_ref()
            .and_then(|l| l.cgroups_path.as_deref())
            .filter(|p| !p.is_empty())
    }

    /// `linux.resources.memory.limit` in bytes, if limited.
    pub fn memory_limit(&self) -> Option<u64> {
        let limit = self
            .linux
            .as_ref()?
            .resources
            .as_ref()?
            .memory
            .as_ref()?
            .limit?;
        u64::try_from(limit).ok().filter(|l| *l > 0)
    }

    /// Whether the container wants a terminal (`process.terminal`).
    pub fn terminal(&self) -> bool {
        self.process.as_ref().is_some_and(|p| p.terminal)
    }

    /// Decides what the container runs; `bundle` resolves a relative
    /// `root.path`.
    pub fn workload(&self, bundle: &Path) -> Result<Workload, String> {
        if self.is_sandbox() {
            return Ok(Workload::Sandbox);
        }
        let args = self.process.as_ref().map(|p| &p.args[..]).unwrap_or(&[]);
        let (program, rest) = args.split_first().ok_or(
            "the spec's process.args is empty: give the Flint image as process.args[0] \
             (the image's entrypoint, or the first argument of `ctr run IMAGE ID ...`)",
        )?;
        let root = match &self.root {
            Some(root) if root.path.is_absolute() => root.path.clone(),
            Some(root) => bundle.join(&root.path),
            None => bundle.join("rootfs"),
        };
        let image = resolve_in_rootfs(&root, program)?;
        let cmdline_len = rest.iter().map(|a| a.len() + 1).sum::<usize>();
        if cmdline_len > CMDLINE_MAX as usize + 1 {
            return Err(format!(
                "the guest's arguments (process.args[1..]) take {} bytes joined; at most {CMDLINE_MAX}",
                cmdline_len.saturating_sub(1)
            ));
        }
        Ok(Workload::Guest(GuestPlan {
            image,
            args: rest.to_vec(),
            mem: self.guest_mem()?,
            publish: self.publish()?,
        }))
    }

    /// Guest RAM: the memory limit less [`MONITOR_ALLOWANCE`] (rounded down
    /// to 4K, at most 3G), or `dev.flint.mem`, or [`MEM_DEFAULT`]; the
    /// smaller of the two when both are given.
    pub fn guest_mem(&self) -> Result<u64, String> {
        let asked = match self.annotations.get(ANNOTATION_MEM) {
            Some(text) => {
                Some(parse_mem(text).map_err(|e| format!("annotation {ANNOTATION_MEM}: {e}"))?)
            }
            None => None,
        };
        let Some(limit) = self.memory_limit() else {
            return Ok(asked.unwrap_or(MEM_DEFAULT));
        };
        let room = limit.saturating_sub(MONITOR_ALLOWANCE) / PAGE_SIZE * PAGE_SIZE;
        if room < MEM_MIN {
            return Err(format!(
                "the memory limit ({limit} bytes) leaves less than {} MiB of guest RAM once \
                 {} MiB are kept for the monitor; set linux.resources.memory.limit to at least {} MiB",
                MEM_MIN >> 20,
                MONITOR_ALLOWANCE >> 20,
                (MEM_MIN + MONITOR_ALLOWANCE) >> 20
            ));
        }
        let room = room.min(MEM_SIZE_MAX);
        Ok(asked.map_or(room, |a| a.min(room)))
    }

    /// The ports of `dev.flint.publish`.
    pub fn publish(&self) -> Result<Vec<Publish>, String> {
        let Some(list) = self.annotations.get(ANNOTATION_PUBLISH) else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                parse_publish(item).map_err(|e| format!("annotation {ANNOTATION_PUBLISH}: {e}"))
            })
            .collect()
    }
}

/// `program` (absolute or relative) inside `rootfs`, refusing anything that
/// leaves it (`..`, or a symlink pointing out).
fn resolve_in_rootfs(rootfs: &Path, program: &str) -> Result<PathBuf, String> {
    let root = rootfs.canonicalize().map_err(|e| {
        format!(
            "the bundle's rootfs {} is not usable: {e}",
            rootfs.display()
        )
    })?;
    let joined = root.join(program.trim_start_matches('/'));
    let image = joined.canonicalize().map_err(|e| {
        format!(
            "process.args[0] '{program}' names no file in the container's rootfs ({e}); \
             it must be the Flint image, e.g. /hello.elf"
        )
    })?;
    if !image.starts_with(&root) {
        return Err(format!(
            "process.args[0] '{program}' resolves outside the container's rootfs"
        ));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn memory_limit_becomes_guest_ram_less_the_allowance() {
        let s = spec(r#"{"linux":{"resources":{"memory":{"limit":134217728}}}}"#);
        assert_eq!(s.guest_mem(), Ok((128 - 16) << 20));
        let s = spec(r#"{"linux":{"resources":{"memory":{"limit":-1}}}}"#);
        assert_eq!(s.guest_mem(), Ok(MEM_DEFAULT));
        let s = spec(r#"{"linux":{"resources":{"memory":{"limit":10485760}}}}"#);
        assert!(s.guest_mem().unwrap_err().contains("at least 20 MiB"));
        let s = spec(r#"{"linux":{"resources":{"memory":{"limit":68719476736}}}}"#);
        assert_eq!(s.guest_mem(), Ok(MEM_SIZE_MAX));
        let s = spec(
            r#"{"annotations":{"dev.flint.mem":"64M"},"linux":{"resources":{"memory":{"limit":41943040}}}}"#,
        );
        assert_eq!(s.guest_mem(), Ok(24 << 20));
        let s = spec(r#"{"annotations":{"dev.flint.mem":"64M"}}"#);
        assert_eq!(s.guest_mem(), Ok(64 << 20));
    }

    #[test]
    fn publish_annotation_is_a_list() {
        let s = spec(r#"{"annotations":{"dev.flint.publish":"8080:80, 127.0.0.2:9090:90"}}"#);
        let p = s.publish().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].host.to_string(), "127.0.0.1:8080");
        assert_eq!(p[1].guest_port, 90);
        let s = spec(r#"{"annotations":{"dev.flint.publish":"80"}}"#);
        assert!(s.publish().unwrap_err().contains("dev.flint.publish"));
    }

    #[test]
    fn sandbox_is_recognised_and_image_must_stay_in_rootfs() {
        let s = spec(r#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}"#);
        assert_eq!(s.workload(Path::new("/nonexistent")), Ok(Workload::Sandbox));
        let dir = std::env::temp_dir().join(format!("flint-oci-spec-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("rootfs/app.elf"), b"x").unwrap();
        std::fs::write(dir.join("outside.elf"), b"x").unwrap();
        let s = spec(r#"{"process":{"args":["/app.elf","a","b"]}}"#);
        match s.workload(&dir).unwrap() {
            Workload::Guest(plan) => {
                assert!(plan.image.ends_with("rootfs/app.elf"));
                assert_eq!(plan.args, ["a", "b"]);
                assert_eq!(plan.mem, MEM_DEFAULT);
            }
            other => panic!("{other:?}"),
        }
        let s = spec(r#"{"process":{"args":["../outside.elf"]}}"#);
        assert!(s.workload(&dir).unwrap_err().contains("outside"));
        let s = spec(r#"{"process":{"args":[]}}"#);
        assert!(s.workload(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
