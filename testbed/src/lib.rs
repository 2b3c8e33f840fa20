//! What tcp-sniffer's tests, end-to-end checks, benchmarks and tasks share.
//!
//! Test hosts (here): two network namespaces, `client` and `server`, each with an `eth0` joined
//! to the other's by a veth pair, removed on drop (also when a test fails). Traffic goes only to
//! their addresses. Running programs with errors that name the command ([`cmd`]), where the
//! workspace and its builds are ([`paths`]), running the injector on loopback ([`injector`]), and
//! the images under podman ([`containers`]).

pub mod cmd;
pub mod containers;
pub mod injector;
pub mod paths;

use std::{
    fs::File,
    io,
    os::fd::AsRawFd as _,
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Whether this process runs as root, as tests that create network namespaces, load BPF programs
/// or run podman need. When it does not, the test `test` is skipped with the reason printed,
/// unless `TCP_SNIFFER_REQUIRE_PRIVILEGED` is set (as `cargo xtask test` does for root), in which
/// case it fails: a skip must never hide a broken check.
///
/// # Panics
///
/// When it is not root and `TCP_SNIFFER_REQUIRE_PRIVILEGED` is set.
#[must_use]
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("TCP_SNIFFER_REQUIRE_PRIVILEGED").is_none(),
        "{test} needs root, and TCP_SNIFFER_REQUIRE_PRIVILEGED is set"
    );
    eprintln!("skipping {test}: it needs root (network namespaces, BPF programs or podman)");
    false
}

/// Returns from the enclosing test unless [`privileged`] lets it run, naming the test by its
/// path so that no test repeats its own name.
///
/// # Examples
///
/// ```
/// fn attaches_to_the_test_interface() {
///     testbed::skip_unless_root!();
///     // … create a `testbed::Topology`, run the sniffer in it …
/// }
/// # attaches_to_the_test_interface();
/// ```
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        fn here() {}
        let test = ::std::any::type_name_of_val(&here).trim_end_matches("::here");
        if !$crate::privileged(test) {
            return;
        }
    };
}

/// Client IPv4 address.
pub const CLIENT_V4: &str = "10.0.0.1";
/// Server IPv4 address.
pub const SERVER_V4: &str = "10.0.0.2";
/// Client IPv6 address.
pub const CLIENT_V6: &str = "fd00::1";
/// Server IPv6 address.
pub const SERVER_V6: &str = "fd00::2";

/// A memory figure of process `pid` from `/proc/PID/status`, in KiB: `VmHWM` (its peak resident
/// set since it started) or `VmRSS` (now).
///
/// # Errors
///
/// When the file cannot be read or has no such field.
pub fn memory_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// Waits up to `timeout` for `child` to exit. After that it is killed and the test fails with
/// `what` in the message: a child that ignores the signal it was sent (one inherited as ignored,
/// say, when the suite is started with SIGINT ignored) fails the test instead of hanging the
/// suite.
///
/// # Panics
///
/// When the child is still running at `timeout`, or cannot be waited on.
pub fn wait_within(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}: killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `ip` with `args`; an error carries its stderr.
///
/// # Errors
///
/// When `ip` cannot run or fails.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up (replacing one a killed earlier run left).
    ///
    /// # Errors
    ///
    /// When `ip` fails (e.g. without `CAP_SYS_ADMIN`).
    pub fn create(name: String) -> io::Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has joined this namespace; sockets it creates live here.
    ///
    /// # Panics
    ///
    /// When the namespace cannot be joined, or `f` panics.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("netns thread panicked")
    }

    /// Starts `f` on a thread that joins this namespace first, as [`Netns::run`] does, without
    /// waiting for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: `file` is a namespace descriptor; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
            f()
        })
    }

    /// `program` run inside this namespace through `ip netns exec` (which execs it: the child's
    /// pid is the program's).
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Packets received plus sent by `interface` in this namespace.
    ///
    /// # Errors
    ///
    /// When the counters cannot be read.
    pub fn packets(&self, interface: &str) -> io::Result<u64> {
        let mut total = 0;
        for direction in ["rx", "tx"] {
            let out = self
                .command("cat")
                .arg(format!(
                    "/sys/class/net/{interface}/statistics/{direction}_packets"
                ))
                .output()?;
            total += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .map_err(|_| io::Error::other(format!("no {direction} counter for {interface}")))?;
        }
        Ok(total)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two hosts, `client` and `server`, each with an `eth0` joined to the other's by a veth pair.
#[derive(Debug)]
pub struct Topology {
    /// 10.0.0.1 and fd00::1.
    pub client: Netns,
    /// 10.0.0.2 and fd00::2.
    pub server: Netns,
}

impl Topology {
    /// Creates both namespaces (named `<prefix>-<pid>-<n>-c` and `…-s`) and the link between them.
    ///
    /// # Errors
    ///
    /// When `ip` fails (e.g. without `CAP_SYS_ADMIN`).
    pub fn new(prefix: &str) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = Netns::create(format!("{id}-c"))?;
        let server = Netns::create(format!("{id}-s"))?;
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &server.name,
        ])?;
        for (ns, v4, v6) in [
            (&client, CLIENT_V4, CLIENT_V6),
            (&server, SERVER_V4, SERVER_V6),
        ] {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                "eth0",
            ])?;
            // nodad: the address is usable at once instead of after duplicate detection.
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
        }
        Ok(Self { client, server })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_of_this_process() {
        let pid = std::process::id();
        let (now, peak) = (
            memory_kib(pid, "VmRSS").unwrap(),
            memory_kib(pid, "VmHWM").unwrap(),
        );
        assert!(now > 0 && peak >= now, "VmRSS {now}, VmHWM {peak}");
        assert!(memory_kib(pid, "VmNothing").is_err());
        assert!(
            memory_kib(pid, "VmRS").is_err(),
            "a prefix is not the field"
        );
    }
}
