//! Who spent the CPU during a benchmark run, kernel included: `perf record` samples every CPU at
//! a fixed period of CPU time, and each sample is attributed to the capturer's process (its
//! userspace and its own system calls) or, when its kernel call chain passes through the
//! capture hook, to the capture's kernel side (the packet tap, the filter or eBPF program, the
//! copy into the ring) wherever that ran: the sender's system call, a softirq, another process.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};

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
            .args(["record", "-a", "-g", "-e", "cpu-clock", "-c"])
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

    /// Stops sampling and attributes the samples; `pid` is the capturer's process, if any.
    pub fn stop(mut self, pid: Option<u32>) -> Result<CpuShares> {
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
            .args(["script", "-F", "pid,ip,sym", "-i"])
            .arg(&self.file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start perf script")?;
        let out = BufReader::new(script.stdout.take().context("perf script stdout")?);
        let counts = attribute(out, pid)?;
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

/// Reads `perf script -F pid,ip,sym`: a space-padded line with the pid, then one tab-indented
/// line per frame, then a blank line. Samples of pid 0 are the idle task; -1 is a pid perf could
/// not tell (busy, so counted, but nobody's).
fn attribute(script: impl BufRead, pid: Option<u32>) -> Result<Counts> {
    let mut counts = Counts::default();
    // (pid, whether a frame so far is in the hook) of the sample being read.
    let mut sample: Option<(i64, bool)> = None;
    let pid = pid.map(i64::from);
    let finish = |sample: Option<(i64, bool)>, counts: &mut Counts| {
        if let Some((sample_pid, in_hook)) = sample
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
            if let Some((_, in_hook)) = &mut sample {
                let symbol = line.split_whitespace().nth(1).unwrap_or_default();
                *in_hook |= HOOK_SYMBOLS.contains(&symbol);
            }
        } else {
            finish(sample.take(), &mut counts);
            let sample_pid = line
                .trim()
                .parse()
                .with_context(|| format!("unexpected perf script line {line:?}"))?;
            sample = Some((sample_pid, false));
        }
    }
    finish(sample.take(), &mut counts);
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::{Counts, attribute};

    /// Shaped like real `perf script -F pid,ip,sym` output of a capture run.
    const SCRIPT: &str = "    42 \n\
        \tffffffff813603cd serde_json_thing\n\
        \n\
        \x20  777 \n\
        \tffffffff81000001 bpf_prog_543d1993f3f3d5fb_tcp_sniffer\n\
        \tffffffff81000002 packet_rcv\n\
        \tffffffff81000003 __netif_receive_skb_core.constprop.0\n\
        \n\
        \x20  777 \n\
        \tffffffff81000004 skb_clone\n\
        \tffffffff81000005 dev_queue_xmit_nit\n\
        \n\
        \x20  777 \n\
        \tffffffff81000006 tcp_sendmsg\n\
        \n\
        \x20    0 \n\
        \tffffffff81000007 pv_native_safe_halt\n\
        \n\
        \x20   -1 \n\
        \tffffffff81000009 tcp_sendmsg\n\
        \n\
        \x20   42 \n\
        \tffffffff81000008 packet_rcv\n";

    #[test]
    fn samples_go_to_the_process_the_hook_or_neither() {
        let counts = attribute(SCRIPT.as_bytes(), Some(42)).unwrap();
        assert_eq!(
            counts,
            Counts {
                process: 2,
                hook: 2,
                busy: 6
            }
        );
        let counts = attribute(SCRIPT.as_bytes(), None).unwrap();
        assert_eq!(counts.process, 0);
        assert_eq!(counts.hook, 3);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(attribute("not a pid\n".as_bytes(), None).is_err());
    }
}
