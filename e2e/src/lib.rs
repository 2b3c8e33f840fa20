//! Helpers for tcp-sniffer's end-to-end checks (`tests/`): where the built binaries and the
//! sources are, whether a needed tool or privilege is here, processes that are always stopped,
//! and small HTTP exchanges.
//!
//! The checks run the binaries `cargo build` left in the target directory (`cargo xtask test`
//! builds them first, and installs the tools). A check whose tool or privilege is missing is
//! skipped with a message, unless `TCP_SNIFFER_REQUIRE_PRIVILEGED` is set (as `cargo xtask
//! test` does for root), in which case it fails: a skip must never hide a broken check.

pub mod podman;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use testbed::paths::{target_dir, workspace_root};
pub use testbed::privileged;

/// A binary of the workspace as `cargo build` left it (debug profile).
///
/// # Panics
///
/// When it has not been built.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p {name}; cargo xtask test does)",
        path.display()
    );
    path
}

fn required() -> bool {
    std::env::var_os("TCP_SNIFFER_REQUIRE_PRIVILEGED").is_some()
}

/// `ok`; when it is not, the check `test` is skipped with a message saying `why`, or fails when
/// checks are required.
#[must_use]
pub fn skip_unless(ok: bool, test: &str, why: &str) -> bool {
    if !ok {
        assert!(
            !required(),
            "{test} cannot run: {why}; TCP_SNIFFER_REQUIRE_PRIVILEGED is set"
        );
        eprintln!("skipping {test}: {why}");
    }
    ok
}

/// Whether `tool` is on `PATH`; when it is not, the check `test` is skipped with a message, or
/// fails when checks are required.
#[must_use]
pub fn tool(test: &str, tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    skip_unless(
        found,
        test,
        &format!("{tool} is not installed (cargo xtask test installs it)"),
    )
}

/// The Python with the test requirements (`TCP_SNIFFER_PYTHON`, set by `cargo xtask test`), or
/// `None` with a message as for [`tool`].
#[must_use]
pub fn python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("TCP_SNIFFER_PYTHON").map(PathBuf::from);
    let here = skip_unless(
        python.is_some(),
        test,
        "TCP_SNIFFER_PYTHON is not set (cargo xtask test sets it)",
    );
    if here { python } else { None }
}

/// A new directory under the system's temporary directory; removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory whose name starts with `name`.
    ///
    /// # Panics
    ///
    /// When it cannot be created.
    #[must_use]
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tcp-sniffer-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose stderr lines are kept; stopped (SIGTERM, then SIGKILL after 5 s) on
/// drop, however the check ends.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with stdout discarded and stderr kept.
    ///
    /// # Panics
    ///
    /// When it cannot start.
    #[must_use]
    pub fn start(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = BufReader::new(child.stderr.take().expect("stderr is piped"));
        thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                lines.lock().expect("not poisoned").push(line);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stderr,
        }
    }

    /// Its stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("not poisoned").join("\n")
    }

    /// Waits up to `timeout` until `condition` holds, failing with the process's stderr when it
    /// exits or the time is up.
    ///
    /// # Panics
    ///
    /// As said.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; {} said:\n{}",
                self.name,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on the loopback interface (bound, then released).
///
/// # Panics
///
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET path` on `addr` over plain HTTP/1.1: the status code and the body, or the error.
///
/// # Errors
///
/// When the exchange fails or the answer is not HTTP.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP from {addr}: {answer}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status from {addr}: {head}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The data of a chunked body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The manifests of `manifests/<kustomization>` as `kubectl kustomize` renders them.
///
/// # Panics
///
/// When they do not render.
#[must_use]
pub fn kustomize(kustomization: &str) -> String {
    let dir = workspace_root().join("manifests").join(kustomization);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "manifests/{kustomization} does not render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}
