//! One trial: a load through the veth while one capturer watches the server's `eth0`, and what
//! it measured.
//!
//! A bulk transfer is also run on a twin: an identical veth nobody watches, in one-second bursts
//! alternating with the watched veth's (A B B A …). This machine's speed drifts by a third over
//! seconds, more than a capturer costs a bulk transfer, so only bursts next to each other are
//! compared.

use std::{process::Stdio, thread, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::Value;
use testbed::Topology;

use super::{BenchArgs, PORT, SERVER, report::median};
use testbed::{
    cmd::{self, KillOnDrop},
    paths::target_dir,
};

use crate::{
    collector::{BenchCollector, Tally},
    perf::{CpuShares, Sampler, Span},
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
    /// iperf3's defaults: 128 KiB writes, as many bytes as possible, in bursts alternating
    /// with the twin's.
    Bulk,
}

/// Seconds per burst of a bulk trial.
const BURST_SECONDS: u32 = 1;

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
    /// CPU by attribution while iperf3 ran on the watched veth.
    pub cpu: CpuShares,
    /// Bulk trials only: the twin's speed beside the watched veth's.
    pub twin: Option<Twin>,
}

/// What the unwatched twin of a bulk trial measured in the bursts alternating with the watched
/// veth's.
pub struct Twin {
    /// The twin's mean speed over its bursts.
    pub gbits: f64,
    /// The watched veth's speed as a share of the twin's, in percent: the median over adjacent
    /// pairs of bursts.
    pub percent: f64,
}

fn number_before(lines: &[String], suffix: &str) -> Result<u64> {
    lines
        .iter()
        .find_map(|l| l.strip_suffix(suffix).and_then(|n| n.trim().parse().ok()))
        .with_context(|| format!("no \"N{suffix}\" line in {lines:?}"))
}

/// An iperf3 server in `bed`'s server namespace, stopped on drop.
fn iperf3_server(bed: &Topology) -> Result<KillOnDrop> {
    let mut server = bed.server.command("iperf3");
    server.args(["-s", "-p", PORT]).stdout(Stdio::null());
    Ok(KillOnDrop(
        server.spawn().context("cannot start iperf3 -s")?,
    ))
}

/// iperf3 from `bed`'s client namespace for `seconds`, with `load`'s options; its speed in Gbit/s
/// and the span it ran in.
fn iperf3(bed: &Topology, load: Load, seconds: u32, args: &BenchArgs) -> Result<(f64, Span)> {
    let mut client = bed.client.command("iperf3");
    client.args(["-c", SERVER, "-p", PORT, "-J", "-t", &seconds.to_string()]);
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
    // A server just done with a test may still refuse the next one as busy for a moment.
    let mut attempts = 0;
    let (out, span) = loop {
        attempts += 1;
        match Span::of(|| cmd::stdout(&mut client)) {
            (Ok(out), span) => break (out, span),
            (Err(_), _) if attempts < 5 => thread::sleep(Duration::from_millis(100)),
            (Err(e), _) => return Err(e),
        }
    };
    let report: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let gbits = report["end"]["sum_sent"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no throughput")?
        / 1e9;
    Ok((gbits, span))
}

/// `pairs` pairs of bulk bursts, A B B A …, on the watched `bed` and the unwatched `twin`: the
/// watched veth's mean speed, the spans of its bursts, and the twin's measure.
fn bursts(
    bed: &Topology,
    twin: &Topology,
    pairs: u32,
    args: &BenchArgs,
) -> Result<(f64, Vec<Span>, Twin)> {
    let (mut watched, mut unwatched, mut spans) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        // A B, then B A: a steady drift favours neither veth.
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for watched_now in order {
            if watched_now {
                let (gbits, span) = iperf3(bed, Load::Bulk, BURST_SECONDS, args)?;
                watched.push(gbits);
                spans.push(span);
            } else {
                unwatched.push(iperf3(twin, Load::Bulk, BURST_SECONDS, args)?.0);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratios = watched
        .iter()
        .zip(&unwatched)
        .map(|(w, u)| w * 100.0 / u)
        .collect();
    let twin = Twin {
        gbits: mean(&unwatched),
        percent: median(ratios).context("no bursts")?,
    };
    Ok((mean(&watched), spans, twin))
}

/// One run of `load` with `capturer` watching `bed`'s server `eth0`; bulk loads alternate with
/// `twin`, which nobody watches.
pub fn trial(
    bed: &Topology,
    twin: &Topology,
    capturer: Capturer,
    load: Load,
    args: &BenchArgs,
    sniffer: &str,
) -> Result<Trial> {
    let _server = iperf3_server(bed)?;
    let _twin_server = matches!(load, Load::Bulk)
        .then(|| iperf3_server(twin))
        .transpose()?;
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
    let (gbits, spans, twin) = match load {
        Load::Bulk => {
            let (gbits, spans, twin) = bursts(bed, twin, args.seconds, args)?;
            (gbits, spans, Some(twin))
        }
        Load::SmallPackets | Load::Paced => {
            let (gbits, span) = iperf3(bed, load, args.seconds, args)?;
            (gbits, vec![span], None)
        }
    };
    let cpu = sampler.stop(watched.as_ref().map(Watched::pid), &spans)?;
    let seconds = spans.iter().map(|s| s.seconds()).sum();
    thread::sleep(Duration::from_millis(300));
    let wire_packets = bed.server.packets("eth0")? - before;

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
        twin,
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
