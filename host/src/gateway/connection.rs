//! One outside client's connection through the gateway.
//!
//! The gateway reads the client's CONNECT, authenticates it, and opens a
//! connection of its own to the embedded broker's loopback listener for the
//! client's protocol version, presenting the gateway's secret instead of
//! the client's credentials. From then on the broker does all of MQTT
//! (sessions, keep-alive, wills, retained messages, QoS); the gateway only
//! passes packets along: untouched for users allowed everything, and with
//! PUBLISH and SUBSCRIBE checked against the user's topic filters otherwise.

use super::Shared;
use super::acl::Permissions;
use super::frame::{self, CONNECT, PUBLISH, SUBACK, SUBSCRIBE, Version};
use super::users::Refusal;
use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{
    ConnAck, ConnectReturnCode, Login, Packet, PubAck, PubAckReason, SubAck, SubscribeReasonCode,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// How long a refused client waits for its CONNACK: slows password guessing
/// without holding anything but this connection's task.
const REFUSAL_DELAY: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;
const BY_PERMISSIONS: &str = "not within the user's topic permissions";
/// Packets the gateway itself answers, waiting to reach the client.
const INJECTED_QUEUE: usize = 64;

pub async fn serve<S>(client: S, peer: SocketAddr, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if let Err(error) = run(client, peer, shared).await {
        // A connected client sending more than the limit is misconfigured,
        // not noise: worth a warning, where garbage from a scanner is not.
        let oversized = error.chain().find_map(|cause| match cause.downcast_ref() {
            Some(&rumqttd::protocol::Error::PayloadSizeLimitExceeded(size)) => Some(size),
            _ => None,
        });
        match oversized {
            Some(size) => tracing::warn!(
                %peer, size, max_packet = shared.max_packet,
                "MQTT packet larger than broker.max_payload_size; connection closed"
            ),
            None => tracing::debug!(%peer, error = format!("{error:#}"), "MQTT connection closed"),
        }
    }
}

async fn run<S>(mut client: S, peer: SocketAddr, shared: &Shared) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut inbound = BytesMut::with_capacity(READ_CHUNK);
    let first = tokio::time::timeout(
        shared.connect_timeout,
        read_frame(&mut client, &mut inbound, shared.max_packet),
    )
    .await
    .context("no CONNECT in time")?
    // Before CONNECT, an oversized length is a scanner's noise: not the
    // error that earns a warning (see `serve`).
    .map_err(|error| anyhow::anyhow!("before CONNECT: {error}"))?;
    let Some(first) = first else {
        return Ok(());
    };
    if frame::packet_type(&first) != CONNECT {
        bail!("the first packet is not CONNECT");
    }
    let version = match frame::connect_level(&first) {
        Some(4) => Version::V311,
        Some(5) => Version::V5,
        level => {
            // CONNACK "unacceptable protocol version", as 3.1 clients read it.
            client.write_all(&[0x20, 0x02, 0x00, 0x01]).await?;
            bail!("protocol level {level:?} is not MQTT 3.1.1 or 5");
        }
    };
    let Packet::Connect(mut connect, properties, will, will_properties, login) =
        version.read(first, shared.max_packet)?
    else {
        bail!("malformed CONNECT");
    };
    let username = login
        .as_ref()
        .map(|l| l.username.clone())
        .filter(|u| !u.is_empty());
    let permissions = match shared
        .users
        .authenticate(login.as_ref(), &connect.client_id)
        .await
    {
        Ok(permissions) => permissions,
        Err(refusal) => {
            let failures = shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                %peer, client_id = %connect.client_id, user = username.as_deref().unwrap_or("(none)"),
                ?refusal, failures, "MQTT client refused"
            );
            tokio::time::sleep(REFUSAL_DELAY).await;
            let mut out = BytesMut::new();
            version.write(connack_refusal(refusal), &mut out)?;
            client.write_all(&out).await?;
            return Ok(());
        }
    };
    // MQTT allows keep-alive 0 ("never time me out"); rumqttd refuses it.
    // Its longest keep-alive (18 h) is the closest it accepts.
    if connect.keep_alive == 0 {
        connect.keep_alive = u16::MAX;
    }
    let client_id = connect.client_id.clone();
    let mut broker = TcpStream::connect(shared.internal(version))
        .await
        .context("cannot reach the embedded broker")?;
    broker.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let login = Login {
        username: username.clone().unwrap_or_else(|| "anonymous".into()),
        password: shared.secret.clone(),
    };
    version.write(
        Packet::Connect(connect, properties, will, will_properties, Some(login)),
        &mut out,
    )?;
    broker.write_all(&out).await?;
    // Wait for the broker's CONNACK even if the client is gone already:
    // rumqttd 0.20 leaves a broken will entry behind for a connection that
    // closes before its CONNACK is written, and the next CONNECT with that
    // client id then panics its listener thread for good.
    let mut from_broker = BytesMut::with_capacity(READ_CHUNK);
    let connack = tokio::time::timeout(
        shared.connect_timeout,
        read_frame(&mut broker, &mut from_broker, usize::MAX),
    )
    .await
    .context("no CONNACK from the embedded broker in time")??
    .context("the embedded broker closed the connection before CONNACK")?;
    client.write_all(&connack).await?;
    tracing::debug!(%peer, %client_id, user = username.as_deref().unwrap_or("(anonymous)"), ?version, "MQTT client connected");

    // Every connection goes through the guard, even one allowed every
    // topic: rumqttd drops a client that subscribes to a `$` filter, and
    // the guard refuses that filter in the SUBACK instead.
    let guard = Guard {
        version,
        permissions,
        peer,
        client_id,
        max_packet: shared.max_packet,
        denied: &shared.stats.acl_denials,
    };
    let (client_rx, client_tx) = tokio::io::split(client);
    let (broker_rx, broker_tx) = broker.into_split();
    let (inject, injected) = mpsc::channel(INJECTED_QUEUE);
    // Either direction ending ends the connection. The broker then sees its
    // side close without DISCONNECT (unless the client sent one), so it
    // publishes the client's will exactly as it would for a direct client.
    tokio::select! {
        result = guard.upstream(client_rx, broker_tx, inbound, inject) => result,
        result = guard.downstream(broker_rx, from_broker, client_tx, injected) => result,
    }
}

/// Reads until `buffer` holds a whole packet; `None` at end of stream.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    max_packet: usize,
) -> anyhow::Result<Option<Bytes>> {
    loop {
        if let Some(frame) = frame::next(buffer, max_packet)? {
            return Ok(Some(frame));
        }
        if !read_more(reader, buffer).await? {
            return Ok(None);
        }
    }
}

/// Appends what the reader has; false at end of stream.
async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
) -> std::io::Result<bool> {
    buffer.reserve(READ_CHUNK);
    Ok(reader.read_buf(buffer).await? > 0)
}

fn connack_refusal(refusal: Refusal) -> Packet {
    let code = match refusal {
        Refusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
        Refusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
    };
    Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    )
}

/// What the upstream half tells the downstream half.
enum ToClient {
    /// A packet the gateway answers itself (a refused PUBLISH's PUBACK, a
    /// SUBACK when every filter was refused).
    Packet(Bytes),
    /// The broker's SUBACK for `pkid` answers only the allowed filters;
    /// `refused[i]` says where the refused ones go back in.
    SubAck { pkid: u16, refused: Vec<bool> },
}

/// The checks on one connection whose user has topic restrictions.
struct Guard<'a> {
    version: Version,
    permissions: Permissions,
    peer: SocketAddr,
    client_id: String,
    max_packet: usize,
    denied: &'a AtomicU64,
}

impl Guard<'_> {
    async fn upstream<R: AsyncRead + Unpin>(
        &self,
        mut client: R,
        mut broker: OwnedWriteHalf,
        mut inbound: BytesMut,
        inject: mpsc::Sender<ToClient>,
    ) -> anyhow::Result<()> {
        // MQTT 5 topic aliases, so an aliased PUBLISH is checked by topic.
        let mut aliases = HashMap::new();
        let mut out = BytesMut::new();
        loop {
            while let Some(frame) = frame::next(&mut inbound, self.max_packet)? {
                match frame::packet_type(&frame) {
                    PUBLISH => match self.publish_topic(&frame, &mut aliases)? {
                        Some(topic) if !self.permissions.may_publish(&topic) => {
                            self.refuse_publish(&frame, &topic, &inject).await?
                        }
                        _ => out.extend_from_slice(&frame),
                    },
                    SUBSCRIBE => self.subscribe(frame, &mut out, &inject).await?,
                    CONNECT => bail!("a second CONNECT"),
                    kind if !frame::client_may_send(kind) => {
                        bail!("packet type {kind} may not come from a client")
                    }
                    _ => out.extend_from_slice(&frame),
                }
            }
            if !out.is_empty() {
                broker.write_all(&out).await?;
                out.clear();
            }
            if !read_more(&mut client, &mut inbound).await? {
                return Ok(());
            }
        }
    }

    /// The topic a PUBLISH goes to; `None` if it cannot be told (the broker
    /// then refuses the packet itself).
    fn publish_topic(
        &self,
        frame: &Bytes,
        aliases: &mut HashMap<u16, String>,
    ) -> anyhow::Result<Option<String>> {
        let header = frame::publish_header(frame).context("malformed PUBLISH")?;
        if self.version == Version::V311 || !header.has_properties {
            return Ok(Some(header.topic.to_owned()));
        }
        let Packet::Publish(publish, properties) = self.version.read(frame.clone(), usize::MAX)?
        else {
            bail!("malformed PUBLISH");
        };
        let topic = String::from_utf8(publish.topic.to_vec()).context("topic is not UTF-8")?;
        Ok(match properties.and_then(|p| p.topic_alias) {
            Some(alias) if topic.is_empty() => aliases.get(&alias).cloned(),
            Some(alias) => {
                aliases.insert(alias, topic.clone());
                Some(topic)
            }
            None => Some(topic),
        })
    }

    /// MQTT 3.1.1 gives a server that refuses a PUBLISH no way to say so:
    /// it acknowledges as usual (QoS 1) or closes the connection. MQTT 5
    /// acknowledges with "not authorized". QoS 2 is not supported by the
    /// broker, so the connection is closed.
    async fn refuse_publish(
        &self,
        frame: &[u8],
        topic: &str,
        inject: &mpsc::Sender<ToClient>,
    ) -> anyhow::Result<()> {
        self.log_denial("publish", topic, BY_PERMISSIONS);
        let header = frame::publish_header(frame).context("malformed PUBLISH")?;
        match header.qos {
            0 => Ok(()),
            1 => {
                let reason = match self.version {
                    Version::V311 => PubAckReason::Success,
                    Version::V5 => PubAckReason::NotAuthorized,
                };
                let puback = PubAck {
                    pkid: header.pkid,
                    reason,
                };
                let packet = self.encode(Packet::PubAck(puback, None))?;
                Ok(inject.send(ToClient::Packet(packet)).await?)
            }
            _ => bail!("refused a QoS 2 PUBLISH to {topic}"),
        }
    }

    async fn subscribe(
        &self,
        frame: Bytes,
        out: &mut BytesMut,
        inject: &mpsc::Sender<ToClient>,
    ) -> anyhow::Result<()> {
        let Packet::Subscribe(mut subscribe, properties) =
            self.version.read(frame.clone(), self.max_packet)?
        else {
            bail!("malformed SUBSCRIBE");
        };
        let refusals: Vec<Option<&str>> = subscribe
            .filters
            .iter()
            .map(|filter| {
                if filter.path.starts_with('$') && !filter.path.starts_with("$share/") {
                    Some("the broker serves no subscriptions to $ topics")
                } else if !self.permissions.may_subscribe(&filter.path) {
                    Some(BY_PERMISSIONS)
                } else {
                    None
                }
            })
            .collect();
        let refused: Vec<bool> = refusals.iter().map(Option::is_some).collect();
        if !refused.contains(&true) {
            out.extend_from_slice(&frame);
            return Ok(());
        }
        let pkid = subscribe.pkid;
        let mut verdicts = refusals.iter();
        subscribe.filters.retain(|filter| {
            let refusal = *verdicts.next().expect("one verdict per filter");
            if let Some(why) = refusal {
                self.log_denial("subscription", &filter.path, why);
            }
            refusal.is_none()
        });
        if subscribe.filters.is_empty() {
            let suback = SubAck {
                pkid,
                return_codes: vec![self.refused_code(); refused.len()],
            };
            let packet = self.encode(Packet::SubAck(suback, None))?;
            return Ok(inject.send(ToClient::Packet(packet)).await?);
        }
        // Sent before the SUBSCRIBE leaves, so it is queued before the
        // broker's SUBACK can arrive.
        inject.send(ToClient::SubAck { pkid, refused }).await?;
        self.version
            .write(Packet::Subscribe(subscribe, properties), out)?;
        Ok(())
    }

    async fn downstream<W: AsyncWrite + Unpin>(
        &self,
        mut broker: OwnedReadHalf,
        mut inbound: BytesMut,
        mut client: W,
        mut injected: mpsc::Receiver<ToClient>,
    ) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        let mut pending_subacks = HashMap::new();
        loop {
            while let Some(frame) = frame::next(&mut inbound, usize::MAX)? {
                if frame::packet_type(&frame) != SUBACK {
                    out.extend_from_slice(&frame);
                    continue;
                }
                while let Ok(item) = injected.try_recv() {
                    take(item, &mut pending_subacks, &mut out);
                }
                self.suback(frame, &mut pending_subacks, &mut out)?;
            }
            if !out.is_empty() {
                client.write_all(&out).await?;
                out.clear();
            }
            tokio::select! {
                biased;
                Some(item) = injected.recv() => take(item, &mut pending_subacks, &mut out),
                more = read_more(&mut broker, &mut inbound) => {
                    if !more? {
                        return Ok(());
                    }
                    acknowledge_at_once(&broker);
                }
            }
        }
    }

    /// Puts the refused filters' codes back into the broker's SUBACK, in
    /// the order the client asked.
    fn suback(
        &self,
        frame: Bytes,
        pending: &mut HashMap<u16, Vec<bool>>,
        out: &mut BytesMut,
    ) -> anyhow::Result<()> {
        let Packet::SubAck(mut suback, properties) =
            self.version.read(frame.clone(), usize::MAX)?
        else {
            bail!("malformed SUBACK from the broker");
        };
        let Some(refused) = pending.remove(&suback.pkid) else {
            out.extend_from_slice(&frame);
            return Ok(());
        };
        let mut granted = suback.return_codes.into_iter();
        suback.return_codes = refused
            .iter()
            .map(|&refused| {
                if refused {
                    self.refused_code()
                } else {
                    granted.next().unwrap_or(SubscribeReasonCode::Failure)
                }
            })
            .collect();
        self.version
            .write(Packet::SubAck(suback, properties), out)?;
        Ok(())
    }

    fn refused_code(&self) -> SubscribeReasonCode {
        match self.version {
            Version::V311 => SubscribeReasonCode::Failure,
            Version::V5 => SubscribeReasonCode::NotAuthorized,
        }
    }

    fn encode(&self, packet: Packet) -> anyhow::Result<Bytes> {
        let mut out = BytesMut::new();
        self.version.write(packet, &mut out)?;
        Ok(out.freeze())
    }

    fn log_denial(&self, what: &str, topic: &str, why: &str) {
        let denials = self.denied.fetch_add(1, Ordering::Relaxed) + 1;
        // Every refusal counts; the log gets the first ones and then fewer,
        // so a client retrying in a loop cannot flood it.
        if denials <= 10 || denials.is_power_of_two() {
            tracing::warn!(
                peer = %self.peer, client_id = %self.client_id, %topic, denials,
                "MQTT {what} refused: {why}"
            );
        }
    }
}

/// rumqttd leaves Nagle's algorithm on for its sockets (it has no option
/// for it), so with a one-way stream (QoS 0 to a subscriber) it holds each
/// small write until the previous one is acknowledged, and Linux delays
/// that ACK by up to 40 ms: 15-20 ms of median latency. Acknowledging at
/// once lets it send at once. Linux resets quick-ack mode on its own, hence
/// after every read.
fn acknowledge_at_once(broker: &OwnedReadHalf) {
    #[cfg(target_os = "linux")]
    {
        let stream: &TcpStream = broker.as_ref();
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = broker;
}

fn take(item: ToClient, pending_subacks: &mut HashMap<u16, Vec<bool>>, out: &mut BytesMut) {
    match item {
        ToClient::Packet(packet) => out.extend_from_slice(&packet),
        ToClient::SubAck { pkid, refused } => {
            pending_subacks.insert(pkid, refused);
        }
    }
}
