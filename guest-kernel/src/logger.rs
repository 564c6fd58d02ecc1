//! A `log` backend that prints through the console, one line per record:
//! `[LEVEL target] message`. Installed at boot with level `Info`; an app
//! may change it with `log::set_max_level`.

use log::{LevelFilter, Log, Metadata, Record};

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            crate::println!("[{} {}] {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {
        crate::console::flush();
    }
}

/// Installs the console logger at level `Info`.
pub(crate) fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
