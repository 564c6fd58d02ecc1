//! No leaks: 2,000 instances started and stopped in one process through the
//! library API leave open fds, threads and RSS where they were. The
//! instances take every path that owns a host resource: fresh VMs and
//! pooled ones, templates, the timeout watchdog's thread, the user-mode
//! network with a listening `--publish` socket, POLL's idle wait set, a
//! stop through a handle from another thread, console and network limits,
//! resets, faults, panics and timeouts. Skipped loudly without /dev/kvm.
//!
//! This file holds one test so that its process runs nothing else: libtest
//! runs the tests of one binary on parallel threads, which would blur the
//! thread count.

mod common;

use common::kvm_or_skip;
use host_monitor::hypercall::{Console, ConsoleSink};
use host_monitor::image::Image;
use host_monitor::instance::{prepare_template, Config, Instance, Launch};
use host_monitor::limits::{ConsoleLimit, Limits};
use host_monitor::net::spec::{NetSetup, Publish};
use host_monitor::outcome::Outcome;
use host_monitor::pool::VmPool;
use host_monitor::signals::{StopHandle, StopSource};
use host_monitor::timings::Timings;
use host_monitor::vcpu;
use std::io::Write;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Instances in the measured run.
const INSTANCES: usize = 2_000;
/// Instances run first, so that one-time costs (allocator arenas, lazily
/// made statics, the kick signal handler) are paid before the baseline.
const WARM_UP: usize = 200;
/// RSS may end this much above the baseline: allocator slack, not a leak
/// (a leak of even one 4 KiB page per instance would be 8 MiB).
const RSS_SLACK_KIB: i64 = 4 << 10;

/// What the process holds now.
#[derive(Clone, Copy, Debug)]
struct Usage {
    fds: i64,
    threads: i64,
    rss_kib: i64,
}

fn usage() -> Usage {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as i64;
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |key: &str| -> i64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
    };
    Usage {
        fds,
        threads: field("Threads:"),
        rss_kib: field("VmRSS:"),
    }
}

/// A console that keeps only the last few bytes (an instance's output is
/// not what this test checks, but a sink that grew would look like a leak).
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<Vec<u8>>>);

impl ConsoleSink for Tail {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut tail = self.0.lock().unwrap();
        tail.extend_from_slice(bytes);
        let excess = tail.len().saturating_sub(256);
        tail.drain(..excess);
        Ok(())
    }
}

fn config(cmdline: &str, net: NetSetup, timeout: Duration) -> Config {
    Config {
        mem_size: 16 << 20,
        stack_size: 256 << 10,
        timeout: Some(timeout),
        cmdline: cmdline.into(),
        timings: false,
        net,
    }
}

fn user_net(publish: bool) -> NetSetup {
    use host_monitor::net::spec::{resolve, NetArgs, NetMode};
    let publish = if publish {
        vec![Publish {
            host: "127.0.0.1:0".parse().unwrap(),
            guest_port: 80,
        }]
    } else {
        Vec::new()
    };
    resolve(NetArgs {
        mode: Some(NetMode::User),
        publish,
        ip: None,
        gateway: None,
        mac: None,
    })
    .expect("user-mode network")
}

/// Everything the instances share: one image, templates and a VM pool.
struct Fixture<'k> {
    image: Image,
    plain: Config,
    plain_template: host_monitor::guest_memory::MemoryTemplate,
    clock: Config,
    networked: Config,
    published: Config,
    idle: Config,
    spin: Config,
    kvm: &'k kvm_ioctls::Kvm,
    pool: VmPool<'k>,
}

impl<'k> Fixture<'k> {
    fn new(kvm: &'k kvm_ioctls::Kvm) -> Fixture<'k> {
        let path = xtask::guest::build("probe").unwrap_or_else(|e| panic!("building probe: {e}"));
        let plain = config("args leak test", NetSetup::None, Duration::from_secs(10));
        let image = Image::load(&path, plain.mem_size).unwrap_or_else(|e| panic!("{e}"));
        let plain_template = prepare_template(&image, &plain).expect("template");
        Fixture {
            plain_template,
            plain,
            clock: config("clock", NetSetup::None, Duration::from_secs(10)),
            networked: config("net arp", user_net(false), Duration::from_secs(10)),
            published: config("net config", user_net(true), Duration::from_secs(10)),
            idle: config("poll-forever", NetSetup::None, Duration::from_secs(10)),
            spin: config("fault loop", NetSetup::None, Duration::from_millis(5)),
            image,
            kvm,
            pool: VmPool::new(kvm, 4).expect("VM pool"),
        }
    }

    /// Runs instance number `i`, one of several kinds; what it should end
    /// with is checked.
    fn run(&self, i: usize) {
        let console = Tail::default();
        let console_of = |tail: &Tail| Some(Console::new(Box::new(tail.clone())));
        let (outcome, what) = match i % 8 {
            // A fresh VM, its own /dev/kvm and memory, the watchdog thread.
            0 => {
                let launch = Launch {
                    console: console_of(&console),
                    ..Launch::default()
                };
                let mut instance =
                    Instance::start_with(&self.image, &self.clock, launch, Timings::new(false))
                        .expect("start");
                (instance.run(), "clock")
            }
            // Template and pooled VM, with a console limit that is hit.
            1 => {
                let launch = Launch {
                    template: Some(&self.plain_template),
                    pooled: self.pool.take(),
                    console: console_of(&console),
                    limits: Limits {
                        console: Some(ConsoleLimit {
                            total: 8,
                            per_second: Some(4),
                        }),
                        net_pps: None,
                    },
                    ..Launch::default()
                };
                let mut instance =
                    Instance::start_with(&self.image, &self.plain, launch, Timings::new(false))
                        .expect("start");
                let outcome = instance.run();
                self.pool.refill().expect("refill");
                (outcome, "args with a console limit")
            }
            // The user-mode network: its poller, eventfd and timers; a
            // network rate limit.
            2 => {
                let launch = Launch {
                    kvm: Some(self.kvm),
                    console: console_of(&console),
                    limits: Limits {
                        console: None,
                        net_pps: Some(1000),
                    },
                    ..Launch::default()
                };
                let mut instance =
                    Instance::start_with(&self.image, &self.networked, launch, Timings::new(false))
                        .expect("start");
                (instance.run(), "net arp")
            }
            // A listening --publish socket.
            3 => {
                let launch = Launch {
                    kvm: Some(self.kvm),
                    console: console_of(&console),
                    ..Launch::default()
                };
                let mut instance =
                    Instance::start_with(&self.image, &self.published, launch, Timings::new(false))
                        .expect("start");
                (instance.run(), "net config with --publish")
            }
            // An instance on a thread of its own that sleeps in POLL until
            // a stop handle ends it from here.
            4 => {
                let handle = StopHandle::new().expect("stop handle");
                let (idle_tx, idle_rx) = mpsc::channel();
                let outcome = std::thread::scope(|scope| {
                    let runner = scope.spawn(|| {
                        let launch = Launch {
                            kvm: Some(self.kvm),
                            console: console_of(&console),
                            stop: StopSource::Handle(handle.clone()),
                            idle_poller: true,
                            on_idle: Some(Box::new(move || {
                                let _ = idle_tx.send(());
                            })),
                            ..Launch::default()
                        };
                        Instance::start_with(&self.image, &self.idle, launch, Timings::new(false))
                            .expect("start")
                            .run()
                    });
                    idle_rx
                        .recv_timeout(Duration::from_secs(10))
                        .expect("the instance never went idle");
                    handle.stop(libc::SIGTERM);
                    runner.join().expect("instance thread")
                });
                (outcome, "poll-forever, stopped")
            }
            // A reset: one VM booted three times.
            5 => {
                let launch = Launch {
                    template: Some(&self.plain_template),
                    kvm: Some(self.kvm),
                    console: console_of(&console),
                    ..Launch::default()
                };
                let mut instance =
                    Instance::start_with(&self.image, &self.plain, launch, Timings::new(false))
                        .expect("start");
                for _ in 0..2 {
                    let outcome = instance.run();
                    assert_eq!(outcome, Outcome::Exited(0), "instance {i} before a reset");
                    instance
                        .reset(&self.plain_template, &self.plain, None)
                        .expect("reset");
                }
                (instance.run(), "args, reset twice")
            }
            // A guest fault, and now and then a timeout (it costs 5 ms).
            _ => {
                let (config, what) = if i % 64 == 7 {
                    (&self.spin, "fault loop (timeout)")
                } else {
                    (&self.plain, "args")
                };
                let launch = Launch {
                    kvm: Some(self.kvm),
                    console: console_of(&console),
                    ..Launch::default()
                };
                let mut instance =
                    Instance::start_with(&self.image, config, launch, Timings::new(false))
                        .expect("start");
                (instance.run(), what)
            }
        };
        let expected = match what {
            "poll-forever, stopped" => matches!(outcome, Outcome::Signalled(libc::SIGTERM)),
            "fault loop (timeout)" => matches!(outcome, Outcome::TimedOut(_)),
            _ => outcome == Outcome::Exited(0),
        };
        assert!(
            expected,
            "instance {i} ({what}) ended with {outcome:?}; console tail {:?}",
            String::from_utf8_lossy(&console.0.lock().unwrap())
        );
    }
}

#[test]
fn two_thousand_instances_leave_fds_threads_and_rss_where_they_were() {
    let test = "two_thousand_instances_leave_fds_threads_and_rss_where_they_were";
    if !kvm_or_skip(test) {
        return;
    }
    let kvm = vcpu::open_kvm().expect("kvm");
    let fixture = Fixture::new(&kvm);
    for i in 0..WARM_UP {
        fixture.run(i);
    }
    let before = usage();
    let began = Instant::now();
    let mut peak = before;
    for i in 0..INSTANCES {
        fixture.run(i);
        if i % 250 == 0 {
            let now = usage();
            peak.fds = peak.fds.max(now.fds);
            peak.threads = peak.threads.max(now.threads);
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        }
    }
    let took = began.elapsed();
    let after = usage();
    let report = format!(
        "{INSTANCES} instances in {:.1} s: fds {} -> {} (peak {}), threads {} -> {} (peak {}), \
         RSS {} KiB -> {} KiB (peak {} KiB)",
        took.as_secs_f64(),
        before.fds,
        after.fds,
        peak.fds,
        before.threads,
        after.threads,
        peak.threads,
        before.rss_kib,
        after.rss_kib,
        peak.rss_kib,
    );
    let _ = writeln!(std::io::stderr(), "no_leaks: {report}");
    assert_eq!(after.fds, before.fds, "open fds changed: {report}");
    assert_eq!(after.threads, before.threads, "threads changed: {report}");
    assert!(
        after.rss_kib - before.rss_kib <= RSS_SLACK_KIB,
        "RSS grew by more than {RSS_SLACK_KIB} KiB: {report}"
    );
}
