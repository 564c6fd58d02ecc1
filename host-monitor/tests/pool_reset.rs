//! The library's fast starts under real KVM: instances from a template and
//! a [`VmPool`], and [`Instance::reset`] re-running one instance, behave
//! like instances started from scratch. Skipped loudly without /dev/kvm.

mod common;

use common::kvm_or_skip;
use host_monitor::guest_memory::MemoryTemplate;
use host_monitor::hypercall::{Console, ConsoleSink};
use host_monitor::image::Image;
use host_monitor::instance::{prepare_template, Config, Instance, Launch};
use host_monitor::outcome::Outcome;
use host_monitor::pool::VmPool;
use host_monitor::timings::Timings;
use host_monitor::vcpu;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Guest image `name`, built fresh by xtask (one build at a time).
fn image(name: &str) -> Image {
    static BUILD: Mutex<()> = Mutex::new(());
    let path: PathBuf = {
        let _one = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        xtask::guest::build(name).unwrap_or_else(|e| panic!("building guest {name}: {e}"))
    };
    Image::load(&path, config("").mem_size).unwrap_or_else(|e| panic!("{e}"))
}

fn config(cmdline: &str) -> Config {
    Config {
        mem_size: 16 << 20,
        stack_size: 256 << 10,
        timeout: Some(std::time::Duration::from_secs(10)),
        cmdline: cmdline.into(),
        timings: false,
        net: Default::default(),
    }
}

/// A console the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl ConsoleSink for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

/// Starts an instance of `image` from `template` with `pooled`, on `console`.
fn start<'i>(
    image: &'i Image,
    config: &Config,
    template: &MemoryTemplate,
    pool: &VmPool,
    console: &Captured,
) -> Instance<'i> {
    let launch = Launch {
        template: Some(template),
        pooled: pool.take(),
        console: Some(Console::new(Box::new(console.clone()))),
        ..Launch::default()
    };
    Instance::start_with(image, config, launch, Timings::new(false))
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// `key=value` from the probe's output.
fn field<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {output:?}"))
}

#[test]
fn pooled_instances_run_like_fresh_ones_and_the_pool_refills() {
    if !kvm_or_skip("pooled_instances_run_like_fresh_ones_and_the_pool_refills") {
        return;
    }
    let image = image("hello");
    let config = config("pool");
    let template = prepare_template(&image, &config).expect("template");
    let kvm = vcpu::open_kvm().expect("kvm");
    let pool = VmPool::new(&kvm, 2).expect("pool");
    assert_eq!(pool.len(), 2);
    let console = Captured::default();
    // Two from the pool, then one more than it holds: created on the spot.
    for i in 0..3 {
        let mut instance = start(&image, &config, &template, &pool, &console);
        let outcome = instance.run();
        let output = console.take();
        assert!(
            matches!(outcome, Outcome::Exited(0)),
            "run {i}: {outcome:?}, output {output:?}"
        );
        assert_eq!(output, "Hello, pool!\n", "run {i}");
    }
    assert!(pool.is_empty());
    assert_eq!(pool.refill().expect("refill"), 2);
    assert_eq!(pool.len(), pool.target());
}

#[test]
fn reset_reruns_an_instance_with_a_fresh_boot_info() {
    if !kvm_or_skip("reset_reruns_an_instance_with_a_fresh_boot_info") {
        return;
    }
    let image = image("probe");
    let bootinfo = config("bootinfo");
    let random = config("random");
    let template = prepare_template(&image, &bootinfo).expect("template");
    let other = prepare_template(&image, &random).expect("template");
    let kvm = vcpu::open_kvm().expect("kvm");
    let pool = VmPool::new(&kvm, 1).expect("pool");
    let console = Captured::default();
    let mut instance = start(&image, &bootinfo, &template, &pool, &console);
    let outcome = instance.run();
    let first = console.take();
    assert!(
        matches!(outcome, Outcome::Exited(0)),
        "{outcome:?}: {first}"
    );

    let mut tsc = field(&first, "tsc_at_boot").parse::<u64>().expect("tsc");
    for id in [41, 42] {
        instance
            .reset(&template, &bootinfo, Some(id))
            .expect("reset");
        let outcome = instance.run();
        let output = console.take();
        assert!(
            matches!(outcome, Outcome::Exited(0)),
            "{outcome:?}: {output}"
        );
        assert_eq!(field(&output, "instance_id"), id.to_string(), "{output}");
        // The same machine from the same memory: addresses alike.
        for key in [
            "stack_local",
            "heap_box",
            "cmdline",
            "heap_start",
            "generation",
        ] {
            assert_eq!(field(&output, key), field(&first, key), "{key}");
        }
        let now = field(&output, "tsc_at_boot").parse::<u64>().expect("tsc");
        assert!(now > tsc, "the clock base moves on: {now} after {tsc}");
        tsc = now;
    }

    // Another template of the same size: a different command line, and
    // every reset draws a new seed.
    let mut seeds = Vec::new();
    for _ in 0..2 {
        instance.reset(&other, &random, None).expect("reset");
        let outcome = instance.run();
        let output = console.take();
        assert!(
            matches!(outcome, Outcome::Exited(0)),
            "{outcome:?}: {output}"
        );
        seeds.push(field(&output, "seed").to_owned());
    }
    assert_ne!(seeds[0], seeds[1], "seeds repeat across resets");
}

#[test]
fn reset_after_a_guest_fault_runs_the_guest_again() {
    if !kvm_or_skip("reset_after_a_guest_fault_runs_the_guest_again") {
        return;
    }
    let image = image("probe");
    let config = config("fault null");
    let template = prepare_template(&image, &config).expect("template");
    let kvm = vcpu::open_kvm().expect("kvm");
    let pool = VmPool::new(&kvm, 1).expect("pool");
    let console = Captured::default();
    let mut instance = start(&image, &config, &template, &pool, &console);
    let first = instance.run();
    let Outcome::Fault(first) = first else {
        panic!("expected a fault, got {first:?}");
    };
    for _ in 0..2 {
        instance.reset(&template, &config, None).expect("reset");
        match instance.run() {
            Outcome::Fault(again) => assert_eq!(again, first),
            other => panic!("after reset: {other:?}, first run: {first}"),
        }
    }
}

#[test]
fn a_serving_pool_refills_what_is_taken_until_closed() {
    if !kvm_or_skip("a_serving_pool_refills_what_is_taken_until_closed") {
        return;
    }
    let kvm = vcpu::open_kvm().expect("kvm");
    let pool = VmPool::new(&kvm, 2).expect("pool");
    std::thread::scope(|scope| {
        let server = scope.spawn(|| pool.serve());
        let taken: Vec<_> = (0..3).filter_map(|_| pool.take()).collect();
        assert!(taken.len() >= 2, "took {} of 3", taken.len());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pool.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "not refilled");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        pool.close();
        assert!(server.join().expect("server thread").is_ok());
    });
    assert!(pool.is_empty() && pool.take().is_none());
    assert_eq!(pool.refill().expect("refill after close"), 0);
}
