//! The host-side stack's "wire": two frame queues. NET_WRITE pushes the
//! guest's frames into `inbound`, the stack's replies collect in
//! `outbound`, and NET_READ takes them from there. Both are bounded, so a
//! guest that never reads (or floods) costs the host a fixed amount.

use crate::net::NetCounters;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// Frames from the guest not yet taken by the stack. The stack runs after
/// every NET_WRITE, so this holds one frame at a time in practice.
const INBOUND_MAX: usize = 64;
/// Frames waiting for the guest. When full, the stack holds its data back
/// (TCP retransmits later), which is the backpressure towards the host.
pub const OUTBOUND_MAX: usize = 256;

/// The two queues, as a smoltcp device.
pub struct Queues {
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
    /// Frame buffers to reuse, so steady traffic does not allocate.
    spare: Vec<Vec<u8>>,
    max_frame: usize,
    /// Replies the stack produced while `outbound` was full.
    pub dropped: u64,
}

impl Queues {
    /// Empty queues for frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Queues {
        Queues {
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
            spare: Vec::new(),
            max_frame,
            dropped: 0,
        }
    }

    /// Queues a frame from the guest; false if the queue is full.
    pub fn push_inbound(&mut self, frame: &[u8]) -> bool {
        if self.inbound.len() >= INBOUND_MAX {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.inbound.push_back(buf);
        true
    }

    /// Queues a frame for the stack without copying it; gives it back if
    /// the queue is full.
    pub fn push_inbound_owned(&mut self, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.inbound.len() >= INBOUND_MAX {
            return Err(frame);
        }
        self.inbound.push_back(frame);
        Ok(())
    }

    /// Takes the frame at the head of the guest's queue.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.outbound.pop_front()
    }

    /// The frame at the head of the guest's queue.
    pub fn front(&self) -> Option<&[u8]> {
        self.outbound.front().map(Vec::as_slice)
    }

    /// Drops the frame at the head of the guest's queue.
    pub fn pop(&mut self) {
        if let Some(buf) = self.outbound.pop_front() {
            self.recycle(buf);
        }
    }

    /// Frames waiting for the guest.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.outbound.len()
    }

    /// Moves the replies dropped so far into `counters`.
    pub fn account(&mut self, counters: &mut NetCounters) {
        counters.dropped += std::mem::take(&mut self.dropped);
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < OUTBOUND_MAX {
            self.spare.push(buf);
        }
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let frame = self.inbound.pop_front()?;
        let Queues {
            outbound,
            spare,
            max_frame,
            dropped,
            ..
        } = self;
        Some((
            Rx { frame, spare },
            Tx {
                outbound,
                max_frame: *max_frame,
                dropped,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        if self.outbound.len() >= OUTBOUND_MAX {
            return None;
        }
        Some(Tx {
            outbound: &mut self.outbound,
            max_frame: self.max_frame,
            dropped: &mut self.dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // For Ethernet, smoltcp counts the header in the MTU.
        caps.max_transmission_unit = self.max_frame;
        caps
    }
}

/// One frame from the guest, for the stack to read.
pub struct Rx<'a> {
    frame: Vec<u8>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.frame);
        if self.spare.len() < OUTBOUND_MAX {
            self.spare.push(self.frame);
        }
        result
    }
}

/// Room for one frame towards the guest.
pub struct Tx<'a> {
    outbound: &'a mut VecDeque<Vec<u8>>,
    max_frame: usize,
    dropped: &'a mut u64,
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let result = f(&mut buf);
        // A reply to a frame (ARP, RST, ping) may come while the queue is
        // full; and nothing longer than the MTU ever reaches the guest.
        if self.outbound.len() < OUTBOUND_MAX && len <= self.max_frame {
            self.outbound.push_back(buf);
        } else {
            *self.dropped += 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken, TxToken};

    #[test]
    fn queues_are_bounded_and_frames_capped() {
        let mut q = Queues::new(1514);
        for _ in 0..INBOUND_MAX {
            assert!(q.push_inbound(&[1; 60]));
        }
        assert!(!q.push_inbound(&[1; 60]));
        let now = Instant::from_millis(0);
        let (rx, _) = q.receive(now).expect("a frame");
        assert_eq!(rx.consume(|f| f.len()), 60);
        for _ in 0..OUTBOUND_MAX {
            q.transmit(now).expect("room").consume(60, |_| ());
        }
        assert!(q.transmit(now).is_none());
        assert_eq!(q.waiting(), OUTBOUND_MAX);
        q.pop();
        q.transmit(now).expect("room").consume(1515, |_| ());
        assert_eq!(q.dropped, 1);
        assert_eq!(q.waiting(), OUTBOUND_MAX - 1);
        assert_eq!(q.front().map(<[u8]>::len), Some(60));
    }
}
