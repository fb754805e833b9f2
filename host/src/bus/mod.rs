//! The site's bus: an embedded rumqttd broker. Drivers' group messages are
//! published into it through one in-process link; each sink consumes its
//! topic filters through its own link; outside MQTT clients connect over TCP.

pub mod neuron;
pub mod retained;
pub mod uns;

use crate::gateway::{self, GatewayStats, Internal};
use crate::manifest::BrokerSection;
use bytes::Bytes;
use futures::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{
    Broker, Config, ConnectionSettings, MetricSettings, MetricType, Notification, RouterConfig,
    ServerSettings,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages waiting for the publisher thread. Enough for seconds of a busy
/// site; beyond it the router is not keeping up and we drop, counted.
const PUBLISH_QUEUE: usize = 16_384;

/// Headroom in rumqttd's connection limit for the host's own links
/// (publisher, sinks, live view, writes, probes). A connection rumqttd
/// refuses leaves a broken will entry that breaks the next CONNECT with the
/// same client id, so the gateway's limit must be the one that bites.
const INTERNAL_LINKS: usize = 256;

/// Builds the broker; links must be made before [`BusBuilder::start`]
/// because rumqttd's `start` takes the broker for good.
pub struct BusBuilder {
    broker: Broker,
    section: BrokerSection,
    internal: Internal,
}

impl BusBuilder {
    pub fn new(section: &BrokerSection) -> anyhow::Result<Self> {
        let internal = Internal {
            v311: gateway::free_loopback_address()?,
            v5: gateway::free_loopback_address()?,
            secret: format!("{:032x}", rand::random::<u128>()),
        };
        let server = |name: &str, listen| {
            let mut connections = ConnectionSettings {
                connection_timeout_ms: 10_000,
                max_payload_size: usize::try_from(section.max_payload_size).unwrap_or(usize::MAX),
                max_inflight_count: 100,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            };
            // Only the gateway knows the secret: a local process that finds
            // these loopback ports still cannot bypass its checks.
            let secret = internal.secret.clone();
            connections.set_auth_handler(move |_client_id, _username, password: String| {
                let admitted = constant_time_eq(password.as_bytes(), secret.as_bytes());
                async move { admitted }
            });
            let settings = ServerSettings {
                name: name.into(),
                listen,
                tls: None,
                next_connection_delay_ms: 1,
                connections,
            };
            Some(HashMap::from([(name.to_string(), settings)]))
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                // The gateway enforces broker.max_connections; rumqttd must
                // never refuse one itself (see INTERNAL_LINKS).
                max_connections: section.max_connections + INTERNAL_LINKS,
                max_outgoing_packet_count: 200,
                // rumqttd keeps every filter's log in memory: 1 MiB x 10 bounds
                // it (the defaults, 100 MiB x 10 per filter, would not).
                max_segment_size: 1 << 20,
                max_segment_count: 10,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: server("mqtt-v4", internal.v311),
            v5: server("mqtt-v5", internal.v5),
            // Alerts are how rumqttd reports skipping a slow subscriber.
            // Its timer thread needs both kinds configured (it unwraps both).
            metrics: Some(HashMap::from([
                (MetricType::Alerts, push_every_seconds(1)),
                (MetricType::Meters, push_every_seconds(60)),
            ])),
            ..Default::default()
        };
        Ok(Self {
            broker: Broker::new(config),
            section: section.clone(),
            internal,
        })
    }

    /// A link that publishes group messages; feed it through the returned
    /// [`Publisher`], which never blocks the caller.
    pub fn publisher(&self) -> anyhow::Result<Publisher> {
        let (link_tx, link_rx) = self
            .broker
            .link("omh-publisher")
            .map_err(|e| anyhow::anyhow!("cannot link publisher to broker: {e}"))?;
        let (queue, inbox) = sync_channel::<Outgoing>(PUBLISH_QUEUE);
        let queued = Arc::new(AtomicU64::new(0));
        let sent = queued.clone();
        std::thread::Builder::new()
            .name("omh-publisher".into())
            .spawn(move || run_publisher(link_tx, link_rx, inbox, &sent))?;
        Ok(Publisher {
            queue,
            queued,
            dropped: Arc::default(),
        })
    }

    /// A link subscribed to `filters`, for the life of the process.
    pub fn subscription(
        &self,
        client_id: &str,
        filters: &[String],
    ) -> anyhow::Result<Subscription> {
        let (mut link_tx, link_rx) = self
            .broker
            .link(client_id)
            .map_err(|e| anyhow::anyhow!("cannot link {client_id} to broker: {e}"))?;
        subscribe(&mut link_tx, client_id, filters)?;
        Ok(Subscription {
            link: Some((link_tx, link_rx)),
            returns_to: None,
        })
    }

    /// `count` links for subscriptions made while the broker runs (sinks
    /// started by a manifest reload); each goes back to the pool when its
    /// subscription is dropped.
    pub fn link_pool(&self, count: usize) -> anyhow::Result<LinkPool> {
        let links = (0..count)
            .map(|i| {
                let client_id = format!("omh-sink-link-{i}");
                let (tx, rx) = self
                    .broker
                    .link(&client_id)
                    .map_err(|e| anyhow::anyhow!("cannot link {client_id} to broker: {e}"))?;
                Ok(PooledLink { client_id, tx, rx })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(LinkPool(Arc::new(Mutex::new(links))))
    }

    /// Logs, with a running count, every time the broker skips a subscriber
    /// ahead because it fell more than its log behind: those messages never
    /// reach it. Sinks hand messages to their disk buffer at once, so this
    /// should stay silent; if not, it must not be silent.
    /// Returns the running count, for metrics.
    pub fn report_skips(&self) -> anyhow::Result<Arc<AtomicU64>> {
        let alerts = self
            .broker
            .alerts()
            .map_err(|e| anyhow::anyhow!("cannot link to broker alerts: {e}"))?;
        let skips = Arc::new(AtomicU64::new(0));
        let counted = skips.clone();
        std::thread::Builder::new()
            .name("omh-bus-alerts".into())
            .spawn(move || {
                while let Ok(batch) = alerts.router_rx.recv() {
                    for alert in batch.iter().filter(|a| a.kind.name() == "cursor_jump") {
                        let skips = counted.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::error!(
                            client = %alert.client_id, detail = %alert.kind.description(), skips,
                            "bus skipped a slow subscriber ahead: messages lost for it"
                        );
                    }
                }
            })?;
        Ok(skips)
    }

    /// Starts the broker on its own thread, then the gateway's listeners
    /// for outside clients (TLS files relative to `manifest_dir`).
    pub async fn start(mut self, manifest_dir: &Path) -> anyhow::Result<Arc<GatewayStats>> {
        std::thread::Builder::new()
            .name("omh-broker".into())
            .spawn(move || {
                if let Err(error) = self.broker.start() {
                    tracing::error!(%error, "broker stopped");
                }
            })?;
        gateway::wait_for_broker(self.internal.v311, &self.internal).await?;
        gateway::wait_for_broker(self.internal.v5, &self.internal).await?;
        gateway::start(&self.section, manifest_dir, self.internal).await
    }
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn subscribe(link_tx: &mut LinkTx, client_id: &str, filters: &[String]) -> anyhow::Result<()> {
    for filter in filters {
        link_tx
            .subscribe(filter.clone())
            .map_err(|e| anyhow::anyhow!("cannot subscribe {client_id} to {filter}: {e}"))?;
    }
    Ok(())
}

/// Links made before the broker started: rumqttd makes links only then
/// (its `start` takes the broker for good), and a manifest reload may
/// start sinks long after.
#[derive(Clone)]
pub struct LinkPool(Arc<Mutex<Vec<PooledLink>>>);

struct PooledLink {
    client_id: String,
    tx: LinkTx,
    rx: LinkRx,
}

impl LinkPool {
    /// A free link of the pool subscribed to `filters`.
    pub fn subscription(&self, filters: &[String]) -> anyhow::Result<Subscription> {
        let mut link: PooledLink =
            self.0
                .lock()
                .expect("link pool lock")
                .pop()
                .ok_or_else(|| {
                    anyhow::anyhow!("no bus link left for another sink: restart omh-host")
                })?;
        if let Err(error) = subscribe(&mut link.tx, &link.client_id, filters) {
            self.0.lock().expect("link pool lock").push(link);
            return Err(error);
        }
        Ok(Subscription {
            link: Some((link.tx, link.rx)),
            returns_to: Some((self.clone(), link.client_id, filters.to_vec())),
        })
    }
}

fn push_every_seconds(seconds: u64) -> MetricSettings {
    // Its fields are private; serde is the way in.
    serde_json::from_value(serde_json::json!({ "push_interval": seconds }))
        .expect("valid metric settings")
}

struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// Hands messages to the publisher thread. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    queue: SyncSender<Outgoing>,
    /// Messages waiting for the publisher thread.
    queued: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Publisher {
    /// Messages waiting to enter the broker (the bus's queue depth).
    pub fn queued(&self) -> Arc<AtomicU64> {
        self.queued.clone()
    }

    /// Messages dropped because the bus's publish queue was full.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Waits until the publisher thread has handed every queued message to
    /// the broker, or `within` passes; at a clean stop, so the last status
    /// messages reach connected clients before the process exits.
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.queued.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The router forwards to subscribers on its own thread; give it a
        // moment (it has no acknowledgement to wait on).
        tokio::time::sleep(Duration::from_millis(100).min(within)).await;
    }

    /// Queues a message without blocking; when the queue is full the message
    /// is dropped and counted (a stuck router must not stall the drivers).
    pub fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        // Counted before the send, so the publisher thread's decrement can
        // never come first.
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(Outgoing {
            topic,
            payload,
            retain,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        topic = %message.topic, dropped,
                        "bus publish queue full: message dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                tracing::error!("bus publisher thread is gone");
            }
        }
    }
}

fn run_publisher(
    mut link_tx: LinkTx,
    // Held so the router keeps the link; a publisher receives nothing.
    _link_rx: LinkRx,
    inbox: std::sync::mpsc::Receiver<Outgoing>,
    queued: &AtomicU64,
) {
    for message in inbox {
        queued.fetch_sub(1, Ordering::Relaxed);
        let publish = Publish::new(
            Bytes::from(message.topic),
            Bytes::from(message.payload),
            message.retain,
        );
        // A blocking send is right here: this is the publisher's own thread.
        if let Err(error) =
            futures::executor::block_on(link_tx.send(Packet::Publish(publish, None)))
        {
            tracing::error!(%error, "broker link closed; publisher stops");
            return;
        }
    }
}

/// A sink's view of the bus: the messages matching its filters.
pub struct Subscription {
    /// The router ties the subscription to the sending half. Always `Some`
    /// until dropped, when a pooled link goes back to its pool.
    link: Option<(LinkTx, LinkRx)>,
    /// The pool, the link's client id and its filters (unsubscribed on
    /// return), for a pooled link.
    returns_to: Option<(LinkPool, String, Vec<String>)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let (Some((mut tx, rx)), Some((pool, client_id, filters))) =
            (self.link.take(), self.returns_to.take())
        else {
            return;
        };
        for filter in &filters {
            if let Err(error) = tx.unsubscribe(filter.clone()) {
                tracing::warn!(%client_id, %filter, %error, "cannot unsubscribe a returned bus link");
            }
        }
        pool.0
            .lock()
            .expect("link pool lock")
            .push(PooledLink { client_id, tx, rx });
    }
}

impl Subscription {
    fn link_rx(&mut self) -> &mut LinkRx {
        &mut self
            .link
            .as_mut()
            .expect("a live subscription has its link")
            .1
    }

    /// Waits for a message, then takes up to `max` that have already
    /// arrived, as (topic, payload). `None` when the broker has gone away.
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<(Bytes, Bytes)>> {
        let mut batch = vec![self.next_with_topic().await?];
        while batch.len() < max {
            // rumqttd hands a link its messages in bunches; take the rest of
            // this bunch without waiting (an empty poll loses nothing).
            match self.link_rx().next().now_or_never() {
                Some(Ok(Some(Notification::Forward(forward)))) => {
                    batch.push((forward.publish.topic, forward.publish.payload))
                }
                Some(Ok(Some(Notification::Unschedule))) => {
                    if self.link_rx().wake().await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        Some(batch)
    }

    /// The next message's payload. `None` when the broker has gone away.
    pub async fn next(&mut self) -> Option<Bytes> {
        Some(self.next_with_topic().await?.1)
    }

    /// The next message as (topic, payload).
    pub async fn next_with_topic(&mut self) -> Option<(Bytes, Bytes)> {
        loop {
            match self.link_rx().next().await {
                Ok(Some(Notification::Forward(forward))) => {
                    return Some((forward.publish.topic, forward.publish.payload));
                }
                // The router stops feeding a link whose buffer filled up until
                // the link says it has drained: say so, or nothing ever arrives again.
                Ok(Some(Notification::Unschedule)) => {
                    if self.link_rx().wake().await.is_err() {
                        return None;
                    }
                }
                Ok(Some(_)) | Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "bus subscription closed");
                    return None;
                }
            }
        }
    }
}
