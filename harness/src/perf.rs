//! Who spent the CPU during a benchmark run, kernel included: `perf record` samples every CPU at
//! a fixed period of CPU time, and each sample is attributed to the capturer's process (its
//! userspace and its own system calls) or, when its kernel call chain passes through the
//! capture hook, to the capture's kernel side (the packet tap, the filter or eBPF program, the
//! copy into the ring) wherever that ran: the sender's system call, a softirq, another process.
//! Samples are stamped with `CLOCK_MONOTONIC`, so only those taken within the [`Span`]s a run
//! names are counted: a run that alternates the watched transfer with an unwatched one counts
//! the watched one alone.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};
use cli_support::clock::monotonic_ns;

/// Sampling period in nanoseconds of CPU time (4 kHz per CPU).
const PERIOD_NS: u64 = 250_000;

/// Kernel functions every packet handed to a packet socket goes through: the transmit-side tap
/// (it clones the packet), `AF_PACKET`'s receive (runs the filter; the sniffer's eBPF program
/// and ring are below it), tcpdump's memory-mapped receive (filter and copy), and the ring
/// buffer's wakeup, which runs from an interrupt.
const HOOK_SYMBOLS: [&str; 4] = [
    "dev_queue_xmit_nit",
    "packet_rcv",
    "tpacket_rcv",
    "bpf_ringbuf_notify",
];

/// A stretch of `CLOCK_MONOTONIC` time, the clock `perf record -k CLOCK_MONOTONIC` stamps its
/// samples with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// Seconds since boot, as `CLOCK_MONOTONIC` counts them.
    start: f64,
    end: f64,
}

impl Span {
    /// Runs `f`, returning what it returned and the span it ran in.
    pub fn of<T>(f: impl FnOnce() -> T) -> (T, Self) {
        let start = monotonic();
        let value = f();
        (
            value,
            Self {
                start,
                end: monotonic(),
            },
        )
    }

    /// How long the span lasted, in seconds.
    pub fn seconds(self) -> f64 {
        self.end - self.start
    }

    fn holds(self, time: f64) -> bool {
        (self.start..=self.end).contains(&time)
    }
}

/// `CLOCK_MONOTONIC` in seconds, as `perf script` prints its samples' times.
fn monotonic() -> f64 {
    monotonic_ns() as f64 * 1e-9
}

/// A running `perf record -a`.
pub struct Sampler {
    child: Child,
    file: PathBuf,
}

/// CPU seconds by attribution.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuShares {
    /// In the capturer's process, user and kernel.
    pub process: f64,
    /// In the capture hook, outside the capturer's process.
    pub hook: f64,
    /// Every non-idle sample on every CPU.
    pub busy: f64,
}

impl Sampler {
    /// Starts sampling all CPUs into `file`.
    pub fn start(file: &Path) -> Result<Self> {
        let child = Command::new("perf")
            .args([
                "record",
                "-a",
                "-g",
                "-k",
                "CLOCK_MONOTONIC",
                "-e",
                "cpu-clock",
                "-c",
            ])
            .arg(PERIOD_NS.to_string())
            .arg("-o")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start perf record")?;
        // perf needs a moment to open its events on every CPU.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(Self {
            child,
            file: file.to_owned(),
        })
    }

    /// Stops sampling and attributes the samples taken within `spans`; `pid` is the capturer's
    /// process, if any.
    pub fn stop(mut self, pid: Option<u32>, spans: &[Span]) -> Result<CpuShares> {
        let perf = i32::try_from(self.child.id())?;
        // SAFETY: signalling our own child; SIGINT makes perf write its file and exit.
        ensure!(
            unsafe { libc::kill(perf, libc::SIGINT) } == 0,
            "cannot stop perf"
        );
        let status = self.child.wait()?;
        // perf writes its file, then dies of the SIGINT it caught.
        ensure!(
            status.success() || status.signal() == Some(libc::SIGINT),
            "perf record failed: {status}"
        );
        let mut script = Command::new("perf")
            .args(["script", "-F", "pid,time,ip,sym", "-i"])
            .arg(&self.file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start perf script")?;
        let out = BufReader::new(script.stdout.take().context("perf script stdout")?);
        let counts = attribute(out, pid, spans)?;
        let status = script.wait()?;
        ensure!(status.success(), "perf script failed: {status}");
        let seconds = |samples: u64| samples as f64 * PERIOD_NS as f64 / 1e9;
        Ok(CpuShares {
            process: seconds(counts.process),
            hook: seconds(counts.hook),
            busy: seconds(counts.busy),
        })
    }
}

/// Sample counts by attribution.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    process: u64,
    hook: u64,
    busy: u64,
}

/// Reads `perf script -F pid,time,ip,sym`: a space-padded line with the pid and the time
/// (`   777   161.968693: `), then one tab-indented line per frame, then a blank line. Samples of
/// pid 0 are the idle task; -1 is a pid perf could not tell (busy, so counted, but nobody's).
/// Samples outside every span are skipped.
fn attribute(script: impl BufRead, pid: Option<u32>, spans: &[Span]) -> Result<Counts> {
    let mut counts = Counts::default();
    // (pid, whether it falls in a span, whether a frame so far is in the hook) of the sample
    // being read.
    let mut sample: Option<(i64, bool, bool)> = None;
    let pid = pid.map(i64::from);
    let finish = |sample: Option<(i64, bool, bool)>, counts: &mut Counts| {
        if let Some((sample_pid, true, in_hook)) = sample
            && sample_pid != 0
        {
            counts.busy += 1;
            if Some(sample_pid) == pid {
                counts.process += 1;
            } else if in_hook {
                counts.hook += 1;
            }
        }
    };
    for line in script.lines() {
        let line = line.context("reading perf script output")?;
        if line.trim().is_empty() {
            finish(sample.take(), &mut counts);
        } else if line.starts_with('\t') {
            if let Some((_, _, in_hook)) = &mut sample {
                let symbol = line.split_whitespace().nth(1).unwrap_or_default();
                *in_hook |= HOOK_SYMBOLS.contains(&symbol);
            }
        } else {
            finish(sample.take(), &mut counts);
            let header = || -> Option<(i64, f64)> {
                let mut fields = line.split_whitespace();
                let sample_pid = fields.next()?.parse().ok()?;
                let time = fields.next()?.strip_suffix(':')?.parse().ok()?;
                fields.next().is_none().then_some((sample_pid, time))
            };
            let (sample_pid, time) =
                header().with_context(|| format!("unexpected perf script line {line:?}"))?;
            sample = Some((sample_pid, spans.iter().any(|s| s.holds(time)), false));
        }
    }
    finish(sample.take(), &mut counts);
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::{Counts, Span, attribute};

    /// Shaped like real `perf script -F pid,ip,sym` output of a capture run.
    const SCRIPT: &str = "    42    10.000100: \n\
        \tffffffff813603cd serde_json_thing\n\
        \n\
        \x20  777    10.000350: \n\
        \tffffffff81000001 bpf_prog_543d1993f3f3d5fb_tcp_sniffer\n\
        \tffffffff81000002 packet_rcv\n\
        \tffffffff81000003 __netif_receive_skb_core.constprop.0\n\
        \n\
        \x20  777    10.000600: \n\
        \tffffffff81000004 skb_clone\n\
        \tffffffff81000005 dev_queue_xmit_nit\n\
        \n\
        \x20  777    10.000850: \n\
        \tffffffff81000006 tcp_sendmsg\n\
        \n\
        \x20    0    10.001100: \n\
        \tffffffff81000007 pv_native_safe_halt\n\
        \n\
        \x20   -1    10.001350: \n\
        \tffffffff81000009 tcp_sendmsg\n\
        \n\
        \x20   42    12.000000: \n\
        \tffffffff81000008 packet_rcv\n";

    /// One span around every sample of [`SCRIPT`].
    const ALL: [Span; 1] = [Span {
        start: 10.0,
        end: 12.0,
    }];

    #[test]
    fn samples_go_to_the_process_the_hook_or_neither() {
        let counts = attribute(SCRIPT.as_bytes(), Some(42), &ALL).unwrap();
        assert_eq!(
            counts,
            Counts {
                process: 2,
                hook: 2,
                busy: 6
            }
        );
        let counts = attribute(SCRIPT.as_bytes(), None, &ALL).unwrap();
        assert_eq!(counts.process, 0);
        assert_eq!(counts.hook, 3);
    }

    #[test]
    fn only_samples_within_a_span_count() {
        let spans = [
            Span {
                start: 10.0003,
                end: 10.0007,
            },
            Span {
                start: 11.0,
                end: 12.0,
            },
        ];
        // The two hook samples of pid 777 in the first span, pid 42's last one in the second.
        let counts = attribute(SCRIPT.as_bytes(), Some(42), &spans).unwrap();
        assert_eq!(
            counts,
            Counts {
                process: 1,
                hook: 2,
                busy: 3
            }
        );
        assert_eq!(
            attribute(SCRIPT.as_bytes(), Some(42), &[]).unwrap(),
            Counts::default()
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(attribute("not a pid\n".as_bytes(), None, &ALL).is_err());
        assert!(attribute("   42 no-time\n".as_bytes(), None, &ALL).is_err());
    }
}
