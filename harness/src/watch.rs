//! A child process whose stderr is collected line by line, stopped with SIGTERM and reaped for its
//! CPU time and peak RSS (the benchmark's and the soak's capturers).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use testbed::cmd;

/// A child whose stderr is collected line by line.
pub struct Watched {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: thread::JoinHandle<()>,
}

impl Watched {
    /// Starts `cmd` with stdin and stdout closed and stderr collected.
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

    /// Waits up to 30 s for a stderr line containing `needle`.
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
        // SAFETY: signalling our own child.
        ensure!(
            unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
            "kill failed"
        );
        let (cpu, rss) = reap(pid)?;
        self.reader
            .join()
            .map_err(|_| anyhow::anyhow!("stderr reader panicked"))?;
        let lines = Arc::try_unwrap(self.stderr)
            .map_err(|_| anyhow::anyhow!("stderr still shared"))?
            .into_inner()
            .expect("lock");
        Ok((cpu, rss, lines))
    }
}

/// Waits for child `pid` with `wait4`: its CPU seconds (user + system) and peak RSS in KiB;
/// fails unless it exited with 0.
fn reap(pid: i32) -> Result<(f64, u64)> {
    // SAFETY: reaping our own child; `rusage` and `status` are out-pointers.
    let (status, usage) = unsafe {
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
        "the process failed: status {status:#x}"
    );
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        u64::try_from(usage.ru_maxrss)?,
    ))
}

/// CPU time `pid` has used so far, every thread, in nanoseconds (`/proc/PID/task/*/schedstat`,
/// which counts to the nanosecond where `/proc/PID/stat` counts clock ticks). Threads that have
/// exited are not counted: read it while the threads of interest run.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("{} is not a schedstat line", path.display()))?;
    }
    Ok(total)
}

/// The process id of the kernel thread named `name` (e.g. `ksoftirqd/0`).
pub fn kernel_thread(name: &str) -> Result<u32> {
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == name) {
            return Ok(pid);
        }
    }
    bail!("no kernel thread {name}")
}

/// Runs `cmd` to completion with its output discarded: its wall-clock and CPU seconds.
pub fn run_measured(cmd: &mut Command) -> Result<(f64, f64)> {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", cmd::display(cmd)))?;
    let (cpu, _) = reap(i32::try_from(child.id())?)
        .with_context(|| format!("`{}` failed", cmd::display(cmd)))?;
    Ok((start.elapsed().as_secs_f64(), cpu))
}

/// The sniffer's `stopped` log line among `lines`, and a reader of its counters.
pub fn stopped_line(lines: &[String]) -> Result<impl Fn(&str) -> Result<u64>> {
    logged(lines, "stopped")
}

/// The numbers of the sniffer's first log line whose `msg` is `msg`, by field name.
pub fn logged(lines: &[String], msg: &str) -> Result<impl Fn(&str) -> Result<u64>> {
    let line: serde_json::Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["msg"] == msg)
        .with_context(|| format!("the sniffer logged no {msg:?} line"))?;
    let msg = msg.to_owned();
    Ok(move |name: &str| {
        line[name]
            .as_u64()
            .with_context(|| format!("{msg:?} line lacks {name}"))
    })
}
