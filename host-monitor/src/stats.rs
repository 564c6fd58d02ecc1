//! What an instance cost: VM exits by kind, hypercalls by number and the
//! network device's counters and what the limits dropped, printed by `--stats` (or `FLINT_STATS=1`) as
//! `key=value` lines a program can read.

use crate::limits::LimitCounts;
use crate::net::NetCounters;
use hypercall_abi::Hypercall;

/// VM exits, by why KVM_RUN returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Stores to the hypercall page (and any other MMIO store).
    pub mmio_write: u64,
    /// Loads from an address with no RAM.
    pub mmio_read: u64,
    /// Triple faults.
    pub shutdown: u64,
    /// KVM_RUN interrupted by a signal (a kick or a stop request).
    pub interrupted: u64,
    /// Anything else.
    pub other: u64,
}

impl ExitCounts {
    /// All exits.
    pub fn total(&self) -> u64 {
        self.mmio_write + self.mmio_read + self.shutdown + self.interrupted + self.other
    }
}

/// Hypercalls served, by number (index 0 counts numbers v1 does not know).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts(pub [u64; 9]);

impl CallCounts {
    /// Counts one hypercall with number `nr`.
    pub fn count(&mut self, nr: u64) {
        let index = Hypercall::from_nr(nr).map_or(0, |call| call.nr() as usize);
        self.0[index] += 1;
    }

    /// Calls of `call`.
    pub fn of(&self, call: Hypercall) -> u64 {
        self.0[call.nr() as usize]
    }

    /// All hypercalls, known numbers or not.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Everything `--stats` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub exits: ExitCounts,
    pub calls: CallCounts,
    pub net: NetCounters,
    pub limits: LimitCounts,
}

impl Stats {
    /// The lines `--stats` prints, without the `flint: stats: ` prefix.
    pub fn lines(&self) -> [String; 4] {
        let c = &self.calls;
        let l = &self.limits;
        let n = &self.net;
        let e = &self.exits;
        [
            format!(
                "vm_exits={} hypercalls={} console_write={} exit={} panic={} clock={} poll={} \
                 net_write={} net_read={} random={}",
                e.total(),
                c.total(),
                c.of(Hypercall::ConsoleWrite),
                c.of(Hypercall::Exit),
                c.of(Hypercall::Panic),
                c.of(Hypercall::Clock),
                c.of(Hypercall::Poll),
                c.of(Hypercall::NetWrite),
                c.of(Hypercall::NetRead),
                c.of(Hypercall::Random),
            ),
            format!(
                "net rx_frames={} tx_frames={} rx_bytes={} tx_bytes={} dropped={} malformed={}",
                n.rx_frames, n.tx_frames, n.rx_bytes, n.tx_bytes, n.dropped, n.malformed
            ),
            format!(
                "exits mmio_write={} mmio_read={} shutdown={} interrupted={} other={}",
                e.mmio_write, e.mmio_read, e.shutdown, e.interrupted, e.other
            ),
            format!(
                "limits console_total_dropped={} console_rate_dropped={} net_rate_dropped={}",
                l.console_total_dropped, l.console_rate_dropped, l.net_rate_dropped
            ),
        ]
    }

    /// Prints [`Stats::lines`] to stderr.
    pub fn report(&self) {
        for line in self.lines() {
            eprintln!("flint: stats: {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_agreed_format() {
        let mut stats = Stats::default();
        stats.exits.mmio_write = 5;
        stats.exits.interrupted = 1;
        for nr in [1, 1, 5, 6, 7, 2, 99] {
            stats.calls.count(nr);
        }
        stats.net.rx_frames = 3;
        stats.net.malformed = 2;
        stats.limits.net_rate_dropped = 4;
        let [calls, net, exits, limits] = stats.lines();
        assert_eq!(
            calls,
            "vm_exits=6 hypercalls=7 console_write=2 exit=1 panic=0 clock=0 poll=1 \
             net_write=1 net_read=1 random=0"
        );
        assert_eq!(
            net,
            "net rx_frames=3 tx_frames=0 rx_bytes=0 tx_bytes=0 dropped=0 malformed=2"
        );
        assert_eq!(
            exits,
            "exits mmio_write=5 mmio_read=0 shutdown=0 interrupted=1 other=0"
        );
        assert_eq!(
            limits,
            "limits console_total_dropped=0 console_rate_dropped=0 net_rate_dropped=4"
        );
    }
}
