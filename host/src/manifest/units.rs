//! Human units in the manifest: durations (`"500ms"`, `"1s"`, or an integer
//! of milliseconds as Neuron writes intervals) and byte sizes (`"64MiB"`).
//! Each deserializer's error quotes the bad value, so the manifest error can
//! name it next to the key path.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a duration such as "500ms", "1s", "2m", or an integer of milliseconds"#)
        }
        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("{ms} is not a duration (it is negative)")))
        }
        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text.trim()).map_err(|_| {
                E::custom(format!(
                    r#""{text}" is not a duration (examples: "500ms", "1s", "2m")"#
                ))
            })
        }
    }
    deserializer.deserialize_any(DurationVisitor)
}

pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

pub fn optional_byte_size<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    byte_size(deserializer).map(Some)
}

/// Parses `"64MiB"`, `"512 KiB"`, `"1GiB"`, `"1000000"` (bytes) or an integer.
pub fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct SizeVisitor;
    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a size such as "64MiB", "512KiB" or an integer of bytes"#)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("{n} is not a size (it is negative)")))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse_byte_size(text).ok_or_else(|| {
                E::custom(format!(
                    r#""{text}" is not a size (examples: "64MiB", "512KiB", "1GiB")"#
                ))
            })
        }
    }
    deserializer.deserialize_any(SizeVisitor)
}

fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse_byte_size;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_byte_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_byte_size("100"), Some(100));
        assert_eq!(parse_byte_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_byte_size("lots"), None);
        assert_eq!(parse_byte_size("12 parsecs"), None);
    }
}
