//! Conveniences on the WIT `error` variant.

use crate::Error;

impl Error {
    /// The human-readable message, without the case name the generated
    /// `Display` prints (`Error::Timeout("...")`).
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidConfig(message)
            | Error::Unreachable(message)
            | Error::Timeout(message)
            | Error::Protocol(message)
            | Error::Unsupported(message)
            | Error::Other(message) => message,
        }
    }
}
