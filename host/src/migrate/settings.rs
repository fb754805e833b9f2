//! The TimescaleDB knobs of `migrate`. They reach the SQL files as session
//! settings (`omh.chunk_interval`, ...), read there with `current_setting`,
//! so the files stay plain SQL that psql can run too.

use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct TimescaleSettings {
    /// Time span of one TimescaleDB chunk of `readings` (e.g. 6h, 1d, 7d).
    /// Pick it so that the chunks of the last hours fit in memory.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = positive_duration)]
    pub chunk_interval: Duration,

    /// Compress chunks of `readings` and `conditions` whose data is older
    /// than this (columnar, typically 10x smaller, still queryable).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = positive_duration)]
    pub compress_after: Duration,

    /// Drop chunks of `readings` and `conditions` older than this, or
    /// `none` to keep everything.
    #[arg(long, value_name = "DURATION|none", default_value = "90d", value_parser = retention)]
    pub retain_for: Retention,
}

/// How long data is kept; `None` is forever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention(pub Option<Duration>);

impl TimescaleSettings {
    /// The session settings the SQL files read, as (name, value). No
    /// retention is the empty string: `current_setting` cannot be NULL.
    pub fn session_settings(&self) -> [(&'static str, String); 3] {
        [
            ("omh.chunk_interval", sql_interval(self.chunk_interval)),
            ("omh.compress_after", sql_interval(self.compress_after)),
            (
                "omh.retain_for",
                self.retain_for.0.map(sql_interval).unwrap_or_default(),
            ),
        ]
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration < Duration::from_secs(1) => Err("must be 1s or longer".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!("{error} (write e.g. 12h, 1d, 90d)")),
    }
}

fn retention(text: &str) -> Result<Retention, String> {
    if text == "none" {
        return Ok(Retention(None));
    }
    positive_duration(text).map(|duration| Retention(Some(duration)))
}

/// A PostgreSQL interval literal in the largest whole unit, so the server
/// shows it as written (`7 days`, not `168:00:00`).
fn sql_interval(duration: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000, "days"),
        (3_600_000, "hours"),
        (60_000, "minutes"),
        (1_000, "seconds"),
        (1, "milliseconds"),
    ];
    let millis = duration.as_millis();
    let (size, unit) = UNITS
        .into_iter()
        .find(|(size, _)| millis.is_multiple_of(*size))
        .expect("every duration is whole milliseconds at worst");
    format!("{} {unit}", millis / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_written_in_their_largest_unit() {
        for (text, expected) in [
            ("1d", "1 days"),
            ("90d", "90 days"),
            ("36h", "36 hours"),
            ("90m", "90 minutes"),
            ("1m 30s", "90 seconds"),
            ("1500ms", "1500 milliseconds"),
        ] {
            assert_eq!(sql_interval(positive_duration(text).unwrap()), expected);
        }
    }

    #[test]
    fn retention_can_be_none_but_never_zero() {
        assert_eq!(retention("none"), Ok(Retention(None)));
        assert_eq!(
            retention("30d"),
            Ok(Retention(Some(Duration::from_secs(30 * 86_400))))
        );
        assert!(retention("0s").is_err());
        assert!(retention("10us").is_err());
        assert!(retention("forever").is_err());
    }
}
