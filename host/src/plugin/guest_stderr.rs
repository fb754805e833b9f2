//! A plugin's stderr, where a Rust guest's panic message goes, as lines in
//! the host's log under the instance's name and within its log budget
//! (rather than raw bytes on the host's own stderr, unattributed and
//! unbounded).

use super::log_budget::{self, LogBudget};
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

pub struct GuestStderr {
    instance: Arc<str>,
    budget: Arc<Mutex<LogBudget>>,
}

impl GuestStderr {
    pub fn new(instance: Arc<str>, budget: Arc<Mutex<LogBudget>>) -> Self {
        Self { instance, budget }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl GuestStderr {
    fn writer(&self) -> LineWriter {
        LineWriter {
            instance: self.instance.clone(),
            budget: self.budget.clone(),
            line: Vec::new(),
        }
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    /// Writes straight through, rather than through the default adapter's
    /// 8 KiB buffer and background task: a guest writing much would
    /// otherwise wait on that task for every few KiB.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

/// Splits what the guest writes into lines and logs each; never blocks the
/// guest (lines over budget are dropped, and counted).
struct LineWriter {
    instance: Arc<str>,
    budget: Arc<Mutex<LogBudget>>,
    /// The line being written, up to `MAX_LINE` bytes of it.
    line: Vec<u8>,
}

impl LineWriter {
    fn take(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|&byte| byte == b'\n') {
            let (text, ends_line) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = log_budget::MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&text[..text.len().min(room)]);
            if ends_line {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        let plugin = &*self.instance;
        if self.budget.lock().expect("log budget lock").pass(plugin) {
            tracing::warn!(plugin, "stderr: {line}");
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().take(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.line.is_empty() {
            this.emit();
        }
        Poll::Ready(Ok(()))
    }
}
