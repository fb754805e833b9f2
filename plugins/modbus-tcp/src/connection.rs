//! The driver's TCP connection to its device, with failover to a backup
//! endpoint.
//!
//! Connected lazily on the first request and dropped on any I/O or framing
//! error (the byte stream cannot be trusted after one). A failed request is
//! retried `retries` times on a fresh connection, starting with the other
//! endpoint when there is a backup. When no endpoint accepts a connection,
//! a capped exponential backoff decides when the next attempt may be made,
//! so a dead device costs one connect attempt per backoff period rather
//! than one per poll. Logging follows state changes only: connected, lost,
//! each new backoff delay, and a slave going silent or answering again (a
//! timeout means the link worked but that slave did not answer).

use std::time::{Duration, Instant};

use omh_sdk::Error;
use omh_sdk::net::TcpConnection;

use crate::frame::{self, HEADER_LEN, Pdu, Reply, Request};

/// First wait after a failed connect; doubled per further failure.
const INITIAL_BACKOFF_MS: i64 = 500;
/// Longest wait between reconnect attempts.
const MAX_BACKOFF_MS: i64 = 30_000;

pub struct Policy {
    pub timeout: Duration,
    pub retries: u8,
    pub request_interval: Duration,
}

/// Whether the device answers, as last logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Answering,
    Down,
}

pub struct Connection {
    /// The primary endpoint, then the backup if there is one.
    endpoints: Vec<String>,
    /// Index of the endpoint the next connect tries first.
    preferred: usize,
    policy: Policy,
    /// The open link and the index of the endpoint it goes to.
    link: Option<(usize, TcpConnection)>,
    state: State,
    /// Slaves whose last request timed out, logged once each.
    silent_slaves: Vec<u8>,
    backoff: Backoff,
    next_transaction_id: u16,
    last_exchange: Option<Instant>,
}

impl Connection {
    /// A connection to `endpoints` (`ip:port`, primary first); nothing is
    /// opened yet.
    pub fn new(endpoints: Vec<String>, policy: Policy) -> Self {
        Self {
            endpoints,
            preferred: 0,
            policy,
            link: None,
            state: State::Unknown,
            silent_slaves: Vec::new(),
            backoff: Backoff::default(),
            next_transaction_id: 0,
            last_exchange: None,
        }
    }

    /// Sends `pdu` to `unit_id` and returns the device's answer. A Modbus
    /// exception is an `Ok` reply; an `Err` means no valid answer arrived
    /// (the connection has been dropped) or the device is down and not yet
    /// due another connect attempt.
    pub fn exchange(&mut self, unit_id: u8, pdu: &Pdu) -> Result<Reply, Error> {
        let mut retries_left = self.policy.retries;
        loop {
            let (index, mut link) = match self.link.take() {
                Some(link) => link,
                None => self.connect().inspect_err(|error| self.went_down(error))?,
            };
            self.pace();
            let request = Request {
                transaction_id: self.next_transaction_id,
                unit_id,
                pdu,
            };
            self.next_transaction_id = self.next_transaction_id.wrapping_add(1);
            let result = send(&mut link, &request, self.policy.timeout);
            self.last_exchange = Some(Instant::now());
            match result {
                Ok(reply) => {
                    self.link = Some((index, link));
                    self.answering(index, unit_id);
                    return Ok(reply);
                }
                Err(error) => {
                    // The link is dropped; fail over for the next connect.
                    self.preferred = (index + 1) % self.endpoints.len();
                    if retries_left == 0 {
                        match error {
                            // The link worked; one slave behind it is silent.
                            Error::Timeout(_) => self.slave_silent(unit_id, &error),
                            _ => self.went_down(&error),
                        }
                        return Err(error);
                    }
                    retries_left -= 1;
                }
            }
        }
    }

    /// Waits out the rest of the request interval since the last exchange.
    fn pace(&self) {
        if let Some(last) = self.last_exchange {
            let due = last + self.policy.request_interval;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }

    /// Connects to the preferred endpoint, or else to the other one.
    fn connect(&mut self) -> Result<(usize, TcpConnection), Error> {
        if !self.backoff.may_retry(omh_sdk::now_ms()) {
            return Err(Error::Unreachable(format!(
                "{} not reachable; next connect attempt within {} s",
                self.endpoints.join(" or "),
                seconds(self.backoff.delay_ms())
            )));
        }
        let count = self.endpoints.len();
        let mut failures = Vec::new();
        for index in (0..count).map(|step| (self.preferred + step) % count) {
            match TcpConnection::connect(&self.endpoints[index], self.policy.timeout) {
                Ok(link) => {
                    self.backoff = Backoff::default();
                    self.preferred = index;
                    return Ok((index, link));
                }
                Err(error) => failures.push(error.message().to_string()),
            }
        }
        let previous_delay = self.backoff.delay_ms();
        self.backoff.record_failure(omh_sdk::now_ms());
        let failures = failures.join("; ");
        if self.backoff.delay_ms() != previous_delay {
            omh_sdk::info!(
                "cannot connect: {failures}; retrying in {} s",
                seconds(self.backoff.delay_ms())
            );
        }
        Err(Error::Unreachable(failures))
    }

    fn answering(&mut self, index: usize, unit_id: u8) {
        if self.state != State::Answering {
            let role = if index == 0 { "" } else { " (backup endpoint)" };
            omh_sdk::info!("connected to {}{role}", self.endpoints[index]);
            self.state = State::Answering;
        }
        if let Some(position) = self.silent_slaves.iter().position(|&s| s == unit_id) {
            self.silent_slaves.swap_remove(position);
            omh_sdk::info!("slave {unit_id} answers again");
        }
    }

    fn slave_silent(&mut self, unit_id: u8, error: &Error) {
        if !self.silent_slaves.contains(&unit_id) {
            omh_sdk::warn!("slave {unit_id} not answering: {}", error.message());
            self.silent_slaves.push(unit_id);
        }
    }

    fn went_down(&mut self, error: &Error) {
        if self.state != State::Down {
            omh_sdk::warn!(
                "connection to {} lost: {}",
                self.endpoints.join(" or "),
                error.message()
            );
            self.state = State::Down;
        }
    }
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn send(link: &mut TcpConnection, request: &Request, timeout: Duration) -> Result<Reply, Error> {
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
