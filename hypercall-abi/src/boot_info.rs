//! `BootInfo` and `NetConfig` (ABI.md section 3).

use core::mem::{offset_of, size_of};

/// `BootInfo::magic`: the bytes `"FLINTI1\0"` read as a little-endian u64.
pub const BOOTINFO_MAGIC: u64 = 0x0031_4954_4E49_4C46;

/// What the monitor tells the guest at entry. The guest finds it at the
/// guest-physical address in `RDI`, mapped read-only. After a snapshot
/// restore (`generation` bumped) the clock, seed, id and network fields are
/// fresh and must be read again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "zerocopy",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::Immutable,
        zerocopy::KnownLayout
    )
)]
pub struct BootInfo {
    /// [`BOOTINFO_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<BootInfo>()` as written by the monitor (≥ 176).
    pub size: u32,
    /// Guest RAM is `[0, mem_size)`.
    pub mem_size: u64,
    /// First byte of the heap (end of the highest image segment, page aligned).
    pub heap_start: u64,
    /// One past the last byte of the heap; the guard page follows.
    pub heap_end: u64,
    /// Initial stack pointer; equals `mem_size`.
    pub stack_top: u64,
    /// Size of the stack below `stack_top`.
    pub stack_size: u64,
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
    /// Guest TSC at the instance clock's zero.
    pub tsc_at_boot: u64,
    /// Host wall clock at the instance clock's zero, ns since the UNIX epoch.
    pub wall_ns_at_boot: u64,
    /// Guest-physical address of the command line (UTF-8, not
    /// NUL-terminated; 0 if empty).
    pub cmdline: u64,
    /// Length of the command line, at most 4096.
    pub cmdline_len: u64,
    /// The network device, if any.
    pub net: NetConfig,
    /// Fresh host entropy for this instance.
    pub seed: [u8; 32],
    /// Unique within one monitor process.
    pub instance_id: u64,
    /// 0 at first boot, bumped by each snapshot restore.
    pub generation: u64,
    /// Bit N set if hypercall number N is served.
    pub hypercalls: u64,
}

/// The guest's network identity (ABI.md section 3).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "zerocopy",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::Immutable,
        zerocopy::KnownLayout
    )
)]
pub struct NetConfig {
    /// 1 if a network device is attached.
    pub present: u8,
    /// The guest's own MAC address.
    pub mac: [u8; 6],
    /// IPv4 prefix length (0 if not configured).
    pub prefix_len: u8,
    /// The guest's static address (0.0.0.0 if not configured).
    pub ipv4: [u8; 4],
    /// Default gateway (0.0.0.0 if none).
    pub gateway: [u8; 4],
    /// IP MTU: frames are at most `mtu + 14` bytes.
    pub mtu: u16,
    /// Zero.
    pub _pad: [u8; 6],
}

impl BootInfo {
    /// True if `hypercall` is announced in [`BootInfo::hypercalls`].
    pub const fn serves(&self, hypercall: crate::Hypercall) -> bool {
        self.hypercalls & (1 << hypercall.nr()) != 0
    }
}

const _: () = {
    assert!(size_of::<NetConfig>() == 24);
    assert!(offset_of!(NetConfig, present) == 0);
    assert!(offset_of!(NetConfig, mac) == 1);
    assert!(offset_of!(NetConfig, prefix_len) == 7);
    assert!(offset_of!(NetConfig, ipv4) == 8);
    assert!(offset_of!(NetConfig, gateway) == 12);
    assert!(offset_of!(NetConfig, mtu) == 16);
    assert!(offset_of!(NetConfig, _pad) == 18);

    assert!(size_of::<BootInfo>() == 176);
    assert!(offset_of!(BootInfo, magic) == 0);
    assert!(offset_of!(BootInfo, abi_version) == 8);
    assert!(offset_of!(BootInfo, size) == 12);
    assert!(offset_of!(BootInfo, mem_size) == 16);
    assert!(offset_of!(BootInfo, heap_start) == 24);
    assert!(offset_of!(BootInfo, heap_end) == 32);
    assert!(offset_of!(BootInfo, stack_top) == 40);
    assert!(offset_of!(BootInfo, stack_size) == 48);
    assert!(offset_of!(BootInfo, tsc_hz) == 56);
    assert!(offset_of!(BootInfo, tsc_at_boot) == 64);
    assert!(offset_of!(BootInfo, wall_ns_at_boot) == 72);
    assert!(offset_of!(BootInfo, cmdline) == 80);
    assert!(offset_of!(BootInfo, cmdline_len) == 88);
    assert!(offset_of!(BootInfo, net) == 96);
    assert!(offset_of!(BootInfo, seed) == 120);
    assert!(offset_of!(BootInfo, instance_id) == 152);
    assert!(offset_of!(BootInfo, generation) == 160);
    assert!(offset_of!(BootInfo, hypercalls) == 168);

    // "FLINTI1\0" as little-endian bytes.
    let m = BOOTINFO_MAGIC.to_le_bytes();
    assert!(m[0] == b'F' && m[1] == b'L' && m[2] == b'I' && m[3] == b'N');
    assert!(m[4] == b'T' && m[5] == b'I' && m[6] == b'1' && m[7] == 0);
};
