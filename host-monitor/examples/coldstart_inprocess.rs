//! In-process cold start: "API call → the guest's first hypercall" for the
//! three ways the library starts an instance, measured interleaved (one
//! run of each case per round, so drift hits all alike):
//!
//! - `inprocess-fresh`: [`Instance::start_with`] with nothing prepared but
//!   an open `/dev/kvm`: create the VM and vCPU, reserve RAM, load the
//!   image, build page tables, write `BootInfo`, run;
//! - `inprocess-template-pool`: a VM from a [`VmPool`] and RAM mapped
//!   copy-on-write from a [`MemoryTemplate`] (pool refilled between
//!   rounds, off the clock);
//! - `inprocess-reset`: [`Instance::reset`] of one existing instance from
//!   its template, then run again.
//!
//!     cargo run --release -p host-monitor --example coldstart_inprocess -- target/flint/hello.elf 200
//!
//! prints one JSON line per case on stdout:
//! `{"case":"inprocess-fresh","n":200,"p50_us":..,"p90_us":..,"p99_us":..,
//! "phases_us":{"create VM":..,..}}` where `phases_us` holds each phase's
//! median (the monitor's own [`Timings`], in start order; "first hypercall"
//! is from the last phase to the guest's first exit). Every run must end
//! with status 0 and the same console output as the first, or the example
//! fails (status 1). Status 125 if it cannot start at all (no KVM, bad
//! image).

use host_monitor::guest_memory::MemoryTemplate;
use host_monitor::hypercall::{Console, ConsoleSink};
use host_monitor::image::Image;
use host_monitor::instance::{prepare_template, Config, Instance, Launch};
use host_monitor::pool::VmPool;
use host_monitor::timings::Timings;
use host_monitor::vcpu;
use kvm_ioctls::Kvm;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The guest's console, kept to compare runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl ConsoleSink for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// One case's samples: total µs and each phase's µs.
#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    phases: Vec<(&'static str, Vec<f64>)>,
}

impl Samples {
    fn add(&mut self, total_us: f64, timings: &Timings) {
        self.total.push(total_us);
        for phase in timings.phases() {
            let us = phase.took.as_secs_f64() * 1e6;
            match self.phases.iter_mut().find(|(name, _)| *name == phase.name) {
                Some((_, v)) => v.push(us),
                None => self.phases.push((phase.name, vec![us])),
            }
        }
    }

    fn json(&mut self, case: &str) -> serde_json::Value {
        let mut phases = serde_json::Map::new();
        for (name, v) in &mut self.phases {
            phases.insert((*name).to_owned(), round(percentile(v, 50.0)).into());
        }
        serde_json::json!({
            "case": case,
            "n": self.total.len(),
            "p50_us": round(percentile(&mut self.total, 50.0)),
            "p90_us": round(percentile(&mut self.total, 90.0)),
            "p99_us": round(percentile(&mut self.total, 99.0)),
            "phases_us": phases,
        })
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn round(us: f64) -> f64 {
    (us * 10.0).round() / 10.0
}

/// Arms `on_first_hypercall` to store µs since `t0` into `slot`.
fn stopwatch(t0: Instant, slot: &Arc<AtomicU64>) -> Box<dyn FnOnce() + Send> {
    let slot = slot.clone();
    Box::new(move || slot.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed))
}

struct Bench<'a> {
    image: &'a Image,
    config: Config,
    template: MemoryTemplate,
    kvm: &'a Kvm,
    console: Captured,
    expected: Option<Vec<u8>>,
    first: Arc<AtomicU64>,
}

impl Bench<'_> {
    /// Runs `instance`, checks its outcome and output, and returns the
    /// first-hypercall time in µs.
    fn finish(&mut self, case: &str, instance: &mut Instance) -> Result<f64, String> {
        let outcome = instance.run();
        let output = self.console.take();
        if outcome.status() != 0 {
            return Err(format!("{case}: the guest ended with {outcome:?}"));
        }
        match &self.expected {
            None => self.expected = Some(output),
            Some(expected) if *expected != output => {
                return Err(format!(
                    "{case}: console output differs: {:?} vs {:?}",
                    String::from_utf8_lossy(&output),
                    String::from_utf8_lossy(expected)
                ));
            }
            Some(_) => {}
        }
        Ok(self.first.swap(0, Ordering::Relaxed) as f64 / 1e3)
    }

    fn launch(&self, t0: Instant) -> Launch<'_> {
        Launch {
            kvm: Some(self.kvm),
            console: Some(Console::new(Box::new(self.console.clone()))),
            on_first_hypercall: Some(stopwatch(t0, &self.first)),
            ..Launch::default()
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(image_path), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: coldstart_inprocess IMAGE N");
        std::process::exit(125);
    };
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("coldstart_inprocess: N must be a number, not {n:?}");
        std::process::exit(125);
    };
    match bench(PathBuf::from(image_path), n) {
        Ok(()) => {}
        Err(Failure::Setup(e)) => {
            eprintln!("coldstart_inprocess: {e}");
            std::process::exit(125);
        }
        Err(Failure::Run(e)) => {
            eprintln!("coldstart_inprocess: {e}");
            std::process::exit(1);
        }
    }
}

enum Failure {
    Setup(String),
    Run(String),
}

fn bench(image_path: PathBuf, n: usize) -> Result<(), Failure> {
    let setup = |e: &dyn std::fmt::Display| Failure::Setup(e.to_string());
    let config = Config {
        mem_size: 16 << 20,
        stack_size: 256 << 10,
        timeout: None,
        cmdline: String::new(),
        timings: true,
        net: Default::default(),
    };
    let image = Image::load(&image_path, config.mem_size).map_err(|e| setup(&e))?;
    let kvm = vcpu::open_kvm().map_err(|e| setup(&e))?;
    let template = prepare_template(&image, &config).map_err(|e| setup(&e))?;
    let pool = VmPool::new(&kvm, 1).map_err(|e| setup(&e))?;
    let mut b = Bench {
        image: &image,
        config,
        template,
        kvm: &kvm,
        console: Captured::default(),
        expected: None,
        first: Arc::new(AtomicU64::new(0)),
    };
    let run = Failure::Run;
    let start_err = |e: host_monitor::instance::StartError| Failure::Run(e.to_string());

    // The instance the reset case re-runs; its first run is not measured.
    let launch = Launch {
        template: Some(&b.template),
        pooled: pool.take(),
        ..b.launch(Instant::now())
    };
    let mut resettable =
        Instance::start_with(b.image, &b.config, launch, Timings::new(false)).map_err(start_err)?;
    b.finish("warm-up", &mut resettable).map_err(run)?;
    pool.refill().map_err(|e| Failure::Run(e.to_string()))?;

    let (mut fresh, mut pooled, mut reset) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..n {
        let t0 = Instant::now();
        let mut instance =
            Instance::start_with(b.image, &b.config, b.launch(t0), Timings::new(true))
                .map_err(start_err)?;
        let us = b.finish("fresh", &mut instance).map_err(run)?;
        fresh.add(us, instance.timings());
        drop(instance);

        let t0 = Instant::now();
        let launch = Launch {
            template: Some(&b.template),
            pooled: pool.take(),
            ..b.launch(t0)
        };
        let mut instance = Instance::start_with(b.image, &b.config, launch, Timings::new(true))
            .map_err(start_err)?;
        let us = b.finish("template + pool", &mut instance).map_err(run)?;
        pooled.add(us, instance.timings());
        drop(instance);
        pool.refill().map_err(|e| Failure::Run(e.to_string()))?;

        let t0 = Instant::now();
        resettable
            .reset(&b.template, &b.config, None)
            .map_err(start_err)?;
        resettable.on_first_hypercall(stopwatch(t0, &b.first));
        let us = b.finish("reset", &mut resettable).map_err(run)?;
        reset.add(us, resettable.timings());
    }
    println!("{}", fresh.json("inprocess-fresh"));
    println!("{}", pooled.json("inprocess-template-pool"));
    println!("{}", reset.json("inprocess-reset"));
    Ok(())
}
