//! Typed plugin settings from the manifest's `settings` table.

use serde::de::DeserializeOwned;

use crate::Error;

/// Deserializes the `settings` JSON the host passes to `configure`.
///
/// Failures become [`Error::InvalidConfig`] naming the offending field, so
/// the operator knows which manifest line to fix. Give every optional field a
/// `#[serde(default)]`: a plugin without a `settings` table receives `{}`.
pub fn settings<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let reason = error.into_inner();
        // A root-level problem (missing field, not an object) has path ".".
        let message = if path == "." {
            format!("invalid settings: {reason}")
        } else {
            format!("invalid setting `{path}`: {reason}")
        };
        Error::InvalidConfig(message)
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default)]
        timeout_ms: u32,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn empty_object_uses_defaults() {
        let parsed: Example = settings("{}").unwrap();
        assert_eq!(parsed.timeout_ms, 0);
        assert_eq!(parsed.name, None);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let Err(Error::InvalidConfig(message)) = settings::<Example>(r#"{"timeout_ms": "soon"}"#)
        else {
            panic!("expected invalid-config");
        };
        assert!(message.contains("`timeout_ms`"), "{message}");
    }

    #[test]
    fn unknown_field_is_named() {
        let Err(Error::InvalidConfig(message)) = settings::<Example>(r#"{"timeout": 5}"#) else {
            panic!("expected invalid-config");
        };
        assert!(message.contains("`timeout`"), "{message}");
    }
}
