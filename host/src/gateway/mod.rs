//! The broker's front door: the MQTT listeners outside clients connect to.
//!
//! rumqttd checks a username and password at CONNECT but has no hook for
//! per-topic permissions, and it serves MQTT 3.1.1 and 5 on separate
//! ports. So the embedded broker listens only on loopback ports of its own
//! that accept nothing but this gateway's random secret, and the gateway
//! owns the site's listeners (plain and TLS): it reads each CONNECT, picks
//! the broker port for the client's protocol version, authenticates the
//! user against the manifest's argon2 hashes and enforces their publish
//! and subscribe filters (see [`connection`]). Everything else of MQTT
//! stays the broker's.

mod acl;
mod connection;
mod frame;
mod tls;
mod users;

pub use users::hash_password;

use crate::manifest::BrokerSection;
use anyhow::Context;
use frame::Version;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use users::Users;

/// A client must finish its TLS handshake and send CONNECT within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for a PUBLISH's topic and properties beyond the largest payload.
const HEADER_ALLOWANCE: usize = 64 * 1024;

/// Where the gateway reaches the embedded broker.
#[derive(Clone)]
pub struct Internal {
    pub v311: SocketAddr,
    pub v5: SocketAddr,
    /// Presented as the password of every connection the gateway opens.
    pub secret: String,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct GatewayStats {
    /// Client connections open now (plain and TLS).
    pub connections: AtomicU64,
    pub auth_failures: AtomicU64,
    /// PUBLISH and SUBSCRIBE filters refused by topic permissions.
    pub acl_denials: AtomicU64,
}

struct Shared {
    users: Arc<Users>,
    internal: Internal,
    secret: String,
    max_packet: usize,
    max_connections: u64,
    connect_timeout: Duration,
    stats: Arc<GatewayStats>,
}

impl Shared {
    fn internal(&self, version: Version) -> SocketAddr {
        match version {
            Version::V311 => self.internal.v311,
            Version::V5 => self.internal.v5,
        }
    }
}

/// Opens the manifest's listeners. TLS file paths are relative to
/// `manifest_dir`.
pub async fn start(
    section: &BrokerSection,
    manifest_dir: &Path,
    internal: Internal,
) -> anyhow::Result<Arc<GatewayStats>> {
    let users = Users::new(section.users.clone(), section.anonymous);
    if !users.admit_anyone() {
        tracing::warn!(
            "broker: no [broker.users] and broker.anonymous is off: no outside MQTT client can connect"
        );
    }
    let stats = Arc::new(GatewayStats::default());
    let shared = Arc::new(Shared {
        users,
        secret: internal.secret.clone(),
        internal,
        max_packet: usize::try_from(section.max_payload_size)
            .unwrap_or(usize::MAX)
            .saturating_add(HEADER_ALLOWANCE),
        max_connections: section.max_connections as u64,
        connect_timeout: CONNECT_TIMEOUT,
        stats: stats.clone(),
    });
    let mut listeners = vec![(section.listen, None, "broker.listen")];
    if let Some(tls) = &section.tls {
        let acceptor = tls::acceptor(&manifest_dir.join(&tls.cert), &manifest_dir.join(&tls.key))?;
        listeners.push((tls.listen, Some(acceptor), "broker.tls.listen"));
    }
    for (address, acceptor, key) in listeners {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("{key}: cannot listen on {address}"))?;
        if section.anonymous && !address.ip().is_loopback() {
            tracing::warn!(listen = %address, "broker.anonymous is on: anyone who can reach this address may connect");
        }
        let scheme = if acceptor.is_some() { "mqtts" } else { "mqtt" };
        tracing::info!(listen = %address, "MQTT listening ({scheme}, 3.1.1 and 5)");
        tokio::spawn(accept(listener, acceptor, shared.clone()));
    }
    Ok(stats)
}

async fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: wait rather than spin.
                tracing::warn!(%error, "MQTT listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let open = shared.stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let connection = OpenConnection(shared.clone());
        if open > shared.max_connections {
            tracing::warn!(%peer, open, "MQTT connection refused: broker.max_connections reached");
            continue;
        }
        let tls = tls.clone();
        tokio::spawn(async move {
            let shared = &connection.0;
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection::serve(stream, peer, shared).await,
                Some(acceptor) => {
                    match tokio::time::timeout(shared.connect_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => connection::serve(stream, peer, shared).await,
                        Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Counts a client connection as open until dropped.
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A loopback address with a port free right now, for a broker listener
/// only the gateway uses.
pub fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free loopback port for the broker")?
        .local_addr()?)
}

/// Waits until the broker accepts connections on `address` (its server
/// thread binds shortly after it starts). The probe is a whole MQTT
/// session, so the broker has no half-open connection to complain about.
pub async fn wait_for_broker(address: SocketAddr, internal: &Internal) -> anyhow::Result<()> {
    let version = if address == internal.v5 {
        Version::V5
    } else {
        Version::V311
    };
    let mut last_error = anyhow::anyhow!("nothing listens there");
    for attempt in 0..100 {
        match TcpStream::connect(address).await {
            // A fresh client id each time: see the CONNACK comment in
            // connection.rs for what rumqttd does with a reused one.
            Ok(mut stream) => match probe(&mut stream, version, &internal.secret, attempt).await {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            },
            Err(error) => last_error = error.into(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last_error.context(format!("the embedded broker does not answer on {address}")))
}

async fn probe(
    stream: &mut TcpStream,
    version: Version,
    secret: &str,
    attempt: u32,
) -> anyhow::Result<()> {
    use rumqttd::protocol::{Connect, Disconnect, DisconnectReasonCode, Login, Packet};
    use tokio::io::AsyncWriteExt;
    let connect = Connect {
        keep_alive: 10,
        client_id: format!("omh-gateway-probe-{attempt}"),
        clean_session: true,
    };
    let login = Login {
        username: "omh-gateway".into(),
        password: secret.into(),
    };
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    let mut out = bytes::BytesMut::new();
    version.write(
        Packet::Connect(connect, None, None, None, Some(login)),
        &mut out,
    )?;
    stream.write_all(&out).await?;
    let mut inbound = bytes::BytesMut::new();
    let connack = connection::read_frame(stream, &mut inbound, HEADER_ALLOWANCE)
        .await?
        .context("closed before CONNACK")?;
    // Byte 3 is the return code (3.1.1) or reason code (5): 0 is success.
    anyhow::ensure!(
        connack.get(3) == Some(&0),
        "it refused the gateway's secret"
    );
    out.clear();
    version.write(Packet::Disconnect(disconnect, None), &mut out)?;
    stream.write_all(&out).await?;
    Ok(())
}
