//! The gateway's local TCP ports for its connections to the guest.

/// The ports handed out: the IANA dynamic range.
const LOCAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// The gateway's local ports, handed out round-robin so that a port is
/// reused as late as possible (the guest may still hold its 4-tuple in
/// TIME-WAIT).
pub struct Ports {
    next: u16,
    in_use: Vec<bool>,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            next: *LOCAL_PORTS.start(),
            in_use: vec![false; LOCAL_PORTS.len()],
        }
    }

    pub fn take(&mut self) -> Option<u16> {
        for _ in 0..self.in_use.len() {
            let port = self.next;
            self.next = if port == *LOCAL_PORTS.end() {
                *LOCAL_PORTS.start()
            } else {
                port + 1
            };
            let index = usize::from(port - LOCAL_PORTS.start());
            if !self.in_use[index] {
                self.in_use[index] = true;
                return Some(port);
            }
        }
        None
    }

    pub fn give_back(&mut self, port: u16) {
        if let Some(used) = port
            .checked_sub(*LOCAL_PORTS.start())
            .and_then(|i| self.in_use.get_mut(usize::from(i)))
        {
            *used = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_go_round_robin_and_run_out() {
        let mut ports = Ports::new();
        assert_eq!(ports.take(), Some(49152));
        assert_eq!(ports.take(), Some(49153));
        ports.give_back(49152);
        // Not reused at once: the guest may hold it in TIME-WAIT.
        assert_eq!(ports.take(), Some(49154));
        let rest = LOCAL_PORTS.len() - 3;
        for _ in 0..rest {
            assert!(ports.take().is_some());
        }
        // Only 49152 is free now, and it comes round again.
        assert_eq!(ports.take(), Some(49152));
        assert_eq!(ports.take(), None);
        ports.give_back(1);
        ports.give_back(65535);
        assert_eq!(ports.take(), Some(65535));
    }
}
