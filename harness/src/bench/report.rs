//! The Markdown tables of docs/benchmarks.md from the trials.

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    BenchArgs,
    trial::{Capturer, Trial},
};
use crate::perf::CpuShares;
use testbed::cmd;

/// µs per packet, if anything was captured.
fn per_packet(seconds: f64, packets: u64) -> Option<f64> {
    (packets > 0).then(|| seconds * 1e6 / packets as f64)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The runs of one capturer, in the order they ran.
struct Runs<'a> {
    capturer: Capturer,
    runs: Vec<&'a Trial>,
}

impl<'a> Runs<'a> {
    /// Groups trials by capturer, capturers in order of first appearance.
    fn group(trials: &'a [Trial]) -> Vec<Self> {
        let mut groups: Vec<Self> = Vec::new();
        for t in trials {
            match groups.iter_mut().find(|g| g.capturer == t.capturer) {
                Some(group) => group.runs.push(t),
                None => groups.push(Self {
                    capturer: t.capturer,
                    runs: vec![t],
                }),
            }
        }
        groups
    }

    fn sum(&self, field: impl Fn(&Trial) -> u64) -> u64 {
        self.runs.iter().map(|t| field(t)).sum()
    }

    fn median(&self, field: impl Fn(&Trial) -> f64) -> f64 {
        median(self.runs.iter().map(|t| field(t)).collect()).unwrap_or(f64::NAN)
    }

    /// The run with the median CPU per packet (kernel + process), and every run's value.
    fn cost(&self) -> Option<(&'a Trial, Vec<f64>)> {
        let mut costed: Vec<(&Trial, f64)> = self
            .runs
            .iter()
            .filter_map(|t| Some((*t, per_packet(t.cpu.process + t.cpu.hook, t.captured)?)))
            .collect();
        let all = costed.iter().map(|(_, c)| *c).collect();
        costed.sort_by(|a, b| a.1.total_cmp(&b.1));
        costed.get(costed.len() / 2).map(|(t, _)| (*t, all))
    }
}

pub fn capture_report(trials: &[Trial], paced: &[Trial], args: &BenchArgs) -> String {
    let groups = Runs::group(trials);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`iperf3 -N -l {} -t {}`, {} runs per capturer taken in turn; veth between two network \
         namespaces, capture on the server side. Counts are summed over the runs, rates are medians.\n",
        args.write_size, args.seconds, args.repeat
    );
    let _ = writeln!(
        out,
        "| capturer | iperf3 Mbit/s | packets/s on the wire | payload bytes/packet | packets on the wire | seen by capturer | captured | captured / wire | kernel drops | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let mut coalesced = Vec::new();
    for g in &groups {
        let none = g.capturer == Capturer::Nobody;
        let dash = |s: String| if none { "–".to_owned() } else { s };
        let wire = g.sum(|t| t.wire_packets);
        let captured = g.sum(|t| t.captured);
        // iperf3's payload bytes per packet on the wire.
        let bytes = g.median(|t| t.gbits * 1e9 / 8.0 / (t.wire_packets.max(1) as f64 / t.seconds));
        if bytes > 4.0 * f64::from(args.write_size) {
            coalesced.push(format!(
                "{} ({bytes:.0} bytes per packet)",
                g.capturer.name()
            ));
        }
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.0} | {bytes:.0} | {wire} | {} | {} | {} | {} | {} |",
            g.capturer.name(),
            g.median(|t| t.gbits * 1000.0),
            g.median(|t| t.wire_packets as f64 / t.seconds),
            dash(g.sum(|t| t.seen).to_string()),
            dash(captured.to_string()),
            dash(format!(
                "{:.4} %",
                captured as f64 * 100.0 / wire.max(1) as f64
            )),
            dash(g.sum(|t| t.dropped).to_string()),
            dash(format!(
                "{:.1}",
                g.runs.iter().map(|t| t.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
            )),
        );
    }
    if !coalesced.is_empty() {
        let _ = writeln!(
            out,
            "\nIn the runs of {}, iperf3's small writes went out coalesced into large segments \
             (once its sender falls behind, `TCP_NODELAY` still merges what is queued): those runs \
             did not load the capturer at the small-packet rate. The flood above does not depend \
             on a sender's pacing.",
            coalesced.join(", ")
        );
    }
    let paced_groups = Runs::group(paced);
    let tcpdump = paced_groups
        .iter()
        .find(|g| g.capturer == Capturer::Tcpdump)
        .and_then(Runs::cost)
        .and_then(|(t, _)| per_packet(t.cpu.process + t.cpu.hook, t.captured));
    let _ = writeln!(
        out,
        "\nCPU per packet, measured on the same packets paced at {} Mbit/s (`-b {}M`, {} runs per \
         capturer in turn), from `perf` samples of every CPU (one per 0.25 ms of CPU time): \
         *process* is the capturer's own process (userspace and its system calls: reading the ring \
         or mmap buffer, JSON, HTTP); *kernel hook* is every other sample whose kernel call chain \
         passes through the packet tap (`dev_queue_xmit_nit`, `packet_rcv`, `tpacket_rcv`, the \
         ring's wakeup): the clone, the filter or eBPF program and the copy, in whichever context \
         they ran. *busy* is every non-idle sample on both CPUs. The row is the run with the \
         median total; the last column lists every run's total.\n",
        args.paced_mbits, args.paced_mbits, args.repeat
    );
    let _ = writeln!(
        out,
        "| capturer | packets captured | busy CPU s | process CPU s | kernel hook CPU s | µs / packet: process | kernel hook | total | total vs tcpdump | totals of all runs |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for g in &paced_groups {
        let Some((t, all)) = g.cost() else {
            let _ = writeln!(
                out,
                "| {} | – | {:.2} | – | – | – | – | – | – | – |",
                g.capturer.name(),
                g.median(|t| t.cpu.busy)
            );
            continue;
        };
        let CpuShares {
            process,
            hook,
            busy,
        } = t.cpu;
        let micro = |s: f64| per_packet(s, t.captured).map_or("–".into(), |v| format!("{v:.3}"));
        let ratio = match (per_packet(process + hook, t.captured), tcpdump) {
            (Some(total), Some(reference)) => format!("{:.2} ×", total / reference),
            _ => "–".into(),
        };
        let all: Vec<String> = all.iter().map(|v| format!("{v:.3}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {busy:.2} | {process:.2} | {hook:.2} | {} | {} | {} | {ratio} | {} |",
            g.capturer.name(),
            t.captured,
            micro(process),
            micro(hook),
            micro(process + hook),
            all.join(", "),
        );
    }
    if let Some(g) = groups
        .iter()
        .find(|g| g.capturer == Capturer::SnifferToCollector)
    {
        let records = g.sum(|t| t.delivered.map_or(0, |d| d.records));
        let dropped = g.sum(|t| t.delivered.map_or(0, |d| d.dropped));
        let batches = g.sum(|t| t.delivered.map_or(0, |d| d.batches));
        let matched = g.sum(|t| t.seen);
        let cpu: f64 = g.runs.iter().map(|t| t.cpu_seconds).sum();
        let seconds: f64 = g.runs.iter().map(|t| t.seconds).sum();
        let _ = writeln!(
            out,
            "\nDelivery at the highest rate (all runs): the collector received {records} records in {batches} batches \
             ({:.0} records/s) and {dropped} reported as dropped; the kernel matched {matched}: {}. \
             Sniffer CPU (whole process lifetimes, `wait4`) {cpu:.2} s = {:.0} % of one core.",
            records as f64 / seconds,
            if records + dropped == matched {
                "every record accounted for"
            } else {
                "MISMATCH"
            },
            cpu * 100.0 / seconds,
        );
    }
    let ratio_of = |capturer: Capturer| {
        let g = paced_groups.iter().find(|g| g.capturer == capturer)?;
        let (t, _) = g.cost()?;
        Some(per_packet(t.cpu.process + t.cpu.hook, t.captured)? / tcpdump?)
    };
    if let (Some(delivering), Some(stdout)) = (
        ratio_of(Capturer::SnifferToCollector),
        ratio_of(Capturer::Sniffer),
    ) {
        let _ = writeln!(
            out,
            "\nGoal, CPU: per captured packet, kernel + process, the sniffer delivering JSON batches \
             to the collector used {delivering:.2} × tcpdump's CPU (goal ≤ 1.5 ×: {}); writing NDJSON \
             to stdout, {stdout:.2} ×.",
            verdict(delivering <= 1.5)
        );
    }
    let lost: u64 = groups
        .iter()
        .chain(&paced_groups)
        .filter(|g| matches!(g.capturer, Capturer::Sniffer | Capturer::SnifferToCollector))
        .map(|g| g.sum(|t| t.dropped + t.delivered.map_or(0, |d| d.dropped)))
        .sum();
    let _ = writeln!(
        out,
        "\nGoal, drops: {lost} records lost in the sniffer runs at the machine's highest packet rate \
         with default settings (ring full, or dropped before delivery) (goal 0: {}).",
        verdict(lost == 0)
    );
    out
}

/// The capturer's CPU in a run (process and kernel hook) as a share of all busy CPU, in percent.
fn busy_share(t: &Trial) -> f64 {
    (t.cpu.process + t.cpu.hook) * 100.0 / t.cpu.busy
}

/// Throughput of `capturer` relative to no capture, in percent: the median over rounds of each
/// round's ratio, so that a drift of the machine's speed over the session cancels out.
fn relative_speed(set: &[Runs<'_>], capturer: Capturer) -> Option<f64> {
    let of = |c: Capturer| set.iter().find(|g| g.capturer == c);
    let (with, without) = (of(capturer)?, of(Capturer::Nobody)?);
    median(
        with.runs
            .iter()
            .zip(&without.runs)
            .map(|(w, n)| w.gbits * 100.0 / n.gbits)
            .collect(),
    )
}

pub fn throughput_report(trials: &[Trial], small: &[Trial], args: &BenchArgs) -> String {
    let groups = Runs::group(trials);
    let small = Runs::group(small);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`iperf3` with its defaults (128 KiB writes; the veth's segmentation offloads make \
         packets of up to 64 KiB), {} rounds, each running every capturer in turn. In each run, \
         {} one-second transfers on the watched veth alternate with as many on an identical veth \
         nobody watches (A B B A …); *vs unwatched* is the watched transfer's speed as a share of \
         the unwatched one's beside it: the median over adjacent pairs, then over rounds. The row \
         without capture measures the method itself: both veths unwatched.\n",
        args.repeat, args.seconds
    );
    let _ = writeln!(
        out,
        "| capturer | iperf3 Gbit/s (median) | unwatched veth Gbit/s (median) | vs unwatched | every run's share | busy CPU % | capturer's process CPU % | kernel hook CPU % | capturer's share of busy | captured | kernel drops |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let twin_percent = |t: &Trial| t.twin.as_ref().map_or(f64::NAN, |w| w.percent);
    for g in &groups {
        let none = g.capturer == Capturer::Nobody;
        let all: Vec<String> = g
            .runs
            .iter()
            .map(|t| format!("{:.1}", twin_percent(t)))
            .collect();
        let percent_of_cpu = |share: fn(&CpuShares) -> f64| {
            let value = g.median(|t| share(&t.cpu) * 100.0 / t.seconds);
            if none && value == 0.0 {
                "–".into()
            } else {
                format!("{value:.1}")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.1} % | {} | {} | {} | {} | {} | {} | {} |",
            g.capturer.name(),
            g.median(|t| t.gbits),
            g.median(|t| t.twin.as_ref().map_or(f64::NAN, |w| w.gbits)),
            g.median(twin_percent),
            all.join(", "),
            percent_of_cpu(|c| c.busy),
            percent_of_cpu(|c| c.process),
            percent_of_cpu(|c| c.hook),
            if none {
                "–".into()
            } else {
                format!("{:.1} %", g.median(busy_share))
            },
            if none {
                "–".into()
            } else {
                g.sum(|t| t.captured).to_string()
            },
            if none {
                "–".into()
            } else {
                g.sum(|t| t.dropped).to_string()
            },
        );
    }
    let percent = |set: &[Runs<'_>], c: Capturer| relative_speed(set, c).unwrap_or(f64::NAN);
    let packets = percent(&small, Capturer::Sniffer);
    // The median of `field` over the runs of capturer `c`.
    let of = |c: Capturer, field: &dyn Fn(&Trial) -> f64| {
        groups
            .iter()
            .find(|g| g.capturer == c)
            .map_or(f64::NAN, |g| g.median(field))
    };
    let bulk = of(Capturer::Sniffer, &twin_percent);
    let share = |c: Capturer| of(c, &busy_share);
    let hook_per_packet = |c: Capturer| {
        of(c, &|t| {
            per_packet(t.cpu.hook, t.captured).unwrap_or(f64::NAN)
        })
    };
    let idle_busy = of(Capturer::Nobody, &|t| t.cpu.busy * 100.0 / t.seconds);
    let _ = writeln!(
        out,
        "\nWhere the CPU went, from `perf` samples of both CPUs during the watched transfers (as \
         in the capture section; percent of one CPU, medians over the runs): *busy* is every non-idle \
         sample, *process* the capturer's own, *kernel hook* the packet tap, filter and copy \
         outside it. Without capture the transfer kept {idle_busy:.0} % of one CPU busy out of \
         two. The kernel hook runs in each packet's path (the filter in the softirq that delivers \
         each data packet, the transmit tap's clone of each ACK): {:.2} µs a packet for the \
         sniffer, {:.2} µs for tcpdump. The capturer's share of all busy CPU, {:.1} % (sniffer → \
         stdout) and {:.1} % (tcpdump), is what it adds to the machine's work.",
        hook_per_packet(Capturer::Sniffer),
        hook_per_packet(Capturer::Tcpdump),
        share(Capturer::Sniffer),
        share(Capturer::Tcpdump),
    );
    let _ = writeln!(
        out,
        "\nSmall packets at the highest rate (the capture runs above, each compared with its \
         round's run without capture, not in alternating bursts): sniffer → stdout {packets:.1} %, \
         sniffer → HTTP collector {:.1} %, tcpdump {:.1} %.",
        percent(&small, Capturer::SnifferToCollector),
        percent(&small, Capturer::Tcpdump),
    );
    let _ = writeln!(
        out,
        "\nGoal, throughput: with the sniffer attached (writing to stdout), iperf3 ran at {bulk:.1} % \
         of its speed on the unwatched veth beside it with its defaults (goal ≥ 95 %: {}; tcpdump \
         {:.1} %, both veths unwatched {:.1} %) and at {packets:.1} % of its speed without capture \
         with small packets at the highest rate (goal ≥ 95 %: {}). The runs delivering to a \
         collector share the two CPUs with that collector, which parses every batch; its CPU is \
         not the sniffer's but comes out of iperf3's.",
        verdict(bulk >= 95.0),
        of(Capturer::Tcpdump, &twin_percent),
        of(Capturer::Nobody, &twin_percent),
        verdict(packets >= 95.0)
    );
    out
}

pub fn encode_report() -> Result<String> {
    let out = cmd::stdout(cmd::cargo().args(["bench", "-p", "sniffer", "--bench", "encode"]))?;
    Ok(format!(
        "`cargo bench -p sniffer --bench encode`: 500,000 varied records (one in ten IPv6) per \
         round, kernel record → wall-clock time → the bytes sent, as stdout lines and as a body \
         in each `OUTPUT_FORMAT`; then 50,000 connection records (1,000 short connections' \
         reports: handshake, request, answer, both FINs), report → the bytes sent, in each \
         format; on one core; 7 rounds taken in turn, median and range:\n\n\
         ```text\n{}\n```",
        out.trim()
    ))
}
