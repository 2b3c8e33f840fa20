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

use crate::cmd;

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
