//! `process.terminal` with `--console-socket`: a new pty whose master goes
//! to the caller over the Unix socket (SCM_RIGHTS, with the pty's name as
//! the payload, as runc sends it) and whose slave becomes the container's
//! stdin, stdout and stderr and controlling terminal.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A pty: the master (sent away) and the slave (kept for the container).
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: String,
}

/// Opens a new pty pair.
pub fn open_pty() -> io::Result<Pty> {
    // SAFETY: posix_openpt returns a new fd or -1; we own it from here on.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `master` is a fresh fd nobody else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt/unlockpt take the master fd; ptsname_r writes a
    // NUL-terminated name into `name`, at most its length.
    let name = unsafe {
        if libc::grantpt(master.as_raw_fd()) != 0
            || libc::unlockpt(master.as_raw_fd()) != 0
            || libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0
        {
            return Err(io::Error::last_os_error());
        }
        CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
    };
    let path = std::ffi::CString::new(name.clone()).map_err(io::Error::other)?;
    // SAFETY: opens the slave by its NUL-terminated name.
    let slave = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Pty {
        master,
        slave,
        name,
    })
}

/// Sends `fd` over the Unix socket at `socket`, with `name` as the payload.
pub fn send_fd(socket: &Path, fd: RawFd, name: &str) -> io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let payload = name.as_bytes();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Room for one cmsg carrying one fd, aligned for cmsghdr.
    let mut space = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below points at live
    // locals that outlive the sendmsg call; CMSG_* stay inside `space`,
    // which is larger than CMSG_SPACE(sizeof(int)).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(stream.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In the container's process: a new session with the pty slave as its
/// controlling terminal and as fds 0, 1 and 2.
pub fn adopt_slave(slave: &OwnedFd) -> io::Result<()> {
    // SAFETY: setsid, ioctl(TIOCSCTTY) and dup2 on fds this process owns;
    // no memory is passed.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        for target in 0..3 {
            if libc::dup2(slave.as_raw_fd(), target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
