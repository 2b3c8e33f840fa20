//! `cargo xtask bench`: the whole performance report in docs/benchmarks.md, in one run.
//!
//! Capture: two network namespaces joined by a veth; iperf3 with small writes and `TCP_NODELAY`
//! sends as many packets as it can to the server namespace, where the capturer watches `eth0`:
//! completeness, drops, and CPU per packet with the kernel's share (from `perf` samples) for the
//! sniffer and for `tcpdump -s 96 -w /dev/null` on the same traffic. Throughput: iperf3 with its
//! defaults, with and without a capturer, in bursts alternating with an identical veth nobody
//! watches. Then the encoder micro-benchmark and the injector.

use std::fs;

use testbed::Topology;

use anyhow::{Context as _, Result};

mod flood;
mod idle;
mod report;
mod trial;

use self::{
    report::{capture_report, encode_report, throughput_report},
    trial::{Capturer, Load, Trial, trial},
};
use testbed::paths::target_dir;

use crate::{Built, bench_injector, doc};

const PORT: &str = "5201";
const SERVER: &str = "10.0.0.2";
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of traffic per run; a bulk run sends as many one-second bursts on the watched veth
    /// and as many on its unwatched twin.
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
    /// Frames per flood.
    #[arg(long, default_value_t = 2_000_000)]
    flood_packets: u64,
    /// Another sniffer binary (an earlier commit's release build) flooded beside this one, for
    /// a same-run comparison of their cost.
    #[arg(long)]
    baseline: Option<std::path::PathBuf>,
    /// Run only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Flood only this capturer (repeatable): the one named so in the report, or else every one
    /// whose name holds it (e.g. `tcpdump`, `RECORDS=both`). A partial flood is printed, not
    /// written into docs/benchmarks.md.
    #[arg(long = "capturer")]
    capturers: Vec<String>,
}

/// The parts of the report, each its own section of docs/benchmarks.md.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The highest packet rate (`trafgen`): CPU per packet of every capturer and format.
    Flood,
    /// Small packets at the highest rate: completeness and CPU per packet vs tcpdump.
    Capture,
    /// iperf3 with its defaults, with and without a capturer.
    Throughput,
    /// The JSON encoder alone (`cargo bench -p sniffer`).
    Encode,
    /// The injector under wrk.
    Injector,
    /// One sidecar with nothing to do: wake-ups, CPU and memory.
    Idle,
}

impl Part {
    fn section(self) -> &'static str {
        match self {
            Self::Flood => "flood",
            Self::Capture => "capture",
            Self::Throughput => "throughput",
            Self::Encode => "encode",
            Self::Injector => "injector",
            Self::Idle => "idle",
        }
    }
}

impl Part {
    /// The commands this part runs, with the Debian packages that provide them.
    fn packages(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Flood => &[
                ("ip", "iproute2"),
                ("tcpdump", "tcpdump"),
                ("trafgen", "netsniff-ng"),
                ("taskset", "util-linux"),
                ("curl", "curl"),
            ],
            Self::Capture | Self::Throughput => &[
                ("ip", "iproute2"),
                ("iperf3", "iperf3"),
                ("tcpdump", "tcpdump"),
                ("perf", "linux-perf"),
            ],
            Self::Encode => &[],
            Self::Injector => &[("wrk", "wrk")],
            Self::Idle => &[("ip", "iproute2")],
        }
    }
}

impl BenchArgs {
    fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }

    /// Whether `--capturer` asks for the capturer named `name`.
    fn floods(&self, name: &str) -> bool {
        let exact = |wanted: &str| {
            flood::Flooded::ALL
                .iter()
                .chain([&flood::Flooded::Baseline])
                .any(|c| c.name() == wanted)
        };
        self.capturers.is_empty()
            || self
                .capturers
                .iter()
                .any(|w| name == w || (!exact(w) && name.contains(w.as_str())))
    }
}

/// The commands the parts `args` asks for run, with the Debian packages that provide them:
/// what the task installs before [`run`].
#[must_use]
pub fn packages(args: &BenchArgs) -> Vec<(&'static str, &'static str)> {
    let mut packages: Vec<_> = <Part as clap::ValueEnum>::value_variants()
        .iter()
        .filter(|&&part| args.wants(part))
        .flat_map(|part| part.packages().iter().copied())
        .collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// Runs every part (or those in `--only`) on the `built` binaries, printing each section and
/// writing it into docs/benchmarks.md.
pub fn run(args: &BenchArgs, built: &Built) -> Result<()> {
    let wanted = |part: Part| args.wants(part);
    let sniffer = built.sniffer.to_str().context("non-UTF-8 target path")?;
    if wanted(Part::Flood) {
        let report = flood_report(args, sniffer)?;
        if args.capturers.is_empty() {
            publish(Part::Flood, &report)?;
        } else {
            println!("{report}");
        }
    }
    if wanted(Part::Idle) {
        publish(Part::Idle, &idle_report(args, sniffer)?)?;
    }
    if wanted(Part::Capture) || wanted(Part::Throughput) {
        fs::create_dir_all(target_dir().join("bench"))?;
        let bed = Topology::new("tsbench")?;
        let twin = Topology::new("tstwin")?;
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
                    trials.push(trial(&bed, &twin, capturer, load, args, sniffer)?);
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
        publish(
            Part::Injector,
            &bench_injector::run(&built.injector, args.seconds)?,
        )?;
    }
    Ok(())
}

/// Every capturer under the flood, `repeat` rounds.
fn flood_report(args: &BenchArgs, sniffer: &str) -> Result<String> {
    fs::create_dir_all(target_dir().join("bench"))?;
    let bed = Topology::new("tsflood")?;
    let bare = Topology::new("tsbare")?;
    let previous_stats = fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
    let _ = fs::write(BPF_STATS, "0");
    let mut trials = Vec::new();
    let result = (|| -> Result<()> {
        let baseline = args
            .baseline
            .as_deref()
            .map(|path| path.to_str().context("non-UTF-8 --baseline path"))
            .transpose()?;
        let capturers = flood::Flooded::ALL
            .into_iter()
            .chain(baseline.map(|_| flood::Flooded::Baseline));
        let capturers: Vec<_> = capturers.filter(|c| args.floods(&c.name())).collect();
        for round in 1..=args.repeat {
            for &capturer in &capturers {
                eprintln!("bench: flood, {} (round {round}) …", capturer.name());
                trials.push(flood::trial(
                    &bed,
                    &bare,
                    capturer,
                    args.flood_packets,
                    (sniffer, baseline),
                )?);
            }
        }
        Ok(())
    })();
    let _ = fs::write(BPF_STATS, previous_stats.trim());
    result?;
    Ok(flood::report(&trials, args.flood_packets, args.repeat))
}

/// One idle sidecar of this build (and of `--baseline`), measured over `seconds`.
fn idle_report(args: &BenchArgs, sniffer: &str) -> Result<String> {
    let bed = Topology::new("tsidle")?;
    let window = std::time::Duration::from_secs(u64::from(args.seconds));
    let mut trials = vec![idle::trial(&bed, "this build", sniffer, window)?];
    if let Some(baseline) = &args.baseline {
        let baseline = baseline.to_str().context("non-UTF-8 --baseline path")?;
        trials.push(idle::trial(&bed, "`--baseline`", baseline, window)?);
    }
    Ok(idle::report(&trials, window))
}

/// Prints a section, keeps a copy in `target/bench/` and writes it into docs/benchmarks.md.
fn publish(part: Part, text: &str) -> Result<()> {
    println!("{text}");
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("{}.md", part.section())), text)?;
    doc::update(part.section(), text)
}
