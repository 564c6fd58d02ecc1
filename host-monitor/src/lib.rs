//! The Flint host monitor: runs Flint images (shared/ABI.md) as KVM
//! micro-VMs with no device emulation: the guest asks for I/O with
//! hypercalls, and this crate services them.
//!
//! ```no_run
//! use host_monitor::image::Image;
//! use host_monitor::instance::{Config, Instance};
//! use std::path::Path;
//!
//! let config = Config {
//!     mem_size: 16 << 20,
//!     stack_size: 256 << 10,
//!     timeout: None,
//!     cmdline: "world".into(),
//!     timings: false,
//!     net: Default::default(),
//! };
//! let image = Image::load(Path::new("target/flint/hello.elf"), config.mem_size)?;
//! let outcome = Instance::start(&image, &config)?.run();
//! std::process::exit(outcome.status());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To start many instances of one image cheaply, pay for the image once:
//! [`instance::prepare_template`] lays its guest RAM out once, a
//! [`pool::VmPool`] keeps VMs with their vCPUs already set up, and
//! [`instance::Instance::start_with`] then only maps the template
//! copy-on-write, writes `BootInfo` and loads the registers;
//! [`instance::Instance::reset`] runs an instance that has ended again
//! without a new VM. `host-monitor/examples/embed.rs` is a runnable example
//! of all of it (`cargo run --release -p host-monitor --example embed --
//! target/flint/hello.elf 8`), and `examples/coldstart_inprocess.rs`
//! measures each way of starting.

pub mod cli;
pub mod client;
pub mod daemon;
pub mod debug;
pub mod fault;
pub mod fleet;
pub mod gdt;
pub mod guest_memory;
pub mod hypercall;
pub mod image;
pub mod instance;
pub mod layout;
pub mod limits;
pub mod net;
pub mod oci;
pub mod outcome;
pub mod paging;
pub mod poller;
pub mod pool;
pub mod run;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod stats;
pub mod timings;
pub mod vcpu;
pub mod watchdog;
