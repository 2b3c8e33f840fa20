//! One trial: a load through the veth while one capturer watches the server's `eth0`, and what
//! it measured.

use std::{
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use testbed::Topology;

use super::{BenchArgs, PORT, SERVER};
use testbed::{cmd, paths::target_dir};

use crate::{
    collector::{BenchCollector, Tally},
    perf::{CpuShares, Sampler},
    watch::{Watched, stopped_line},
};

/// What iperf3 sends.
#[derive(Clone, Copy)]
pub enum Load {
    /// `-N -l <write_size>`: as many packets as possible.
    SmallPackets,
    /// `-N -l <write_size> -b <paced_mbits>M`: the same packets at a rate every capturer keeps
    /// up with, so all see the same traffic. At the highest rate the sender sometimes falls
    /// into coalescing writes into large segments, which changes the packets counted.
    Paced,
    /// iperf3's defaults: 128 KiB writes, as many bytes as possible.
    Bulk,
}

/// Who watches the interface during a run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Capturer {
    Nobody,
    Sniffer,
    /// The sniffer delivering batches to a local collector.
    SnifferToCollector,
    Tcpdump,
}

impl Capturer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Nobody => "no capture",
            Self::Sniffer => "sniffer → stdout",
            Self::SnifferToCollector => "sniffer → HTTP collector",
            Self::Tcpdump => "tcpdump -s 96 -w /dev/null",
        }
    }
}

/// What one run measured.
pub struct Trial {
    pub capturer: Capturer,
    pub gbits: f64,
    pub wire_packets: u64,
    pub seconds: f64,
    /// Records written (sniffer) or packets captured (tcpdump).
    pub captured: u64,
    /// Packets the capturer's kernel side saw (sniffer `matched`, tcpdump "received by filter").
    pub seen: u64,
    pub dropped: u64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// What the collector received (delivery run only).
    pub delivered: Option<Tally>,
    /// CPU by attribution while iperf3 ran.
    pub cpu: CpuShares,
}

fn number_before(lines: &[String], suffix: &str) -> Result<u64> {
    lines
        .iter()
        .find_map(|l| l.strip_suffix(suffix).and_then(|n| n.trim().parse().ok()))
        .with_context(|| format!("no \"N{suffix}\" line in {lines:?}"))
}

pub fn trial(
    bed: &Topology,
    capturer: Capturer,
    load: Load,
    args: &BenchArgs,
    sniffer: &str,
) -> Result<Trial> {
    let mut server = bed.server.command("iperf3");
    server.args(["-s", "-1", "-p", PORT]).stdout(Stdio::null());
    let mut server = server.spawn().context("cannot start iperf3 -s")?;
    let collector = match capturer {
        Capturer::SnifferToCollector => Some(BenchCollector::start(&bed.server.name)?),
        _ => None,
    };
    let watched = match capturer {
        Capturer::Nobody => None,
        Capturer::Sniffer | Capturer::SnifferToCollector => {
            let mut cmd = bed.server.command(sniffer);
            cmd.env("PORTS", PORT).env("INTERFACE", "eth0");
            if let Some(collector) = &collector {
                cmd.env("OUTPUT_URL", format!("http://{}/", collector.addr));
            }
            let mut w = Watched::spawn(cmd)?;
            w.wait_for("capture attached")?;
            Some(w)
        }
        Capturer::Tcpdump => {
            let mut cmd = bed.server.command("tcpdump");
            cmd.args([
                "-i",
                "eth0",
                "-s",
                "96",
                "-w",
                "/dev/null",
                "tcp",
                "port",
                PORT,
            ]);
            let mut w = Watched::spawn(cmd)?;
            w.wait_for("listening on")?;
            Some(w)
        }
    };
    thread::sleep(Duration::from_millis(300));
    let sampler = Sampler::start(&target_dir().join("bench/perf.data"))?;
    let before = bed.server.packets("eth0")?;
    let start = Instant::now();
    let mut client = bed.client.command("iperf3");
    client.args([
        "-c",
        SERVER,
        "-p",
        PORT,
        "-J",
        "-t",
        &args.seconds.to_string(),
    ]);
    match load {
        Load::SmallPackets => {
            client.args(["-N", "-l", &args.write_size.to_string()]);
        }
        Load::Paced => {
            client.args(["-N", "-l", &args.write_size.to_string()]);
            client.args(["-b", &format!("{}M", args.paced_mbits)]);
        }
        Load::Bulk => {}
    }
    let out = cmd::stdout(&mut client)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = sampler.stop(watched.as_ref().map(Watched::pid))?;
    let report: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let gbits = report["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no throughput")?
        / 1e9;
    thread::sleep(Duration::from_millis(300));
    let wire_packets = bed.server.packets("eth0")? - before;
    let _ = server.wait();

    let mut result = Trial {
        capturer,
        gbits,
        wire_packets,
        seconds,
        captured: 0,
        seen: 0,
        dropped: 0,
        cpu_seconds: 0.0,
        peak_rss_kib: 0,
        delivered: None,
        cpu,
    };
    if let Some(watched) = watched {
        let (cpu, rss, lines) = watched.stop()?;
        result.cpu_seconds = cpu;
        result.peak_rss_kib = rss;
        if capturer != Capturer::Tcpdump {
            let field = stopped_line(&lines)?;
            result.captured = field("records")?;
            result.seen = field("matched")?;
            result.dropped = field("dropped_ring_full")?;
            result.delivered = collector.as_ref().map(BenchCollector::tally);
        } else {
            result.captured = number_before(&lines, " packets captured")?;
            result.seen = number_before(&lines, " packets received by filter")?;
            result.dropped = number_before(&lines, " packets dropped by kernel")?;
        }
    }
    Ok(result)
}
