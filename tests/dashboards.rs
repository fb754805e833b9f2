//! Every query of every dashboard in `dashboards/omh/`, expanded the way
//! Grafana's PostgreSQL data source expands it, runs against a migrated
//! database holding data and returns rows: variable queries first (their
//! results become the variables' values, as when a user picks "All"), then
//! every panel's SQL at several `$__interval`s. A misspelt macro, variable
//! or column fails here instead of showing "No data" in Grafana.

mod support;

use anyhow::{Context, Result};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::postgres::{PgOptions, TestPostgres};
use support::site::repo_root;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Readings of two sites over the last 50 minutes: numeric and text tags,
/// some bad or uncertain, and a device name with quotes in it to prove the
/// variable quoting.
const DATA: &str = "
    INSERT INTO readings
    SELECT now() - make_interval(secs => step * 10), site, device, tag,
           CASE WHEN tag = 'state' THEN NULL ELSE step % 50 END,
           CASE WHEN tag = 'state' THEN 'RUN' END,
           CASE step % 7 WHEN 0 THEN 'bad' WHEN 1 THEN 'uncertain' ELSE 'good' END
      FROM generate_series(0, 300) AS step,
           (VALUES ('plant-a', 'press-1'), ('plant-a', 'line ''B'''), ('plant-b', 'oven-2'))
               AS devices (site, device),
           unnest(ARRAY['temperature', 'pressure', 'state']) AS tag;
    INSERT INTO conditions
    SELECT now() - make_interval(secs => step * 10), 20 + step % 5, 50 + step % 3
      FROM generate_series(0, 300) AS step;";

/// `$__interval`s a panel gets, from a narrow time range or wide window to
/// a wide range on a small one.
const INTERVALS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(60),
    Duration::from_secs(3600),
    Duration::from_secs(86_400),
];

struct Flavor {
    postgres: PgOptions,
    /// The data source's `timescaledb` switch (dashboards/README.md).
    timescaledb: bool,
    /// Run after the data is in.
    prepare: &'static str,
}

#[tokio::test]
async fn every_query_returns_rows_on_timescaledb_compressed_chunks() -> Result<()> {
    check_dashboards(Flavor {
        postgres: PgOptions { timescaledb: true },
        timescaledb: true,
        // Old data, the bulk of what dashboards read, is compressed.
        prepare: "SELECT count(compress_chunk(chunk))
                    FROM (SELECT show_chunks('readings') UNION ALL SELECT show_chunks('conditions'))
                         AS chunks (chunk)",
    })
    .await
}

#[tokio::test]
async fn every_query_returns_rows_on_plain_postgres() -> Result<()> {
    check_dashboards(Flavor {
        postgres: PgOptions::default(),
        timescaledb: false,
        prepare: "",
    })
    .await
}

async fn check_dashboards(flavor: Flavor) -> Result<()> {
    let pg = TestPostgres::start(flavor.postgres)?;
    pg.apply_migrations().await?;
    let client = pg.client().await?;
    client.batch_execute(DATA).await?;
    client.batch_execute(flavor.prepare).await?;

    let mut report = Report {
        datasource_uid: provisioned_datasource_uid()?,
        failures: Vec::new(),
        queries: 0,
    };
    for path in dashboard_files()? {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{file} is not JSON"))?;
        let mut expansion = grafana::Expansion {
            range: time_range(&dashboard).with_context(|| file.clone())?,
            interval: INTERVALS[0],
            variables: Vec::new(),
            timescaledb: flavor.timescaledb,
        };

        // In order, as Grafana does: each variable's rows are its values
        // (all of them selected) for the variables after it and the panels.
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = variable["name"].as_str().unwrap_or_default().to_string();
            let place = format!("{file}: variable {name}");
            report.check_datasource(&place, variable);
            let outcome = match variable_query(variable) {
                Some(sql) => run(&client, &expansion, sql).await,
                None => Err(anyhow::anyhow!("not a query variable with SQL")),
            };
            let values = report.check_rows(&place, outcome);
            let multi = variable["multi"] == true || variable["includeAll"] == true;
            expansion.variables.push(grafana::Variable {
                name,
                values,
                multi,
            });
        }

        for (panel, target) in panel_targets(&dashboard["panels"]) {
            let Some(sql) = target["rawSql"].as_str() else {
                continue;
            };
            let place = format!("{file}: panel {}", panel["title"]);
            report.check_datasource(&place, panel);
            report.check_datasource(&place, target);
            for interval in INTERVALS {
                expansion.interval = interval;
                let outcome = run(&client, &expansion, sql).await;
                let interval = grafana::format_interval(interval);
                report.check_rows(&format!("{place}, $__interval {interval}"), outcome);
            }
        }
    }
    assert!(report.queries >= 8, "only {} queries found", report.queries);
    assert!(
        report.failures.is_empty(),
        "{}",
        report.failures.join("\n\n")
    );
    Ok(())
}

struct Report {
    datasource_uid: String,
    failures: Vec<String>,
    queries: usize,
}

impl Report {
    /// A panel, target or variable naming another data source would find
    /// none once provisioned.
    fn check_datasource(&mut self, place: &str, node: &Value) {
        let used = &node["datasource"]["uid"];
        if !used.is_null() && *used != *self.datasource_uid {
            self.failures.push(format!(
                "{place}: data source {used}, the provisioned one is {:?}",
                self.datasource_uid
            ));
        }
    }

    /// The values of the first column, or nothing and a failure.
    fn check_rows(&mut self, place: &str, outcome: Result<Vec<String>>) -> Vec<String> {
        self.queries += 1;
        match outcome {
            Ok(values) if values.is_empty() => self.failures.push(format!("{place}: no rows")),
            Ok(values) => return values,
            Err(error) => self.failures.push(format!("{place}: {error:#}")),
        }
        Vec::new()
    }
}

/// Expands `sql` and runs it as Grafana does (simple protocol, one string);
/// returns the first column of each row as text.
async fn run(client: &Client, expansion: &grafana::Expansion, sql: &str) -> Result<Vec<String>> {
    let expanded = expansion.expand(sql).map_err(anyhow::Error::msg)?;
    let messages = client
        .simple_query(&expanded)
        .await
        .with_context(|| format!("running\n{expanded}"))?;
    Ok(messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_string()),
            _ => None,
        })
        .collect())
}

fn dashboard_files() -> Result<Vec<std::path::PathBuf>> {
    let dir = repo_root().join("dashboards/omh");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "json"));
    files.sort();
    assert!(
        files.len() >= 2,
        "dashboards in {}: {files:?}",
        dir.display()
    );
    Ok(files)
}

/// The `uid:` of the provisioned data source, which every query must use.
fn provisioned_datasource_uid() -> Result<String> {
    let path = repo_root().join("dashboards/provisioning/datasources/omh.yaml");
    std::fs::read_to_string(&path)?
        .lines()
        .find_map(|line| line.trim().strip_prefix("uid:"))
        .map(|uid| uid.trim().to_string())
        .with_context(|| format!("no uid in {}", path.display()))
}

/// A variable's SQL: a string in older dashboards, `rawSql` once the query
/// editor of Grafana 10+ has saved it.
fn variable_query(variable: &Value) -> Option<&str> {
    if variable["type"] != "query" {
        return None;
    }
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["rawSql"].as_str())
}

/// Every (panel, target), including panels inside collapsed rows.
fn panel_targets(panels: &Value) -> Vec<(&Value, &Value)> {
    panels
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| {
            let own = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| (panel, target));
            own.chain(panel_targets(&panel["panels"]))
        })
        .collect()
}

/// The dashboard's default time range, `now-<interval>` to `now`.
fn time_range(dashboard: &Value) -> Result<(SystemTime, SystemTime)> {
    let (from, to) = (&dashboard["time"]["from"], &dashboard["time"]["to"]);
    let span = from
        .as_str()
        .and_then(|from| from.strip_prefix("now-"))
        .filter(|_| to == "now")
        .with_context(|| {
            format!("time range {from} to {to}: this test knows now-<interval> to now")
        })?;
    // Grafana's time range is JavaScript milliseconds.
    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let now = UNIX_EPOCH + Duration::from_millis(millis as u64);
    Ok((now - grafana::parse_interval(span)?, now))
}

/// Grafana's PostgreSQL data source, as far as it turns a query into SQL:
/// the frontend's template variables, then the backend's global
/// substitutions and macros (pkg/tsdb/grafana-postgresql-datasource/
/// macros.go and sqleng/sql_engine.go). Anything Grafana would not expand,
/// or this test does not know, is an error.
mod grafana {
    use anyhow::{Result, bail};
    use regex::{Captures, Regex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A dashboard variable and its current values.
    pub struct Variable {
        pub name: String,
        pub values: Vec<String>,
        /// Multi-value or with "All": Grafana quotes its values.
        pub multi: bool,
    }

    pub struct Expansion {
        pub range: (SystemTime, SystemTime),
        pub interval: Duration,
        pub variables: Vec<Variable>,
        /// The data source's TimescaleDB switch: `$__timeGroup` becomes
        /// `time_bucket`.
        pub timescaledb: bool,
    }

    impl Expansion {
        pub fn expand(&self, sql: &str) -> Result<String, String> {
            let sql = self.template_variables(sql)?;
            let sql = self.global_substitutions(&sql);
            let sql = self.macros(&sql)?;
            match sql.find("$__") {
                Some(at) => Err(format!("unknown macro at {:?} in\n{sql}", &sql[at..])),
                None => Ok(sql),
            }
        }

        /// The frontend's `templateSrv.replace` with the SQL data sources'
        /// `interpolateVariable`. Names starting with `__` that are not
        /// variables are left for the backend, as Grafana leaves them.
        fn template_variables(&self, sql: &str) -> Result<String, String> {
            let pattern = Regex::new(
                r"\$(\w+)|\[\[([\s\S]+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}",
            )
            .unwrap();
            replace_all(&pattern, sql, |found| {
                let name = [1, 2, 4]
                    .iter()
                    .find_map(|&i| found.get(i))
                    .unwrap()
                    .as_str();
                let format = found.get(3).or(found.get(6)).map(|m| m.as_str());
                let (values, multi) = match self.variables.iter().find(|v| v.name == name) {
                    Some(variable) => (variable.values.clone(), variable.multi),
                    None => match self.builtin(name) {
                        Some(value) => (vec![value], false),
                        None if name.starts_with("__") => return Ok(found[0].to_string()),
                        None => return Err(format!("unknown variable {}", &found[0])),
                    },
                };
                format_values(&values, multi, format)
            })
        }

        /// Grafana's global variables that SQL may use.
        fn builtin(&self, name: &str) -> Option<String> {
            let millis = |time: SystemTime| time.duration_since(UNIX_EPOCH).unwrap().as_millis();
            Some(match name {
                "__interval" => format_interval(self.interval),
                "__interval_ms" => self.interval.as_millis().to_string(),
                "__from" => millis(self.range.0).to_string(),
                "__to" => millis(self.range.1).to_string(),
                _ => return None,
            })
        }

        /// sqleng.Interpolate: plain text replacements before the macros.
        fn global_substitutions(&self, sql: &str) -> String {
            sql.replace("$__interval_ms", &self.interval.as_millis().to_string())
                .replace("$__interval", &format_interval(self.interval))
                .replace(
                    "$__unixEpochFrom()",
                    &unix_seconds(self.range.0).to_string(),
                )
                .replace("$__unixEpochTo()", &unix_seconds(self.range.1).to_string())
        }

        /// postgresMacroEngine.Interpolate.
        fn macros(&self, sql: &str) -> Result<String, String> {
            let pattern = Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)").unwrap();
            replace_all(&pattern, sql, |found| {
                let mut name = &found[1];
                // Grafana before 5.3 wrote $__timeGroup(...), for the alias.
                if name == "__timeGroup"
                    && sql
                        .find(&found[0])
                        .and_then(|at| sql[at + found[0].len()..].chars().next())
                        == Some(',')
                {
                    name = "__timeGroupAlias";
                }
                let args: Vec<&str> = found[2]
                    .split(',')
                    .map(|arg| arg.trim_matches(' '))
                    .collect();
                self.macro_value(name, &args)
            })
        }

        fn macro_value(&self, name: &str, args: &[&str]) -> Result<String, String> {
            let (from, to) = self.range;
            let column = args[0];
            Ok(match name {
                "__time" => format!("{column} AS \"time\""),
                "__timeEpoch" => format!("extract(epoch from {column}) as \"time\""),
                "__timeFilter" => format!(
                    "{column} BETWEEN '{}' AND '{}'",
                    rfc3339_nano(from),
                    rfc3339_nano(to)
                ),
                "__timeFrom" => format!("'{}'", rfc3339_nano(from)),
                "__timeTo" => format!("'{}'", rfc3339_nano(to)),
                "__timeGroup" => {
                    let seconds = group_interval(name, args)?.as_secs_f64();
                    if self.timescaledb {
                        format!("time_bucket('{seconds:.3}s',{column})")
                    } else {
                        let seconds = go_float(seconds);
                        format!("floor(extract(epoch from {column})/{seconds})*{seconds}")
                    }
                }
                "__timeGroupAlias" => self.macro_value("__timeGroup", args)? + " AS \"time\"",
                "__unixEpochFilter" => format!(
                    "{column} >= {} AND {column} <= {}",
                    unix_seconds(from),
                    unix_seconds(to)
                ),
                "__unixEpochNanoFilter" => format!(
                    "{column} >= {} AND {column} <= {}",
                    unix_nanos(from),
                    unix_nanos(to)
                ),
                "__unixEpochNanoFrom" => unix_nanos(from).to_string(),
                "__unixEpochNanoTo" => unix_nanos(to).to_string(),
                "__unixEpochGroup" => {
                    let seconds = go_float(group_interval(name, args)?.as_secs_f64());
                    format!("floor(({column})/{seconds})*{seconds}")
                }
                "__unixEpochGroupAlias" => {
                    self.macro_value("__unixEpochGroup", args)? + " AS \"time\""
                }
                _ => return Err(format!("unknown macro ${name}")),
            })
        }
    }

    /// Regex::replace_all with a replacement that can fail.
    fn replace_all(
        pattern: &Regex,
        text: &str,
        mut replacement: impl FnMut(&Captures) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut error = None;
        let replaced = pattern.replace_all(text, |found: &Captures| {
            replacement(found).unwrap_or_else(|message| {
                error.get_or_insert(message);
                String::new()
            })
        });
        error.map_or(Ok(replaced.into_owned()), Err)
    }

    /// A variable's values in `${name:format}`; no format is the SQL data
    /// sources' own quoting.
    fn format_values(
        values: &[String],
        multi: bool,
        format: Option<&str>,
    ) -> Result<String, String> {
        let quote = |value: &String| format!("'{}'", value.replace('\'', "''"));
        Ok(match format {
            None if multi => values.iter().map(quote).collect::<Vec<_>>().join(","),
            None => values.join(",").replace('\'', "''"),
            Some("sqlstring") => values
                .iter()
                .map(|value| format!("'{}'", value.replace('\'', "''").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(","),
            Some("csv" | "raw") => values.join(","),
            Some(other) => {
                return Err(format!(
                    "variable format {other:?} is not known to this test"
                ));
            }
        })
    }

    /// The interval argument of `$__timeGroup` and its kin.
    fn group_interval(name: &str, args: &[&str]) -> Result<Duration, String> {
        match args {
            [_, interval] | [_, interval, _] => parse_interval(interval.trim_matches('\''))
                .map_err(|_| format!("error parsing interval {interval}")),
            _ => Err(format!(
                "macro {name} needs time column and interval and optional fill value"
            )),
        }
    }

    /// gtime.ParseInterval for the units Grafana writes: 500ms, 30s, 5m,
    /// 1h, 1d, 1w.
    pub fn parse_interval(text: &str) -> Result<Duration> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (count, unit) = text.split_at(split);
        let Ok(count) = count.parse::<u64>() else {
            bail!("interval {text:?}: no number");
        };
        let unit = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => bail!("interval {text:?}: unit not known to this test"),
        };
        Ok(unit * count as u32)
    }

    /// gtime.FormatInterval: the largest unit, rounded down.
    pub fn format_interval(interval: Duration) -> String {
        const UNITS: [(u128, &str); 6] = [
            (365 * 86_400_000, "y"),
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
            (1, "ms"),
        ];
        let millis = interval.as_millis();
        UNITS
            .iter()
            .find(|(size, _)| millis >= *size)
            .map_or("1ms".into(), |(size, unit)| {
                format!("{}{unit}", millis / size)
            })
    }

    /// Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped.
    fn rfc3339_nano(time: SystemTime) -> String {
        let text = humantime::format_rfc3339_nanos(time).to_string();
        let (seconds, fraction) = text.trim_end_matches('Z').split_once('.').unwrap();
        match fraction.trim_end_matches('0') {
            "" => format!("{seconds}Z"),
            fraction => format!("{seconds}.{fraction}Z"),
        }
    }

    /// Go's `%v` of a float64 (strconv 'g', shortest): exponent form from
    /// 1e6 up and below 1e-4.
    fn go_float(value: f64) -> String {
        if value != 0.0 && !(1e-4..1e6).contains(&value.abs()) {
            let text = format!("{value:e}");
            let (mantissa, exponent) = text.split_once('e').unwrap();
            let exponent: i32 = exponent.parse().unwrap();
            return format!(
                "{mantissa}e{}{:02}",
                if exponent < 0 { '-' } else { '+' },
                exponent.abs()
            );
        }
        value.to_string()
    }

    fn unix_seconds(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn unix_nanos(time: SystemTime) -> u128 {
        time.duration_since(UNIX_EPOCH).unwrap().as_nanos()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn expansion(timescaledb: bool) -> Expansion {
            let from = UNIX_EPOCH + Duration::from_secs(1_704_067_200); // 2024-01-01T00:00:00Z
            Expansion {
                range: (from, from + Duration::from_millis(3_600_500)),
                interval: Duration::from_secs(60),
                variables: vec![
                    Variable {
                        name: "site".into(),
                        values: vec!["a".into(), "it's".into()],
                        multi: true,
                    },
                    Variable {
                        name: "one".into(),
                        values: vec!["it's".into()],
                        multi: false,
                    },
                ],
                timescaledb,
            }
        }

        #[test]
        fn expands_as_grafana_does() {
            for (timescaledb, sql, expected) in [
                (
                    true,
                    "$__timeFilter(time)",
                    "time BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-01T01:00:00.5Z'",
                ),
                (
                    true,
                    "$__timeFrom() $__timeTo()",
                    "'2024-01-01T00:00:00Z' '2024-01-01T01:00:00.5Z'",
                ),
                (
                    true,
                    "$__time(t), $__timeEpoch(t)",
                    "t AS \"time\", extract(epoch from t) as \"time\"",
                ),
                (
                    true,
                    "$__timeGroupAlias(time, $__interval)",
                    "time_bucket('60.000s',time) AS \"time\"",
                ),
                (
                    true,
                    "GROUP BY $__timeGroup(time, '5m')",
                    "GROUP BY time_bucket('300.000s',time)",
                ),
                (
                    true,
                    "$__timeGroup(time, 5m, NULL), x",
                    "time_bucket('300.000s',time) AS \"time\", x",
                ),
                (
                    false,
                    "$__timeGroup(time, $__interval)",
                    "floor(extract(epoch from time)/60)*60",
                ),
                (
                    false,
                    "$__timeGroup(time, 2w)",
                    "floor(extract(epoch from time)/1.2096e+06)*1.2096e+06",
                ),
                (
                    true,
                    "$__unixEpochFilter(t)",
                    "t >= 1704067200 AND t <= 1704070800",
                ),
                (
                    true,
                    "$__unixEpochFrom() $__unixEpochTo()",
                    "1704067200 1704070800",
                ),
                (true, "$__unixEpochNanoFrom()", "1704067200000000000"),
                (
                    true,
                    "$__unixEpochGroupAlias(t, 1h)",
                    "floor((t)/3600)*3600 AS \"time\"",
                ),
                (
                    true,
                    "$__interval $__interval_ms ${__interval}",
                    "1m 60000 1m",
                ),
                (true, "$__from", "1704067200000"),
                (true, "IN ($site)", "IN ('a','it''s')"),
                (true, "IN (${site:sqlstring})", "IN ('a','it''s')"),
                (true, "[[site:csv]]", "a,it's"),
                (true, "'$one' ${one:sqlstring}", "'it''s' 'it''s'"),
            ] {
                assert_eq!(
                    expansion(timescaledb).expand(sql).as_deref(),
                    Ok(expected),
                    "{sql}"
                );
            }
        }

        #[test]
        fn what_grafana_would_not_expand_is_an_error() {
            for sql in [
                "$__timeFilterr(time)",
                "$__timefilter(time)",
                "WHERE $__timeFilter",
                "$__timeGroup(time)",
                "$__timeGroup(time, fortnight)",
                "$sitee",
                "${site:percentencode}",
            ] {
                assert!(expansion(true).expand(sql).is_err(), "{sql}");
            }
        }
    }
}
