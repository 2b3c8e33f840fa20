//! The agent where a pod can put it: few descriptors and a crowd at its metrics port, a stdout
//! nobody reads, a CPU limit far below the traffic. Capture goes on, health stays answerable,
//! the timed work keeps its time, and every record is accounted for.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    agent::{Agent, SNIFFER},
    live_ports::{Podinfo, annotations},
    netns::{SERVER_V4, Topology, topology},
    overload::flood,
    traffic::{MATCHED, exchange, serve},
};

/// `GET path` on `addr` from the server namespace: the status line and how long it took, or
/// the error.
fn get(
    topology: &Topology,
    addr: SocketAddr,
    path: &'static str,
) -> Result<(String, Duration), String> {
    topology.server.run(move || {
        let start = Instant::now();
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .map_err(|e| e.to_string())?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        let status = text.lines().next().unwrap_or_default().to_owned();
        Ok((status, start.elapsed()))
    })
}

/// CPU seconds the process has used, all threads (schedstat).
fn cpu_seconds(pid: u32) -> f64 {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let path = task.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total as f64 / 1e9
}

/// With 64 descriptors and 300 idle connections at its metrics port, the agent neither takes
/// the failed checks for a vanished interface nor spins on accept: capture goes on, `/healthz`
/// answers once the idle connections are cut, SIGTERM stops it cleanly. (Before: exit 2 within
/// about 2 s, "interface is gone", the accept loop spinning.)
#[test]
fn a_crowd_at_the_metrics_port_with_few_descriptors_does_not_stop_capture() {
    testbed::skip_unless_root!();
    let topology = topology();
    let metrics: SocketAddr = format!("{SERVER_V4}:9464").parse().unwrap();
    let target: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(target).expect("bind"));
    let server = serve(listener, 1);
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env("METRICS_ADDR", metrics.to_string());
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: setrlimit is async-signal-safe; the child applies it to itself before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let agent = Agent::attached(cmd);
    let pid = agent.pid();

    let crowd = topology.client.run(move || {
        (0..300)
            .filter_map(|_| TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).ok())
            .collect::<Vec<_>>()
    });
    assert!(crowd.len() > 100, "only {} connections", crowd.len());
    thread::sleep(Duration::from_secs(3));
    let before = cpu_seconds(pid);
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_seconds(pid) - before;
    assert!(
        spent < 0.1,
        "{spent:.3} s of CPU in one idle second: spinning"
    );
    drop(crowd);

    let port = topology.client.run(move || exchange(target, 200));
    server.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(&topology, metrics, "/healthz") {
            Ok((status, _)) if status.starts_with("HTTP/1.1 200") => break,
            other => assert!(Instant::now() < deadline, "/healthz: {other:?}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let records = finished.records();
    assert!(
        records
            .iter()
            .any(|r| r["src_port"] == port || r["dst_port"] == port),
        "no record of the connection after the crowd: {} records",
        records.len()
    );
    assert!(
        finished
            .logs
            .iter()
            .all(|l| !l["msg"].as_str().unwrap_or_default().contains("is gone")),
        "{:#?}",
        finished.logs
    );
}

/// A sniffer whose stdout is a pipe nobody reads (`sniffer | sleep 20`): the reader keeps
/// going, `/healthz` answers, SIGTERM stops it within the grace, and the stopped line counts
/// every record (before: blocked in the write, `/healthz` silent, SIGTERM acted 14.6 s later
/// with exit 2 and `delivered 0, dropped 0` of 800).
#[test]
fn a_stalled_stdout_never_stalls_the_agent() {
    testbed::skip_unless_root!();
    let topology = topology();
    let metrics: SocketAddr = format!("{SERVER_V4}:9464").parse().unwrap();
    let target: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(target).expect("bind"));
    let connections = 40;
    let server = serve(listener, connections);
    // A pipe whose read end stays open and unread.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    let (unread, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut child = topology
        .server
        .command(SNIFFER)
        .env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env("METRICS_ADDR", metrics.to_string())
        .env("SHUTDOWN_GRACE_MS", "2000")
        .env("BUFFER_MAX_RECORDS", "2000")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Logs::read(&mut child);
    logs.wait_for("capture attached");

    // 40 connections of 20 KB: hundreds of records, more than a pipe holds.
    topology.client.run(move || {
        for _ in 0..connections {
            exchange(target, 20_000);
        }
    });
    server.join().unwrap();
    let (status, latency) = get(&topology, metrics, "/healthz").expect("/healthz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        latency < Duration::from_secs(1),
        "/healthz took {latency:?}"
    );

    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) },
        0
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("no exit within 10 s of SIGTERM: {:#?}", logs.all());
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    drop(unread);
    assert_eq!(status.code(), Some(0), "{:#?}", logs.all());
    assert!(
        elapsed < Duration::from_millis(3500),
        "stopped after {elapsed:?}"
    );
    let stopped = logs.wait_for("stopped");
    let count = |field: &str| stopped[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    assert!(count("matched") > 300, "{stopped}");
    assert_eq!(
        count("delivered") + count("dropped"),
        count("matched"),
        "{stopped}"
    );
    assert!(count("dropped_undeliverable") > 0, "{stopped}");
}

/// Under a flood that a CPU limit keeps the reader from ever catching up with (the ring stays
/// full), the timed work still runs on time: a `stats` line every second, a `PORTS_FILE` change
/// applied, `/healthz` answering; and the accounting stays exact. (Before: the ring reader won
/// every turn while a backlog remained, so these stopped exactly under overload.)
#[test]
fn housekeeping_keeps_its_time_under_a_flood_the_reader_cannot_keep_up_with() {
    testbed::skip_unless_root!();
    let topology = topology();
    let metrics: SocketAddr = format!("{SERVER_V4}:9464").parse().unwrap();
    let mut podinfo = Podinfo::new(
        "tcp-sniffer-housekeeping",
        &annotations(&MATCHED.to_string()),
    );
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env("PORTS_FILE", podinfo.file())
        .env("STATS_INTERVAL_SECS", "1")
        .env("METRICS_ADDR", metrics.to_string());
    let agent = Agent::attached(cmd);
    // 1 % of a CPU: a pod's CPU limit far below what the flood needs.
    let limit = CpuLimit::new("tsn-housekeeping", agent.pid(), 1_000);

    let stats_before = agent.log_count("stats");
    let health = thread::scope(|scope| {
        let probe = scope.spawn(|| {
            thread::sleep(Duration::from_secs(2));
            podinfo.write(&annotations(&format!("{MATCHED},9090")));
            thread::sleep(Duration::from_secs(2));
            get(&topology, metrics, "/healthz")
        });
        flood(&topology, 4, Duration::from_secs(6));
        probe.join().unwrap()
    });
    let stats_during = agent.log_count("stats") - stats_before;
    let changed_during = agent.log_count("ports changed");
    drop(limit);
    assert!(
        stats_during >= 3,
        "{stats_during} stats lines during a 6 s flood"
    );
    assert_eq!(
        changed_during, 1,
        "the ports change was not applied during the flood"
    );
    // Answered: with 1 ms of CPU every 100 ms, a debug build's read of 4,096 records alone
    // takes about a second of wall time, so only an answer at all is asked for here.
    let (status, _) = health.expect("/healthz during the flood");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let stopped = finished.log("stopped");
    let count = |field: &str| stopped[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    // The flood really outran the reader, and nothing went unaccounted.
    assert!(count("dropped_ring_full") > 0, "{stopped}");
    assert_eq!(
        count("delivered") + count("dropped"),
        count("matched"),
        "{stopped}"
    );
}

/// The process `pid` limited to `quota_us` of CPU every 100 ms (a pod's CPU limit), through the
/// cgroup `cpu` controller (v1 or v2); the group is removed on drop.
struct CpuLimit {
    group: PathBuf,
    parent: PathBuf,
    pid: u32,
}

impl CpuLimit {
    fn new(name: &str, pid: u32, quota_us: u32) -> Self {
        let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
        let (parent, quota_file, quota) = if v1.join("cpu.cfs_quota_us").exists() {
            (v1, "cpu.cfs_quota_us", quota_us.to_string())
        } else {
            (
                PathBuf::from("/sys/fs/cgroup"),
                "cpu.max",
                format!("{quota_us} 100000"),
            )
        };
        let group = parent.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&group).unwrap_or_else(|e| {
            panic!("cannot create cgroup {group:?} (needs the cpu controller): {e}")
        });
        std::fs::write(group.join(quota_file), quota).unwrap();
        std::fs::write(group.join("cgroup.procs"), pid.to_string()).unwrap();
        Self { group, parent, pid }
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // Back to the parent group first: a group with processes cannot be removed.
        let _ = std::fs::write(self.parent.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.group);
    }
}

/// The JSON log lines of a child's stderr, read as they come.
struct Logs(Arc<Mutex<Vec<Value>>>);

impl Logs {
    fn read(child: &mut Child) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
                sink.lock().unwrap().push(value);
            }
        });
        Self(lines)
    }

    fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }

    /// Waits up to 20 s for a line with this `msg`.
    fn wait_for(&self, msg: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.all().into_iter().find(|l| l["msg"] == msg) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {msg:?} line: {:#?}",
                self.all()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
