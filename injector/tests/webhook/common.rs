//! The `injector` binary on loopback with freshly generated certificates, and HTTPS clients
//! that trust only the generated CA.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use injector::certs::{GeneratedCerts, generate};
use serde_json::Value;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, pem::PemObject as _},
};

/// Path of the binary under test.
pub const INJECTOR: &str = env!("CARGO_BIN_EXE_injector");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "injector-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Certificates for `localhost`, valid a day.
pub fn localhost_certs() -> GeneratedCerts {
    generate(vec!["localhost".to_owned()], 1).unwrap()
}

/// Lays out `certs` as the kubelet mounts a Secret: `tls.crt` → `..data/tls.crt`, with
/// `..data` a symlink to a timestamped directory, swapped atomically by [`swap_secret`].
pub fn mount_secret(dir: &Path, certs: &GeneratedCerts) {
    swap_secret(dir, certs, "..2026_11_27_00_00_00.000000001");
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), link).unwrap();
        }
    }
}

/// Writes a new version directory and points `..data` at it with one rename, as the kubelet does.
pub fn swap_secret(dir: &Path, certs: &GeneratedCerts, version: &str) {
    let versioned = dir.join(version);
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(versioned.join("tls.key"), &certs.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// A server with fresh `localhost` certificates mounted like a Secret, default options. The
/// directory must outlive the server.
pub fn start_default() -> (TempDir, GeneratedCerts, Server) {
    let dir = TempDir::new();
    let certs = localhost_certs();
    mount_secret(&dir.0, &certs);
    let server = Server::start(&dir.0, &[]);
    (dir, certs, server)
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running injector; killed on drop.
pub struct Server {
    /// The child.
    pub child: Child,
    /// Its webhook (HTTPS) port on 127.0.0.1.
    pub port: u16,
    /// Its plain-HTTP metrics port on 127.0.0.1.
    pub metrics_port: u16,
    /// Its stderr lines so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `injector serve` with the mounted Secret in `secret_dir` and extra arguments.
    pub fn start(secret_dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let metrics_port = free_port();
        let mut child = Command::new(INJECTOR)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--tls-cert")
            .arg(secret_dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(secret_dir.join("tls.key"))
            .args(["--tls-reload-interval-secs", "1"])
            .args(extra)
            .env_remove("INJECTOR_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn injector");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let stderr = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let server = Self {
            child,
            port,
            metrics_port,
            logs,
        };
        server.wait_for_log("serving HTTPS");
        server
    }

    /// Waits up to 10 s for a log line whose `msg` contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .log_lines()
                .into_iter()
                .find(|l| l["msg"].as_str().is_some_and(|m| m.contains(needle)))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} log line: {:#?}",
                self.logs.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to 10 s until `count` log lines have this exact `msg` (stderr is read by a
    /// thread, so the last lines may lag the last response), and returns them.
    pub fn wait_for_lines(&self, msg: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<Value> = self
                .log_lines()
                .into_iter()
                .filter(|l| l["msg"] == msg)
                .collect();
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line, parsed (each must be JSON).
    pub fn log_lines(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// `GET /healthz` from a fresh client trusting only `cas`: the status, or `None` when the
    /// TLS handshake (or the request) fails.
    pub fn health(&self, cas: &[&str]) -> Option<u16> {
        client(cas)
            .get(&self.url("/healthz"))
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client trusting only the given CA certificates, with no connection reuse.
pub fn client(cas: &[&str]) -> ureq::Agent {
    let certs: Vec<_> = cas
        .iter()
        .map(|pem| ureq::tls::Certificate::from_pem(pem.as_bytes()).unwrap())
        .collect();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build(),
        )
        .build();
    ureq::Agent::new_with_config(config)
}

/// A rustls client configuration trusting only `ca_pem`, for the given TLS versions and ALPN
/// protocols (for requests an HTTP library would not send, and protocol checks).
pub fn tls_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// POSTs `body` to `/mutate`; returns the status and the body text.
pub fn post(agent: &ureq::Agent, server: &Server, body: &[u8]) -> (u16, String) {
    let mut response = agent
        .post(&server.url("/mutate"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("request: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}
