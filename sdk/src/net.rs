//! TCP for drivers, on WASI 0.2 sockets, with a deadline on every operation.
//!
//! Rust's `std::net` on wasm32-wasip2 goes through wasi-libc, whose timeout
//! support is partial; a silent device must yield [`Error::Timeout`], never
//! a hung instance. So this module drives the WASI pollables directly: each
//! wait polls the socket or stream together with a monotonic-clock deadline.
//!
//! The host only lets a driver connect to its manifest endpoint, given as an
//! IP literal (`ip:port`); there is no name resolution.

use std::net::SocketAddr;
use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wasip2::sockets::tcp::TcpSocket;
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

use crate::Error;

/// A connected TCP stream. Dropping it closes the connection.
pub struct TcpConnection {
    // Field order is drop order: WASI traps when a socket is dropped while
    // its child streams are alive.
    input: InputStream,
    output: OutputStream,
    _socket: TcpSocket,
    peer: SocketAddr,
}

impl TcpConnection {
    /// Connects to `address` (`ip:port`), giving up after `timeout`.
    pub fn connect(address: &str, timeout: Duration) -> Result<Self, Error> {
        let peer: SocketAddr = address.parse().map_err(|_| {
            Error::InvalidConfig(format!("`{address}` is not an `ip:port` socket address"))
        })?;
        let deadline = Deadline::after(timeout);
        let connect_failed =
            |code: ErrorCode| Error::Unreachable(format!("connect to {peer}: {code}"));

        let (family, remote) = wasi_address(peer);
        let socket = create_tcp_socket(family).map_err(connect_failed)?;
        socket
            .start_connect(&instance_network(), remote)
            .map_err(connect_failed)?;
        let ready = socket.subscribe();
        let (input, output) = loop {
            match socket.finish_connect() {
                Ok(streams) => break streams,
                Err(ErrorCode::WouldBlock) => {
                    deadline.wait(&ready, || format!("connect to {peer}"))?
                }
                Err(code) => return Err(connect_failed(code)),
            }
        };
        Ok(Self {
            input,
            output,
            _socket: socket,
            peer,
        })
    }

    /// Writes all of `bytes` and flushes, or fails after `timeout`.
    pub fn write_all(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Error> {
        let deadline = Deadline::after(timeout);
        let ready = self.output.subscribe();
        let mut remaining = bytes;
        while !remaining.is_empty() {
            let permitted = self
                .output
                .check_write()
                .map_err(|e| self.stream_error(e))?;
            if permitted == 0 {
                deadline.wait(&ready, || format!("write to {}", self.peer))?;
                continue;
            }
            let (chunk, rest) = remaining.split_at(remaining.len().min(permitted as usize));
            self.output.write(chunk).map_err(|e| self.stream_error(e))?;
            remaining = rest;
        }
        self.output.flush().map_err(|e| self.stream_error(e))?;
        // The flush is complete once the stream accepts writes again.
        while self
            .output
            .check_write()
            .map_err(|e| self.stream_error(e))?
            == 0
        {
            deadline.wait(&ready, || format!("flush to {}", self.peer))?;
        }
        Ok(())
    }

    /// Fills `buffer` completely, or fails after `timeout`.
    pub fn read_exact(&mut self, buffer: &mut [u8], timeout: Duration) -> Result<(), Error> {
        let deadline = Deadline::after(timeout);
        let ready = self.input.subscribe();
        let mut filled = 0;
        while filled < buffer.len() {
            let wanted = (buffer.len() - filled) as u64;
            let bytes = self.input.read(wanted).map_err(|e| self.stream_error(e))?;
            if bytes.is_empty() {
                deadline.wait(&ready, || format!("read from {}", self.peer))?;
                continue;
            }
            buffer[filled..filled + bytes.len()].copy_from_slice(&bytes);
            filled += bytes.len();
        }
        Ok(())
    }

    fn stream_error(&self, error: StreamError) -> Error {
        match error {
            StreamError::Closed => {
                Error::Unreachable(format!("{} closed the connection", self.peer))
            }
            StreamError::LastOperationFailed(cause) => Error::Unreachable(format!(
                "connection to {} failed: {}",
                self.peer,
                cause.to_debug_string()
            )),
        }
    }
}

/// A point on the monotonic clock after which an operation has failed.
struct Deadline(monotonic_clock::Instant);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Self(monotonic_clock::now().saturating_add(nanos))
    }

    /// Blocks until `ready` fires, or returns [`Error::Timeout`] describing
    /// `operation` once the deadline passes first.
    fn wait(&self, ready: &Pollable, operation: impl FnOnce() -> String) -> Result<(), Error> {
        let timer = monotonic_clock::subscribe_instant(self.0);
        // `poll` lists the indexes of the ready pollables; 0 is `ready`.
        if poll(&[ready, &timer]).contains(&0) {
            Ok(())
        } else {
            Err(Error::Timeout(format!("{} timed out", operation())))
        }
    }
}

fn wasi_address(address: SocketAddr) -> (IpAddressFamily, IpSocketAddress) {
    match address {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            let remote = Ipv4SocketAddress {
                port: v4.port(),
                address: (a, b, c, d),
            };
            (IpAddressFamily::Ipv4, IpSocketAddress::Ipv4(remote))
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            let remote = Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: v6.scope_id(),
            };
            (IpAddressFamily::Ipv6, IpSocketAddress::Ipv6(remote))
        }
    }
}
