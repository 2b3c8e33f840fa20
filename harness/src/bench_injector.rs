//! The injector part of `cargo xtask bench`: admission reviews per second and latency of the
//! injector over TLS with keep-alive on loopback, driven by `wrk` with the reference
//! Deployment-created pod (`injector/tests/fixtures/deployment-pod.json`).

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use testbed::{
    cmd,
    injector::{localhost_certs, serve_on_loopback},
    paths::{target_dir, workspace_root},
};

/// One wrk run's figures.
struct Run {
    connections: u32,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

/// Parses a wrk duration such as `212.00us`, `1.05ms` or `2.00s` into milliseconds.
fn millis(value: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn wrk(url: &str, script: &str, connections: u32, seconds: u32) -> Result<Run> {
    let out = cmd::stdout(
        Command::new("wrk")
            .args([
                "-t",
                "2",
                "-c",
                &connections.to_string(),
                "-d",
                &format!("{seconds}s"),
            ])
            .args(["--latency", "-s", script, url]),
    )?;
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
            .with_context(|| format!("wrk printed no {prefix:?}:\n{out}"))
    };
    let requests_per_second: f64 = field("Requests/sec:")?.parse()?;
    let p50_ms = millis(field("50%")?).context("50% latency")?;
    let p99_ms = millis(field("99%")?).context("99% latency")?;
    let errors = out
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Run {
        connections,
        requests_per_second,
        p50_ms,
        p99_ms,
        errors,
    })
}

fn peak_rss_mib(pid: u32) -> Result<f64> {
    Ok(testbed::memory_kib(pid, "VmHWM")? as f64 / 1024.0)
}

/// Runs wrk for `seconds` at 4 and then 32 connections; returns the Markdown section.
pub fn run(binary: &Path, seconds: u32) -> Result<String> {
    let root = workspace_root();
    let dir = target_dir().join("bench");
    let certs = dir.join("injector-certs");
    localhost_certs(binary, &certs)?;
    let fixture = root.join("injector/tests/fixtures/deployment-pod.json");
    let script = dir.join("mutate.lua");
    fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
            fixture.display()
        ),
    )?;
    let port = 18_443;
    let injector = serve_on_loopback(binary, &certs, port)?;
    let url = format!("https://localhost:{port}/mutate");
    let script = script.to_str().context("non-UTF-8 path")?;
    // Warm-up, so connection setup and first allocations are not measured.
    wrk(&url, script, 4, 2)?;
    let mut runs = Vec::new();
    for connections in [4, 32] {
        eprintln!("bench: injector, {connections} connections …");
        runs.push(wrk(&url, script, connections, seconds)?);
    }
    let rss = peak_rss_mib(injector.0.id())?;
    let mut text = format!(
        "wrk -t2 -d{}s --latency, POST /mutate over TLS with keep-alive on loopback, body {} ({} bytes), RUST_LOG=warn.\n\n\
         | connections | reviews/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|\n",
        seconds,
        "injector/tests/fixtures/deployment-pod.json",
        fs::metadata(&fixture)?.len()
    );
    for run in &runs {
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.3} | {:.3} | {} |",
            run.connections,
            run.requests_per_second,
            run.p50_ms,
            run.p99_ms,
            if run.errors.is_empty() {
                "none"
            } else {
                &run.errors
            }
        );
    }
    let _ = writeln!(text, "\nInjector peak RSS: {rss:.1} MiB.");
    if runs.iter().any(|r| !r.errors.is_empty()) {
        bail!("some requests failed:\n{text}");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn wrk_durations() {
        assert_eq!(millis("212.00us"), Some(0.212));
        assert_eq!(millis("1.05ms"), Some(1.05));
        assert_eq!(millis("2.00s"), Some(2000.0));
        assert_eq!(millis("fast"), None);
    }
}
