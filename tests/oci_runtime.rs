//! `flint-oci` on its own, driven the way containerd's runc shim drives it
//! (shared/CONTAINERD.md), with this test process as the subreaper that
//! reaps the container's process: the guest does not run before `start`,
//! the pid file names the process, the leaked fd 3 is closed, errors go to
//! the `--log` file as JSON, the cgroup and memory limit are applied, a
//! pod sandbox lives until killed, and `process.terminal` sends a pty over
//! `--console-socket`.

mod support;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::{flint_bin, image, kvm_or_skip};

/// A bundle and a state root in a fresh temporary directory.
struct Bundle {
    dir: PathBuf,
    id: String,
}

impl Bundle {
    /// A bundle whose rootfs holds hello.elf, with `config` as config.json.
    fn new(config: &str) -> Bundle {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("flint-oci-rt-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bundle/rootfs")).unwrap();
        std::fs::copy(image("hello"), dir.join("bundle/rootfs/hello.elf")).unwrap();
        std::fs::write(dir.join("bundle/config.json"), config).unwrap();
        Bundle {
            dir,
            id: format!("rt{}-{n}", std::process::id()),
        }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// `flint-oci --root R --log B/log.json --log-format json ARGS`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(flint_bin().with_file_name("flint-oci"));
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--log")
            .arg(self.bundle().join("log.json"))
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running flint-oci")
    }

    /// `create`, with stdout to the file `out` and a pipe's write end
    /// leaked as fd 3, as the shim leaks its socket. Returns the read end.
    fn create(&self, out: &Path, extra: &[&str]) -> (Output, OwnedFd) {
        let (leak_r, leak_w) = pipe();
        let bundle = self.bundle();
        let pid_file = bundle.join("init.pid");
        let mut args = vec![
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ];
        args.extend(extra);
        args.push(&self.id);
        let mut c = self.cmd(&args);
        c.stdout(std::fs::File::create(out).unwrap());
        let raw = leak_w.as_raw_fd();
        // SAFETY: dup2 in the child between fork and exec, on an fd the
        // parent holds open; async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Files, not pipes: the container's process inherits create's
        // stdio and outlives it, so a pipe would not see EOF.
        let err = self.dir.join(format!("create-{}.stderr", self.id));
        c.stderr(std::fs::File::create(&err).unwrap());
        let status = c.status().expect("running flint-oci create");
        drop(leak_w);
        let output = Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&err).unwrap_or_default(),
        };
        (output, leak_r)
    }

    fn pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.bundle().join("init.pid")).unwrap();
        text.trim().parse().unwrap()
    }

    fn state_status(&self) -> String {
        let out = self.run(&["state", &self.id]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("\"status\": \""))
            .map(|s| s.trim_end_matches(['"', ',']).to_owned())
            .unwrap_or_else(|| panic!("state: {out:?}"))
    }

    /// The last line of the JSON log.
    fn last_log(&self) -> String {
        let log = std::fs::read_to_string(self.bundle().join("log.json")).unwrap_or_default();
        log.lines().last().unwrap_or("").to_owned()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.run(&["delete", "--force", &self.id]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh fds that we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fresh.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Makes this test process the subreaper of the container processes that
/// `create` leaves behind, as containerd's shim is.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

/// Waits (at most 20 s) for our adopted child `pid`; its wait status.
fn reap(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a child of ours, WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert!(
            r == 0,
            "waitpid({pid}): {}",
            std::io::Error::last_os_error()
        );
        assert!(
            Instant::now() < deadline,
            "container process {pid} did not end"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes `/flint-oci-test-PID` (the parent of the test's cgroup) from
/// every hierarchy; the container's own cgroup went with `delete`.
fn remove_test_cgroup_parent() {
    let parent = format!("flint-oci-test-{}", std::process::id());
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(entry.path().join(&parent));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&parent));
}

/// The fds >= 3 process `pid` holds, with what they point at.
fn open_fds(pid: i32) -> Vec<(RawFd, String)> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let fd: RawFd = entry.file_name().to_str().unwrap().parse().unwrap();
        if fd >= 3 {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            fds.push((fd, target.display().to_string()));
        }
    }
    fds
}

#[test]
fn create_waits_for_start_closes_leaked_fds_and_uses_the_cgroup() {
    if !kvm_or_skip() {
        return;
    }
    become_subreaper();
    let cgroup = format!("/flint-oci-test-{}/c1", std::process::id());
    let b = Bundle::new(&format!(
        r#"{{"ociVersion":"1.0.2","process":{{"args":["/hello.elf","bare"]}},"root":{{"path":"rootfs"}},
            "linux":{{"cgroupsPath":"{cgroup}","resources":{{"memory":{{"limit":67108864}}}}}}}}"#
    ));
    let out = b.dir.join("stdout");
    let (created, leaked) = b.create(&out, &[]);
    assert!(
        created.status.success(),
        "create: {created:?} log {}",
        b.last_log()
    );
    let pid = b.pid();
    // Not running yet: no output, status created.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"",
        "the guest ran before start"
    );
    assert_eq!(b.state_status(), "created");
    // The leaked fd is closed in the container's process: it holds only
    // the start fifo of its own.
    let fds = open_fds(pid);
    assert!(
        fds.iter().all(|(_, target)| target.ends_with("/start")),
        "the container's process holds fds it did not open: {fds:?}"
    );
    let mut buf = [0u8; 1];
    let mut leaked = std::fs::File::from(leaked);
    assert_eq!(
        leaked.read(&mut buf).unwrap(),
        0,
        "someone still holds the leaked fd"
    );
    // In the cgroup, with the limit (v2, or the v1 memory hierarchy).
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains(&cgroup), "/proc/{pid}/cgroup: {cgroups}");
    let limit = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| {
            let dir = format!("{root}{cgroup}");
            std::fs::read_to_string(format!("{dir}/memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(format!("{dir}/memory.max")))
                .ok()
        })
        .unwrap_or_default();
    assert_eq!(limit.trim(), "67108864");

    let started = b.run(&["start", &b.id]);
    assert!(started.status.success(), "start: {started:?}");
    let status = reap(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "wait status {status:#x}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "Hello, bare!\n");
    assert_eq!(b.state_status(), "stopped");

    // Signals to a stopped container: plain kill fails, kill --all does not.
    let kill = b.run(&["kill", &b.id, "15"]);
    assert!(!kill.status.success());
    assert!(
        String::from_utf8_lossy(&kill.stderr).contains("not running"),
        "{kill:?}"
    );
    assert!(b.run(&["kill", "--all", &b.id, "9"]).status.success());
    let ps = b.run(&["ps", "--format", "json", &b.id]);
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "[]");
    assert!(b.run(&["delete", &b.id]).status.success());
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory{cgroup}")).exists());
    remove_test_cgroup_parent();
    // Gone: "does not exist", also as the last JSON line of the log.
    let again = b.run(&["delete", &b.id]);
    assert!(!again.status.success());
    let last = b.last_log();
    assert!(
        last.starts_with(r#"{"level":"error","msg":"container \""#)
            && last.contains("does not exist"),
        "log: {last}"
    );
}

#[test]
fn bad_bundles_fail_create_with_a_json_log_line_and_exec_is_refused() {
    if !kvm_or_skip() {
        return;
    }
    let b = Bundle::new(r#"{"process":{"args":["/missing.elf"]},"root":{"path":"rootfs"}}"#);
    let (created, _) = b.create(&b.dir.join("stdout"), &[]);
    assert!(!created.status.success());
    let last = b.last_log();
    assert!(
        last.contains(r#""level":"error""#) && last.contains("names no file"),
        "log: {last}"
    );
    assert!(
        !b.dir.join("root").join(&b.id).exists(),
        "a failed create left state behind"
    );

    let b = Bundle::new(
        r#"{"process":{"args":["/hello.elf"]},"root":{"path":"rootfs"},
            "linux":{"resources":{"memory":{"limit":1048576}}}}"#,
    );
    let (created, _) = b.create(&b.dir.join("stdout"), &[]);
    assert!(!created.status.success());
    assert!(
        b.last_log().contains("at least 20 MiB"),
        "log: {}",
        b.last_log()
    );

    let exec = b.run(&["exec", &b.id, "sh"]);
    assert!(!exec.status.success());
    assert!(String::from_utf8_lossy(&exec.stderr).contains("exec is not supported"));
}

#[test]
fn a_pod_sandbox_runs_no_guest_and_lives_until_killed() {
    if !kvm_or_skip() {
        return;
    }
    become_subreaper();
    let b = Bundle::new(
        r#"{"process":{"args":["/pause"]},"root":{"path":"rootfs"},
            "annotations":{"io.kubernetes.cri.container-type":"sandbox"}}"#,
    );
    let (created, _) = b.create(&b.dir.join("stdout"), &[]);
    assert!(
        created.status.success(),
        "create: {created:?} log {}",
        b.last_log()
    );
    let pid = b.pid();
    assert!(b.run(&["start", &b.id]).status.success());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.state_status(), "running");
    let ps = b.run(&["ps", "--format", "json", &b.id]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        format!("[{pid}]")
    );
    assert!(b.run(&["kill", &b.id, "TERM"]).status.success());
    let status = reap(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM,
        "{status:#x}"
    );
}

#[test]
fn a_terminal_goes_over_the_console_socket() {
    if !kvm_or_skip() {
        return;
    }
    become_subreaper();
    let b = Bundle::new(
        r#"{"process":{"terminal":true,"args":["/hello.elf","tty"]},"root":{"path":"rootfs"}}"#,
    );
    let socket = b.dir.join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        receive_fd(stream.as_raw_fd())
    });
    let (created, _) = b.create(
        &b.dir.join("stdout"),
        &["--console-socket", socket.to_str().unwrap()],
    );
    assert!(
        created.status.success(),
        "create: {created:?} log {}",
        b.last_log()
    );
    let (master, name) = receiver.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "pty name {name:?}");
    let pid = b.pid();
    assert!(b.run(&["start", &b.id]).status.success());
    let status = reap(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
    // The slave is closed now; read what is buffered (EIO ends it).
    let mut text = Vec::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&text), "Hello, tty!\r\n");
}

/// Receives one fd (SCM_RIGHTS) and the payload on a Unix socket.
fn receive_fd(socket: RawFd) -> (OwnedFd, String) {
    let mut payload = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut space = [0u64; 8];
    // SAFETY: recvmsg into local buffers that outlive the call; the cmsg
    // walk stays within `space`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space);
        let n = libc::recvmsg(socket, &mut msg, 0);
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null(), "no fd came over the console socket");
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        let name = String::from_utf8_lossy(&payload[..n as usize]).into_owned();
        (OwnedFd::from_raw_fd(fd), name)
    }
}
