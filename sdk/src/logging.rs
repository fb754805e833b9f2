//! Logging into the host's log, which tags every line with the plugin
//! instance; plugins have no stdout/stderr worth reading.

use crate::Level;
use crate::bindings::omh::plugin::logging;

/// Logs `message` with structured `fields` (key, value) at `level`.
/// The macros [`info!`](crate::info) and friends cover the common case.
pub fn log(level: Level, message: &str, fields: &[(String, String)]) {
    logging::log(level, message, fields);
}

/// Logs a `format!`-style message at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)+), &[]) };
}

/// Logs a `format!`-style message at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::Level::Info, &::std::format!($($arg)+), &[]) };
}

/// Logs a `format!`-style message at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)+), &[]) };
}

/// Logs a `format!`-style message at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::Level::Error, &::std::format!($($arg)+), &[]) };
}
