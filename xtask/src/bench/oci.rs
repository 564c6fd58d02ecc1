//! `cargo xtask bench oci [-n N]`: `ctr run --rm` of hello through
//! `flint-oci` against the same through runc with a static native hello
//! (`hello.c`), in one private containerd, N rounds (default 50)
//! interleaved, after a few warm-up rounds. Each sample is the wall time of
//! one whole `ctr run --rm` (containerd starts the shim, the shim runs the
//! runtime's create/start, the container prints `Hello, world!`, exits, and
//! is deleted). Prints p50/p90/min/max per runtime and writes
//! `target/bench/oci.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stats::{json_ns, Samples};
use crate::{guest, monitor, oci, packages, target_dir, Error, Result};

const HELLO: &[u8] = b"Hello, world!\n";
const WARMUP: usize = 3;

/// Parses `[-n N]`.
pub fn parse(args: &[String]) -> Result<usize> {
    super::runs_option("oci", args, 50)
}

/// Runs the bench.
pub fn run(runs: usize) -> Result<()> {
    packages::ensure(packages::TEST_PACKAGES)?;
    for program in ["containerd", "ctr", "runc"] {
        if !packages::on_path(program) {
            return Err(Error::Bench(format!(
                "`{program}` is not installed: apt-get install containerd"
            )));
        }
    }
    eprintln!("oci: building hello.elf, flint-oci and the native hello...");
    let hello = guest::build("hello")?;
    let runtime = monitor::build_oci()?;
    let native = super::coldstart::build_native()?;
    let dir = std::env::temp_dir().join(format!("flint-bench-oci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let daemon = Daemon::start(&dir)?;
    let result = measure(&daemon, &hello, &native, &runtime, runs);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    let (flint, runc) = result?;
    report(&flint, &runc, runs)
}

fn measure(
    d: &Daemon,
    hello: &Path,
    native: &Path,
    runtime: &Path,
    runs: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let flint_tar = d.dir.join("hello.oci.tar");
    oci::write_app(&flint_tar, "hello", hello)?;
    let native_tar = d.dir.join("native.oci.tar");
    let bytes = std::fs::read(native).map_err(Error::io(native))?;
    let native_name = "docker.io/flint/native-hello:latest";
    oci::write_image(
        &native_tar,
        native_name,
        &[oci::LayerFile {
            name: "hello",
            bytes: &bytes,
            mode: 0o755,
        }],
        &["/hello".to_owned()],
    )?;
    for tar in [&flint_tar, &native_tar] {
        d.ctr(&[
            "image",
            "import",
            "--snapshotter",
            "native",
            &tar.display().to_string(),
        ])?;
    }
    let flint_image = oci::image_name("hello");
    let runtime = runtime.display().to_string();
    let flint_root = d.dir.join("flint-oci").display().to_string();
    let runc_root = d.dir.join("runc").display().to_string();
    let fifo = d.dir.join("fifo").display().to_string();
    let common = [
        "run",
        "--rm",
        "--snapshotter",
        "native",
        "--fifo-dir",
        &fifo,
    ];
    let (mut flint, mut runc) = (Vec::new(), Vec::new());
    eprintln!("oci: {WARMUP} warm-up and {runs} measured rounds of each, interleaved...");
    for round in 0..WARMUP + runs {
        let id = format!("f{round}");
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["--runc-binary", &runtime, "--runc-root", &flint_root]);
        args.extend([flint_image.as_str(), &id]);
        let t = d.timed_hello(&args)?;
        let id = format!("r{round}");
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["--runc-root", &runc_root, native_name, &id]);
        let r = d.timed_hello(&args)?;
        if round >= WARMUP {
            flint.push(t);
            runc.push(r);
        }
    }
    Ok((flint, runc))
}

fn report(flint: &[Duration], runc: &[Duration], runs: usize) -> Result<()> {
    let f = Samples::new(flint.to_vec());
    let r = Samples::new(runc.to_vec());
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "`ctr run --rm` of hello, {runs} runs each (private containerd 1.6, native snapshotter)"
    );
    println!("| runtime | image | p50 | p90 | min | max |");
    println!("|---|---|---|---|---|---|");
    for (name, image, s) in [
        ("flint-oci", "hello.elf (Flint guest)", &f),
        ("runc", "static native hello (gcc -static)", &r),
    ] {
        println!(
            "| {name} | {image} | {} | {} | {} | {} |",
            ms(s.p50()),
            ms(s.p90()),
            ms(s.min()),
            ms(s.max())
        );
    }
    let ratio = f.p50().as_secs_f64() / r.p50().as_secs_f64();
    println!("flint-oci p50 / runc p50 = {ratio:.2}");
    let json = format!(
        "{{\"bench\": \"oci\", \"runs\": {runs}, \"what\": \"wall time of one `ctr run --rm` of hello\", \
         \"flint_oci\": {}, \"runc\": {}, \"p50_ratio\": {ratio:.4}, \
         \"flint_oci_samples_ns\": {}, \"runc_samples_ns\": {}}}\n",
        f.json(),
        r.json(),
        json_ns(flint),
        json_ns(runc)
    );
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let file = dir.join("oci.json");
    std::fs::write(&file, json).map_err(Error::io(&file))?;
    println!("wrote {}", file.display());
    Ok(())
}

/// A private containerd for the bench, stopped by PID on drop.
struct Daemon {
    dir: PathBuf,
    socket: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(dir: &Path) -> Result<Daemon> {
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        let d = dir.display();
        let text = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n",
            s = socket.display()
        );
        std::fs::write(&config, text).map_err(Error::io(&config))?;
        let log = dir.join("containerd.log");
        let log = std::fs::File::create(&log).map_err(Error::io(&log))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::io(dir))?)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "containerd".into(),
                source,
            })?;
        let daemon = Daemon {
            dir: dir.to_path_buf(),
            socket,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.ctr(&["version"]).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Bench("containerd did not start within 20 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    fn ctr(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: "ctr".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Bench(format!(
                "ctr {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    }

    /// One `ctr ARGS` that must print exactly hello; its wall time.
    fn timed_hello(&self, args: &[&str]) -> Result<Duration> {
        let start = Instant::now();
        let mut child = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "ctr".into(),
                source,
            })?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_end(&mut out);
        }
        let status = child.wait().map_err(Error::io("ctr"))?;
        let took = start.elapsed();
        if !status.success() || out != HELLO {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            return Err(Error::Bench(format!(
                "ctr {} ({status}) printed {:?}, not hello: {}",
                args.join(" "),
                String::from_utf8_lossy(&out),
                err.trim()
            )));
        }
        Ok(took)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}
