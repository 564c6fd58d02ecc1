//! runc's `--log FILE --log-format json`: each error is appended as one
//! JSON line `{"level":"error","msg":"...","time":"..."}`; containerd's shim
//! shows the last such message to the user when a command fails.

use std::io::Write;
use std::path::PathBuf;

/// Where errors go besides stderr.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// `--log FILE`, if given.
    pub file: Option<PathBuf>,
    /// `--log-format json` (otherwise plain text lines).
    pub json: bool,
}

impl Log {
    /// Reports `message` as an error: on stderr (if it is still open) and
    /// appended to the log file.
    pub fn error(&self, message: &str) {
        // Never panics: stderr may be closed or a broken pipe by now.
        let _ = writeln!(std::io::stderr(), "flint-oci: {message}");
        let Some(file) = &self.file else { return };
        let line = if self.json {
            serde_json::json!({
                "level": "error",
                "msg": message,
                "time": super::state::now_rfc3339(),
            })
            .to_string()
        } else {
            format!("{} error: {message}", super::state::now_rfc3339())
        };
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!(
                "flint-oci: cannot append to the log {}: {e}",
                file.display()
            );
        }
    }
}
