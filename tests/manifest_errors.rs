//! `omh-host check` on malformed manifests: each case is a folder under
//! `tests/manifests/` with a `site.toml` and an `expected-error.txt` whose
//! every line must appear in the error output. Adding a case is adding a
//! folder. The shipped examples must pass the same check.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::site::{plugins_dir, plugins_with, repo_root, test_plugins_dir};

fn check(manifest: &Path, plugins: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omh-host"))
        .args(["check", "--manifest"])
        .arg(manifest)
        .env("OMH_PLUGINS_DIR", plugins)
        .env_remove("OMH_TEST_SURELY_UNSET")
        .output()
        .expect("omh-host runs")
}

#[test]
fn malformed_manifests_are_rejected_naming_file_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    // Real plugins plus one built for a WIT version this host does not support.
    let mut files: Vec<_> = std::fs::read_dir(plugins_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(test_plugins_dir().join("future-wit-driver.wasm"));
    let plugins = plugins_with(dir.path(), &files);

    let cases = repo_root().join("tests/manifests");
    let mut names: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "at least five cases");
    let mut failures = Vec::new();
    for name in &names {
        let case = cases.join(name);
        // Run from the case folder so messages name `site.toml` as a user would see it.
        let output = Command::new(env!("CARGO_BIN_EXE_omh-host"))
            .current_dir(&case)
            .args(["check", "--manifest", "site.toml"])
            .env("OMH_PLUGINS_DIR", &plugins)
            .env_remove("OMH_TEST_SURELY_UNSET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = std::fs::read_to_string(case.join("expected-error.txt")).unwrap();
        if output.status.success() {
            failures.push(format!("{name}: check passed but should fail"));
            continue;
        }
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            if !stderr.contains(line) {
                failures.push(format!("{name}: expected\n    {line}\n  in\n    {stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shipped_examples_pass_check() {
    for example in ["quickstart.toml", "seed-demo.toml"] {
        let output = check(&repo_root().join("examples").join(example), &plugins_dir());
        assert!(
            output.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn plugins_list_shows_world_and_version_and_rejects_other_wit_versions() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with(
        dir.path(),
        &[
            plugins_dir().join("modbus-tcp.wasm"),
            plugins_dir().join("timescale.wasm"),
            test_plugins_dir().join("future-wit-driver.wasm"),
        ],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_omh-host"))
        .args(["plugins", "list", "--dir"])
        .arg(&plugins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("modbus-tcp").contains("driver") && line("modbus-tcp").contains("0.2.0"),
        "{stdout}"
    );
    assert!(line("timescale").contains("sink"), "{stdout}");
    assert!(
        stdout.contains("omh:plugin@0.9.0") && stdout.contains("omh:plugin@0.2.0"),
        "rejection names both versions: {stdout}"
    );
}

#[test]
fn plugins_inspect_shows_world_imports_and_documented_settings() {
    let inspect = |file: std::path::PathBuf| {
        let output = Command::new(env!("CARGO_BIN_EXE_omh-host"))
            .args(["plugins", "inspect"])
            .arg(file)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let modbus = inspect(plugins_dir().join("modbus-tcp.wasm"));
    for expected in [
        "world     driver",
        "omh:plugin/driver-api@0.2.0",
        "wasi:sockets/tcp",
        "timeout_ms",
    ] {
        assert!(modbus.contains(expected), "{expected} in:\n{modbus}");
    }
    let timescale = inspect(plugins_dir().join("timescale.wasm"));
    assert!(
        timescale.contains("world     sink") && timescale.contains("mapping"),
        "{timescale}"
    );
    let future = inspect(test_plugins_dir().join("future-wit-driver.wasm"));
    assert!(
        future.contains("loadable  no") && future.contains("0.9.0"),
        "{future}"
    );
    assert!(future.contains("settings  (not documented"), "{future}");
}
