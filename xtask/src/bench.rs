//! `cargo xtask bench`: the whole performance report in docs/benchmarks.md, in one run.
//!
//! Capture: two network namespaces joined by a veth; iperf3 with small writes and `TCP_NODELAY`
//! sends as many packets as it can to the server namespace, where the capturer watches `eth0`:
//! completeness, drops, and CPU per packet with the kernel's share (from `perf` samples) for the
//! sniffer and for `tcpdump -s 96 -w /dev/null` on the same traffic. Throughput: iperf3 with its
//! defaults, with and without a capturer. Then the encoder micro-benchmark and the injector.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{
    bench_injector, bootstrap, cmd,
    collector::{BenchCollector, Tally},
    ebpf,
    perf::{CpuShares, Sampler},
    report, target_dir,
    testbed::Testbed,
};

const PORT: &str = "5201";
const SERVER: &str = "10.0.0.2";
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// iperf3 write size in bytes for the capture runs; small writes make many packets.
    #[arg(long, default_value_t = 64)]
    write_size: u32,
    /// iperf3 rate in Mbit/s for the CPU-per-packet runs.
    #[arg(long, default_value_t = 30)]
    paced_mbits: u32,
    /// Runs per capturer; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Run only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
}

/// The parts of the report, each its own section of docs/benchmarks.md.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Small packets at the highest rate: completeness and CPU per packet vs tcpdump.
    Capture,
    /// iperf3 with its defaults, with and without a capturer.
    Throughput,
    /// The JSON encoder alone (`cargo bench -p sniffer`).
    Encode,
    /// The injector under wrk.
    Injector,
}

impl Part {
    fn section(self) -> &'static str {
        match self {
            Self::Capture => "capture",
            Self::Throughput => "throughput",
            Self::Encode => "encode",
            Self::Injector => "injector",
        }
    }
}

/// What iperf3 sends.
#[derive(Clone, Copy)]
enum Load {
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
enum Capturer {
    Nobody,
    Sniffer,
    /// The sniffer delivering batches to a local collector.
    SnifferToCollector,
    Tcpdump,
}

impl Capturer {
    fn name(self) -> &'static str {
        match self {
            Self::Nobody => "no capture",
            Self::Sniffer => "sniffer → stdout",
            Self::SnifferToCollector => "sniffer → HTTP collector",
            Self::Tcpdump => "tcpdump -s 96 -w /dev/null",
        }
    }
}

/// What one run measured.
struct Trial {
    capturer: Capturer,
    gbits: f64,
    wire_packets: u64,
    seconds: f64,
    /// Records written (sniffer) or packets captured (tcpdump).
    captured: u64,
    /// Packets the capturer's kernel side saw (sniffer `matched`, tcpdump "received by filter").
    seen: u64,
    dropped: u64,
    cpu_seconds: f64,
    peak_rss_kib: u64,
    /// What the collector received (delivery run only).
    delivered: Option<Tally>,
    /// CPU by attribution while iperf3 ran.
    cpu: CpuShares,
}

/// A child whose stderr is collected line by line.
pub struct Watched {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: thread::JoinHandle<()>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", cmd::display(&cmd)))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().context("stderr")?);
        let sink = Arc::clone(&stderr);
        let reader = thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Ok(Self {
            child,
            stderr,
            reader,
        })
    }

    pub fn wait_for(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .stderr
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
        {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "exited ({status}) before {needle:?}: {:?}",
                    self.stderr.lock().expect("lock")
                );
            }
            ensure!(Instant::now() < deadline, "no {needle:?} within 30 s");
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then reap with `wait4` for CPU time and peak RSS; returns them and stderr.
    pub fn stop(self) -> Result<(f64, u64, Vec<String>)> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: signalling and reaping our own child; `rusage` and `status` are out-pointers.
        let (status, usage) = unsafe {
            ensure!(libc::kill(pid, libc::SIGTERM) == 0, "kill failed");
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            ensure!(
                libc::wait4(pid, &mut status, 0, &mut usage) == pid,
                "wait4 failed"
            );
            (status, usage)
        };
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "capturer failed: status {status:#x}"
        );
        self.reader
            .join()
            .map_err(|_| anyhow::anyhow!("stderr reader panicked"))?;
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
        let lines = Arc::try_unwrap(self.stderr)
            .map_err(|_| anyhow::anyhow!("stderr still shared"))?
            .into_inner()
            .expect("lock");
        Ok((cpu, u64::try_from(usage.ru_maxrss)?, lines))
    }
}

fn number_before(lines: &[String], suffix: &str) -> Result<u64> {
    lines
        .iter()
        .find_map(|l| l.strip_suffix(suffix).and_then(|n| n.trim().parse().ok()))
        .with_context(|| format!("no \"N{suffix}\" line in {lines:?}"))
}

fn trial(
    bed: &Testbed,
    capturer: Capturer,
    load: Load,
    args: &BenchArgs,
    sniffer: &str,
) -> Result<Trial> {
    let mut server = Testbed::exec(&bed.server, "iperf3");
    server.args(["-s", "-1", "-p", PORT]).stdout(Stdio::null());
    let mut server = server.spawn().context("cannot start iperf3 -s")?;
    let collector = match capturer {
        Capturer::SnifferToCollector => Some(BenchCollector::start(&bed.server)?),
        _ => None,
    };
    let watched = match capturer {
        Capturer::Nobody => None,
        Capturer::Sniffer | Capturer::SnifferToCollector => {
            let mut cmd = Testbed::exec(&bed.server, sniffer);
            cmd.env("PORTS", PORT).env("INTERFACE", "eth0");
            if let Some(collector) = &collector {
                cmd.env("OUTPUT_URL", format!("http://{}/", collector.addr));
            }
            let mut w = Watched::spawn(cmd)?;
            w.wait_for("capture attached")?;
            Some(w)
        }
        Capturer::Tcpdump => {
            let mut cmd = Testbed::exec(&bed.server, "tcpdump");
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
    let before = bed.server_packets()?;
    let start = Instant::now();
    let mut client = Testbed::exec(&bed.client, "iperf3");
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
    let wire_packets = bed.server_packets()? - before;
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
            let stopped: Value = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["msg"] == "stopped")
                .context("the sniffer logged no \"stopped\" line")?;
            let field = |name: &str| {
                stopped[name]
                    .as_u64()
                    .with_context(|| format!("stopped line lacks {name}"))
            };
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

/// µs per packet, if anything was captured.
fn per_packet(seconds: f64, packets: u64) -> Option<f64> {
    (packets > 0).then(|| seconds * 1e6 / packets as f64)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
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

fn capture_report(trials: &[Trial], paced: &[Trial], args: &BenchArgs) -> String {
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
        "| capturer | iperf3 Mbit/s | packets/s on the wire | packets on the wire | seen by capturer | captured | captured / wire | kernel drops | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for g in &groups {
        let none = g.capturer == Capturer::Nobody;
        let dash = |s: String| if none { "–".to_owned() } else { s };
        let wire = g.sum(|t| t.wire_packets);
        let captured = g.sum(|t| t.captured);
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.0} | {wire} | {} | {} | {} | {} | {} |",
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

fn throughput_report(trials: &[Trial], small: &[Trial], args: &BenchArgs) -> String {
    let groups = Runs::group(trials);
    let small = Runs::group(small);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`iperf3 -t {}` with its defaults (128 KiB writes; the veth's segmentation offloads make \
         packets of up to 64 KiB), {} rounds, each running every capturer in turn. \
         *vs no capture* is the median of each round's ratio to that round's run without capture.\n",
        args.seconds, args.repeat
    );
    let _ = writeln!(
        out,
        "| capturer | iperf3 Gbit/s (median) | vs no capture | every run's Gbit/s | captured | kernel drops |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for g in &groups {
        let none = g.capturer == Capturer::Nobody;
        let all: Vec<String> = g.runs.iter().map(|t| format!("{:.2}", t.gbits)).collect();
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {} | {} | {} |",
            g.capturer.name(),
            g.median(|t| t.gbits),
            relative_speed(&groups, g.capturer).map_or("–".into(), |r| format!("{r:.1} %")),
            all.join(", "),
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
    let bulk = percent(&groups, Capturer::Sniffer);
    let packets = percent(&small, Capturer::Sniffer);
    let _ = writeln!(
        out,
        "\nSmall packets at the highest rate (the capture runs above), same pairing: sniffer → stdout \
         {packets:.1} %, sniffer → HTTP collector {:.1} %, tcpdump {:.1} %.",
        percent(&small, Capturer::SnifferToCollector),
        percent(&small, Capturer::Tcpdump),
    );
    let _ = writeln!(
        out,
        "\nGoal, throughput: with the sniffer attached (writing to stdout), iperf3 ran at {bulk:.1} % \
         of its speed without capture with its defaults (goal ≥ 95 %: {}) and at {packets:.1} % with \
         small packets at the highest rate (goal ≥ 95 %: {}). The runs delivering to a collector \
         share the two CPUs with that collector, which parses every batch; its CPU is not the \
         sniffer's but comes out of iperf3's.",
        verdict(bulk >= 95.0),
        verdict(packets >= 95.0)
    );
    out
}

fn encode_report() -> Result<String> {
    let out = cmd::stdout(cmd::cargo().args(["bench", "-p", "sniffer", "--bench", "encode"]))?;
    Ok(format!(
        "`cargo bench -p sniffer --bench encode`: 2 million varied records (one in ten IPv6), \
         kernel record → wall-clock time → JSON, on one core:\n\n```text\n{}\n```",
        out.trim()
    ))
}

/// Runs every part (or those in `--only`), printing each section and writing it into
/// docs/benchmarks.md.
pub fn run(args: &BenchArgs) -> Result<()> {
    let wanted = |part: Part| args.only.is_empty() || args.only.contains(&part);
    if wanted(Part::Capture) || wanted(Part::Throughput) {
        bootstrap::ensure_debian_packages(&[
            ("ip", "iproute2"),
            ("iperf3", "iperf3"),
            ("tcpdump", "tcpdump"),
            ("perf", "linux-perf"),
        ])?;
        ebpf::build()?;
        let sniffer = cmd::build_binary("sniffer", true)?;
        let sniffer = sniffer.to_str().context("non-UTF-8 target path")?;
        fs::create_dir_all(target_dir().join("bench"))?;
        let bed = Testbed::new("tsbench")?;
        // Statistics add two clock reads to every eBPF run: off, so both capturers are measured
        // as they run in production.
        let previous_stats = fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
        let _ = fs::write(BPF_STATS, "0");
        let runs = |load: Load, capturers: &[Capturer]| -> Result<Vec<Trial>> {
            let mut trials = Vec::new();
            // In turn rather than all runs of one capturer together, so a slow spell of the
            // machine does not fall on one capturer only.
            for round in 1..=args.repeat {
                for &capturer in capturers {
                    eprintln!("bench: {} (run {round}) …", capturer.name());
                    trials.push(trial(&bed, capturer, load, args, sniffer)?);
                }
            }
            Ok(trials)
        };
        let all = || -> Result<[Vec<Trial>; 3]> {
            let every = [
                Capturer::Nobody,
                Capturer::Sniffer,
                Capturer::SnifferToCollector,
                Capturer::Tcpdump,
            ];
            let small = runs(Load::SmallPackets, &every)?;
            let paced = runs(Load::Paced, &every)?;
            let bulk = if wanted(Part::Throughput) {
                runs(Load::Bulk, &every)?
            } else {
                Vec::new()
            };
            Ok([small, paced, bulk])
        };
        let result = all();
        let _ = fs::write(BPF_STATS, previous_stats.trim());
        let [small, paced, bulk] = result?;
        if wanted(Part::Capture) {
            publish(Part::Capture, &capture_report(&small, &paced, args))?;
        }
        if wanted(Part::Throughput) {
            publish(Part::Throughput, &throughput_report(&bulk, &small, args))?;
        }
    }
    if wanted(Part::Encode) {
        publish(Part::Encode, &encode_report()?)?;
    }
    if wanted(Part::Injector) {
        publish(Part::Injector, &bench_injector::run(args.seconds)?)?;
    }
    Ok(())
}

/// Prints a section, keeps a copy in `target/bench/` and writes it into docs/benchmarks.md.
fn publish(part: Part, text: &str) -> Result<()> {
    println!("{text}");
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("{}.md", part.section())), text)?;
    report::update(part.section(), text)
}
