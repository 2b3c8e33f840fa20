//! Test hosts: network namespaces joined by a veth pair, removed on drop (also when a test fails).

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

/// Whether this process can create namespaces and load BPF. When it cannot, the test is skipped
/// with the reason printed, unless `TCP_SNIFFER_REQUIRE_PRIVILEGED` is set (as `cargo xtask test`
/// does for root), in which case it fails.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("TCP_SNIFFER_REQUIRE_PRIVILEGED").is_none(),
        "{test} needs root, and TCP_SNIFFER_REQUIRE_PRIVILEGED is set"
    );
    eprintln!(
        "skipping {test}: it creates network namespaces and loads BPF programs, which needs root"
    );
    false
}

/// Runs an `ip` command and panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Self {
        // A namespace left behind by a killed earlier run with the same name would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that has joined this namespace; sockets it creates live here.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: `file` is a namespace descriptor; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// `program` run inside this namespace through `ip netns exec` (which execs it: the child's
    /// pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
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
pub struct Topology {
    /// 10.0.0.1 and fd00::1.
    pub client: Netns,
    /// 10.0.0.2 and fd00::2.
    pub server: Netns,
}

/// Client and server addresses.
pub const CLIENT_V4: &str = "10.0.0.1";
/// Server IPv4 address.
pub const SERVER_V4: &str = "10.0.0.2";
/// Client IPv6 address.
pub const CLIENT_V6: &str = "fd00::1";
/// Server IPv6 address.
pub const SERVER_V6: &str = "fd00::2";

impl Topology {
    /// Creates both namespaces and the link between them.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "tsn-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = Netns::create(format!("{id}-c"));
        let server = Netns::create(format!("{id}-s"));
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
        ]);
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
            ]);
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        }
        Self { client, server }
    }
}
