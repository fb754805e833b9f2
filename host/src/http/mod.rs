//! The operator's surface over HTTP (axum): a live page with no build step,
//! JSON endpoints and Prometheus metrics. Bound where the manifest's
//! `http.listen` says (the examples use loopback: there is no auth here).
//!
//! | path | what |
//! |---|---|
//! | `/` | live page: every tag's value, updating, with a chart of the last minutes |
//! | `/health` | `{"status":"ok","site":..,"uptime_s":..}` |
//! | `/api/tags` | last value (or error code), time and history of every tag |
//! | `/api/devices` | per device: group messages, tag errors, last message time |
//! | `/api/plugins` | each plugin instance's state, restarts and last error |
//! | `/api/stream` | Server-Sent Events: every group message as the bus carries it |
//! | `POST /api/write` | a tag write in Neuron's shape; goes the MQTT write path, so the same checks apply |
//! | `/metrics` | Prometheus text format |

mod live;
mod metrics;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::{get, post};
use futures::Stream;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::bus::Publisher;
use crate::site::SinkMetrics;
use crate::uplink::UplinkMetrics;
pub use live::Live;

const PAGE: &str = include_str!("page.html");

/// How long `POST /api/write` waits for the device's answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where HTTP writes go: the bus's write topic, answered on its response
/// topic (which the live view follows).
pub struct WritePath {
    pub publisher: Publisher,
    pub topic: String,
}

/// Counters kept elsewhere in the host that `/metrics` reads.
pub struct Counters {
    pub sinks: Vec<(String, Arc<SinkMetrics>)>,
    pub bus_publish_queued: Arc<AtomicU64>,
    pub bus_publish_dropped: Arc<AtomicU64>,
    pub bus_subscriber_skips: Arc<AtomicU64>,
    pub gateway: Arc<crate::gateway::GatewayStats>,
    pub uplink: Option<Arc<UplinkMetrics>>,
}

#[derive(Clone)]
struct AppState {
    live: Arc<Live>,
    counters: Arc<Counters>,
    writes: Arc<WritePath>,
    site: Arc<str>,
}

/// Binds `listen` (failing start-up with a clear message if taken) and
/// serves in the background.
pub async fn serve(
    listen: SocketAddr,
    site: &str,
    live: Arc<Live>,
    counters: Counters,
    writes: WritePath,
) -> anyhow::Result<()> {
    let state = AppState {
        live,
        counters: Arc::new(counters),
        writes: Arc::new(writes),
        site: site.into(),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/api/tags", get(tags))
        .route("/api/devices", get(devices))
        .route("/api/plugins", get(plugins))
        .route("/api/stream", get(stream))
        .route("/api/write", post(write))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("http: cannot listen on {listen}"))?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });
    tracing::info!(%listen, "HTTP API and live page listening");
    Ok(())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "site": &*state.site,
        "uptime_s": state.live.started.elapsed().as_secs(),
    }))
}

async fn tags(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.live.tags())
}

async fn devices(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.live.devices())
}

async fn plugins(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.live.plugins())
}

async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // A client that falls behind skips ahead (the page re-reads /api/tags
    // when it reconnects); it never slows the bus.
    let events = BroadcastStream::new(state.live.subscribe())
        .filter_map(|message| message.ok())
        .map(|json| Ok(Event::default().data(&*json)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Publishes the request on the write topic with a fresh uuid and waits
/// for its answer: `{"uuid":..,"error":0}` or a code and a message, the
/// same as an MQTT client gets (200 either way; 504 if no answer came).
async fn write(
    State(state): State<AppState>,
    Json(mut request): Json<serde_json::Value>,
) -> impl IntoResponse {
    let Some(fields) = request.as_object_mut() else {
        let error = serde_json::json!({"error": 1, "message": "not a JSON object"});
        return (StatusCode::BAD_REQUEST, Json(error));
    };
    let uuid = format!("http-{:016x}", rand::random::<u64>());
    fields.insert("uuid".into(), uuid.clone().into());
    let answer = state.live.expect_write_answer(&uuid);
    state.writes.publisher.publish(
        state.writes.topic.clone(),
        request.to_string().into_bytes(),
        false,
    );
    match tokio::time::timeout(WRITE_TIMEOUT, answer).await {
        Ok(Ok(response)) => (StatusCode::OK, Json(response)),
        _ => {
            state.live.forget_write(&uuid);
            let error = serde_json::json!({"uuid": uuid, "error": 5, "message": "no answer from the device in time"});
            (StatusCode::GATEWAY_TIMEOUT, Json(error))
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state.live, &state.counters),
    )
}
