//! What the monitor's KVM integration tests share.

use std::io::Write;

/// True if /dev/kvm can be opened; otherwise prints a loud line that `test`
/// was skipped, not passed, and returns false.
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            // Straight to the stderr handle: libtest captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "!!!!!! SKIPPED, NOT PASSED: {test}: cannot open /dev/kvm: {e}; this test boots KVM guests"
            );
            false
        }
    }
}
