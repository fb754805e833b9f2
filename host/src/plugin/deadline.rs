//! The deadline of a call into a plugin counts the plugin's own time. Time
//! the call spends waiting in the host on the plugin's behalf (a sink's
//! database write behind a lock) is the database's to bound, with its own
//! timeout, not a sign the plugin hangs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time an instance has waited in host calls, in total.
#[derive(Default)]
pub struct HostWait {
    inner: Mutex<Waited>,
}

#[derive(Default)]
struct Waited {
    finished: Duration,
    /// Start of the host call in progress, if any.
    since: Option<Instant>,
}

/// Counts the time until it is dropped (also when the call is cancelled).
pub struct Waiting<'a>(&'a HostWait);

impl HostWait {
    /// Starts counting a host call's wait.
    pub fn enter(&self) -> Waiting<'_> {
        self.inner.lock().expect("host wait lock").since = Some(Instant::now());
        Waiting(self)
    }

    /// Time waited so far, a wait in progress included.
    pub fn total(&self) -> Duration {
        let waited = self.inner.lock().expect("host wait lock");
        waited.finished + waited.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waited = self.0.inner.lock().expect("host wait lock");
        if let Some(since) = waited.since.take() {
            waited.finished += since.elapsed();
        }
    }
}

/// Runs `call` until it finishes or `deadline` of its own time has passed
/// (`None`); time counted in `host_wait` meanwhile extends the deadline.
pub async fn within<T>(
    deadline: Duration,
    host_wait: &HostWait,
    call: impl Future<Output = T>,
) -> Option<T> {
    let mut call = std::pin::pin!(call);
    let mut budget = deadline;
    let mut waited = host_wait.total();
    loop {
        if let Ok(output) = tokio::time::timeout(budget, call.as_mut()).await {
            return Some(output);
        }
        let now = host_wait.total();
        budget = now - waited;
        if budget.is_zero() {
            return None;
        }
        waited = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_in_the_host_extends_the_deadline_and_own_time_does_not() {
        let wait = HostWait::default();
        let deadline = Duration::from_secs(5);
        // 3 s of its own, 20 s in the host, 1 s of its own: within 5 s.
        let call = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            {
                let _waiting = wait.enter();
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        };
        assert_eq!(within(deadline, &wait, call).await, Some("done"));
        assert_eq!(wait.total(), Duration::from_secs(20));

        // 2 s in the host, then 6 s of its own: over.
        let wait = HostWait::default();
        let started = tokio::time::Instant::now();
        let call = async {
            {
                let _waiting = wait.enter();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            tokio::time::sleep(Duration::from_secs(6)).await;
        };
        assert_eq!(within(deadline, &wait, call).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }
}
