//! One sink, as two tasks joined by its disk buffer:
//!
//! - the consumer moves messages from the bus into the buffer as they
//!   arrive, so the bus never waits for the database (rumqttd would skip a
//!   slow subscriber ahead and lose messages);
//! - the writer takes batches from the buffer, has the plugin write them,
//!   and commits each batch together with the buffer position it reached.
//!
//! A database outage or a restart therefore delays rows and loses none, and
//! replaying after a crash skips what the database already holds: the
//! committed position comes from the database itself, not from our memory.

use crate::buffer::{self, BufferHandle, BufferReader, BufferWriter, Record};
use crate::bus::{Subscription, neuron};
use crate::plugin::bindings::types::Message;
use crate::plugin::runtime::Sink;
use crate::plugin::supervisor::Supervised;
use crate::storage::{Progress, Storage};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The smallest `buffer_max_bytes` a manifest may set.
pub const MIN_BUFFER_BYTES: u64 = 1 << 20;
const MAX_SEGMENT_BYTES: u64 = 16 << 20;
/// Most bus messages appended (and fsynced) together.
const CONSUME_BATCH: usize = 4096;
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// At shutdown, the bus counts as drained once it is quiet this long.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// A sink's counters, read by the metrics endpoint.
pub struct SinkMetrics {
    pub messages: AtomicU64,
    pub rows: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub buffer: BufferHandle,
}

pub struct SinkTask {
    pub name: Arc<str>,
    pub metrics: Arc<SinkMetrics>,
    /// The sink's key in the database's progress table: site and sink.
    pub progress_key: String,
    pub plugin: Supervised<Sink>,
    pub storage: Storage,
    pub subscription: Subscription,
    pub buffer: (BufferWriter, BufferReader),
    pub batch_size: usize,
    pub flush_interval: Duration,
}

/// Opens the sink's buffer under the site's data directory.
pub fn open_buffer(
    data_dir: &Path,
    sink: &str,
    max_bytes: u64,
) -> anyhow::Result<(BufferWriter, BufferReader)> {
    open_buffer_in(&data_dir.join("buffer").join(sink), max_bytes)
}

/// Opens a bus consumer's buffer in `dir`, capped at `max_bytes`.
pub fn open_buffer_in(dir: &Path, max_bytes: u64) -> anyhow::Result<(BufferWriter, BufferReader)> {
    let limits = buffer::Limits {
        max_bytes,
        segment_bytes: (max_bytes / 8).min(MAX_SEGMENT_BYTES),
    };
    buffer::open(dir, limits)
}

/// What a sink buffers of a bus message: the payload alone (the group
/// message names its device and group).
fn payload_only(_topic: Bytes, payload: Bytes) -> Bytes {
    payload
}

impl SinkTask {
    /// Runs until `stopping` turns true; then the consumer drains the bus
    /// into the buffer and the writer writes what the buffer holds. What
    /// the writer cannot write before the site gives up stays on disk for
    /// the next start.
    pub async fn run(self, stopping: watch::Receiver<bool>) {
        let (buffer_writer, reader) = self.buffer;
        let consumer = tokio::spawn(consume(
            self.name.clone(),
            self.subscription,
            buffer_writer,
            stopping.clone(),
            payload_only,
        ));
        let (batches, next_batch) = mpsc::channel(1);
        let writer = Writer {
            name: self.name.clone(),
            metrics: self.metrics,
            progress_key: self.progress_key,
            plugin: self.plugin,
            storage: self.storage,
            buffer: reader.handle(),
            committed: None,
        };
        tokio::spawn(read_ahead(
            self.name,
            reader,
            self.batch_size,
            self.flush_interval,
            consumer,
            stopping,
            batches,
        ));
        writer.run(next_batch).await;
    }
}

/// Bus to buffer, never waiting on the database (or, for the uplink, the
/// upstream broker). `to_record` makes a buffer record of (topic, payload).
/// Returns once `stopping` is true and the bus has been quiet a moment.
pub async fn consume(
    name: Arc<str>,
    mut subscription: Subscription,
    mut buffer: BufferWriter,
    mut stopping: watch::Receiver<bool>,
    to_record: fn(Bytes, Bytes) -> Bytes,
) {
    loop {
        let draining = *stopping.borrow();
        let messages = tokio::select! {
            messages = subscription.next_batch(CONSUME_BATCH) => messages,
            _ = stopping.changed(), if !draining => continue,
            _ = tokio::time::sleep(DRAIN_QUIET), if draining => break,
        };
        let Some(messages) = messages else {
            tracing::error!(consumer = %name, "bus closed; stops consuming");
            return;
        };
        let payloads: Vec<Bytes> = messages
            .into_iter()
            .map(|(topic, payload)| to_record(topic, payload))
            .collect();
        let mut retry = FIRST_RETRY;
        while let Err(error) = buffer.append(payloads.clone()).await {
            // Disk full or failing: the bus keeps the messages for a while.
            tracing::error!(consumer = %name, %error, "cannot append to the buffer; retrying");
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }
    tracing::debug!(consumer = %name, "bus drained into the buffer");
}

/// Buffer to batches, one batch ahead of the writer: the next batch is read
/// and decoded while the current one is in the database.
async fn read_ahead(
    name: Arc<str>,
    mut reader: BufferReader,
    batch_size: usize,
    flush_interval: Duration,
    consumer: JoinHandle<()>,
    mut stopping: watch::Receiver<bool>,
    batches: mpsc::Sender<Batch>,
) {
    let mut undecodable = 0u64;
    loop {
        let draining = *stopping.borrow();
        if draining && consumer.is_finished() && reader.available() == 0 {
            break;
        }
        let linger = if draining {
            Duration::ZERO
        } else {
            flush_interval
        };
        let records = tokio::select! {
            records = reader.next_batch(batch_size, linger) => records,
            _ = stopping.changed(), if !draining => continue,
            // Look again whether the consumer has finished.
            _ = tokio::time::sleep(DRAIN_QUIET), if draining => continue,
        };
        match records {
            Ok(records) if records.is_empty() => break,
            Ok(records) => {
                let batch = Batch::decode(&name, records, &mut undecodable);
                if batches.send(batch).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                tracing::error!(sink = %name, %error, "cannot read the sink's buffer");
                tokio::time::sleep(MAX_RETRY).await;
            }
        }
    }
}

/// Batches to database.
struct Writer {
    name: Arc<str>,
    metrics: Arc<SinkMetrics>,
    progress_key: String,
    plugin: Supervised<Sink>,
    storage: Storage,
    buffer: BufferHandle,
    /// The database's committed position, once asked (and asked again
    /// whenever a commit's outcome is unknown).
    committed: Option<u64>,
}

impl Writer {
    async fn run(mut self, mut batches: mpsc::Receiver<Batch>) {
        while let Some(batch) = batches.recv().await {
            self.deliver(batch).await;
        }
        let pending = self.buffer.stats().pending;
        tracing::info!(sink = %self.name, pending, "sink stopped");
    }

    /// Writes one batch, retrying until it is committed.
    async fn deliver(&mut self, batch: Batch) {
        let last = batch.last;
        let mut retry = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            match self.write(&batch, last).await {
                Ok(rows) => {
                    self.metrics.rows.fetch_add(rows, Ordering::Relaxed);
                    self.metrics
                        .messages
                        .fetch_add(batch.seqs.len() as u64, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(sink = %self.name, rows, attempts = failures + 1, "batch written after retrying");
                    }
                    tracing::debug!(sink = %self.name, messages = batch.seqs.len(), rows, last, "batch committed");
                    break;
                }
                Err(error) => {
                    failures += 1;
                    self.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if failures == 1 || failures.is_power_of_two() {
                        let buffer = self.buffer.stats();
                        tracing::warn!(
                            sink = %self.name, %error, attempts = failures,
                            pending = buffer.pending, buffered_bytes = buffer.bytes_on_disk,
                            dropped_when_full = buffer.dropped,
                            "cannot write batch; it stays buffered, retrying"
                        );
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
        if let Err(error) = self.buffer.ack(last) {
            // Only costs a replay, which the committed position dedups.
            tracing::warn!(sink = %self.name, %error, "cannot record delivery in the buffer");
        }
    }

    /// One attempt: the plugin's writes and the new position in one
    /// transaction.
    async fn write(&mut self, batch: &Batch, last: u64) -> Result<u64, String> {
        let committed = match self.committed {
            Some(position) => position,
            None => {
                let position = self
                    .storage
                    .committed_position(&self.progress_key, self.buffer.id())
                    .await
                    .map_err(|e| e.to_string())?;
                self.committed = Some(position);
                position
            }
        };
        let fresh = batch.after(committed);
        self.storage
            .begin_batch()
            .await
            .map_err(|e| e.to_string())?;
        let rows = if fresh.is_empty() {
            0
        } else {
            let written = self
                .plugin
                .call(move |sink, store| {
                    Box::pin(
                        async move { sink.omh_plugin_sink_api().call_write(store, &fresh).await },
                    )
                })
                .await;
            match written {
                Ok(rows) => rows,
                Err(error) => {
                    self.storage.rollback_batch().await;
                    return Err(error.to_string());
                }
            }
        };
        let progress = Progress {
            sink: &self.progress_key,
            buffer_id: self.buffer.id(),
            position: last,
        };
        if let Err(error) = self.storage.commit_batch(progress).await {
            // The COMMIT may have happened with its reply lost: ask the
            // database before writing anything again.
            self.committed = None;
            return Err(error.to_string());
        }
        self.committed = Some(last);
        Ok(rows)
    }
}

/// Decoded messages with their buffer sequence numbers.
struct Batch {
    seqs: Vec<u64>,
    messages: Arc<Vec<Message>>,
    /// The last record of the batch, decodable or not: what to ack.
    last: u64,
}

impl Batch {
    fn decode(sink: &str, records: Vec<Record>, undecodable: &mut u64) -> Self {
        let last = records.last().expect("a batch is never empty").seq;
        let mut seqs = Vec::with_capacity(records.len());
        let mut messages = Vec::with_capacity(records.len());
        for record in records {
            match neuron::decode(&record.payload) {
                Ok(message) => {
                    seqs.push(record.seq);
                    messages.push(message);
                }
                Err(error) => {
                    *undecodable += 1;
                    if undecodable.is_power_of_two() {
                        tracing::warn!(sink, %error, count = *undecodable, "skipping message that is not a group message");
                    }
                }
            }
        }
        Self {
            seqs,
            messages: Arc::new(messages),
            last,
        }
    }

    /// The messages after `committed`: all of them, except when replaying
    /// what was written before a crash or a lost COMMIT reply.
    fn after(&self, committed: u64) -> Arc<Vec<Message>> {
        match self.seqs.partition_point(|seq| *seq <= committed) {
            0 => self.messages.clone(),
            skip => Arc::new(self.messages[skip..].to_vec()),
        }
    }
}
