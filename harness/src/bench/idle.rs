//! An idle sidecar: what one sniffer costs in a pod where nothing happens, multiplied by every
//! pod of a labelled namespace.
//!
//! The sniffer runs with the settings the injector gives it (a live ports file, metrics on
//! `[::]:9464`, delivery to a collector with a token, the capture endpoint on loopback) on an
//! interface with no traffic. After it has settled, its wake-ups (voluntary context switches of
//! every thread: each is a sleep that something ended), CPU (schedstat, to the nanosecond) and
//! memory (`VmRSS`, and `VmHWM`: the peak since start) are read over a window.

use std::{fmt::Write as _, fs, thread, time::Duration};

use anyhow::Result;
use testbed::Topology;

use testbed::paths::target_dir;

use crate::{
    collector::BenchCollector,
    watch::{Watched, cpu_ns},
};

/// How long the sidecar settles after it attached before the window opens.
const SETTLE: Duration = Duration::from_secs(3);

/// What one idle sidecar measured.
pub struct IdleTrial {
    /// Which binary.
    pub name: String,
    /// Wake-ups per second over the window, every thread.
    pub wakeups: f64,
    /// Percent of one CPU over the window.
    pub cpu_percent: f64,
    /// Threads.
    pub threads: usize,
    /// `VmRSS` at the end of the window, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS since start), KiB.
    pub peak_kib: u64,
}

/// Voluntary context switches of every thread of `pid`, and its thread count.
fn sleeps(pid: u32) -> Result<(u64, usize)> {
    let (mut total, mut threads) = (0, 0);
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        threads += 1;
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok((total, threads))
}

/// One idle sidecar of `sniffer`, measured over `window`.
pub fn trial(bed: &Topology, name: &str, sniffer: &str, window: Duration) -> Result<IdleTrial> {
    let collector = BenchCollector::start_discarding(&bed.server.name)?;
    let dir = target_dir().join("bench/idle");
    fs::create_dir_all(&dir)?;
    let annotations = dir.join("annotations");
    fs::write(&annotations, "tcp-sniffer/ports=\"8080\"\n")?;
    let mut cmd = bed.server.command(sniffer);
    cmd.env("PORTS", "8080")
        .env("INTERFACE", "eth0")
        .env("PORTS_FILE", &annotations)
        .env("METRICS_ADDR", "[::]:9464")
        .env("OUTPUT_URL", format!("http://{}/", collector.addr))
        .env("OUTPUT_URL_AUTH_TOKEN", "idle-bench-token")
        .env("OUTPUT_ALLOW_PLAINTEXT_TOKEN", "true");
    let mut watched = Watched::spawn(cmd)?;
    watched.wait_for("capture attached")?;
    thread::sleep(SETTLE);
    let pid = watched.pid();
    let (sleeps_before, _) = sleeps(pid)?;
    let cpu_before = cpu_ns(pid)?;
    thread::sleep(window);
    let (sleeps_after, threads) = sleeps(pid)?;
    let cpu = cpu_ns(pid)? - cpu_before;
    let trial = IdleTrial {
        name: name.to_owned(),
        wakeups: (sleeps_after - sleeps_before) as f64 / window.as_secs_f64(),
        cpu_percent: cpu as f64 / window.as_nanos() as f64 * 100.0,
        threads,
        rss_kib: testbed::memory_kib(pid, "VmRSS")?,
        peak_kib: testbed::memory_kib(pid, "VmHWM")?,
    };
    watched.stop()?;
    Ok(trial)
}

/// The Markdown section of the idle trials.
pub fn report(trials: &[IdleTrial], window: Duration) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "One sniffer with the injector's settings (ports file, metrics on `[::]:9464`, delivery to \
         a collector with a token, captures on loopback) on an interface with no traffic; after \
         {settle} s, over {window} s: wake-ups (voluntary context switches of every thread), CPU \
         (schedstat) and memory (`VmRSS` at the end, `VmHWM` the peak since start).\n",
        settle = SETTLE.as_secs(),
        window = window.as_secs()
    );
    let _ = writeln!(
        text,
        "| build | threads | wake-ups/s | CPU % of one core | RSS MiB | peak RSS MiB |\n|---|---|---|---|---|---|"
    );
    for t in trials {
        let _ = writeln!(
            text,
            "| {} | {} | {:.1} | {:.3} | {:.1} | {:.1} |",
            t.name,
            t.threads,
            t.wakeups,
            t.cpu_percent,
            t.rss_kib as f64 / 1024.0,
            t.peak_kib as f64 / 1024.0
        );
    }
    if let Some(t) = trials.first() {
        let verdict = |met: bool| if met { "met" } else { "**not met**" };
        let _ = writeln!(
            text,
            "\nGoals for this build: ≤ 5 wake-ups/s: {}; ≤ 0.1 % of a CPU: {}; peak RSS ≤ 16 MiB: {}. \
             RSS counts each ring buffer's pages twice (the kernel maps a ring's data twice in a row, \
             so that a record may wrap around its end): the 4 MiB records ring shows as 8 MiB, the 1 MiB \
             captures ring as 2 MiB.",
            verdict(t.wakeups <= 5.0),
            verdict(t.cpu_percent <= 0.1),
            verdict(t.peak_kib <= 16 * 1024),
        );
    }
    text
}
