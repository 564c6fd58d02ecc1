//! The parent's side of the worker protocol (INTERFACES-4.md): the
//! command line a worker gets, its stdout read as whole lines, and the
//! `@event` JSON it sends.

use crate::cli::{FleetArgs, RestartPolicy};
use crate::net::spec::NetMode;
use serde::Deserialize;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};

/// The arguments of `flint fleet-worker` for ids `first..first+count`.
pub fn worker_argv(a: &FleetArgs, first: u64, count: u64) -> Vec<OsString> {
    let r = &a.run;
    let mut v: Vec<OsString> = vec!["fleet-worker".into(), "--first-id".into()];
    v.push(first.to_string().into());
    v.extend(["-n".into(), count.to_string().into()]);
    let restart = match a.fleet.restart {
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    };
    v.extend(["--restart".into(), restart.into()]);
    if let Some(dir) = &a.fleet.console_dir {
        v.extend(["--console-dir".into(), dir.clone().into_os_string()]);
    }
    v.extend(["--mem".into(), r.mem.to_string().into()]);
    v.extend(["--stack".into(), r.stack.to_string().into()]);
    if let Some(t) = r.timeout {
        v.extend(["--timeout".into(), t.as_secs_f64().to_string().into()]);
    }
    if let Some(mode) = &r.net {
        let mode = match mode {
            NetMode::User => "user",
            _ => "none",
        };
        v.extend(["--net".into(), mode.into()]);
    }
    for p in &r.publish {
        v.extend([
            "--publish".into(),
            format!("{}:{}", p.host, p.guest_port).into(),
        ]);
    }
    if r.stats {
        v.push("--stats".into());
    }
    if r.no_seccomp {
        v.push("--no-seccomp".into());
    }
    if let Some(limit) = &r.console_limit {
        let mut text = limit.total.to_string();
        if let Some(rate) = limit.per_second {
            text.push_str(&format!("/{rate}"));
        }
        v.extend(["--console-limit".into(), text.into()]);
    }
    if let Some(pps) = r.net_rate {
        v.extend(["--net-rate".into(), pps.to_string().into()]);
    }
    if let Some(snapshot) = &r.restore {
        v.extend(["--restore".into(), snapshot.clone().into_os_string()]);
    }
    if let Some(image) = &r.image {
        v.push(image.clone().into_os_string());
    }
    if !r.args.is_empty() {
        v.push("--".into());
        v.extend(r.args.iter().map(OsString::from));
    }
    v
}

/// An event of a worker's stdout protocol (INTERFACES-4.md).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "kebab-case")]
pub enum Event {
    Started {
        id: u64,
        #[serde(default)]
        first_hypercall_us: u64,
    },
    Idle {
        id: u64,
    },
    Stopped {
        id: u64,
        status: i32,
        #[serde(default)]
        verdict: String,
    },
    Restarting {
        id: u64,
    },
    Failed {
        id: u64,
        #[serde(default)]
        error: String,
    },
    WorkerReady {},
    Limit {
        id: u64,
        #[serde(default)]
        what: String,
    },
}

/// Reads `pipe` line by line (each with its `\n`; a last partial line gets
/// one) and hands every line to `send` until EOF or `send` fails.
pub fn read_lines<E>(pipe: impl Read, mut send: impl FnMut(Vec<u8>) -> Result<(), E>) {
    let mut reader = BufReader::with_capacity(64 << 10, pipe);
    loop {
        let mut line = Vec::with_capacity(128);
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                if send(line).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Event {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn events_of_the_protocol_parse() {
        assert_eq!(
            parse(r#"{"ev":"started","id":7,"first_hypercall_us":812}"#),
            Event::Started {
                id: 7,
                first_hypercall_us: 812
            }
        );
        assert_eq!(parse(r#"{"ev":"idle","id":7}"#), Event::Idle { id: 7 });
        assert_eq!(
            parse(r#"{"ev":"stopped","id":7,"status":139,"verdict":"guest fault: x"}"#),
            Event::Stopped {
                id: 7,
                status: 139,
                verdict: "guest fault: x".into()
            }
        );
        assert_eq!(
            parse(r#"{"ev":"restarting","id":7}"#),
            Event::Restarting { id: 7 }
        );
        assert_eq!(
            parse(r#"{"ev":"failed","id":7,"error":"out of memory"}"#),
            Event::Failed {
                id: 7,
                error: "out of memory".into()
            }
        );
        assert_eq!(
            parse(r#"{"ev":"worker-ready","started":5,"failed":0}"#),
            Event::WorkerReady {}
        );
    }

    #[test]
    fn a_worker_gets_the_fleets_run_options_back() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "flint",
            "fleet",
            "-n",
            "10",
            "--per-worker",
            "4",
            "--restart",
            "on-failure",
            "--console-dir",
            "logs",
            "--mem",
            "8M",
            "--stack",
            "64K",
            "--timeout",
            "2.5",
            "--publish",
            "127.0.0.1:8080:80",
            "--stats",
            "app.elf",
            "--",
            "a",
            "b c",
        ])
        .unwrap();
        let Command::Fleet(fleet) = cli.command else {
            panic!("not a fleet")
        };
        let mut argv: Vec<OsString> = vec!["flint".into()];
        argv.extend(worker_argv(&fleet, 5, 4));
        let Command::FleetWorker(w) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not a worker")
        };
        assert_eq!((w.first_id, w.instances), (5, 4));
        assert_eq!(w.fleet.restart, RestartPolicy::OnFailure);
        assert_eq!(w.fleet.console_dir, Some("logs".into()));
        assert_eq!((w.run.mem, w.run.stack), (8 << 20, 64 << 10));
        assert_eq!(w.run.timeout, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(w.run.publish, fleet.run.publish);
        assert!(w.run.stats);
        assert_eq!(w.run.image, fleet.run.image);
        assert_eq!(w.run.args, vec!["a", "b c"]);
    }

    #[test]
    fn lines_come_whole_and_a_partial_last_one_is_ended() {
        let mut got = Vec::new();
        read_lines(&b"[1] a\n[2] b\n[3] c"[..], |l| {
            got.push(l);
            Ok::<(), ()>(())
        });
        assert_eq!(
            got,
            vec![
                b"[1] a\n".to_vec(),
                b"[2] b\n".to_vec(),
                b"[3] c\n".to_vec()
            ]
        );
    }
}
