//! The forwarding loop: one upstream connection at a time, fed from the
//! disk buffer through the window, reconnecting with backoff.
//!
//! Each connection is a fresh rumqttc client with a clean session, and it
//! starts by resending every record of the window (sent, not yet
//! acknowledged), oldest first, then carries on from the buffer. Why not a
//! persistent session: rumqttc would then replay its own unacknowledged
//! publishes on reconnect while the buffer holds the same records, two
//! sources of retransmission to keep in step; and a broker may drop a
//! session (restart without persistence, expiry). With the window as the
//! only source, what the broker receives after a reconnect is always a
//! suffix of what it was sent, in buffer order. The price is duplicates:
//! a record whose PUBACK was lost with the connection (or with a crash of
//! the host, which replays from the buffer's last ack) arrives twice.

use super::UplinkMetrics;
use super::config::Upstream;
use super::frame;
use super::window::{Inflight, Tag, Window};
use crate::buffer::{BufferHandle, BufferReader};
use crate::status::{HostState, host_status};
use rumqttc::{AsyncClient, ConnectionError, Event, Outgoing, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Publishes outstanding at once: enough to fill a link at site rates
/// without waiting for each PUBACK, small enough to resend quickly.
const WINDOW: usize = 64;
/// rumqttc's own limit of unacknowledged publishes, which is also its
/// packet id space. Twice the window: a packet id comes round again only
/// long after its record left the window, so rumqttc never meets a
/// "collision" (which would hold a publish back and reorder its events).
pub const INFLIGHT: u16 = 2 * WINDOW as u16;
/// The client's request queue never fills: the window bounds what is in it.
const REQUESTS: usize = WINDOW + 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At a clean stop, how long delivering what the buffer holds may take
/// before the host says goodbye (the rest goes at the next start).
const DRAIN: Duration = Duration::from_secs(5);
/// How long the offline status may take to be acknowledged.
const GOODBYE: Duration = Duration::from_secs(2);
const READ_RETRY: Duration = Duration::from_secs(1);
const RECHECK: Duration = Duration::from_millis(100);

/// How a connection ended.
enum End {
    Stopped,
    Lost(String),
}

pub struct Forwarder {
    upstream: Upstream,
    reader: BufferReader,
    buffer: BufferHandle,
    metrics: Arc<UplinkMetrics>,
    stopping: watch::Receiver<bool>,
    window: Window,
    /// The task moving bus messages into the buffer; it ends once the
    /// site is stopping and the bus is drained.
    consumer: JoinHandle<()>,
    /// For counting reconnects: connections after the first.
    ever_connected: bool,
    /// Set when the site starts stopping.
    drain_deadline: Option<Instant>,
}

/// One connection's client and the events of its event loop.
struct Connection {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    poller: tokio::task::JoinHandle<()>,
    inflight: Inflight,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Forwarder {
    pub fn new(
        upstream: Upstream,
        reader: BufferReader,
        metrics: Arc<UplinkMetrics>,
        consumer: JoinHandle<()>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            upstream,
            buffer: reader.handle(),
            reader,
            metrics,
            stopping,
            window: Window::new(WINDOW),
            consumer,
            ever_connected: false,
            drain_deadline: None,
        }
    }

    /// Connects, forwards, and reconnects with exponential backoff until
    /// the site stops. Logs state changes, not every retry.
    pub async fn run(mut self) {
        let url = self.upstream.url.clone();
        let mut backoff = FIRST_BACKOFF;
        let mut failure_logged = false;
        loop {
            let mut connected = false;
            let end = self.connection(&mut connected).await;
            if connected {
                failure_logged = false;
                backoff = FIRST_BACKOFF;
            }
            self.metrics.connected.store(false, Ordering::Relaxed);
            let reason = match end {
                End::Stopped => break,
                End::Lost(reason) => reason,
            };
            let pending = self.buffer.stats().pending;
            if connected {
                // The attempts that follow are part of this outage: quiet.
                failure_logged = true;
                tracing::warn!(
                    %url, %reason, pending,
                    "uplink connection lost; buffering on disk, reconnecting in {}s",
                    backoff.as_secs()
                );
            } else if !failure_logged {
                failure_logged = true;
                tracing::warn!(
                    %url, %reason, pending,
                    "uplink cannot connect; buffering on disk, retrying with backoff up to {}s",
                    MAX_BACKOFF.as_secs()
                );
            } else {
                tracing::debug!(%url, %reason, "uplink connect attempt failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stopping.wait_for(|stop| *stop) => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let pending = self.buffer.stats().pending;
        tracing::info!(%url, pending, "uplink stopped; what is pending is sent at the next start");
    }

    /// One connection, from connecting to its loss or the site's stop.
    async fn connection(&mut self, connected: &mut bool) -> End {
        let (client, mut eventloop) = AsyncClient::new(self.upstream.options.clone(), REQUESTS);
        let (events_tx, events) = mpsc::channel(REQUESTS);
        // rumqttc's poll is not cancel-safe (it may be mid-write), so it
        // runs on its own and the loop below selects on its events.
        let poller = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut connection = Connection {
            client,
            events,
            poller,
            inflight: Inflight::default(),
        };
        loop {
            tokio::select! {
                event = connection.events.recv() => match event {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return End::Lost(error.to_string()),
                    None => return End::Lost("event loop ended".into()),
                },
                _ = self.stopping.wait_for(|stop| *stop) => return End::Stopped,
            }
        }
        if self.ever_connected {
            self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.ever_connected = true;
        *connected = true;
        self.metrics.connected.store(true, Ordering::Relaxed);
        tracing::info!(
            url = %self.upstream.url, pending = self.buffer.stats().pending,
            "uplink connected"
        );
        if let Err(reason) = self.greet(&mut connection) {
            return End::Lost(reason);
        }
        self.forward(&mut connection).await
    }

    /// The online status, then every record not yet acknowledged.
    fn greet(&mut self, connection: &mut Connection) -> Result<(), String> {
        let online = host_status(&self.upstream.site, HostState::Online);
        self.publish_status(connection, online)?;
        let resend: Vec<(u64, bytes::Bytes)> = self
            .window
            .resend()
            .map(|(seq, record)| (seq, record.clone()))
            .collect();
        for (seq, record) in resend {
            self.publish_record(connection, seq, &record)?;
        }
        Ok(())
    }

    /// Buffer to broker until the connection is lost or the site stops.
    async fn forward(&mut self, connection: &mut Connection) -> End {
        loop {
            let stopping = *self.stopping.borrow();
            if stopping {
                let deadline = *self
                    .drain_deadline
                    .get_or_insert_with(|| Instant::now() + DRAIN);
                let drained = self.consumer.is_finished()
                    && self.reader.available() == 0
                    && self.window.is_empty();
                if drained || Instant::now() >= deadline {
                    self.goodbye(connection).await;
                    return End::Stopped;
                }
            }
            let room = self.window.room();
            tokio::select! {
                event = connection.events.recv() => match event {
                    Some(Ok(event)) => self.on_events(connection, event),
                    Some(Err(error)) => return End::Lost(error.to_string()),
                    None => return End::Lost("event loop ended".into()),
                },
                records = self.reader.next_batch(room, Duration::ZERO), if room > 0 => {
                    match records {
                        Ok(records) => {
                            for record in records {
                                self.window.push(record.seq, record.payload.clone());
                                if let Err(reason) = self.publish_record(connection, record.seq, &record.payload) {
                                    return End::Lost(reason);
                                }
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot read the uplink's buffer; retrying");
                            tokio::time::sleep(READ_RETRY).await;
                        }
                    }
                }
                _ = self.stopping.changed(), if !stopping => {}
                // While stopping, wake up to look at the deadline.
                _ = tokio::time::sleep(RECHECK), if stopping => {}
            }
        }
    }

    /// Handles `first` and every event already waiting, then records
    /// delivery in the buffer once for all of them.
    fn on_events(&mut self, connection: &mut Connection, first: Event) {
        let mut delivered_up_to = None;
        let mut next = Some(first);
        while let Some(event) = next {
            let tag = match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => connection.inflight.written(pkid),
                Event::Incoming(Packet::PubAck(ack)) => connection.inflight.acked(ack.pkid),
                _ => None,
            };
            if let Some(Tag::Record(seq)) = tag
                && let Some((last, count)) = self.window.delivered(seq)
            {
                self.metrics.messages.fetch_add(count, Ordering::Relaxed);
                delivered_up_to = Some(last);
            }
            // An error stays in the channel for the forwarding loop.
            next = match connection.events.try_recv() {
                Ok(Ok(event)) => Some(event),
                _ => None,
            };
        }
        if let Some(last) = delivered_up_to
            && let Err(error) = self.buffer.ack(last)
        {
            // Only costs resending records after a restart.
            tracing::warn!(%error, "cannot record delivery in the uplink's buffer");
        }
    }

    fn publish_record(
        &mut self,
        connection: &mut Connection,
        seq: u64,
        record: &bytes::Bytes,
    ) -> Result<(), String> {
        match frame::decode(record) {
            Ok((topic, payload)) => {
                connection.inflight.requested(Tag::Record(seq));
                connection
                    .client
                    .try_publish(
                        format!("{}{topic}", self.upstream.prefix),
                        self.upstream.qos,
                        false,
                        payload,
                    )
                    .map_err(|e| e.to_string())
            }
            Err(reason) => {
                // Damaged on disk after its CRC was checked: cannot happen
                // short of a bug; skip it rather than stall the uplink.
                tracing::error!(seq, reason, "uplink buffer record unreadable; skipped");
                self.window.delivered(seq);
                Ok(())
            }
        }
    }

    fn publish_status(&self, connection: &mut Connection, payload: Vec<u8>) -> Result<(), String> {
        connection.inflight.requested(Tag::Status);
        connection
            .client
            .try_publish(
                self.upstream.status_topic(),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .map_err(|e| e.to_string())
    }

    /// At a clean stop: the retained offline status (acknowledged, or
    /// given up on after a moment), then DISCONNECT, so the broker does not
    /// publish the last will.
    async fn goodbye(&mut self, connection: &mut Connection) {
        let offline = host_status(&self.upstream.site, HostState::Stopped);
        if self.publish_status(connection, offline).is_ok() {
            let deadline = Instant::now() + GOODBYE;
            while !connection.inflight.settled() {
                match tokio::time::timeout_at(deadline, connection.events.recv()).await {
                    Ok(Some(Ok(event))) => self.on_events(connection, event),
                    _ => break,
                }
            }
        }
        if connection.client.try_disconnect().is_ok() {
            // The poller ends with the connection; give DISCONNECT its flush.
            let _ = tokio::time::timeout(GOODBYE, async {
                while let Some(Ok(_)) = connection.events.recv().await {}
            })
            .await;
        }
    }
}
