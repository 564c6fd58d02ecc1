//! Embedding Flint: run many instances of one image from your own program.
//!
//!     cargo xtask build hello
//!     cargo run --release -p host-monitor --example embed -- target/flint/hello.elf 8
//!
//! The steps, each paid once where it can be:
//!
//! 1. [`Image::load`]: read and validate the image (once per image).
//! 2. [`prepare_template`]: lay out guest RAM (segments, page tables, GDT,
//!    command line) in a sealed memfd (once per image and [`Config`]).
//! 3. [`VmPool::new`]: create VMs and vCPUs with everything that does not
//!    depend on the image already set (CPUID, control and segment
//!    registers, MSRs); [`VmPool::refill`] tops it up off the start path.
//! 4. [`Instance::start_with`] with [`Launch::template`] and
//!    [`Launch::pooled`]: map the template copy-on-write, write this
//!    instance's `BootInfo`, load the entry registers; then
//!    [`Instance::run`] until the guest ends, giving an [`Outcome`].
//! 5. [`Instance::reset`]: run an instance that has ended again from its
//!    template, keeping its VM: the cheapest start of all.
//!
//! Sandboxing: each thread that runs an instance confines itself with
//! [`seccomp::confine_vcpu`] once the instance has started (KVM ioctls
//! only on its own vCPU fd, reads and writes only on its instance's fds,
//! no files, sockets, exec or fork; a forbidden call kills the process
//! with SIGSYS), and [`seccomp::confine_service_threads`] makes the
//! `--timeout` watchdog threads filter themselves. The thread that resets
//! its instance asks for [`seccomp::VcpuPolicy::reset`].
//!
//! Each instance runs on its own thread here; its console goes to a buffer
//! the example prints afterwards. The exit status is 0 if every instance
//! exited with 0.

use host_monitor::hypercall::{Console, ConsoleSink};
use host_monitor::image::Image;
use host_monitor::instance::{prepare_template, Config, Instance, Launch};
use host_monitor::pool::VmPool;
use host_monitor::seccomp::{self, VcpuPolicy};
use host_monitor::timings::Timings;
use host_monitor::vcpu;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An instance's console, kept in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl ConsoleSink for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut buffer = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("console buffer poisoned"))?;
        buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// In memory: the vCPU thread writes no fd for it.
    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        Some(Vec::new())
    }
}

impl Buffer {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image_path = PathBuf::from(args.next().ok_or("usage: embed IMAGE [N] [ARGS...]")?);
    let count: u64 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("N must be a number, not {n:?}"))?,
        None => 4,
    };
    let config = Config {
        mem_size: 16 << 20,
        stack_size: 256 << 10,
        timeout: Some(std::time::Duration::from_secs(10)),
        cmdline: args.collect::<Vec<_>>().join(" "),
        timings: false,
        net: Default::default(),
    };

    // 1-3: once.
    let image = Image::load(&image_path, config.mem_size)?;
    let template = prepare_template(&image, &config)?;
    let kvm = vcpu::open_kvm()?;
    let pool = VmPool::new(&kvm, count as usize)?;
    seccomp::confine_service_threads()?;

    // 4: one instance per thread, each on a pooled VM.
    let began = Instant::now();
    let results = std::thread::scope(|scope| {
        let threads: Vec<_> = (1..=count)
            .map(|id| {
                let (image, config, template, pool) = (&image, &config, &template, &pool);
                scope.spawn(move || {
                    let console = Buffer::default();
                    let launch = Launch {
                        instance_id: Some(id),
                        template: Some(template),
                        pooled: pool.take(),
                        console: Some(Console::new(Box::new(console.clone()))),
                        // Its wait set made now: its fds are known to the filter.
                        idle_poller: true,
                        ..Launch::default()
                    };
                    let outcome = Instance::start_with(image, config, launch, Timings::new(false))
                        .map_err(|e| e.to_string())
                        .and_then(|mut instance| {
                            // Started: from here on this thread only runs it.
                            seccomp::confine_vcpu(&instance, &VcpuPolicy::default())
                                .map_err(|e| e.to_string())?;
                            Ok(instance.run())
                        });
                    (id, outcome, console.text())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().map_err(|_| "an instance thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let took = began.elapsed();

    let mut all_ok = true;
    for (id, outcome, console) in &results {
        match outcome {
            Ok(outcome) => {
                all_ok &= outcome.status() == 0;
                println!("instance {id}: status {} ({outcome:?})", outcome.status());
            }
            Err(e) => {
                all_ok = false;
                println!("instance {id}: could not start: {e}");
            }
        }
        for line in console.lines() {
            println!("  [{id}] {line}");
        }
    }
    println!("{count} instances in {:.2} ms", took.as_secs_f64() * 1e3);

    // 5: run one instance three more times, resetting it in between, on
    // a thread confined with the reset policy.
    pool.refill()?;
    let console = Buffer::default();
    let launch = Launch {
        template: Some(&template),
        pooled: pool.take(),
        console: Some(Console::new(Box::new(console.clone()))),
        idle_poller: true,
        ..Launch::default()
    };
    let mut instance = Instance::start_with(&image, &config, launch, Timings::new(false))?;
    let reset_ok = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<bool, String> {
                let policy = VcpuPolicy {
                    reset: true,
                    ..VcpuPolicy::default()
                };
                seccomp::confine_vcpu(&instance, &policy).map_err(|e| e.to_string())?;
                let mut ok = instance.run().status() == 0;
                for _ in 0..3 {
                    let began = Instant::now();
                    instance
                        .reset(&template, &config, None)
                        .map_err(|e| e.to_string())?;
                    let outcome = instance.run();
                    ok &= outcome.status() == 0;
                    println!(
                        "reset and ran again: {outcome:?} in {:.0} us",
                        began.elapsed().as_secs_f64() * 1e6
                    );
                }
                Ok(ok)
            })
            .join()
            .map_err(|_| "the reset thread panicked".to_string())?
    })?;
    all_ok &= reset_ok;
    println!("console of its four runs:\n{}", console.text());
    std::process::exit(if all_ok { 0 } else { 1 });
}
