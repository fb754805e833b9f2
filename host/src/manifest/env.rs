//! `${env:NAME}` and `${env:NAME:-default}` in manifest text, as Telegraf and
//! docker-compose users expect, so one manifest serves several machines (and
//! tests can point it at throwaway ports). The `env:` prefix keeps this apart
//! from `${tag}` placeholders that plugin settings (SQL templates) use.

const OPEN: &str = "${env:";

/// Returns the text with every reference replaced, or the first reference
/// that names an unset variable and has no default.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated `{OPEN}` reference"));
        };
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{env:{name}:-default}} to give a default)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "1884".to_string())
    }

    #[test]
    fn replaces_set_and_defaulted_variables() {
        let text = r#"listen = "0.0.0.0:${env:PORT}" url = "${env:DB:-sqlite:x.db}""#;
        assert_eq!(
            interpolate(text, env).unwrap(),
            r#"listen = "0.0.0.0:1884" url = "sqlite:x.db""#
        );
    }

    #[test]
    fn leaves_sql_template_placeholders_alone() {
        let text = "VALUES (now(), ${temperature})";
        assert_eq!(interpolate(text, env).unwrap(), text);
    }

    #[test]
    fn unset_without_default_names_the_variable() {
        let err = interpolate("${env:NOPE}", env).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
    }
}
