//! One sink: consumes its topic filters from the bus, batches messages and
//! hands each batch to its plugin, retrying a failed batch until it is
//! written (a database outage delays rows; it does not drop them).

use crate::bus::{Subscription, neuron};
use crate::plugin::bindings::types::Message;
use crate::plugin::runtime::Sink;
use crate::plugin::supervisor::Supervised;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// At shutdown, the bus counts as drained once it is quiet this long.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

pub struct SinkTask {
    pub name: Arc<str>,
    pub plugin: Supervised<Sink>,
    pub subscription: Subscription,
    pub batch_size: usize,
    pub flush_interval: Duration,
}

impl SinkTask {
    /// Consumes until `stopping` turns true, then drains what is still on
    /// its way through the bus, writes it, and returns: a clean stop loses
    /// no message that a driver had published.
    pub async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut undecodable = 0u64;
        loop {
            let draining = *stopping.borrow();
            let batch = tokio::select! {
                batch = self.next_batch(&mut undecodable, draining) => batch,
                _ = stopping.changed(), if !draining => continue,
            };
            match batch {
                Some(batch) if !batch.is_empty() => self.write(batch).await,
                Some(_) if draining => break,
                Some(_) => {}
                None => {
                    tracing::error!(sink = %self.name, "bus closed; sink stops");
                    return;
                }
            }
        }
        tracing::info!(sink = %self.name, "sink drained and stopped");
    }

    /// Waits for a first message, then gathers more until the batch is full
    /// or the first has waited `flush_interval`. While draining, a quiet bus
    /// ends the batch (possibly empty) instead.
    async fn next_batch(&mut self, undecodable: &mut u64, draining: bool) -> Option<Vec<Message>> {
        let mut batch = Vec::new();
        let mut deadline = draining.then(|| Instant::now() + DRAIN_QUIET);
        while batch.len() < self.batch_size {
            let payload = match deadline {
                None => self.subscription.next().await?,
                Some(at) => tokio::select! {
                    payload = self.subscription.next() => payload?,
                    _ = tokio::time::sleep_until(at) => break,
                },
            };
            if draining {
                deadline = Some(Instant::now() + DRAIN_QUIET);
            }
            match neuron::decode(&payload) {
                Ok(message) => {
                    batch.push(message);
                    deadline.get_or_insert_with(|| Instant::now() + self.flush_interval);
                }
                Err(error) => {
                    *undecodable += 1;
                    if undecodable.is_power_of_two() {
                        tracing::warn!(sink = %self.name, %error, count = *undecodable, "skipping message that is not a group message");
                    }
                }
            }
        }
        Some(batch)
    }

    async fn write(&mut self, batch: Vec<Message>) {
        let batch = Arc::new(batch);
        let mut retry = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            let input = batch.clone();
            let result = self
                .plugin
                .call(move |sink, store| {
                    Box::pin(
                        async move { sink.omh_plugin_sink_api().call_write(store, &input).await },
                    )
                })
                .await;
            match result {
                Ok(rows) => {
                    if failures > 0 {
                        tracing::info!(sink = %self.name, rows, attempts = failures + 1, "batch written after retrying");
                    }
                    tracing::debug!(sink = %self.name, messages = batch.len(), rows, "batch written");
                    return;
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(sink = %self.name, %error, attempts = failures, messages = batch.len(), "cannot write batch; retrying");
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }
}
