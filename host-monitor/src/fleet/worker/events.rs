//! The worker's events: `@event <one-line JSON>` lines on stdout
//! (INTERFACES-4.md), written whole under stdout's lock like console lines,
//! so the parent never sees two interleaved.

use serde::Serialize;
use std::io::Write;

/// One event; serialized as `{"ev":"<kind>", ...fields}`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "ev", rename_all = "kebab-case")]
pub enum Event<'a> {
    /// The instance made its first hypercall, this long after its start
    /// was asked for.
    Started { id: u64, first_hypercall_us: u64 },
    /// The instance blocked in POLL for the first time: it is ready.
    Idle { id: u64 },
    /// The instance ended with this exit status (`flint run`'s) and the
    /// monitor's one-line diagnosis, or "" when the guest chose its status.
    Stopped {
        id: u64,
        status: i32,
        verdict: &'a str,
    },
    /// The instance failed and `--restart on-failure` starts it again.
    Restarting { id: u64 },
    /// The instance could not be started.
    Failed { id: u64, error: &'a str },
    /// The worker has tried to start all its instances.
    WorkerReady { started: u64, failed: u64 },
    /// The instance hit one of its limits (`--console-limit`,
    /// `--net-rate`) for the first time: what was hit; the excess is
    /// dropped and the instance goes on.
    Limit { id: u64, what: &'a str },
}

impl Event<'_> {
    /// The line as written, without its newline.
    pub fn line(&self) -> String {
        // Serializing these plain fields cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("@event {json}")
    }

    /// Writes the event's line to stdout. A parent that stopped reading
    /// loses it; the worker goes on.
    pub fn emit(&self) {
        let mut line = self.line();
        line.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn events_have_the_agreed_json() {
        let cases = [
            (
                Event::Started {
                    id: 7,
                    first_hypercall_us: 812,
                },
                r#"@event {"ev":"started","id":7,"first_hypercall_us":812}"#,
            ),
            (Event::Idle { id: 7 }, r#"@event {"ev":"idle","id":7}"#),
            (
                Event::Stopped {
                    id: 7,
                    status: 139,
                    verdict: "guest fault: \"x\"",
                },
                r#"@event {"ev":"stopped","id":7,"status":139,"verdict":"guest fault: \"x\""}"#,
            ),
            (
                Event::Restarting { id: 7 },
                r#"@event {"ev":"restarting","id":7}"#,
            ),
            (
                Event::Failed {
                    id: 7,
                    error: "out of memory",
                },
                r#"@event {"ev":"failed","id":7,"error":"out of memory"}"#,
            ),
            (
                Event::WorkerReady {
                    started: 5,
                    failed: 1,
                },
                r#"@event {"ev":"worker-ready","started":5,"failed":1}"#,
            ),
            (
                Event::Limit {
                    id: 7,
                    what: "console limit",
                },
                r#"@event {"ev":"limit","id":7,"what":"console limit"}"#,
            ),
        ];
        for (event, want) in cases {
            assert_eq!(event.line(), want);
        }
    }
}
