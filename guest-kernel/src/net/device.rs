//! The smoltcp device: Ethernet frames in and out through a [`Link`],
//! which in a Flint VM is the NET_READ / NET_WRITE hypercalls.
//!
//! Every hypercall is a VM exit (~45 µs on the development hosts), so the
//! device never asks for a frame unless one may be waiting: only after
//! POLL reported the network ready ([`FrameDevice::set_rx_ready`]) or the
//! previous read returned a frame. It then reads until the link says
//! "empty", so one wake drains every waiting frame, and stops reading
//! until the next POLL says ready again.

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::errno;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::hypercall;

/// What one read from a [`Link`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkRead {
    /// A frame of this many bytes is at the start of the buffer.
    Frame(usize),
    /// A frame was waiting but did not fit the buffer; it was dropped.
    Dropped,
    /// Nothing is waiting (or the link failed): stop reading.
    Empty,
}

/// A way to move Ethernet frames: the hypercalls in a VM, queues in tests.
pub(crate) trait Link {
    /// Takes one waiting frame into `buf`.
    fn read(&mut self, buf: &mut [u8]) -> LinkRead;
    /// Sends one frame; a frame the link cannot take is lost, like on a
    /// wire.
    fn write(&mut self, frame: &[u8]);
}

/// The NET_READ / NET_WRITE hypercalls (ABI.md section 4).
pub(crate) struct HypercallLink;

impl Link for HypercallLink {
    fn read(&mut self, buf: &mut [u8]) -> LinkRead {
        match hypercall::net_read(buf) {
            (0, len) => LinkRead::Frame((len as usize).min(buf.len())),
            (errno::EMSGSIZE, _) => LinkRead::Dropped,
            // EAGAIN, or an error that asking again will not cure.
            _ => LinkRead::Empty,
        }
    }

    fn write(&mut self, frame: &[u8]) {
        // The monitor takes every valid frame (a full backend drops and
        // counts it, like a NIC); the stack never builds an invalid one.
        let _ = hypercall::net_write(frame);
    }
}

/// Frame counters of the device, as the guest saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Reads from the link (each one a NET_READ exit in a VM), including
    /// the last one of each wake, which finds nothing.
    pub reads: u64,
    /// Frames dropped because they were larger than `mtu + 14`.
    pub rx_dropped: u64,
    /// POLL hypercalls made by [`super::wait`].
    pub polls: u64,
}

/// A smoltcp [`phy::Device`] over a [`Link`], with one receive and one
/// transmit buffer of `mtu + 14` bytes each.
pub(crate) struct FrameDevice<L> {
    link: L,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// A frame may be waiting: POLL said so, or the last read got one.
    rx_ready: bool,
    pub(crate) stats: Stats,
}

impl<L: Link> FrameDevice<L> {
    /// A device for frames of at most `frame_max` bytes (`mtu + 14`).
    pub(crate) fn new(link: L, frame_max: usize) -> FrameDevice<L> {
        FrameDevice {
            link,
            rx: vec![0; frame_max],
            tx: vec![0; frame_max],
            rx_ready: false,
            stats: Stats::default(),
        }
    }

    /// Records that the link has a frame waiting (POLL's ready bit 0), so
    /// the next receive reads it.
    pub(crate) fn set_rx_ready(&mut self) {
        self.rx_ready = true;
    }
}

impl<L: Link> phy::Device for FrameDevice<L> {
    type RxToken<'a>
        = RxToken<'a>
    where
        L: 'a;
    type TxToken<'a>
        = TxToken<'a, L>
    where
        L: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_, L>)> {
        while self.rx_ready {
            self.stats.reads += 1;
            match self.link.read(&mut self.rx) {
                LinkRead::Frame(len) => {
                    self.stats.rx_frames += 1;
                    let rx = RxToken {
                        frame: &self.rx[..len],
                    };
                    let tx = TxToken {
                        link: &mut self.link,
                        buf: &mut self.tx,
                        stats: &mut self.stats,
                    };
                    return Some((rx, tx));
                }
                LinkRead::Dropped => self.stats.rx_dropped += 1,
                LinkRead::Empty => self.rx_ready = false,
            }
        }
        None
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_, L>> {
        Some(TxToken {
            link: &mut self.link,
            buf: &mut self.tx,
            stats: &mut self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.tx.len();
        caps
    }
}

/// A received frame, lent to smoltcp.
pub(crate) struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// The transmit buffer, lent to smoltcp to build one frame in.
pub(crate) struct TxToken<'a, L> {
    link: &'a mut L,
    buf: &'a mut Vec<u8>,
    stats: &'a mut Stats,
}

impl<L: Link> phy::TxToken for TxToken<'_, L> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never builds a frame above `max_transmission_unit`, the
        // buffer's length.
        let len = len.min(self.buf.len());
        let frame = &mut self.buf[..len];
        let result = f(frame);
        self.link.write(frame);
        self.stats.tx_frames += 1;
        result
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::VecDeque;

    use smoltcp::phy::{Device, RxToken as _};

    use super::*;

    /// A link with queued frames that counts its reads.
    #[derive(Default)]
    struct Queue {
        frames: VecDeque<Vec<u8>>,
        reads: usize,
    }

    impl Link for Queue {
        fn read(&mut self, buf: &mut [u8]) -> LinkRead {
            self.reads += 1;
            match self.frames.pop_front() {
                Some(f) if f.len() > buf.len() => LinkRead::Dropped,
                Some(f) => {
                    buf[..f.len()].copy_from_slice(&f);
                    LinkRead::Frame(f.len())
                }
                None => LinkRead::Empty,
            }
        }
        fn write(&mut self, _frame: &[u8]) {}
    }

    #[test]
    fn never_reads_until_told_a_frame_is_waiting() {
        let mut dev = FrameDevice::new(Queue::default(), 64);
        dev.link.frames.push_back(vec![1; 20]);
        assert!(dev.receive(Instant::ZERO).is_none());
        assert_eq!(dev.link.reads, 0);
    }

    #[test]
    fn drains_every_frame_then_stops_after_one_empty_read() {
        let mut dev = FrameDevice::new(Queue::default(), 64);
        dev.link
            .frames
            .extend([vec![1; 20], vec![2; 100], vec![3; 30]]);
        dev.set_rx_ready();
        let mut got = Vec::new();
        while let Some((rx, _tx)) = dev.receive(Instant::ZERO) {
            got.push(rx.consume(|f| f.to_vec()));
        }
        // The 100-byte frame does not fit 64 bytes: dropped, not returned.
        assert_eq!(got, [vec![1; 20], vec![3; 30]]);
        assert_eq!(dev.link.reads, 4);
        assert_eq!(dev.stats.rx_dropped, 1);
        // Empty: no more reads until the next ready.
        assert!(dev.receive(Instant::ZERO).is_none());
        assert_eq!(dev.link.reads, 4);
    }
}
