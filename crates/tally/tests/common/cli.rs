//! Running the `tally` binary's other commands as a user would (`tally events check`, `tally
//! verify`) and reading what they print.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `tally ARGS` in `dir` (so no `./tally.toml` of the caller's is read), without any `TALLY_*`
/// setting of the test's environment.
pub fn tally(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TALLY_") {
            command.env_remove(var);
        }
    }
    command.output().expect("run tally")
}

/// What a command answered.
pub struct Checked {
    /// Exit status 0.
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Checked {
    /// The `--json` summary (panics with the output when stdout is not one).
    pub fn summary(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "--json printed no JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `tally ARGS` run in `dir`, with its exit status and output.
pub fn run(dir: &Path, args: &[&str]) -> Checked {
    let out = tally(dir, args);
    Checked {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tally events check STORE_ARGS` (add `--json` for the summary as JSON), run in `dir`.
pub fn events_check(dir: &Path, store_args: &[&str]) -> Checked {
    let mut args = vec!["events", "check"];
    args.extend_from_slice(store_args);
    run(dir, &args)
}

/// A summary's counts: (type, schema version) → events.
pub fn counts(summary: &Value) -> BTreeMap<(String, u64), u64> {
    summary["counts"]
        .as_array()
        .unwrap_or_else(|| panic!("counts in {summary}"))
        .iter()
        .map(|c| {
            let key = (
                c["type"].as_str().expect("type").to_owned(),
                c["schema_version"].as_u64().expect("schema_version"),
            );
            (key, c["events"].as_u64().expect("events"))
        })
        .collect()
}

/// `tally ARGS` as a client of the server at `url` with `key` (`TALLY_URL`, `TALLY_KEY`), run in
/// `dir` with `envs` besides, not yet started (for a command that keeps running).
pub fn client_command(
    dir: &Path,
    url: &str,
    key: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TALLY_") {
            command.env_remove(var);
        }
    }
    command.env("TALLY_URL", url).env("TALLY_KEY", key);
    for (k, v) in envs {
        command.env(k, v);
    }
    command
}

/// [`client_command`] run to its end: exit status and output.
pub fn client(dir: &Path, url: &str, key: &str, args: &[&str], envs: &[(&str, &str)]) -> Checked {
    let out = client_command(dir, url, key, args, envs)
        .output()
        .expect("run tally");
    Checked {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
