//! The daemon's state: registered images and instances, admission control
//! (memory budget, instance cap) and every lifecycle operation. All of it
//! is synchronous; the API runs the operations that wait (building a VM,
//! pausing, stopping, joining a thread) on tokio's blocking threads.

use super::error::ApiError;
use super::model::{
    CreateInstance, ImageInfo, InstanceInfo, Metrics, RegisterImage, RunConfig, Size,
    SnapshotRequest,
};
use super::vm::{self, Go, Spec, State, VmThread};
use crate::cli;
use crate::image::Image;
use crate::instance::Config;
use crate::limits::{self, Limits};
use crate::net::spec::{self, NetArgs, NetSetup};
use crate::signals::Paused;
use crate::snapshot::{Recorder, Snapshot};
use hypercall_abi::Hypercall;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How long a pause waits for the vCPU thread to park.
const PAUSE_WAIT: Duration = Duration::from_secs(5);
/// How long a stop waits for the vCPU thread to end.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The daemon's command-line settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Sum of the guest RAM (`mem`) of all instances holding a VM.
    pub memory_budget: u64,
    /// Instances holding a VM (created, running or paused) at once.
    pub max_instances: u64,
    /// Put each vCPU thread under the seccomp filter.
    pub seccomp: bool,
    /// Console bytes kept per instance for `flint logs`.
    pub console_buffer: usize,
}

/// The daemon: settings plus everything it holds.
pub struct Daemon {
    pub settings: Settings,
    pub started: Instant,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    images: BTreeMap<String, ImageEntry>,
    instances: BTreeMap<u64, Entry>,
    next_id: u64,
    /// Creates admitted and still building their VM.
    pending: u64,
    pending_memory: u64,
}

struct ImageEntry {
    info: ImageInfo,
    path: PathBuf,
    /// Loaded and checked per guest RAM size (the check depends on it).
    loaded: HashMap<u64, Arc<Image>>,
}

struct Entry {
    image_id: String,
    snapshot: Option<String>,
    image: Arc<Image>,
    config: Config,
    run_config: RunConfig,
    shared: Arc<vm::Shared>,
    go: mpsc_sender::Sender,
    thread: Option<JoinHandle<()>>,
}

mod mpsc_sender {
    /// The vCPU thread's control channel (Send + Sync behind a mutex, as
    /// the registry is shared between tokio's threads).
    pub type Sender = std::sync::Mutex<std::sync::mpsc::Sender<super::Go>>;
}

impl Daemon {
    pub fn new(settings: Settings) -> Daemon {
        Daemon {
            settings,
            started: Instant::now(),
            registry: Mutex::new(Registry {
                next_id: 1,
                ..Registry::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- images ----

    /// Registers the image at `req.path` (checked as `flint run` would).
    pub fn register_image(&self, req: RegisterImage) -> Result<ImageInfo, ApiError> {
        let path = PathBuf::from(&req.path);
        let id = match req.name {
            Some(name) => name,
            None => default_image_id(&path),
        };
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ApiError::bad_request(format!(
                "image name '{id}' must be letters, digits, '-', '_' or '.'; give \"name\""
            )));
        }
        let image = Image::load(&path, 16 << 20)
            .map_err(|e| ApiError::unprocessable(format!("cannot register the image: {e}")))?;
        let mut registry = self.lock();
        if let Some(existing) = registry.images.get(&id) {
            if existing.path == path {
                return Ok(existing.info.clone());
            }
            return Err(ApiError::conflict(format!(
                "an image named '{id}' is already registered (for {}); give another \"name\"",
                existing.path.display()
            )));
        }
        let info = ImageInfo {
            id: id.clone(),
            path: path.display().to_string(),
            size_bytes: image.bytes().len() as u64,
            registered_at: unix_secs(SystemTime::now()),
        };
        registry.images.insert(
            id,
            ImageEntry {
                info: info.clone(),
                path,
                loaded: HashMap::from([(16 << 20, Arc::new(image))]),
            },
        );
        Ok(info)
    }

    pub fn images(&self) -> Vec<ImageInfo> {
        self.lock()
            .images
            .values()
            .map(|i| i.info.clone())
            .collect()
    }

    pub fn image(&self, id: &str) -> Result<ImageInfo, ApiError> {
        self.lock()
            .images
            .get(id)
            .map(|i| i.info.clone())
            .ok_or_else(|| ApiError::not_found("image", id))
    }

    /// The image `name` names (a registered id, or a path: registered
    /// now), loaded for `mem` bytes of guest RAM.
    fn resolve_image(&self, name: &str, mem: u64) -> Result<(String, Arc<Image>), ApiError> {
        let id = {
            let registry = self.lock();
            if registry.images.contains_key(name) {
                name.to_owned()
            } else if let Some((id, _)) = registry
                .images
                .iter()
                .find(|(_, i)| i.path == Path::new(name))
            {
                id.clone()
            } else if Path::new(name).is_file() {
                drop(registry);
                self.register_image(RegisterImage {
                    path: name.to_owned(),
                    name: None,
                })?
                .id
            } else {
                return Err(ApiError::not_found("image", name));
            }
        };
        let path = {
            let registry = self.lock();
            let entry = registry
                .images
                .get(&id)
                .ok_or_else(|| ApiError::not_found("image", &id))?;
            if let Some(image) = entry.loaded.get(&mem) {
                return Ok((id, image.clone()));
            }
            entry.path.clone()
        };
        let image = Arc::new(
            Image::load(&path, mem)
                .map_err(|e| ApiError::unprocessable(format!("cannot use image '{id}': {e}")))?,
        );
        if let Some(entry) = self.lock().images.get_mut(&id) {
            entry.loaded.insert(mem, image.clone());
        }
        Ok((id, image))
    }

    // ---- instances ----

    /// Creates an instance (its VM built and ready), after admission
    /// control; starts it too if `req.start`.
    pub fn create(&self, req: CreateInstance) -> Result<InstanceInfo, ApiError> {
        let (mut config, limits, run_config) = run_options(&req)?;
        let (image_id, image, snapshot) = match &req.snapshot {
            Some(file) => {
                if !req.args.is_empty() {
                    return Err(ApiError::bad_request(
                        "the app's arguments come from the snapshot; give no \"args\"",
                    ));
                }
                let image_path = match &req.image {
                    Some(name) => Some(self.image_path(name)?),
                    None => None,
                };
                let (snapshot, image) =
                    Snapshot::open_for(Path::new(file), image_path.as_deref(), &mut config)
                        .map_err(|e| {
                            ApiError::unprocessable(format!("cannot restore {file}: {e}"))
                        })?;
                let id = req
                    .image
                    .clone()
                    .unwrap_or_else(|| default_image_id(image.path()));
                (id, Arc::new(image), Some(Arc::new(snapshot)))
            }
            None => {
                let name = req.image.as_deref().ok_or_else(|| {
                    ApiError::bad_request("give \"image\" (an image id or path) or \"snapshot\"")
                })?;
                let (id, image) = self.resolve_image(name, config.mem_size)?;
                (id, image, None)
            }
        };
        let mem = config.mem_size;
        let id = self.admit(mem)?;
        let spec = Spec {
            id,
            image: image.clone(),
            snapshot,
            config: config.clone(),
            limits,
            seccomp: self.settings.seccomp,
            console_capacity: self.settings.console_buffer,
        };
        let built = vm::spawn(spec);
        let mut registry = self.lock();
        registry.pending -= 1;
        registry.pending_memory -= mem;
        let VmThread { shared, go, thread } = built.map_err(ApiError::unprocessable)?;
        let mut run_config = run_config;
        run_config.mem_bytes = config.mem_size;
        run_config.stack_bytes = config.stack_size;
        run_config.cmdline = config.cmdline.clone();
        registry.instances.insert(
            id,
            Entry {
                image_id,
                snapshot: req.snapshot.clone(),
                image,
                config,
                run_config,
                shared,
                go: Mutex::new(go),
                thread: Some(thread),
            },
        );
        drop(registry);
        if req.start {
            return self.start(&id.to_string());
        }
        self.info(&id.to_string())
    }

    /// Admission control: room for one more instance of `mem` bytes?
    /// Reserves it (as pending) and hands out the instance's id.
    fn admit(&self, mem: u64) -> Result<u64, ApiError> {
        let mut registry = self.lock();
        let (live, reserved) = registry.usage();
        let live = live + registry.pending;
        let reserved = reserved + registry.pending_memory;
        let cap = self.settings.max_instances;
        if live >= cap {
            return Err(ApiError::admission(
                "instance_cap",
                format!(
                    "the daemon already holds {live} instances, its cap (--max-instances {cap}); \
                     delete or stop some first"
                ),
            ));
        }
        let budget = self.settings.memory_budget;
        if reserved + mem > budget {
            return Err(ApiError::admission(
                "memory_budget",
                format!(
                    "{} MiB of guest RAM would exceed the memory budget: {} of {} MiB \
                     (--memory-budget) is held by other instances; stop or delete some, \
                     or ask for less \"mem\"",
                    mem >> 20,
                    reserved >> 20,
                    budget >> 20
                ),
            ));
        }
        registry.pending += 1;
        registry.pending_memory += mem;
        let id = registry.next_id;
        registry.next_id += 1;
        Ok(id)
    }

    fn image_path(&self, name: &str) -> Result<PathBuf, ApiError> {
        match self.lock().images.get(name) {
            Some(entry) => Ok(entry.path.clone()),
            None => Ok(PathBuf::from(name)),
        }
    }

    /// Runs a created instance.
    pub fn start(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        {
            let registry = self.lock();
            let entry = registry.entry(id)?;
            let mut live = vm::lock(&entry.shared);
            if live.state != State::Created {
                return Err(ApiError::conflict(format!(
                    "instance {id} is {}; only a created instance can be started \
                     (create a new one to run the image again)",
                    live.state.name()
                )));
            }
            live.state = State::Running;
            live.started = Some((Instant::now(), SystemTime::now()));
            drop(live);
            let go = entry.go.lock().unwrap_or_else(|e| e.into_inner());
            if go.send(Go::Start).is_err() {
                return Err(ApiError::internal(format!(
                    "instance {id}'s vCPU thread is gone"
                )));
            }
        }
        self.info(id)
    }

    /// Stops a running, paused or created instance (as SIGTERM stops
    /// `flint run`) and waits until its VM is gone.
    pub fn stop(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        let (shared, thread) = {
            let mut registry = self.lock();
            let key = parse_id(id)?;
            let entry = registry.entry_mut(id)?;
            let state = vm::lock(&entry.shared).state;
            match state {
                State::Exited => {
                    return Err(ApiError::conflict(format!(
                        "instance {id} has already ended; delete it with DELETE /instances/{id}"
                    )));
                }
                State::Created => {
                    let go = entry.go.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = go.send(Go::Abort);
                }
                State::Running | State::Paused => {
                    // The last measure of its memory, while it has some.
                    describe(key, entry);
                    entry.shared.handle.stop(libc::SIGTERM)
                }
            }
            (entry.shared.clone(), entry.thread.take())
        };
        wait_ended(&shared, thread)?;
        self.info(id)
    }

    /// Parks a running instance's vCPU off the CPU.
    pub fn pause(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        let shared = self.shared_in(id, State::Running, "paused")?;
        match shared.handle.pause(PAUSE_WAIT) {
            Paused::Parked => {
                let mut live = vm::lock(&shared);
                if live.state == State::Running {
                    live.state = State::Paused;
                }
            }
            Paused::Ended => {
                shared.handle.resume();
                return Err(ApiError::conflict(format!(
                    "instance {id} ended before it could be paused"
                )));
            }
            Paused::NotYet => {
                shared.handle.resume();
                return Err(ApiError::timeout(format!(
                    "instance {id}'s vCPU did not stop within {} s; it runs on, try again",
                    PAUSE_WAIT.as_secs()
                )));
            }
        }
        self.info(id)
    }

    /// Lets a paused instance run on.
    pub fn resume(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        let shared = self.shared_in(id, State::Paused, "resumed")?;
        {
            let mut live = vm::lock(&shared);
            shared.handle.resume();
            if live.state == State::Paused {
                live.state = State::Running;
            }
        }
        self.info(id)
    }

    /// Writes a snapshot of a running instance at its next POLL that
    /// blocks (as `--snapshot-on-idle` does), waiting until it is written.
    pub fn snapshot(&self, id: &str, req: SnapshotRequest) -> Result<InstanceInfo, ApiError> {
        let (shared, recorder) = {
            let registry = self.lock();
            let entry = registry.entry(id)?;
            let state = vm::lock(&entry.shared).state;
            if state != State::Running {
                return Err(ApiError::conflict(format!(
                    "instance {id} is {}; only a running instance can be snapshotted \
                     (resume it first if it is paused)",
                    state.name()
                )));
            }
            let path = PathBuf::from(&req.path);
            let recorder = Recorder::new(&path, &entry.image, &entry.config);
            (entry.shared.clone(), recorder)
        };
        let path = PathBuf::from(&req.path);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApiError::unprocessable(format!(
                    "cannot replace {}: {e}",
                    path.display()
                )));
            }
        }
        let wait = Duration::from_secs_f64(req.wait_secs.unwrap_or(10.0).clamp(0.0, 600.0));
        shared.handle.request_snapshot(recorder);
        let deadline = Instant::now() + wait;
        while !path.exists() {
            if vm::lock(&shared).state == State::Exited {
                return Err(ApiError::conflict(format!(
                    "instance {id} ended before it blocked in POLL; no snapshot was written"
                )));
            }
            if Instant::now() >= deadline {
                return Err(ApiError::timeout(format!(
                    "instance {id} did not block in POLL (wait for work) within {:.1} s; \
                     a snapshot is taken only there. It is still asked for: it is written \
                     when the guest next waits",
                    wait.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.info(id)
    }

    /// Stops the instance if it holds a VM, then forgets it.
    pub fn delete(&self, id: &str) -> Result<(), ApiError> {
        let entry = {
            let mut registry = self.lock();
            let key = parse_id(id)?;
            registry
                .instances
                .remove(&key)
                .ok_or_else(|| ApiError::not_found("instance", id))?
        };
        let mut entry = entry;
        match vm::lock(&entry.shared).state {
            State::Created => {
                let go = entry.go.lock().unwrap_or_else(|e| e.into_inner());
                let _ = go.send(Go::Abort);
            }
            State::Running | State::Paused => entry.shared.handle.stop(libc::SIGTERM),
            State::Exited => {}
        }
        wait_ended(&entry.shared, entry.thread.take())
    }

    /// Stops every instance (the daemon is shutting down).
    pub fn stop_all(&self) {
        let ids: Vec<u64> = self.lock().instances.keys().copied().collect();
        for id in ids {
            let _ = self.delete(&id.to_string());
        }
    }

    pub fn info(&self, id: &str) -> Result<InstanceInfo, ApiError> {
        let registry = self.lock();
        let key = parse_id(id)?;
        let entry = registry
            .instances
            .get(&key)
            .ok_or_else(|| ApiError::not_found("instance", id))?;
        Ok(describe(key, entry))
    }

    pub fn list(&self) -> Vec<InstanceInfo> {
        let registry = self.lock();
        registry
            .instances
            .iter()
            .map(|(id, entry)| describe(*id, entry))
            .collect()
    }

    /// The instance's console bytes kept, and how many fell out before.
    pub fn logs(&self, id: &str) -> Result<(Vec<u8>, u64), ApiError> {
        let registry = self.lock();
        let entry = registry.entry(id)?;
        Ok((
            entry.shared.console.contents(),
            entry.shared.console.counts().discarded,
        ))
    }

    /// (Instances by state, guest RAM reserved, images.)
    pub fn usage(&self) -> (BTreeMap<&'static str, u64>, u64, u64) {
        let registry = self.lock();
        let mut states =
            BTreeMap::from([("created", 0), ("running", 0), ("paused", 0), ("exited", 0)]);
        let mut reserved = 0;
        for entry in registry.instances.values() {
            let state = vm::lock(&entry.shared).state;
            *states.entry(state.name()).or_default() += 1;
            if state.is_live() {
                reserved += entry.config.mem_size;
            }
        }
        (states, reserved, registry.images.len() as u64)
    }

    fn shared_in(&self, id: &str, want: State, verb: &str) -> Result<Arc<vm::Shared>, ApiError> {
        let registry = self.lock();
        let entry = registry.entry(id)?;
        let state = vm::lock(&entry.shared).state;
        if state != want {
            return Err(ApiError::conflict(format!(
                "instance {id} is {}; only a {} instance can be {verb}",
                state.name(),
                want.name()
            )));
        }
        Ok(entry.shared.clone())
    }
}

impl Registry {
    fn entry(&self, id: &str) -> Result<&Entry, ApiError> {
        self.instances
            .get(&parse_id(id)?)
            .ok_or_else(|| ApiError::not_found("instance", id))
    }

    fn entry_mut(&mut self, id: &str) -> Result<&mut Entry, ApiError> {
        self.instances
            .get_mut(&parse_id(id)?)
            .ok_or_else(|| ApiError::not_found("instance", id))
    }

    /// (Instances holding a VM, their guest RAM.)
    fn usage(&self) -> (u64, u64) {
        let mut live = 0;
        let mut memory = 0;
        for entry in self.instances.values() {
            if vm::lock(&entry.shared).state.is_live() {
                live += 1;
                memory += entry.config.mem_size;
            }
        }
        (live, memory)
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("instance", id))
}

/// Waits until the instance's vCPU thread has ended (joining it if we
/// hold it), so its VM, memory and fds are gone.
fn wait_ended(shared: &vm::Shared, thread: Option<JoinHandle<()>>) -> Result<(), ApiError> {
    if let Some(thread) = thread {
        let _ = thread.join();
        return Ok(());
    }
    let deadline = Instant::now() + STOP_WAIT;
    while vm::lock(shared).state != State::Exited {
        if Instant::now() >= deadline {
            return Err(ApiError::timeout("the instance did not stop in time"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The API's view of one instance.
fn describe(id: u64, entry: &Entry) -> InstanceInfo {
    let mut live = vm::lock(&entry.shared);
    let metrics = metrics_of(&entry.shared, &mut live);
    InstanceInfo {
        id: id.to_string(),
        image: entry.image_id.clone(),
        snapshot: entry.snapshot.clone(),
        state: live.state.name(),
        created_at: unix_secs(live.created_at),
        started_at: live.started.map(|(_, at)| unix_secs(at)),
        ended_at: live.ended.map(|(_, at)| unix_secs(at)),
        first_hypercall_at: live
            .started
            .zip(live.first_hypercall_us)
            .map(|((_, at), us)| unix_secs(at + Duration::from_micros(us))),
        exit_status: live.status,
        verdict: live.verdict.clone(),
        config: entry.run_config.clone(),
        metrics,
    }
}

/// One instance's metrics, read under its lock.
fn metrics_of(shared: &vm::Shared, live: &mut vm::Live) -> Metrics {
    let stats = live
        .final_stats
        .or_else(|| shared.handle.live_stats())
        .unwrap_or_default();
    let uptime = match (live.started, live.ended) {
        (Some((start, _)), Some((end, _))) => end.saturating_duration_since(start),
        (Some((start, _)), None) => start.elapsed(),
        _ => Duration::ZERO,
    };
    let e = &stats.exits;
    let vm_exits = BTreeMap::from([
        ("total", e.total()),
        ("mmio_write", e.mmio_write),
        ("mmio_read", e.mmio_read),
        ("shutdown", e.shutdown),
        ("interrupted", e.interrupted),
        ("other", e.other),
    ]);
    let mut hypercalls = BTreeMap::from([
        ("total", stats.calls.total()),
        ("unknown", stats.calls.0[0]),
    ]);
    for call in Hypercall::ALL {
        hypercalls.insert(call.name(), stats.calls.of(call));
    }
    let console = shared.console.counts();
    let cpu_ns = live
        .final_cpu_ns
        .or_else(|| live.tid.and_then(vm::cpu_ns_of))
        .unwrap_or(0);
    if let Some((base, len)) = live.ram {
        live.touched = vm::resident_pages(base, len);
    }
    let touched_pages = live.touched;
    let n = &stats.net;
    Metrics {
        uptime_secs: uptime.as_secs_f64(),
        first_hypercall_us: live.first_hypercall_us,
        vm_exits,
        hypercalls,
        console: super::model::ConsoleMetrics {
            bytes: console.bytes,
            writes: console.writes,
            kept_bytes: console.bytes - console.discarded,
            limit_dropped_bytes: stats.limits.console_total_dropped
                + stats.limits.console_rate_dropped,
        },
        net: super::model::NetMetrics {
            rx_bytes: n.rx_bytes,
            tx_bytes: n.tx_bytes,
            rx_packets: n.rx_frames,
            tx_packets: n.tx_frames,
            dropped: n.dropped,
            malformed: n.malformed,
            rate_dropped: stats.limits.net_rate_dropped,
        },
        vcpu_time_secs: cpu_ns as f64 / 1e9,
        memory_touched_bytes: touched_pages * 4096,
    }
}

/// Sums `all` into host totals (uptime and first hypercall are not summed).
pub fn total(all: &[InstanceInfo]) -> Metrics {
    let mut sum = Metrics::default();
    for info in all {
        let m = &info.metrics;
        for (k, v) in &m.vm_exits {
            *sum.vm_exits.entry(k).or_default() += v;
        }
        for (k, v) in &m.hypercalls {
            *sum.hypercalls.entry(k).or_default() += v;
        }
        sum.console.bytes += m.console.bytes;
        sum.console.writes += m.console.writes;
        sum.console.kept_bytes += m.console.kept_bytes;
        sum.console.limit_dropped_bytes += m.console.limit_dropped_bytes;
        sum.net.rx_bytes += m.net.rx_bytes;
        sum.net.tx_bytes += m.net.tx_bytes;
        sum.net.rx_packets += m.net.rx_packets;
        sum.net.tx_packets += m.net.tx_packets;
        sum.net.dropped += m.net.dropped;
        sum.net.malformed += m.net.malformed;
        sum.net.rate_dropped += m.net.rate_dropped;
        sum.vcpu_time_secs += m.vcpu_time_secs;
        sum.memory_touched_bytes += m.memory_touched_bytes;
    }
    sum
}

/// The run options of a create, checked as `flint run` checks its own.
fn run_options(req: &CreateInstance) -> Result<(Config, Limits, RunConfig), ApiError> {
    let bad = |field: &str, e: String| ApiError::bad_request(format!("\"{field}\": {e}"));
    let size = |field: &str,
                value: &Option<Size>,
                default: &str,
                parse: fn(&str) -> Result<u64, String>| {
        let text = match value {
            None => default.to_owned(),
            Some(Size::Bytes(n)) => n.to_string(),
            Some(Size::Text(t)) => t.clone(),
        };
        parse(&text).map_err(|e| bad(field, e))
    };
    let mem = size("mem", &req.mem, "16M", cli::parse_mem)?;
    let stack = size("stack", &req.stack, "256K", cli::parse_stack)?;
    let timeout = match req.timeout_secs {
        None => None,
        Some(secs) => {
            Some(cli::parse_timeout(&secs.to_string()).map_err(|e| bad("timeout_secs", e))?)
        }
    };
    let cmdline = req.args.join(" ");
    let net_args = NetArgs {
        mode: req
            .net
            .as_deref()
            .map(spec::parse_net_mode)
            .transpose()
            .map_err(|e| bad("net", e))?,
        publish: req
            .publish
            .iter()
            .map(|p| spec::parse_publish(p))
            .collect::<Result<_, _>>()
            .map_err(|e| bad("publish", e))?,
        ip: req
            .ip
            .as_deref()
            .map(spec::parse_cidr)
            .transpose()
            .map_err(|e| bad("ip", e))?,
        gateway: req
            .gateway
            .as_deref()
            .map(spec::parse_gateway)
            .transpose()
            .map_err(|e| bad("gateway", e))?,
        mac: req
            .mac
            .as_deref()
            .map(spec::parse_mac)
            .transpose()
            .map_err(|e| bad("mac", e))?,
    };
    let net = spec::resolve(net_args).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limits = Limits {
        console: req
            .console_limit
            .as_deref()
            .map(limits::parse_console_limit)
            .transpose()
            .map_err(|e| bad("console_limit", e))?,
        net_pps: req
            .net_rate
            .map(|n| limits::parse_net_rate(&n.to_string()))
            .transpose()
            .map_err(|e| bad("net_rate", e))?,
    };
    let net_name = match &net {
        NetSetup::None => "none".to_owned(),
        NetSetup::User { .. } => "user".to_owned(),
        NetSetup::Tap { name, .. } => format!("tap:{name}"),
    };
    let run_config = RunConfig {
        mem_bytes: mem,
        stack_bytes: stack,
        timeout_secs: timeout.map(|t| t.as_secs_f64()),
        cmdline: cmdline.clone(),
        net: net_name,
        publish: req.publish.clone(),
    };
    let config = Config {
        mem_size: mem,
        stack_size: stack,
        timeout,
        cmdline,
        // FLINT_TIMINGS=1 in the daemon's environment: each instance's
        // start-up phases on the daemon's stderr when it ends.
        timings: std::env::var_os("FLINT_TIMINGS").is_some_and(|v| v == "1"),
        net,
    };
    Ok((config, limits, run_config))
}

/// `target/flint/hello.elf` → `hello`.
fn default_image_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".elf").unwrap_or(&name).to_owned()
}

pub fn unix_secs(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
