//! `cargo xtask soak`: the sniffer under steady and bursty traffic for minutes, delivering to a
//! collector that is restarted every minute; reports memory over time, totals and CPU.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use testbed::Topology;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::{collector::BenchCollector, doc, watch::Watched};
use testbed::{cmd, paths::target_dir};

/// Options of `cargo xtask soak`.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// Minutes of traffic.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Seconds between collector restarts (it stays down 2 s each time).
    #[arg(long, default_value_t = 60)]
    restart_every_secs: u64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 15)]
    sample_secs: u64,
}

fn rss_kib(pid: u32) -> Result<u64> {
    Ok(testbed::memory_kib(pid, "VmRSS")?)
}

/// The commands the soak runs, with the Debian packages that provide them.
pub const PACKAGES: &[(&str, &str)] = &[("ip", "iproute2"), ("iperf3", "iperf3")];

/// Runs the soak on the `sniffer` binary and prints a Markdown report (also
/// `target/bench/soak.md`).
pub fn run(args: &SoakArgs, sniffer: &Path) -> Result<()> {
    let bed = Topology::new("tssoak")?;
    let mut collector = Some(BenchCollector::start(&bed.server.name)?);
    let port = collector
        .as_ref()
        .map(|c| c.addr.port())
        .unwrap_or_default();
    let tally = collector
        .as_ref()
        .map(BenchCollector::shared)
        .context("collector")?;

    let mut sniffer_cmd = bed.server.command(sniffer.to_str().context("path")?);
    sniffer_cmd
        .env("PORTS", "5201,5202")
        .env("INTERFACE", "eth0")
        .env("OUTPUT_URL", format!("http://127.0.0.1:{port}/"))
        .env("STATS_INTERVAL_SECS", "0");
    let mut watched = Watched::spawn(sniffer_cmd)?;
    watched.wait_for("capture attached")?;
    let pid = watched.pid();

    // Steady: one iperf3 stream at 20 Mbit/s in 512-byte writes for the whole run.
    let mut steady_server = cmd::KillOnDrop(
        bed.server
            .command("iperf3")
            .args(["-s", "-p", "5201"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let _burst_server = cmd::KillOnDrop(
        bed.server
            .command("iperf3")
            .args(["-s", "-p", "5202"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    thread::sleep(Duration::from_millis(500));
    let total = Duration::from_secs(args.minutes * 60);
    let steady = cmd::KillOnDrop(
        bed.client
            .command("iperf3")
            .args([
                "-c", "10.0.0.2", "-p", "5201", "-b", "20M", "-l", "512", "-t",
            ])
            .arg(total.as_secs().to_string())
            .stdout(Stdio::null())
            .spawn()?,
    );

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next_restart = Duration::from_secs(args.restart_every_secs);
    let mut restarts = 0;
    while start.elapsed() < total {
        // Bursts: a short full-speed small-write connection every sample period.
        let _ = bed
            .client
            .command("iperf3")
            .args(["-c", "10.0.0.2", "-p", "5202", "-N", "-l", "64", "-t", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if start.elapsed() >= next_restart {
            drop(collector.take());
            thread::sleep(Duration::from_secs(2));
            collector = Some(BenchCollector::start_on(
                &bed.server.name,
                port,
                std::sync::Arc::clone(&tally),
            )?);
            restarts += 1;
            next_restart += Duration::from_secs(args.restart_every_secs);
        }
        let rss = rss_kib(pid)?;
        let delivered = tally.lock().map(|t| t.1.records).unwrap_or_default();
        eprintln!(
            "soak: {:>4} s  RSS {rss} KiB  delivered {delivered}",
            start.elapsed().as_secs()
        );
        samples.push((start.elapsed().as_secs(), rss, delivered));
        let wake = start.elapsed() + Duration::from_secs(args.sample_secs);
        while start.elapsed() < wake.min(total) {
            thread::sleep(Duration::from_millis(200));
        }
    }
    drop(steady);
    let _ = steady_server.0.kill();
    thread::sleep(Duration::from_secs(1));
    let (cpu, peak_kib, lines) = watched.stop()?;
    let stopped: Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["msg"] == "stopped")
        .context("no stopped line")?;
    let field = |name: &str| stopped[name].as_u64().unwrap_or_default();
    let at_collector = tally.lock().map(|t| t.1).unwrap_or_default();
    drop(collector);

    let mut text = format!(
        "{} min: iperf3 20 Mbit/s in 512-byte writes on port 5201, plus a 2 s burst of 64-byte \
         TCP_NODELAY writes on port 5202 every {} s; the collector restarted every {} s ({} restarts, \
         down 2 s each).\n\n| t (s) | RSS KiB | records at collector |\n|---|---|---|\n",
        args.minutes, args.sample_secs, args.restart_every_secs, restarts
    );
    for (t, rss, delivered) in &samples {
        let _ = writeln!(text, "| {t} | {rss} | {delivered} |");
    }
    let _ = writeln!(
        text,
        "\nTotals: matched {}, delivered {}, dropped {} (ring_full {}, buffer_full {}, rejected {}, undeliverable {}); \
         the collector received {} records and {} reported dropped in {} distinct batches. \
         Sniffer CPU {:.1} s over {:.0} s ({:.1} % of one core); peak RSS {:.1} MiB.",
        field("matched"),
        field("delivered"),
        field("dropped"),
        field("dropped_ring_full"),
        field("dropped_buffer_full"),
        field("dropped_rejected"),
        field("dropped_undeliverable"),
        at_collector.records,
        at_collector.dropped,
        at_collector.batches,
        cpu,
        total.as_secs_f64(),
        cpu * 100.0 / total.as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("soak.md"), &text)?;
    println!("{text}");
    doc::update("soak", &text)?;
    ensure!(
        field("delivered") + field("dropped") == field("matched"),
        "accounting does not add up"
    );
    Ok(())
}
