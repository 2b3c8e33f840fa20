//! `cargo xtask bench`: capture completeness and cost at the highest packet rate this machine
//! makes, for the sniffer and for `tcpdump -s 96 -w /dev/null` on the same traffic.
//!
//! Two network namespaces joined by a veth; iperf3 with small writes and `TCP_NODELAY` sends as
//! many packets as it can to the server namespace, where the capturer watches `eth0`.

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
    bootstrap, cmd,
    collector::{BenchCollector, Tally},
    ebpf,
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
    /// iperf3 write size in bytes; small writes make many packets.
    #[arg(long, default_value_t = 64)]
    write_size: u32,
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
    bpf_ns: Option<(u64, u64)>,
    /// What the collector received (delivery run only).
    delivered: Option<Tally>,
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

fn trial(bed: &Testbed, capturer: Capturer, args: &BenchArgs, sniffer: &str) -> Result<Trial> {
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
    let before = bed.server_packets()?;
    let start = Instant::now();
    let out = cmd::stdout(Testbed::exec(&bed.client, "iperf3").args([
        "-c",
        SERVER,
        "-p",
        PORT,
        "-N",
        "-J",
        "-t",
        &args.seconds.to_string(),
        "-l",
        &args.write_size.to_string(),
    ]))?;
    let seconds = start.elapsed().as_secs_f64();
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
        bpf_ns: None,
        delivered: None,
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
            result.bpf_ns = Some((field("bpf_run_time_ns")?, field("bpf_run_count")?));
            result.delivered = collector.as_ref().map(BenchCollector::tally);
        } else {
            result.captured = number_before(&lines, " packets captured")?;
            result.seen = number_before(&lines, " packets received by filter")?;
            result.dropped = number_before(&lines, " packets dropped by kernel")?;
        }
    }
    Ok(result)
}

fn report(trials: &[Trial], args: &BenchArgs) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "iperf3 -N -l {} for {} s per run, veth between two network namespaces, capture on the server side.\n",
        args.write_size, args.seconds
    );
    let _ = writeln!(
        out,
        "| capturer | iperf3 Gbit/s | packets on the wire | packets/s | seen by capturer | captured | captured / wire | kernel drops | capturer CPU s | CPU µs / packet | peak RSS MiB | eBPF ns / run |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for t in trials {
        let per_packet = if t.captured > 0 {
            format!("{:.3}", t.cpu_seconds * 1e6 / t.captured as f64)
        } else {
            "–".into()
        };
        let bpf = match t.bpf_ns {
            Some((ns, runs)) if runs > 0 => format!("{:.0}", ns as f64 / runs as f64),
            _ => "–".into(),
        };
        let none = t.capturer == Capturer::Nobody;
        let dash = |s: String| if none { "–".to_owned() } else { s };
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.capturer.name(),
            t.gbits,
            t.wire_packets,
            t.wire_packets as f64 / t.seconds,
            dash(t.seen.to_string()),
            dash(t.captured.to_string()),
            dash(format!(
                "{:.4} %",
                t.captured as f64 * 100.0 / t.wire_packets.max(1) as f64
            )),
            dash(t.dropped.to_string()),
            dash(format!("{:.2}", t.cpu_seconds)),
            dash(per_packet),
            dash(format!("{:.1}", t.peak_rss_kib as f64 / 1024.0)),
            bpf,
        );
    }
    for t in trials {
        if let Some(Tally {
            batches,
            records,
            dropped,
        }) = t.delivered
        {
            let _ = writeln!(
                out,
                "\nDelivery: the collector received {records} records in {batches} batches ({:.0} records/s) \
                 and {dropped} reported as dropped; the kernel matched {}: {}. Sniffer CPU {:.2} s = {:.0} % of one core, \
                 {:.3} µs per record; peak RSS {:.1} MiB.",
                records as f64 / t.seconds,
                t.seen,
                if records + dropped == t.seen {
                    "every record accounted for"
                } else {
                    "MISMATCH"
                },
                t.cpu_seconds,
                t.cpu_seconds * 100.0 / t.seconds,
                t.cpu_seconds * 1e6 / records.max(1) as f64,
                t.peak_rss_kib as f64 / 1024.0,
            );
        }
    }
    out
}

/// Runs the benchmark and prints a Markdown report (also written to `target/bench/capture.md`).
pub fn run(args: &BenchArgs) -> Result<()> {
    bootstrap::ensure_debian_packages(&[
        ("ip", "iproute2"),
        ("iperf3", "iperf3"),
        ("tcpdump", "tcpdump"),
    ])?;
    ebpf::build()?;
    let sniffer = cmd::build_binary("sniffer", true)?;
    let sniffer = sniffer.to_str().context("non-UTF-8 target path")?;
    let bed = Testbed::new("tsbench")?;

    let previous_stats = fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
    let mut trials = Vec::new();
    for capturer in [
        Capturer::Nobody,
        Capturer::Sniffer,
        Capturer::SnifferToCollector,
        Capturer::Tcpdump,
    ] {
        eprintln!("bench: {} …", capturer.name());
        // The kernel counts eBPF run time only while statistics are on; they cost a little, so
        // only the sniffer runs pay for them.
        let _ = fs::write(
            BPF_STATS,
            if matches!(capturer, Capturer::Sniffer | Capturer::SnifferToCollector) {
                "1"
            } else {
                "0"
            },
        );
        let result = trial(&bed, capturer, args, sniffer);
        let _ = fs::write(BPF_STATS, previous_stats.trim());
        trials.push(result?);
    }
    let text = report(&trials, args);
    let dir = ebpf::target_dir().join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("capture.md"), &text)?;
    println!("{text}");
    Ok(())
}
