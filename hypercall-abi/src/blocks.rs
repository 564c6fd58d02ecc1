//! Hypercall argument blocks (ABI.md section 4).
//!
//! A guest passes the guest-physical address of one of these, 8-byte
//! aligned, in the store that makes the hypercall. The monitor writes only
//! the output fields named in each doc comment.

use core::mem::{offset_of, size_of};

macro_rules! abi_block {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[cfg_attr(
            feature = "zerocopy",
            derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout)
        )]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty),* }
    };
}

abi_block! {
    /// CONSOLE_WRITE (1). Output: `ret`.
    ConsoleWriteBlock {
        /// Bytes to write (the guest must be able to read them).
        buf: u64,
        /// Number of bytes at `buf`.
        len: u64,
        /// Bytes taken (≥ 1 unless `len` is 0), or a negated errno.
        ret: i64,
    }
}

abi_block! {
    /// EXIT (2). Does not return.
    ExitBlock {
        /// Exit status is `code & 0xff`.
        code: u64,
    }
}

abi_block! {
    /// PANIC (3). Does not return; status 101.
    PanicBlock {
        /// The message (UTF-8 expected, not required).
        msg: u64,
        /// Its length; the monitor reads at most 4096 bytes.
        len: u64,
    }
}

abi_block! {
    /// CLOCK (4). Output: both fields.
    ClockBlock {
        /// The instance clock: ns since the instance's first instruction.
        monotonic_ns: u64,
        /// The host's wall clock: ns since the UNIX epoch.
        wall_ns: u64,
    }
}

abi_block! {
    /// POLL (5). Output: `ready`, `ret`.
    PollBlock {
        /// Instance-clock deadline; `u64::MAX` waits for a device only.
        deadline_ns: u64,
        /// Ready set; bit 0 ([`crate::POLL_READY_NET`]): a frame is waiting.
        ready: u64,
        /// 0.
        ret: i64,
    }
}

abi_block! {
    /// NET_WRITE (6). Output: `ret`.
    NetWriteBlock {
        /// One Ethernet frame.
        buf: u64,
        /// Its length: at least 14, at most `mtu + 14`.
        len: u64,
        /// `len`, or a negated errno.
        ret: i64,
    }
}

abi_block! {
    /// NET_READ (7). Output: `len`, `ret`.
    NetReadBlock {
        /// Where to put the frame (the guest must be able to write it).
        buf: u64,
        /// Room at `buf`.
        cap: u64,
        /// The frame's size.
        len: u64,
        /// 0, or a negated errno.
        ret: i64,
    }
}

abi_block! {
    /// RANDOM (8). Output: `ret`.
    RandomBlock {
        /// Where to put the entropy (the guest must be able to write it).
        buf: u64,
        /// How many bytes, at most 4096.
        len: u64,
        /// `len`, or a negated errno.
        ret: i64,
    }
}

const _: () = {
    assert!(size_of::<ConsoleWriteBlock>() == 24);
    assert!(offset_of!(ConsoleWriteBlock, buf) == 0);
    assert!(offset_of!(ConsoleWriteBlock, len) == 8);
    assert!(offset_of!(ConsoleWriteBlock, ret) == 16);

    assert!(size_of::<ExitBlock>() == 8);
    assert!(offset_of!(ExitBlock, code) == 0);

    assert!(size_of::<PanicBlock>() == 16);
    assert!(offset_of!(PanicBlock, msg) == 0);
    assert!(offset_of!(PanicBlock, len) == 8);

    assert!(size_of::<ClockBlock>() == 16);
    assert!(offset_of!(ClockBlock, monotonic_ns) == 0);
    assert!(offset_of!(ClockBlock, wall_ns) == 8);

    assert!(size_of::<PollBlock>() == 24);
    assert!(offset_of!(PollBlock, deadline_ns) == 0);
    assert!(offset_of!(PollBlock, ready) == 8);
    assert!(offset_of!(PollBlock, ret) == 16);

    assert!(size_of::<NetWriteBlock>() == 24);
    assert!(offset_of!(NetWriteBlock, buf) == 0);
    assert!(offset_of!(NetWriteBlock, len) == 8);
    assert!(offset_of!(NetWriteBlock, ret) == 16);

    assert!(size_of::<NetReadBlock>() == 32);
    assert!(offset_of!(NetReadBlock, buf) == 0);
    assert!(offset_of!(NetReadBlock, cap) == 8);
    assert!(offset_of!(NetReadBlock, len) == 16);
    assert!(offset_of!(NetReadBlock, ret) == 24);

    assert!(size_of::<RandomBlock>() == 24);
    assert!(offset_of!(RandomBlock, buf) == 0);
    assert!(offset_of!(RandomBlock, len) == 8);
    assert!(offset_of!(RandomBlock, ret) == 16);
};
