//! `--net tap:NAME`: a Linux TAP device (IFF_TAP | IFF_NO_PI), so every
//! read is one whole Ethernet frame and every write sends one. The fd is
//! non-blocking: a full device queue drops the guest's frame like a NIC
//! would, and reads happen only when POLL or NET_READ want a frame.

use super::{Backend, NetCounters, NetError};
use crate::poller::{Interest, Poller, Ready, FIRST_FREE_TOKEN};
use hypercall_abi::ETH_HEADER_LEN;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// The TAP fd's epoll token.
const TOKEN: u64 = FIRST_FREE_TOKEN;
/// Big enough for any frame the kernel hands a TAP device without GSO.
const READ_BUFFER: usize = 65536;
/// Oversized frames skipped per look, so a host flooding the device with
/// them cannot keep the vCPU thread in one hypercall forever.
const MAX_SKIPS: usize = 64;
/// Below the IPv4 minimum MTU the guest could not work.
const MTU_MIN: u16 = 68;

/// An open TAP device.
pub struct Tap {
    file: File,
    mtu: u16,
    /// The frame read from the device and not yet taken by the guest.
    buf: Vec<u8>,
    len: Option<usize>,
}

impl Tap {
    /// Attaches to TAP device `name`, creating it if it does not exist.
    pub fn open(name: &str, poller: &Poller) -> Result<Tap, NetError> {
        let fail = |why: String| NetError::Tap {
            name: name.to_owned(),
            why,
        };
        let path = c"/dev/net/tun";
        // SAFETY: `path` is a NUL-terminated string; open has no other
        // preconditions and the result is checked.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    "there is no /dev/net/tun on this host (load the tun module)".into()
                }
                Some(libc::EACCES | libc::EPERM) => {
                    format!("cannot open /dev/net/tun: {e}; TAP devices need CAP_NET_ADMIN")
                }
                _ => format!("cannot open /dev/net/tun: {e}"),
            }));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });

        let mut req = ifreq(name).ok_or_else(|| fail("not a valid interface name".into()))?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => format!(
                    "cannot attach the TAP device: {e}; creating or attaching a TAP device \
                     needs CAP_NET_ADMIN"
                ),
                Some(libc::EBUSY) => format!("{e}: another process has this TAP device open"),
                Some(libc::EINVAL) => format!("{e}: is {name} a TUN (not TAP) device?"),
                _ => format!("cannot attach the TAP device: {e}"),
            }));
        }
        let mtu = device_mtu(name).map_err(|e| fail(format!("cannot read its MTU: {e}")))?;
        let mtu = u16::try_from(mtu)
            .ok()
            .filter(|m| *m >= MTU_MIN && u64::from(*m) + ETH_HEADER_LEN <= READ_BUFFER as u64)
            .ok_or_else(|| fail(format!("its MTU {mtu} is outside {MTU_MIN}..=65521")))?;
        poller
            .add(file.as_raw_fd(), TOKEN, Interest::READ)
            .map_err(|e| fail(format!("cannot watch the device: {e}")))?;
        Ok(Tap {
            file,
            mtu,
            buf: vec![0; READ_BUFFER],
            len: None,
        })
    }

    /// The device's MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    fn max_frame(&self) -> usize {
        usize::from(self.mtu) + ETH_HEADER_LEN as usize
    }
}

impl Backend for Tap {
    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        Some(vec![self.file.as_raw_fd()])
    }

    fn send(&mut self, frame: &[u8], _: &Poller, counters: &mut NetCounters) {
        match self.file.write(frame) {
            Ok(n) if n == frame.len() => {}
            // Full queue, link down (EIO before the device is up), or a
            // frame the kernel refused: a NIC would drop it too.
            _ => counters.dropped += 1,
        }
    }

    fn peek(&mut self, counters: &mut NetCounters) -> Option<&[u8]> {
        if self.len.is_none() {
            for _ in 0..MAX_SKIPS {
                match self.file.read(&mut self.buf) {
                    // Frames over the MTU (the host may send them) never
                    // reach the guest, whose buffers are sized by it.
                    Ok(n) if n > self.max_frame() || n < ETH_HEADER_LEN as usize => {
                        counters.dropped += 1;
                    }
                    Ok(n) => {
                        self.len = Some(n);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        self.len.map(|n| &self.buf[..n])
    }

    fn discard(&mut self) {
        self.len = None;
    }

    fn ready(&mut self, _: &Ready, _: &Poller) {
        // The next peek reads: epoll stays level-triggered on the fd.
    }

    fn service(&mut self, _: &Poller, _: &mut NetCounters) {}

    fn next_wake(&mut self) -> Option<Instant> {
        None
    }
}

/// An ifreq naming `name`, or `None` if the name does not fit.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    let name = CString::new(name).ok()?;
    let bytes = name.as_bytes_with_nul();
    // SAFETY: ifreq is plain data (a name and a union of integers and
    // pointers) for which all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() > req.ifr_name.len() {
        return None;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Some(req)
}

/// The MTU of interface `name` (SIOCGIFMTU on any socket).
fn device_mtu(name: &str) -> io::Result<i32> {
    // SAFETY: socket has no memory preconditions; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq(name).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of one ifreq.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU succeeded, so it wrote the mtu member.
    Ok(unsafe { req.ifr_ifru.ifru_mtu })
}
