//! Running the `floatilla` binary in tests: `serve` processes that are stopped when a test ends.

// Each test file uses its own part of these.
#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_floatilla");

/// A child process that is killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `serve` process that is listening.
pub struct Served {
    _process: Running,
    pub url: String,
}

/// Starts `floatilla serve ARGS`; [`wait_listening`] waits until it listens. Starting several
/// first and waiting after lets them start at the same moment.
pub fn spawn_serve(args: &[&str], envs: &[(&str, &str)]) -> Running {
    Running(
        Command::new(BIN)
            .arg("serve")
            .args(args)
            .envs(envs.iter().copied())
            .env("FLOATILLA_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start floatilla serve"),
    )
}

/// Waits for the `listening on URL` line.
pub fn wait_listening(mut process: Running) -> Served {
    let stdout = process.0.stdout.take().expect("piped stdout");
    let first = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line")
        .expect("readable");
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    Served {
        _process: process,
        url,
    }
}

/// Starts `floatilla serve ARGS` and waits until it listens.
pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> Served {
    wait_listening(spawn_serve(args, envs))
}

/// Runs `floatilla admin --data-dir DIR ARGS`: its stdout, or its stderr when it fails.
pub fn admin(data_dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(BIN)
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("FLOATILLA_LOG", "warn")
        .output()
        .expect("run floatilla admin");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
