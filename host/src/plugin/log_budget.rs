//! How much a plugin instance may write to the host's log: lines are cut
//! at `MAX_LINE` bytes, and a token bucket allows bursts of `BURST` lines
//! and `PER_SECOND` lines a second after that. A plugin logging in a loop
//! would otherwise fill the disk under the host's log within its call
//! deadline. Dropped lines are counted and reported, at most every
//! `REPORT_EVERY`. The `logging` interface and the plugin's stderr share one
//! budget.

use std::time::{Duration, Instant};

pub const MAX_LINE: usize = 4096;
const BURST: f64 = 100.0;
const PER_SECOND: f64 = 20.0;
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct LogBudget {
    tokens: f64,
    refilled_at: Instant,
    /// Dropped since the last report.
    dropped: u64,
    reported_at: Option<Instant>,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Log it, after reporting `dropped` lines if that is not zero.
    Log {
        dropped: u64,
    },
    Drop,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            tokens: BURST,
            refilled_at: Instant::now(),
            dropped: 0,
            reported_at: None,
        }
    }
}

impl LogBudget {
    /// Whether `plugin` may log one more line now; first reports the lines
    /// dropped before it, when it is time to.
    pub fn pass(&mut self, plugin: &str) -> bool {
        match self.admit_at(Instant::now()) {
            Verdict::Drop => false,
            Verdict::Log { dropped } => {
                if dropped > 0 {
                    tracing::warn!(plugin, dropped, "plugin logs too much; lines dropped");
                }
                true
            }
        }
    }

    fn admit_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * PER_SECOND).min(BURST);
        self.refilled_at = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return Verdict::Drop;
        }
        self.tokens -= 1.0;
        let due = self
            .reported_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        if self.dropped == 0 || !due {
            return Verdict::Log { dropped: 0 };
        }
        self.reported_at = Some(now);
        Verdict::Log {
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

/// `line` cut to at most `MAX_LINE` bytes (on a character boundary), saying
/// how much was cut.
pub fn cut(mut line: String) -> String {
    if line.len() > MAX_LINE {
        let cut_at = line.floor_char_boundary(MAX_LINE);
        let dropped = line.len() - cut_at;
        line.truncate(cut_at);
        line.push_str(&format!("... ({dropped} more bytes cut)"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_a_steady_rate_and_the_dropped_reported_now_and_then() {
        let mut budget = LogBudget::default();
        let start = budget.refilled_at;
        let logged = (0..1000)
            .filter(|_| budget.admit_at(start) != Verdict::Drop)
            .count();
        assert_eq!(logged, 100);
        // Half a second later: ten more, the first reporting 900 dropped.
        let later = start + Duration::from_millis(500);
        assert_eq!(budget.admit_at(later), Verdict::Log { dropped: 900 });
        let more = (0..100)
            .filter(|_| budget.admit_at(later) != Verdict::Drop)
            .count();
        assert_eq!(more, 9);
        // The next report waits ten seconds, and then counts everything.
        let soon = later + Duration::from_secs(1);
        assert_eq!(budget.admit_at(soon), Verdict::Log { dropped: 0 });
        let late = later + REPORT_EVERY;
        assert_eq!(budget.admit_at(late), Verdict::Log { dropped: 91 });
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short".into()), "short");
        let long = "é".repeat(3000);
        let cut = cut(long);
        assert!(cut.starts_with(&"é".repeat(2048)));
        assert!(
            cut.ends_with("... (1904 more bytes cut)"),
            "{}",
            &cut[4000..]
        );
    }
}
