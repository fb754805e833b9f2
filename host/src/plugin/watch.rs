//! Watches the plugins directory and reports each `.wasm` file once it has
//! settled. A copy arrives as several events (create, writes, close) and a
//! file copied in place can be read half-written, so a file is reported
//! only after it has had no event for [`SETTLE`] and then kept its size and
//! modification time for another [`SETTLE`]. A writer slower than that
//! still gets its file checked again: its next write is a new event.

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

const SETTLE: Duration = Duration::from_millis(300);

/// Paths of `.wasm` files in `dir` that changed and settled, for as long
/// as the receiver is kept.
pub fn settled_changes(dir: &Path) -> notify::Result<mpsc::UnboundedReceiver<PathBuf>> {
    let (changed, events) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if writes(&event.kind) => {
                for path in event.paths.into_iter().filter(|p| is_plugin_file(p)) {
                    let _ = changed.send(path);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "plugins directory watch"),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (settled, receiver) = mpsc::unbounded_channel();
    tokio::spawn(settle(watcher, events, settled));
    Ok(receiver)
}

/// Events that may change a file's content; reads (ours included) do not.
fn writes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) => true,
        EventKind::Access(access) => *access == AccessKind::Close(AccessMode::Write),
        _ => false,
    }
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "wasm")
}

struct Pending {
    check_at: Instant,
    /// Size and modification time at the last check.
    seen: Option<(u64, SystemTime)>,
}

async fn settle(
    // Dropping the watcher ends the watch: it lives as long as this task.
    _watcher: RecommendedWatcher,
    mut events: mpsc::UnboundedReceiver<PathBuf>,
    settled: mpsc::UnboundedSender<PathBuf>,
) {
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    loop {
        let next_check = pending.values().map(|p| p.check_at).min();
        tokio::select! {
            event = events.recv() => {
                let Some(path) = event else { return };
                pending.insert(path, Pending { check_at: Instant::now() + SETTLE, seen: None });
            }
            _ = tokio::time::sleep_until(next_check.unwrap_or_else(Instant::now)), if next_check.is_some() => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, p)| p.check_at <= now)
                    .map(|(path, _)| path.clone())
                    .collect();
                for path in due {
                    let fingerprint = std::fs::metadata(&path)
                        .ok()
                        .and_then(|m| Some((m.len(), m.modified().ok()?)));
                    let entry = pending.get_mut(&path).expect("due paths are pending");
                    if fingerprint.is_none() {
                        tracing::info!(file = %path.display(), "plugin file removed; its running instances keep the loaded version");
                        pending.remove(&path);
                    } else if fingerprint == entry.seen {
                        pending.remove(&path);
                        if settled.send(path).is_err() {
                            return;
                        }
                    } else {
                        entry.seen = fingerprint;
                        entry.check_at = now + SETTLE;
                    }
                }
            }
        }
    }
}
