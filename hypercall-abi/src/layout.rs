//! Numbers of the guest memory layout (ABI.md sections 2 to 4).

/// Guest page size: every range of the layout is aligned to it.
pub const PAGE_SIZE: u64 = 4096;

/// Image segments start at or above 1 MiB; below it live the monitor's
/// structures (GDT, page tables, `BootInfo`, command line).
pub const IMAGE_BASE_MIN: u64 = 0x10_0000;

/// Guest RAM is at most 3 GiB, so it never reaches the hypercall page.
pub const MEM_SIZE_MAX: u64 = 3 << 30;

/// The heap is at least this large.
pub const HEAP_MIN: u64 = 64 << 10;

/// The unmapped guard page between heap and stack.
pub const GUARD_SIZE: u64 = PAGE_SIZE;

/// Stack size when the monitor is not told otherwise (`--stack`).
pub const STACK_SIZE_DEFAULT: u64 = 256 << 10;

/// The smallest stack a monitor accepts.
pub const STACK_SIZE_MIN: u64 = 16 << 10;

/// The command line (the app's arguments) is at most this long.
pub const CMDLINE_MAX: u64 = 4096;

/// The monitor reads at most this much of a PANIC message.
pub const PANIC_MSG_MAX: u64 = 4096;

/// RANDOM fills at most this many bytes per call.
pub const RANDOM_MAX: u64 = 4096;

/// An Ethernet header: NET_WRITE frames are at least this long and at most
/// `mtu` plus this.
pub const ETH_HEADER_LEN: u64 = 14;
