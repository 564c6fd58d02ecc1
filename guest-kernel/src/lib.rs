//! The Flint guest library OS.
//!
//! Every Flint image is one Rust app linked with this crate. It runs the app
//! at CPL 3 inside a KVM micro-VM, as `shared/ABI.md` describes, and gives it
//! what a small program needs: a console ([`print!`], [`println!`] and a
//! `log` backend), a heap (`alloc` works), time ([`time`]), entropy
//! ([`random`]), TCP/IP networking ([`net`]), its command-line arguments
//! ([`Args`]) and [`exit`]. All I/O goes to the host monitor through
//! hypercalls ([`hypercall`]).
//!
//! An app is a binary crate whose root looks like this:
//!
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std)]
//! #![no_main]
//!
//! use guest_kernel::{println, Args};
//!
//! guest_kernel::entry!(main);
//!
//! fn main(args: Args) -> i32 {
//!     println!("Hello, {}!", args.as_str());
//!     0
//! }
//! ```
//!
//! Build it with `cargo xtask build <app>`. On any target other than
//! `x86_64-unknown-none` the crate still compiles, so the workspace builds
//! and lints on the host, but its entry point only says how to build the
//! image, and every hypercall panics with [`HOST_ONLY_MESSAGE`].
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(not(target_os = "none"))]
extern crate std;

pub mod args;
pub mod console;
mod entry;
pub mod generation;
pub mod heap;
pub mod hypercall;
mod logger;
pub mod net;
mod note;
#[cfg(target_os = "none")]
mod panic;
pub mod random;
pub mod time;

pub use args::Args;
pub use entry::{boot_info, exit};
pub use hypercall_abi::BootInfo;

/// What guest-only code says when it is run on the host.
pub const HOST_ONLY_MESSAGE: &str = "Flint guest code runs only inside a Flint VM";

/// Runtime hooks used by [`entry!`]; not part of the API.
#[doc(hidden)]
pub mod rt {
    pub use crate::entry::start;

    /// The host stand-in for an app's entry point: explains how to build
    /// the image and exits with status 2.
    #[cfg(not(target_os = "none"))]
    pub fn host_main(app: &str) -> i32 {
        std::eprintln!("{app} is a Flint guest: build it with `cargo xtask build {app}`");
        std::process::exit(2)
    }
}

/// Declares the app's entry point: `entry!(main)` with
/// `fn main(args: guest_kernel::Args) -> i32`.
///
/// The returned value is the instance's exit status (`code & 0xff`). The
/// crate root must carry `#![no_main]` (on every target) and
/// `#![cfg_attr(target_os = "none", no_std)]`. Inside a Flint VM the kernel
/// sets up heap, console and logger, calls `main` and then [`exit`]s with
/// its result. Built for the host, the binary only prints how to build the
/// image and exits with status 2.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Called by the kernel's `_start` with the `BootInfo` address.
        #[cfg(target_os = "none")]
        #[no_mangle]
        extern "C" fn __flint_start(boot_info: u64) -> ! {
            let main: fn($crate::Args) -> i32 = $main;
            $crate::rt::start(boot_info, main)
        }

        /// Host stand-in for the C `main`: this program is a Flint guest.
        #[cfg(not(target_os = "none"))]
        #[export_name = "main"]
        extern "C" fn __flint_host_main(_argc: i32, _argv: *const *const u8) -> i32 {
            let _main: fn($crate::Args) -> i32 = $main;
            $crate::rt::host_main(env!("CARGO_PKG_NAME"))
        }
    };
}
