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
        budget = now.saturating_sub(waited);
        if budget.is_zero() {
            return None;
        }
        waited = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::sleep;

    const MS: Duration = Duration::from_millis(1);

    /// Real time with wide margins: timers on a loaded CI machine fire late.
    #[tokio::test]
    async fn waiting_in_the_host_extends_the_deadline_and_own_time_does_not() {
        let deadline = 1000 * MS;
        // 300 ms of its own, 2 s in the host, 200 ms of its own: within.
        let wait = HostWait::default();
        let call = async {
            sleep(300 * MS).await;
            {
                let _waiting = wait.enter();
                sleep(2000 * MS).await;
            }
            sleep(200 * MS).await;
            "done"
        };
        assert_eq!(within(deadline, &wait, call).await, Some("done"));
        assert!(wait.total() >= 2000 * MS);

        // 300 ms in the host, then 10 s of its own: stopped once it has had
        // 1 s of its own, at about 1.3 s.
        let wait = HostWait::default();
        let started = std::time::Instant::now();
        let call = async {
            {
                let _waiting = wait.enter();
                sleep(300 * MS).await;
            }
            sleep(10_000 * MS).await;
        };
        assert_eq!(within(deadline, &wait, call).await, None);
        let elapsed = started.elapsed();
        assert!((1300 * MS..5000 * MS).contains(&elapsed), "{elapsed:?}");
    }
}
