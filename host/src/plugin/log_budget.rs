//! How much a plugin instance may write to the host's log: lines are cut
//! at `MAX_LINE` bytes, and a token bucket allows bursts of `BURST` lines
//! and `PER_SECOND` lines a second after that. A plugin logging in a loop
//! would otherwise fill the disk under the host's log within its call
//! deadline. Suppressed lines are counted, and the count is logged with the
//! next line let through.

use std::time::Instant;

const MAX_LINE: usize = 4096;
const BURST: f64 = 100.0;
const PER_SECOND: f64 = 20.0;

pub struct LogBudget {
    tokens: f64,
    refilled_at: Instant,
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were dropped since the last one logged.
    Log {
        suppressed: u64,
    },
    Drop,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            tokens: BURST,
            refilled_at: Instant::now(),
            suppressed: 0,
        }
    }
}

impl LogBudget {
    pub fn admit(&mut self) -> Verdict {
        self.admit_at(Instant::now())
    }

    fn admit_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * PER_SECOND).min(BURST);
        self.refilled_at = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return Verdict::Drop;
        }
        self.tokens -= 1.0;
        Verdict::Log {
            suppressed: std::mem::take(&mut self.suppressed),
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
    fn a_burst_then_a_steady_rate_and_the_dropped_are_counted() {
        let mut budget = LogBudget::default();
        let start = budget.refilled_at;
        let logged = (0..1000)
            .filter(|_| budget.admit_at(start) != Verdict::Drop)
            .count();
        assert_eq!(logged, 100);
        // Half a second later: ten more, the first saying 900 were dropped.
        let later = start + Duration::from_millis(500);
        assert_eq!(budget.admit_at(later), Verdict::Log { suppressed: 900 });
        let more = (0..100)
            .filter(|_| budget.admit_at(later) != Verdict::Drop)
            .count();
        assert_eq!(more, 9);
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
