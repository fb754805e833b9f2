//! The driver's one TCP connection to its device.
//!
//! Connected lazily on the first poll, dropped on any I/O or framing error
//! (the byte stream cannot be trusted after one), and re-established on a
//! later poll once a capped exponential backoff allows, so a dead device
//! costs one connect attempt per backoff period rather than one per poll.
//! State changes are logged once; failed polls while down are not.

use std::time::Duration;

use omh_sdk::Error;
use omh_sdk::net::TcpConnection;

use crate::address::RegisterTable;
use crate::frame::{self, HEADER_LEN, ReadRequest, Reply};

/// First wait after a failure; doubled per further failure.
const INITIAL_BACKOFF_MS: i64 = 500;
/// Longest wait between reconnect attempts.
const MAX_BACKOFF_MS: i64 = 30_000;

pub struct Connection {
    endpoint: String,
    timeout: Duration,
    link: Option<TcpConnection>,
    backoff: Backoff,
    next_transaction_id: u16,
}

impl Connection {
    /// A connection to `endpoint` (`ip:port`); nothing is opened yet.
    pub fn new(endpoint: &str, timeout: Duration) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            timeout,
            link: None,
            backoff: Backoff::default(),
            next_transaction_id: 0,
        }
    }

    /// Reads `count` registers from `table` of `unit_id`, starting at
    /// `start`. A Modbus exception is an `Ok` reply; an `Err` means the
    /// connection has been dropped (or is down and not yet due a retry).
    pub fn read_registers(
        &mut self,
        unit_id: u8,
        table: RegisterTable,
        start: u16,
        count: u16,
    ) -> Result<Reply, Error> {
        let request = ReadRequest {
            transaction_id: self.next_transaction_id,
            unit_id,
            table,
            start,
            count,
        };
        self.next_transaction_id = self.next_transaction_id.wrapping_add(1);

        // Taken out for the exchange and only put back if it succeeds.
        let mut link = match self.link.take() {
            Some(link) => link,
            None => self.connect()?,
        };
        let reply = exchange(&mut link, &request, self.timeout);
        match &reply {
            Ok(_) => self.link = Some(link),
            Err(error) => self.record_failure(error),
        }
        reply
    }

    fn connect(&mut self) -> Result<TcpConnection, Error> {
        if !self.backoff.may_retry(omh_sdk::now_ms()) {
            return Err(Error::Unreachable(format!(
                "{} is down; waiting up to {} ms before reconnecting",
                self.endpoint,
                self.backoff.delay_ms()
            )));
        }
        match TcpConnection::connect(&self.endpoint, self.timeout) {
            Ok(link) => {
                omh_sdk::info!("connected to {}", self.endpoint);
                self.backoff = Backoff::default();
                Ok(link)
            }
            Err(error) => {
                self.record_failure(&error);
                Err(error)
            }
        }
    }

    fn record_failure(&mut self, error: &Error) {
        // The first failure since the last success is the state change.
        if self.backoff.failures == 0 {
            omh_sdk::warn!(
                "connection to {} down: {}; retrying with backoff up to {} ms",
                self.endpoint,
                error.message(),
                MAX_BACKOFF_MS
            );
        }
        self.backoff.record_failure(omh_sdk::now_ms());
    }
}

fn exchange(
    link: &mut TcpConnection,
    request: &ReadRequest,
    timeout: Duration,
) -> Result<Reply, Error> {
    let protocol_error = |error: frame::FrameError| Error::Protocol(error.0);
    link.write_all(&request.encode(), timeout)?;
    let mut header = [0u8; HEADER_LEN];
    link.read_exact(&mut header, timeout)?;
    let mut adu = vec![0u8; HEADER_LEN + frame::remaining_len(&header).map_err(protocol_error)?];
    adu[..HEADER_LEN].copy_from_slice(&header);
    link.read_exact(&mut adu[HEADER_LEN..], timeout)?;
    frame::decode_response(request, &adu).map_err(protocol_error)
}

/// Capped exponential backoff between reconnect attempts, on the host's
/// wall clock (the only clock the SDK offers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Backoff {
    failures: u32,
    retry_at_ms: i64,
}

impl Backoff {
    fn delay_ms(&self) -> i64 {
        match self.failures {
            0 => 0,
            failures => INITIAL_BACKOFF_MS
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_BACKOFF_MS),
        }
    }

    fn record_failure(&mut self, now_ms: i64) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(self.delay_ms());
    }

    fn may_retry(&self, now_ms: i64) -> bool {
        // A wall clock stepped backwards must not postpone reconnecting for
        // longer than one maximal backoff.
        now_ms >= self.retry_at_ms || self.retry_at_ms - now_ms > MAX_BACKOFF_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::default();
        assert!(backoff.may_retry(0));
        let delays: Vec<i64> = (0..10)
            .map(|_| {
                backoff.record_failure(1_000);
                backoff.delay_ms()
            })
            .collect();
        assert_eq!(
            delays,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000
            ]
        );
    }

    #[test]
    fn backoff_gates_retries_until_due() {
        let mut backoff = Backoff::default();
        backoff.record_failure(10_000);
        assert!(!backoff.may_retry(10_499));
        assert!(backoff.may_retry(10_500));
    }

    #[test]
    fn backoff_survives_the_clock_stepping_back() {
        let mut backoff = Backoff::default();
        backoff.record_failure(1_000_000);
        assert!(backoff.may_retry(0));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut backoff = Backoff {
            failures: u32::MAX,
            retry_at_ms: 0,
        };
        backoff.record_failure(i64::MAX);
        assert_eq!(backoff.delay_ms(), MAX_BACKOFF_MS);
        assert_eq!(backoff.retry_at_ms, i64::MAX);
    }
}
