//! The Flint hypercall ABI, version 1, in code.
//!
//! `shared/ABI.md` is the normative text; this crate is its only code form.
//! The guest kernel and the host monitor both use these definitions and no
//! others. Every struct is `#[repr(C)]` and its size and field offsets are
//! asserted at compile time against the offsets the ABI page gives.
#![no_std]

mod blocks;
mod boot_info;
mod layout;

pub use blocks::*;
pub use boot_info::*;
pub use layout::*;

/// The ABI version a guest image announces in its `FLINT` note and a monitor
/// writes into [`BootInfo::abi_version`].
pub const ABI_VERSION: u32 = 1;

/// Guest-physical (and, identity-mapped, virtual) address of the hypercall
/// page. A hypercall is one 8-byte store to `HYPERCALL_PAGE + 8 * NR`.
pub const HYPERCALL_PAGE: u64 = 0xC000_0000;

/// ELF note that marks a Flint image: name, type, and a 4-byte
/// little-endian descriptor holding [`ABI_VERSION`].
pub const NOTE_NAME: &str = "FLINT";
/// Type of the Flint ELF note.
pub const NOTE_TYPE: u32 = 1;
/// Size of the Flint ELF note's descriptor.
pub const NOTE_DESC_SIZE: usize = 4;

/// Hypercall numbers (ABI.md section 4).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// `{ buf, len, ret }`: write to the console.
    ConsoleWrite = 1,
    /// `{ code }`: stop with status `code & 0xff`.
    Exit = 2,
    /// `{ msg, len }`: stop with status 101 and the message on stderr.
    Panic = 3,
    /// `{ monotonic_ns, wall_ns }`: read the instance and wall clocks.
    Clock = 4,
    /// `{ deadline_ns, ready, ret }`: wait for a device or a deadline.
    Poll = 5,
    /// `{ buf, len, ret }`: send one Ethernet frame.
    NetWrite = 6,
    /// `{ buf, cap, len, ret }`: take one waiting Ethernet frame.
    NetRead = 7,
    /// `{ buf, len, ret }`: fill a buffer with host entropy.
    Random = 8,
}

impl Hypercall {
    /// Every v1 hypercall, in number order.
    pub const ALL: [Hypercall; 8] = [
        Hypercall::ConsoleWrite,
        Hypercall::Exit,
        Hypercall::Panic,
        Hypercall::Clock,
        Hypercall::Poll,
        Hypercall::NetWrite,
        Hypercall::NetRead,
        Hypercall::Random,
    ];

    /// The hypercall with number `nr`, if v1 defines one.
    pub const fn from_nr(nr: u64) -> Option<Hypercall> {
        match nr {
            1 => Some(Hypercall::ConsoleWrite),
            2 => Some(Hypercall::Exit),
            3 => Some(Hypercall::Panic),
            4 => Some(Hypercall::Clock),
            5 => Some(Hypercall::Poll),
            6 => Some(Hypercall::NetWrite),
            7 => Some(Hypercall::NetRead),
            8 => Some(Hypercall::Random),
            _ => None,
        }
    }

    /// This hypercall's number.
    pub const fn nr(self) -> u64 {
        self as u64
    }

    /// The address a guest stores its argument block's address to.
    pub const fn doorbell(self) -> u64 {
        HYPERCALL_PAGE + 8 * self.nr()
    }

    /// The ABI's upper-case name, as in ABI.md's table.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::ConsoleWrite => "CONSOLE_WRITE",
            Hypercall::Exit => "EXIT",
            Hypercall::Panic => "PANIC",
            Hypercall::Clock => "CLOCK",
            Hypercall::Poll => "POLL",
            Hypercall::NetWrite => "NET_WRITE",
            Hypercall::NetRead => "NET_READ",
            Hypercall::Random => "RANDOM",
        }
    }
}

/// `BootInfo::hypercalls` as every v1 monitor sets it: bits 1 to 8.
pub const HYPERCALLS_V1: u64 = 0x1fe;

/// Hypercall numbers at or above this are never valid in v1.
pub const HYPERCALL_NR_LIMIT: u64 = 64;

/// Negated Linux errno values returned in a block's `ret` (ABI.md section 4),
/// listed in the order the monitor checks them.
pub mod errno {
    /// NET_WRITE or NET_READ with no network device.
    pub const ENODEV: i64 = -19;
    /// A buffer breaks its access rule.
    pub const EFAULT: i64 = -14;
    /// RANDOM with `len > 4096`; NET_WRITE with `len < 14`.
    pub const EINVAL: i64 = -22;
    /// NET_WRITE longer than `mtu + 14`; NET_READ `cap` smaller than the frame.
    pub const EMSGSIZE: i64 = -90;
    /// NET_READ with no frame waiting.
    pub const EAGAIN: i64 = -11;
}

/// POLL `ready` bit 0: a network frame is waiting.
pub const POLL_READY_NET: u64 = 1;
