//! The `sniffer` binary as a child process: its stdout records and stderr JSON logs.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Path of the binary under test.
pub const SNIFFER: &str = env!("CARGO_BIN_EXE_sniffer");

/// A running sniffer; killed on drop if the test did not stop it.
pub struct Agent {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<()>>,
}

/// How a sniffer ended.
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// From the signal (or the start, for [`Agent::wait`]) to the exit.
    pub elapsed: Duration,
    /// Stdout lines (NDJSON records).
    pub stdout: Vec<String>,
    /// Stderr lines, each parsed as JSON (a line that is not JSON fails the test).
    pub logs: Vec<Value>,
}

impl Finished {
    /// The first log line whose `msg` is `msg`.
    pub fn log(&self, msg: &str) -> &Value {
        self.logs
            .iter()
            .find(|line| line["msg"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} log line in {:#?}", self.logs))
    }

    /// Stdout parsed as records.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            .collect()
    }
}

impl Agent {
    /// Starts `cmd` with piped stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sniffer");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let stdout = thread::spawn(move || out.lines().map_while(Result::ok).collect());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let err = BufReader::new(child.stderr.take().expect("stderr"));
        let sink = Arc::clone(&logs);
        let stderr = thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            logs,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Starts `cmd` and waits until its capture is attached.
    pub fn attached(cmd: Command) -> Self {
        let mut agent = Self::spawn(cmd);
        agent.wait_for_log("capture attached", Duration::from_secs(20));
        agent
    }

    /// Waits for a log line with this `msg`; panics with the logs so far after `timeout`.
    pub fn wait_for_log(&mut self, msg: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| line["msg"] == msg);
            if let Some(line) = found {
                return line;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "sniffer exited ({status}) before {msg:?}: {:#?}",
                    self.logs.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {msg:?} within {timeout:?}: {:#?}",
                self.logs.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines with this `msg` arrived so far.
    pub fn log_count(&self, msg: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["msg"] == msg)
            .count()
    }

    /// The process id (the sniffer's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (SIGSTOP) so it reads nothing until [`Agent::resume`].
    pub fn pause(&self) {
        self.kill(libc::SIGSTOP);
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        self.kill(libc::SIGCONT);
    }

    fn kill(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(self) -> Finished {
        self.signal(libc::SIGTERM)
    }

    /// Sends `signal` and waits for the exit.
    pub fn signal(self, signal: i32) -> Finished {
        self.kill(signal);
        self.wait(Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the process to exit by itself; kills it after that.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("sniffer did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let elapsed = start.elapsed();
        let stdout = self
            .stdout
            .take()
            .expect("stdout")
            .join()
            .expect("stdout reader");
        self.stderr
            .take()
            .expect("stderr")
            .join()
            .expect("stderr reader");
        let logs = self
            .logs
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"))
            })
            .collect();
        Finished {
            status,
            elapsed,
            stdout,
            logs,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
