//! The flood: the highest packet rate this machine makes, side by side for every capturer.
//!
//! `trafgen` (Debian's netsniff-ng) sends crafted TCP frames through the veth from the client
//! namespace, pinned to CPU 0; the capturer watches the server's `eth0`, pinned to CPU 1. The
//! frames carry another host's MAC address, so the server's stack drops them at once, but every
//! packet tap still sees them: what is measured is capture alone.
//!
//! - *Process CPU* is the capturer's own (every thread, from `/proc/PID/task/*/schedstat`, to
//!   the nanosecond) from just before the flood until it has delivered everything, divided by
//!   the packets it captured: the sniffer's userspace, tcpdump's copy loop. Start-up (the
//!   verifier runs in the loader's `bpf()` call) and shutdown are left out.
//! - *Kernel side*: on a veth, the receive path — packet taps, the sniffer's eBPF program and
//!   ring buffer, tcpdump's `tpacket_rcv` copy — runs on the sender's CPU, in the sender's
//!   context or in `ksoftirqd/0` when softirqs are deferred (this kernel counts softirq time to
//!   the task it interrupts: no `CONFIG_IRQ_TIME_ACCOUNTING`). So it is the CPU per packet of the
//!   sender and `ksoftirqd/0` on the watched veth minus on a second, identical veth nobody
//!   watches. This machine's speed drifts by a third from one second to the next, more than
//!   the difference, so the flood is sent in short bursts alternating between the two veths
//!   (A B B A …) and the difference is the median over adjacent pairs.

use std::{fmt::Write as _, fs, process::Command, thread, time::Duration};

use anyhow::{Context as _, Result, ensure};
use sidecar_contract::CAPTURE_PORT;
use testbed::{Netns, Topology};

use super::report::median;
use testbed::paths::target_dir;

use crate::{
    collector::BenchCollector,
    watch::{Watched, cpu_ns, kernel_thread, logged, run_measured, stopped_line},
};

/// How long after the flood the capturer's CPU is still counted: longer than the sniffer's
/// default `BATCH_MAX_WAIT_MS`, so the last partial batch is encoded and sent within it.
const SETTLE: Duration = Duration::from_millis(1300);

/// The port the frames go to.
const PORT: u16 = 5201;

/// Bursts per flood, alternating between the watched and the unwatched veth.
const BURSTS: u64 = 10;

/// Who watches during a flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flooded {
    /// `tcpdump -s 96 -w /dev/null`.
    Tcpdump,
    /// The sniffer writing NDJSON to stdout (`/dev/null`).
    Stdout,
    /// The sniffer delivering to a local collector that only reads bodies, in a format.
    Http(&'static str, &'static str),
    /// The sniffer tracking connections (`RECORDS` `connections` or `both`), delivering `batch`
    /// bodies, with the flood spread over this many connections (all fit in `CONNECTION_MAX`).
    Tracking(&'static str, u64),
    /// The sniffer writing its records to stdout (`/dev/null`: the injector's default, no
    /// `outputUrl`) or delivering `batch` bodies (`true`), while a packet capture (`GET
    /// /capture`, headers only) streams to a client that only reads (`curl -o /dev/null`).
    Capture(bool),
    /// `--baseline`: another sniffer binary (an earlier commit's) delivering `batch` bodies, for
    /// a same-run comparison.
    Baseline,
}

impl Flooded {
    /// Every capturer, in the order they run in a round (and [`Self::Baseline`] when asked).
    /// What a goal compares runs side by side, within a round, while the machine runs at one
    /// speed: the captures next to tcpdump, `RECORDS=both` right after packet records (`batch`).
    pub const ALL: [Self; 13] = [
        Self::Capture(false),
        Self::Capture(true),
        Self::Tcpdump,
        Self::Stdout,
        Self::Http("batch", "protobuf"),
        Self::Tracking("both", FEW_CONNECTIONS),
        Self::Tracking("both", FLOOD_CONNECTIONS),
        Self::Tracking("connections", FEW_CONNECTIONS),
        Self::Tracking("connections", FLOOD_CONNECTIONS),
        Self::Http("ndjson", "protobuf"),
        Self::Http("otlp", "protobuf"),
        Self::Http("otlp", "json"),
        Self::Http("loki", "protobuf"),
    ];

    /// Connections the flood's frames belong to.
    const fn connections(self) -> u64 {
        match self {
            Self::Tracking(_, connections) => connections,
            _ => FLOOD_CONNECTIONS,
        }
    }

    /// Name in the report.
    pub fn name(self) -> String {
        match self {
            Self::Tcpdump => "tcpdump -s 96 -w /dev/null".to_owned(),
            Self::Stdout => "sniffer → stdout".to_owned(),
            Self::Http("otlp", encoding) => format!("sniffer → HTTP, otlp ({encoding})"),
            Self::Http(format, _) => format!("sniffer → HTTP, {format}"),
            Self::Tracking(records, connections) => {
                format!("sniffer → HTTP, batch, RECORDS={records}, {connections} connections")
            }
            Self::Capture(false) => "sniffer → stdout, + a pcapng capture streaming".to_owned(),
            Self::Capture(true) => "sniffer → HTTP, batch, + a pcapng capture streaming".to_owned(),
            Self::Baseline => "baseline sniffer (--baseline) → HTTP, batch".to_owned(),
        }
    }
}

/// What one flood measured.
pub struct FloodTrial {
    /// Who watched.
    pub capturer: Flooded,
    /// Frames sent to the watched veth (as many went to the unwatched one).
    pub sent: u64,
    /// Packets per second the sender reached on the watched veth.
    pub rate: f64,
    /// The sender's CPU nanoseconds per packet on the unwatched veth (median of the bursts).
    pub bare_ns: f64,
    /// The kernel side: nanoseconds per packet more on the watched veth than on the unwatched one
    /// (median over adjacent pairs of bursts).
    pub kernel_ns: f64,
    /// The capturer's CPU seconds during the flood and peak RSS (KiB).
    pub process: (f64, u64),
    /// Records written (sniffer) or packets captured (tcpdump).
    pub captured: u64,
    /// Losses: the sniffer's ring-full and delivery drops, tcpdump's kernel drops.
    pub dropped: u64,
    /// Records the collector took (the sniffer's `delivered`), for HTTP runs.
    pub delivered: Option<u64>,
    /// Packets the capture wrote, and lost, for [`Flooded::Capture`] runs.
    pub streamed: Option<(u64, u64)>,
}

/// Connections in the flood: one per source port of [`config`]'s range.
const FLOOD_CONNECTIONS: u64 = 40_001;
/// Connections in the tracking runs whose table stays in the CPU caches.
const FEW_CONNECTIONS: u64 = 1_024;

/// The flood's frames: from the client's MAC to another host's, TCP to `PORT`, source ports
/// counting up over `connections` ports (as many connections, mid-stream), 64 bytes in all.
/// Sequence and acknowledgement numbers have ten digits and the window five, as in real
/// traffic (and in `../shared/bench/capcost.sh`): with trafgen's zeros every record was 19 bytes
/// shorter and its numbers one digit each, which made the sniffer's figure 30 ns a packet
/// cheaper than the same packets with real numbers. They stay the same within a connection, so
/// the tracker sees each packet as a repeat, as before.
fn config(client_mac: &str, connections: u64) -> String {
    let last = 20_000 + connections - 1;
    format!(
        "{{ eth(da=02:00:00:00:00:99, sa={client_mac}), ipv4(saddr=10.0.0.1, daddr=10.0.0.2), \
         tcp(sp=dinc(20000,{last}), dp={PORT}, ack, seq=3438223591, aseq=2917348120, \
         win=64240), fill(0x41, 10) }}\n"
    )
}

/// `program` in `ns`, on `cpu` only.
fn pinned(cpu: u8, ns: &Netns, program: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        &cpu.to_string(),
        "ip",
        "netns",
        "exec",
        &ns.name,
        program,
    ]);
    cmd
}

fn mac(ns: &Netns) -> Result<String> {
    let out = ns
        .command("cat")
        .arg("/sys/class/net/eth0/address")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The sender on `bed`'s client, `packets` frames from `cfg`: wall-clock seconds and CPU
/// nanoseconds of the sender and `ksoftirqd/0` (`softirq`) together.
fn burst(bed: &Topology, cfg: &std::path::Path, packets: u64, softirq: u32) -> Result<(f64, u64)> {
    let mut sender = pinned(0, &bed.client, "trafgen");
    sender.args(["--dev", "eth0", "--conf"]).arg(cfg).args([
        "-n",
        &packets.to_string(),
        "-P",
        "1",
        "-C",
        "-q",
    ]);
    let before = cpu_ns(softirq)?;
    let (wall, cpu) = run_measured(&mut sender)?;
    let softirq_ns = cpu_ns(softirq)? - before;
    Ok((wall, (cpu * 1e9) as u64 + softirq_ns))
}

/// One flood of `packets` frames with `capturer` watching `bed`'s server, in bursts alternating
/// with as many frames through `bare`, which nobody watches.
pub fn trial(
    bed: &Topology,
    bare: &Topology,
    capturer: Flooded,
    packets: u64,
    sniffers: (&str, Option<&str>),
) -> Result<FloodTrial> {
    let sniffer = match capturer {
        Flooded::Baseline => sniffers.1.context("no --baseline binary")?,
        _ => sniffers.0,
    };
    let cfg = target_dir().join("bench/flood.cfg");
    let bare_cfg = target_dir().join("bench/flood-bare.cfg");
    fs::write(&cfg, config(&mac(&bed.client)?, capturer.connections()))?;
    fs::write(
        &bare_cfg,
        config(&mac(&bare.client)?, capturer.connections()),
    )?;
    let collector = match capturer {
        Flooded::Http(..) | Flooded::Tracking(..) | Flooded::Capture(true) | Flooded::Baseline => {
            Some(BenchCollector::start_discarding(&bed.server.name)?)
        }
        _ => None,
    };
    let mut watched = match capturer {
        Flooded::Tcpdump => {
            let mut cmd = pinned(1, &bed.server, "tcpdump");
            cmd.args(["-i", "eth0", "-s", "96", "-w", "/dev/null", "tcp", "port"])
                .arg(PORT.to_string());
            let mut watched = Watched::spawn(cmd)?;
            watched.wait_for("listening on")?;
            watched
        }
        _ => {
            let mut cmd = pinned(1, &bed.server, sniffer);
            cmd.env("PORTS", PORT.to_string()).env("INTERFACE", "eth0");
            if let (Flooded::Capture(true) | Flooded::Baseline, Some(collector)) =
                (capturer, &collector)
            {
                cmd.env("OUTPUT_URL", format!("http://{}/", collector.addr));
            }
            if let (Flooded::Http(format, encoding), Some(collector)) = (capturer, &collector) {
                cmd.env("OUTPUT_URL", format!("http://{}/", collector.addr))
                    .env("OUTPUT_FORMAT", format)
                    .env("OTLP_ENCODING", encoding);
            }
            if let (Flooded::Tracking(records, _), Some(collector)) = (capturer, &collector) {
                cmd.env("OUTPUT_URL", format!("http://{}/", collector.addr))
                    .env("RECORDS", records)
                    .env("CONNECTION_MAX", FLOOD_CONNECTIONS.to_string());
            }
            let mut watched = Watched::spawn(cmd)?;
            watched.wait_for("capture attached")?;
            watched
        }
    };
    // The capture's client, on the capturer's CPU like tcpdump's writes; its own CPU is not
    // counted (in a cluster it is `kubectl` on another machine).
    let reader = if matches!(capturer, Flooded::Capture(_)) {
        let reader = pinned(1, &bed.server, "curl")
            .args(["-sN", "-o", "/dev/null"])
            .arg(format!(
                "http://127.0.0.1:{CAPTURE_PORT}/capture?seconds=300"
            ))
            .spawn()
            .context("curl")?;
        watched.wait_for("packet capture started")?;
        Some(reader)
    } else {
        None
    };
    thread::sleep(Duration::from_millis(300));
    let softirq = kernel_thread("ksoftirqd/0")?;
    let per_burst = packets / BURSTS;
    let capturer_before = cpu_ns(watched.pid())?;
    let (mut watched_wall, mut pairs, mut bare_ns) = (0.0, Vec::new(), Vec::new());
    for pair in 0..BURSTS {
        // A B, then B A: a steady drift of the machine's speed weighs on both sides alike.
        let (a, b) = if pair % 2 == 0 {
            let a = burst(bed, &cfg, per_burst, softirq)?;
            (a, burst(bare, &bare_cfg, per_burst, softirq)?)
        } else {
            let b = burst(bare, &bare_cfg, per_burst, softirq)?;
            (burst(bed, &cfg, per_burst, softirq)?, b)
        };
        watched_wall += a.0;
        pairs.push((a.1 as f64 - b.1 as f64) / per_burst as f64);
        bare_ns.push(b.1 as f64 / per_burst as f64);
    }
    // Let the capturer read and deliver what is still in its ring.
    thread::sleep(SETTLE);
    let process_cpu = cpu_ns(watched.pid())? - capturer_before;
    let sent = per_burst * BURSTS;
    let mut trial = FloodTrial {
        capturer,
        sent,
        rate: sent as f64 / watched_wall,
        bare_ns: median(bare_ns).unwrap_or(f64::NAN),
        kernel_ns: median(pairs).unwrap_or(f64::NAN),
        process: (process_cpu as f64 / 1e9, 0),
        captured: 0,
        dropped: 0,
        delivered: None,
        streamed: None,
    };
    if let Some(mut reader) = reader {
        reader.kill()?;
        reader.wait()?;
        watched.wait_for("packet capture ended")?;
    }
    let (_, rss, lines) = watched.stop()?;
    trial.process.1 = rss;
    if capturer == Flooded::Tcpdump {
        let number = |suffix: &str| -> Result<u64> {
            lines
                .iter()
                .find_map(|l| l.strip_suffix(suffix).and_then(|n| n.trim().parse().ok()))
                .with_context(|| format!("tcpdump printed no \"N{suffix}\""))
        };
        trial.captured = number(" packets captured")?;
        trial.dropped = number(" packets dropped by kernel")?;
    } else {
        if matches!(capturer, Flooded::Capture(_)) {
            let ended = logged(&lines, "packet capture ended")?;
            trial.streamed = Some((ended("packets")?, ended("dropped")?));
        }
        let field = stopped_line(&lines)?;
        trial.captured = field("records")?;
        trial.dropped = field("dropped")?;
        if collector.is_some() {
            trial.delivered = Some(field("delivered")?);
            ensure!(
                collector.as_ref().is_some_and(|c| c.tally().bytes > 0),
                "the collector received nothing"
            );
        }
    }
    Ok(trial)
}

/// Nanoseconds per packet of `seconds` over `packets`.
fn ns(seconds: f64, packets: u64) -> f64 {
    seconds * 1e9 / packets.max(1) as f64
}

/// `figure` of `capturer` against `than`'s, compared by `compare` round by round (the n-th run
/// of each): the median, and every round's, listed with `decimals`.
fn per_round(
    trials: &[FloodTrial],
    (capturer, than): (Flooded, Flooded),
    figure: fn(&FloodTrial) -> f64,
    (compare, decimals): (fn(f64, f64) -> f64, usize),
) -> (f64, String) {
    let runs = |c: Flooded| trials.iter().filter(move |t| t.capturer == c).map(figure);
    let rounds: Vec<f64> = runs(capturer)
        .zip(runs(than))
        .map(|(a, b)| compare(a, b))
        .collect();
    let listed: Vec<String> = rounds.iter().map(|r| format!("{r:.decimals$}")).collect();
    (median(rounds).unwrap_or(f64::NAN), listed.join(", "))
}

/// A run's process CPU per packet.
fn process_ns(t: &FloodTrial) -> f64 {
    ns(t.process.0, t.captured)
}

/// A run's process and kernel-side CPU per packet.
fn total_ns(t: &FloodTrial) -> f64 {
    process_ns(t) + t.kernel_ns
}

/// The Markdown section of the flood's trials.
pub fn report(trials: &[FloodTrial], packets: u64, rounds: u32) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "`trafgen` floods a veth with {packets} TCP frames of 64 bytes per run (to another \
         host's MAC: the server's stack drops them, every packet tap sees them), pinned to CPU \
         0; the capturer watches the server's `eth0` pinned to CPU 1. {rounds} rounds, every \
         capturer once per round in turn. *Process*: the capturer's CPU (all threads, from \
         `schedstat`, to the nanosecond) from the flood's start until {settle} ms after its end, \
         per packet captured; start-up and shutdown are left out. *Kernel side*: the CPU per \
         packet of the sender and `ksoftirqd/0` on the watched veth minus on an identical veth \
         nobody watches (on a veth the receive path, taps and eBPF included, runs on the \
         sender's CPU; this kernel counts softirq time to the task it interrupts). The frames \
         go in {BURSTS} bursts alternating between the two veths, and the difference is the \
         median over adjacent pairs: this machine's speed drifts by a third from one second to \
         the next, more than the difference. Medians over rounds; *captured / sent* sums all \
         rounds; the last columns list every run's figures.\n",
        settle = SETTLE.as_millis()
    );
    let _ = writeln!(
        text,
        "| capturer | sender packets/s | captured / sent | losses | process ns/packet | kernel side ns/packet | total ns/packet | peak RSS MiB | process, all runs | kernel side, all runs |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let bare = median(trials.iter().map(|t| t.bare_ns).collect());
    let _ = writeln!(
        text,
        "| nobody (the unwatched veth) | – | – | – | – | – (sender {:.0} ns/packet) | – | – | – | – |",
        bare.unwrap_or(f64::NAN)
    );
    let mut medians = Vec::new();
    let baseline = trials.iter().any(|t| t.capturer == Flooded::Baseline);
    let mut capturers: Vec<Flooded> = Flooded::ALL
        .into_iter()
        .chain(baseline.then_some(Flooded::Baseline))
        .collect();
    // Listed as the formats, then what a capture adds to them, whatever order they ran in.
    capturers.sort_by_key(|c| matches!(c, Flooded::Capture(_)));
    for capturer in capturers {
        let runs: Vec<&FloodTrial> = trials.iter().filter(|t| t.capturer == capturer).collect();
        if runs.is_empty() {
            continue;
        }
        let figure = |f: &dyn Fn(&FloodTrial) -> f64| -> (f64, String) {
            let all: Vec<f64> = runs.iter().map(|t| f(t)).collect();
            let listed: Vec<String> = all.iter().map(|v| format!("{v:.0}")).collect();
            (median(all).unwrap_or(f64::NAN), listed.join(", "))
        };
        let (p, p_all) = figure(&process_ns);
        let (k, k_all) = figure(&|t| t.kernel_ns);
        let (rate, _) = figure(&|t| t.rate);
        let (rss, _) = figure(&|t| t.process.1 as f64 / 1024.0);
        let captured: u64 = runs.iter().map(|t| t.captured).sum();
        let sent: u64 = runs.iter().map(|t| t.sent).sum();
        let losses: u64 = runs.iter().map(|t| t.dropped).sum();
        let delivered = runs
            .iter()
            .map(|t| t.delivered)
            .sum::<Option<u64>>()
            .map_or(String::new(), |d| format!(", {d} delivered"));
        medians.push((capturer, p, k));
        let _ = writeln!(
            text,
            "| {} | {rate:.0} | {captured} / {sent}{delivered} | {losses} | {p:.0} | {k:.0} | {:.0} | {rss:.1} | {p_all} | {k_all} |",
            capturer.name(),
            p + k,
        );
    }
    let find = |c: Flooded| medians.iter().find(|m| m.0 == c).map(|m| (m.1, m.2));
    if let (Some((tp, tk)), Some((sp, sk)), Some((hp, hk))) = (
        find(Flooded::Tcpdump),
        find(Flooded::Stdout),
        find(Flooded::Http("batch", "protobuf")),
    ) {
        let verdict = |met: bool| if met { "met" } else { "**not met**" };
        let complete = trials
            .iter()
            .filter(|t| t.capturer != Flooded::Tcpdump)
            .all(|t| {
                let tracking = matches!(t.capturer, Flooded::Tracking(..));
                t.captured == t.sent
                    && t.dropped == 0
                    && (tracking || t.delivered.is_none_or(|d| d == t.sent))
            });
        let http = Flooded::Http("batch", "protobuf");
        let (process_ratio, process_rounds) = per_round(
            trials,
            (http, Flooded::Tcpdump),
            process_ns,
            (|a, b| a / b, 2),
        );
        let (stdout_ratio, stdout_rounds) = per_round(
            trials,
            (Flooded::Stdout, Flooded::Tcpdump),
            process_ns,
            (|a, b| a / b, 2),
        );
        let (total_ratio, total_rounds) = per_round(
            trials,
            (http, Flooded::Tcpdump),
            total_ns,
            (|a, b| a / b, 2),
        );
        let _ = writeln!(
            text,
            "\nGoals (`batch` is the default format; each ratio is the median over rounds of the \
             ratio between the two runs of a round, listed): HTTP process CPU {process_ratio:.2} × \
             tcpdump's (≤ 2 ×: {}; {process_rounds}); stdout {stdout_ratio:.2} × (≤ 1.5 ×: {}; \
             {stdout_rounds}); HTTP total (process + kernel side) {total_ratio:.2} × tcpdump's \
             total, {:.0} against {:.0} ns (≤ 0.8 ×: {}; {total_rounds}); every packet recorded \
             and delivered, no loss, in every sniffer run: {}.",
            verdict(process_ratio <= 2.0),
            verdict(stdout_ratio <= 1.5),
            hp + hk,
            tp + tk,
            verdict(total_ratio <= 0.8),
            verdict(complete)
        );
        for connections in [FEW_CONNECTIONS, FLOOD_CONNECTIONS] {
            let Some((cp, _)) = find(Flooded::Tracking("connections", connections)) else {
                continue;
            };
            let (more, rounds) = per_round(
                trials,
                (
                    Flooded::Tracking("both", connections),
                    Flooded::Http("batch", "protobuf"),
                ),
                process_ns,
                (|a, b| a - b, 0),
            );
            let _ = writeln!(
                text,
                "\nConnection tracking over {connections} connections (mid-stream, about {per} \
                 packets each): `RECORDS=both` costs {more:.0} ns of process CPU per packet more \
                 than packet records alone (≤ 100 ns: {}; the median over rounds of the \
                 difference between the two runs of a round, run one after the other: {rounds}); \
                 `RECORDS=connections` {cp:.0} ns per packet against {hp:.0} ns for packet \
                 records (cheaper: {}).",
                verdict(more <= 100.0),
                verdict(cp < hp),
                per = trials.first().map_or(0, |t| t.sent / connections),
            );
        }
        for (http, without) in [(false, (sp, sk)), (true, (hp, hk))] {
            let Some((cp, ck)) = find(Flooded::Capture(http)) else {
                continue;
            };
            let runs = trials
                .iter()
                .filter(|t| t.capturer == Flooded::Capture(http));
            let (written, lost, sent) = runs.fold((0, 0, 0), |(w, l, s), t| {
                let (written, lost) = t.streamed.unwrap_or_default();
                (w + written, l + lost, s + t.sent)
            });
            let (ratio, rounds) = per_round(
                trials,
                (Flooded::Capture(http), Flooded::Tcpdump),
                total_ns,
                (|a, b| a / b, 2),
            );
            let _ = writeln!(
                text,
                "\nA packet capture streaming (`GET /capture`, headers only, to `curl -o /dev/null` \
                 on the capturer's CPU, whose own CPU is not counted) while the records go {}: \
                 {:.0} ns per packet in all against tcpdump's {:.0} ns; {ratio:.2} × tcpdump's \
                 total (≤ 1.2 ×: {}; the median over rounds of the ratio between the two runs of \
                 a round, run side by side: {rounds}), {:.0} ns more than the same records without \
                 the capture (the capture itself: {:.2} × tcpdump's whole capture); {written} of \
                 {sent} packets in the pcapng, {lost} lost (ISB `isb_ifdrop`).",
                if http {
                    "to the collector (`batch`)"
                } else {
                    "to stdout (the injector's default)"
                },
                cp + ck,
                tp + tk,
                verdict(ratio <= 1.2),
                cp + ck - without.0 - without.1,
                (cp + ck - without.0 - without.1) / (tp + tk),
            );
        }
        if let Some((bp, bk)) = find(Flooded::Baseline) {
            let _ = writeln!(
                text,
                "\nWith no capture active, this build delivering `batch` costs {:.0} ns per \
                 packet in all (process {hp:.0}, kernel side {hk:.0}); the `--baseline` binary \
                 {:.0} ns (process {bp:.0}, kernel side {bk:.0}): {:+.0} ns ({:+.1} %).",
                hp + hk,
                bp + bk,
                hp + hk - bp - bk,
                (hp + hk - bp - bk) / (bp + bk) * 100.0,
            );
        }
        let _ = writeln!(
            text,
            "\nThe connections' records are sent when the sniffer stops, after the measured window. \
             With {FLOOD_CONNECTIONS} connections visited in turn the connections (about 20 MB, \
             in huge pages) do not fit in the CPU caches: the tracker asks for each packet's slot \
             and connection a few packets ahead so that the waits for memory overlap, and what \
             remains of them is the difference between the two sizes."
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `capturer` that used `process_ns` of process CPU and `kernel_ns` of kernel side
    /// per packet over 1,000 packets.
    fn run(capturer: Flooded, process_ns: f64, kernel_ns: f64) -> FloodTrial {
        FloodTrial {
            capturer,
            sent: 1000,
            rate: 0.0,
            bare_ns: 0.0,
            kernel_ns,
            process: (process_ns * 1000.0 / 1e9, 0),
            captured: 1000,
            dropped: 0,
            delivered: None,
            streamed: None,
        }
    }

    #[test]
    fn goals_compare_the_runs_of_each_round_not_the_medians() {
        let (a, b) = (Flooded::Stdout, Flooded::Tcpdump);
        // The machine drifts from round to round: a costs 100, 110 and 90 more than b in its
        // rounds (median 100), where the difference of the medians says 300 - 190 = 110.
        let trials = [
            run(a, 200.0, 100.0),
            run(b, 100.0, 100.0),
            run(a, 300.0, 100.0),
            run(b, 190.0, 100.0),
            run(a, 400.0, 100.0),
            run(b, 310.0, 100.0),
        ];
        let (more, rounds) = per_round(&trials, (a, b), process_ns, (|x, y| x - y, 0));
        assert!((more - 100.0).abs() < 1e-6, "{more}");
        assert_eq!(rounds, "100, 110, 90");
        let (ratio, rounds) = per_round(&trials, (a, b), total_ns, (|x, y| x / y, 2));
        assert!((ratio - 400.0 / 290.0).abs() < 1e-9, "{ratio}");
        assert_eq!(rounds, "1.50, 1.38, 1.22");
    }
}
