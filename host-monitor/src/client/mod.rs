//! The `flint` CLI as the daemon's client: `ps`, `create`, `start`,
//! `stop`, `pause`, `resume`, `rm`, `logs`, `stats`, `snapshot`, `images`
//! and `register`, each one HTTP request to `flint daemon` over its Unix
//! socket (`--socket`, default [`default_socket`]).
//!
//! Exit status: 0 when the daemon did it, 1 when it refused (its message
//! on stderr), 2 when the daemon could not be reached.

mod http;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The socket `flint daemon` and its clients use without `--socket`:
/// `$FLINT_SOCKET`, else `$XDG_RUNTIME_DIR/flint.sock`, else
/// `/tmp/flint-UID.sock`.
pub fn default_socket() -> PathBuf {
    if let Some(path) = std::env::var_os("FLINT_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return Path::new(&dir).join("flint.sock");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/flint-{uid}.sock"))
}

/// The daemon's socket option, shared by every client command.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// The daemon's socket (default: $FLINT_SOCKET, else
    /// $XDG_RUNTIME_DIR/flint.sock, else /tmp/flint-UID.sock).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
}

/// One instance.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The instance's id (see `flint ps`).
    pub id: String,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// The commands that talk to `flint daemon`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List the daemon's instances.
    Ps(PsArgs),
    /// Create an instance of IMAGE (a registered image or a path) in the
    /// daemon, ready to start; prints its id.
    Create(Box<CreateArgs>),
    /// Start a created instance.
    Start(IdArgs),
    /// Stop an instance (as SIGTERM stops `flint run`); it stays listed,
    /// with its logs and metrics, until `flint rm`.
    Stop(IdArgs),
    /// Pause an instance: its vCPU stops until `flint resume`.
    Pause(IdArgs),
    /// Resume a paused instance.
    Resume(IdArgs),
    /// Delete an instance, stopping it first if it runs.
    Rm(IdArgs),
    /// Print an instance's console output (the last --console-buffer
    /// bytes the daemon kept).
    Logs(IdArgs),
    /// Print an instance's metrics, or the host's without ID.
    Stats(StatsArgs),
    /// Write a snapshot of a running instance to FILE when it next waits
    /// in POLL (`flint create --restore FILE` starts copies).
    Snapshot(SnapshotArgs),
    /// List the images registered with the daemon.
    Images(SocketOnly),
    /// Register an image with the daemon under a name.
    Register(RegisterArgs),
}

#[derive(Debug, Args)]
pub struct SocketOnly {
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// An instance's id; without it, the host's stats.
    pub id: Option<String>,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    pub id: String,
    /// Where to write the snapshot.
    pub file: PathBuf,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The image file.
    pub path: PathBuf,
    /// Its name in the daemon (default: the file name without `.elf`).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `flint create`: the options of `flint run`, passed to the daemon as
/// given (it checks them).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Start it at once.
    #[arg(long)]
    pub start: bool,
    /// Guest RAM, as `flint run --mem` (default 16M).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Guest stack, as `flint run --stack`.
    #[arg(long, value_name = "SIZE")]
    pub stack: Option<String>,
    /// Stop it after SECS seconds of wall time (status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// none, user or tap:NAME, as `flint run --net`.
    #[arg(long, value_name = "MODE")]
    pub net: Option<String>,
    /// Forward a host port to the guest, as `flint run --publish`.
    #[arg(long, value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT")]
    pub publish: Vec<String>,
    /// The guest's address, as `flint run --ip`.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<String>,
    /// The guest's gateway, as `flint run --gateway`.
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
    /// The guest's MAC, as `flint run --mac`.
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Console limit, as `flint run --console-limit`.
    #[arg(long, value_name = "BYTES[/RATE]")]
    pub console_limit: Option<String>,
    /// Frames a second the guest may send, as `flint run --net-rate`.
    #[arg(long, value_name = "PPS")]
    pub net_rate: Option<u64>,
    /// Resume the snapshot FILE instead of booting (IMAGE optional).
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// A registered image's name, or a path to an image.
    #[arg(value_name = "IMAGE", required_unless_present = "restore")]
    pub image: Option<String>,
    /// Arguments for the app, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// Runs a client command; the exit status.
pub fn run(command: ClientCommand) -> i32 {
    match dispatch(command) {
        Ok(()) => 0,
        Err(Failure::Refused(message)) => {
            eprintln!("flint: {message}");
            1
        }
        Err(Failure::Unreachable(message)) => {
            eprintln!("flint: {message}");
            2
        }
    }
}

enum Failure {
    Refused(String),
    Unreachable(String),
}

struct Client {
    socket: PathBuf,
}

impl Client {
    fn new(arg: &SocketArg) -> Client {
        Client {
            socket: arg.socket.clone().unwrap_or_else(default_socket),
        }
    }

    /// The response body of a 2xx, or the daemon's error message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Vec<u8>, Failure> {
        Ok(self.response(method, path, body)?.body)
    }

    /// A 2xx response, or the daemon's error message.
    fn response(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<http::Response, Failure> {
        let body = body.map(|b| b.to_string().into_bytes());
        let response = http::request(&self.socket, method, path, body.as_deref())
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        let message = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned());
        Err(Failure::Refused(format!(
            "the daemon refused ({}): {message}",
            response.status
        )))
    }

    fn json(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let bytes = self.call(method, path, body)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Refused(format!("the daemon's answer is not JSON: {e}")))
    }
}

fn dispatch(command: ClientCommand) -> Result<(), Failure> {
    match command {
        ClientCommand::Ps(args) => {
            let list = Client::new(&args.socket).json("GET", "/instances", None)?;
            if args.json {
                println!("{list:#}");
            } else {
                print_table(&list);
            }
        }
        ClientCommand::Create(args) => {
            let client = Client::new(&args.socket);
            let mut body = json!({
                "args": args.args,
                "publish": args.publish,
                "start": args.start,
            });
            let fields = [
                ("image", args.image.map(Value::from)),
                (
                    "snapshot",
                    args.restore.map(|p| Value::from(p.display().to_string())),
                ),
                ("mem", args.mem.map(Value::from)),
                ("stack", args.stack.map(Value::from)),
                ("timeout_secs", args.timeout.map(Value::from)),
                ("net", args.net.map(Value::from)),
                ("ip", args.ip.map(Value::from)),
                ("gateway", args.gateway.map(Value::from)),
                ("mac", args.mac.map(Value::from)),
                ("console_limit", args.console_limit.map(Value::from)),
                ("net_rate", args.net_rate.map(Value::from)),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let created = client.json("POST", "/instances", Some(body))?;
            println!("{}", created["id"].as_str().unwrap_or_default());
        }
        ClientCommand::Start(a) => action(&a, "start")?,
        ClientCommand::Stop(a) => action(&a, "stop")?,
        ClientCommand::Pause(a) => action(&a, "pause")?,
        ClientCommand::Resume(a) => action(&a, "resume")?,
        ClientCommand::Rm(a) => {
            Client::new(&a.socket).call(
                "DELETE",
                &format!("/instances/{}", path_id(&a.id)),
                None,
            )?;
            println!("{}", a.id);
        }
        ClientCommand::Logs(a) => {
            let response = Client::new(&a.socket).response(
                "GET",
                &format!("/instances/{}/logs", path_id(&a.id)),
                None,
            )?;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&response.body).and_then(|()| out.flush());
            let discarded = response
                .headers
                .iter()
                .find(|(k, _)| k == "x-flint-console-discarded")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0);
            if discarded > 0 {
                eprintln!("flint: logs: the first {discarded} bytes are no longer kept");
            }
        }
        ClientCommand::Stats(args) => {
            let client = Client::new(&args.socket);
            let value = match &args.id {
                Some(id) => client.json("GET", &format!("/instances/{}", path_id(id)), None)?,
                None => client.json("GET", "/host", None)?,
            };
            if args.json {
                println!("{value:#}");
            } else if args.id.is_some() {
                print_instance_stats(&value);
            } else {
                print_host_stats(&value);
            }
        }
        ClientCommand::Snapshot(args) => {
            let file = std::path::absolute(&args.file).unwrap_or(args.file.clone());
            Client::new(&args.socket).json(
                "POST",
                &format!("/instances/{}/snapshot", path_id(&args.id)),
                Some(json!({ "path": file.display().to_string() })),
            )?;
            println!("{}", file.display());
        }
        ClientCommand::Images(args) => {
            let list = Client::new(&args.socket).json("GET", "/images", None)?;
            println!("{:<16} {:>10}  PATH", "NAME", "SIZE");
            for image in list.as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:>10}  {}",
                    image["id"].as_str().unwrap_or_default(),
                    image["size_bytes"].as_u64().unwrap_or_default(),
                    image["path"].as_str().unwrap_or_default()
                );
            }
        }
        ClientCommand::Register(args) => {
            let path = std::path::absolute(&args.path).unwrap_or(args.path.clone());
            let mut body = json!({ "path": path.display().to_string() });
            if let Some(name) = args.name {
                body["name"] = Value::from(name);
            }
            let image = Client::new(&args.socket).json("POST", "/images", Some(body))?;
            println!("{}", image["id"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// POST /instances/ID/VERB; prints the id and its new state.
fn action(args: &IdArgs, verb: &str) -> Result<(), Failure> {
    let info = Client::new(&args.socket).json(
        "POST",
        &format!("/instances/{}/{verb}", path_id(&args.id)),
        None,
    )?;
    println!(
        "{} {}",
        info["id"].as_str().unwrap_or_default(),
        info["state"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// An id as a path segment: anything but digits cannot name an instance,
/// and must not change the path.
fn path_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn print_table(list: &Value) {
    println!(
        "{:<6} {:<14} {:<8} {:>10} {:>6} {:>8}  VERDICT",
        "ID", "IMAGE", "STATE", "UPTIME", "STATUS", "MEM"
    );
    for i in list.as_array().into_iter().flatten() {
        let status = i["exit_status"]
            .as_i64()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<6} {:<14} {:<8} {:>9.1}s {:>6} {:>7}M  {}",
            i["id"].as_str().unwrap_or_default(),
            i["image"].as_str().unwrap_or_default(),
            i["state"].as_str().unwrap_or_default(),
            i["metrics"]["uptime_secs"].as_f64().unwrap_or_default(),
            status,
            i["config"]["mem_bytes"].as_u64().unwrap_or_default() >> 20,
            i["verdict"].as_str().unwrap_or_default()
        );
    }
}

fn print_instance_stats(i: &Value) {
    let m = &i["metrics"];
    println!(
        "instance {}  image {}  state {}",
        s(&i["id"]),
        s(&i["image"]),
        s(&i["state"])
    );
    println!(
        "  uptime        {:.3} s",
        m["uptime_secs"].as_f64().unwrap_or_default()
    );
    println!(
        "  vcpu time     {:.6} s",
        m["vcpu_time_secs"].as_f64().unwrap_or_default()
    );
    println!(
        "  memory        {} KiB touched",
        m["memory_touched_bytes"].as_u64().unwrap_or_default() >> 10
    );
    println!("  vm exits      {}", counts(&m["vm_exits"]));
    println!("  hypercalls    {}", counts(&m["hypercalls"]));
    println!("  console       {}", counts(&m["console"]));
    println!("  net           {}", counts(&m["net"]));
}

fn print_host_stats(h: &Value) {
    println!(
        "daemon {}  up {:.1} s",
        s(&h["version"]),
        h["uptime_secs"].as_f64().unwrap_or_default()
    );
    println!(
        "  instances     {}  (cap {})",
        counts(&h["instances"]),
        h["instance_cap"]
    );
    println!(
        "  guest memory  {} MiB reserved of {} MiB budget",
        h["memory_reserved_bytes"].as_u64().unwrap_or_default() >> 20,
        h["memory_budget_bytes"].as_u64().unwrap_or_default() >> 20
    );
    println!(
        "  host          {} MiB available; daemon RSS {} MiB, {} threads, {} fds",
        h["host_mem_available_bytes"].as_u64().unwrap_or_default() >> 20,
        h["daemon_rss_bytes"].as_u64().unwrap_or_default() >> 20,
        h["daemon_threads"],
        h["daemon_fds"]
    );
    let t = &h["totals"];
    println!("  vm exits      {}", counts(&t["vm_exits"]));
    println!("  hypercalls    {}", counts(&t["hypercalls"]));
    println!(
        "  vcpu time     {:.6} s",
        t["vcpu_time_secs"].as_f64().unwrap_or_default()
    );
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// `{"a": 1, "b": 2}` as `a=1 b=2`.
fn counts(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
