//! `cargo xtask image` builds the two images with buildah from the Dockerfile, using binaries
//! built here (`BINARIES=prebuilt`: no base image can be pulled on these machines).
//! `cargo xtask image-test` then runs the sniffer image in a network namespace with only what the
//! injector grants, and the injector image as a non-root user, and checks their behaviour.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use testbed::Topology;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{bootstrap, ebpf};
use testbed::{cmd, injector::localhost_certs, paths::target_dir, paths::workspace_root};

/// The target of the static binaries in the images.
pub const MUSL: &str = "x86_64-unknown-linux-musl";
/// Local image names.
pub const SNIFFER_IMAGE: &str = concat!("localhost/tcp-sniffer:", env!("CARGO_PKG_VERSION"));
/// Local image name of the injector.
pub const INJECTOR_IMAGE: &str =
    concat!("localhost/tcp-sniffer-injector:", env!("CARGO_PKG_VERSION"));

/// Private container storage under `target/image`, so the host's configuration is untouched.
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    fn new() -> Result<Self> {
        let dir = target_dir().join("image");
        fs::create_dir_all(&dir)?;
        // vfs needs no kernel overlay support; runc and cgroupfs work without systemd here.
        fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n",
        )?;
        Ok(Self { dir })
    }

    /// A buildah or podman command on this storage.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"));
        cmd
    }
}

/// Builds static binaries and both images; returns the storage wrapper for running them.
pub fn build_images() -> Result<Containers> {
    bootstrap::ensure_debian_packages(&[
        ("buildah", "buildah"),
        ("podman", "podman"),
        ("runc", "runc"),
        ("musl-gcc", "musl-tools"),
    ])?;
    cmd::run(Command::new("rustup").args(["target", "add", MUSL]))?;
    ebpf::build()?;
    let root = workspace_root();
    cmd::run(
        cmd::cargo()
            .args(["build", "--release", "--locked", "--target", MUSL])
            .args(["--package", "sniffer", "--package", "injector"])
            // ring compiles C for the target: Debian's musl wrapper is named musl-gcc.
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc"),
    )?;
    let containers = Containers::new()?;
    let staged = containers.dir.clone();
    let release = target_dir().join(MUSL).join("release");
    for binary in ["sniffer", "injector"] {
        fs::copy(release.join(binary), staged.join(binary))?;
    }
    fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        staged.join("ca-certificates.crt"),
    )
    .context(
        "no /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates) to put in the image",
    )?;
    // The sniffer image is built without `--target`, as the deployment guide's plain
    // `docker build .` does: the Dockerfile's last stage must be it.
    for (target, tag) in [(None, SNIFFER_IMAGE), (Some("injector"), INJECTOR_IMAGE)] {
        let mut build = containers.command("buildah");
        build
            .args(["build", "--build-arg", "BINARIES=prebuilt"])
            .args([
                "--build-arg",
                concat!("VERSION=", env!("CARGO_PKG_VERSION")),
            ]);
        if let Some(target) = target {
            build.args(["--target", target]);
        }
        build
            .args(["-t", tag, "-f"])
            .arg(root.join("Dockerfile"))
            .arg(&root);
        cmd::run(&mut build).with_context(|| format!("building {tag} failed"))?;
    }
    // Each rebuild leaves the previous images untagged; vfs keeps full copies of them.
    cmd::run(
        containers
            .command("podman")
            .args(["image", "prune", "--force"]),
    )?;
    cmd::run(containers.command("podman").args(["images"]))?;
    Ok(containers)
}

/// `cargo xtask image`.
pub fn build() -> Result<()> {
    build_images().map(drop)
}

/// A container's exit code and log lines.
struct Exited {
    code: i32,
    logs: Vec<Value>,
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs the sniffer image to completion with `env` and the given podman options.
fn run_sniffer(
    containers: &Containers,
    options: &[String],
    env: &[(&str, &str)],
) -> Result<Exited> {
    let mut cmd = containers.command("podman");
    cmd.args(["run", "--rm"]).args(options);
    for (k, v) in env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    let out = cmd.arg(SNIFFER_IMAGE).output().context("podman run")?;
    Ok(Exited {
        code: out.status.code().unwrap_or(-1),
        logs: json_lines(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// Exactly what the injector grants the sniffer container, on `network` (a podman `--network`
/// value), with the seccomp profile `seccomp` (`None`: the runtime's default).
pub fn least_privilege(network: &str, seccomp: Option<&str>) -> Vec<String> {
    let mut options: Vec<String> = [
        "--network",
        network,
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_RAW",
        "--cap-add",
        "BPF",
        "--read-only",
        "--security-opt",
        "no-new-privileges",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Some(profile) = seccomp {
        options.extend(["--security-opt".to_owned(), format!("seccomp={profile}")]);
    }
    options
}

/// `cargo xtask image-test`.
pub fn verify() -> Result<()> {
    verify_built(&build_images()?)
}

/// The image checks, on images already built into `containers`.
pub fn verify_built(containers: &Containers) -> Result<()> {
    let bed = Topology::new("tsimage")?;
    let netns = format!("ns:/run/netns/{}", bed.server.name);

    // Exit 1 on bad PORTS, with the starting line first.
    let bad = run_sniffer(
        containers,
        &least_privilege(&netns, Some("unconfined")),
        &[("PORTS", "0"), ("INTERFACE", "eth0")],
    )?;
    ensure!(
        bad.code == 1,
        "PORTS=0 exited {} instead of 1: {:?}",
        bad.code,
        bad.logs
    );
    ensure!(
        bad.logs
            .first()
            .is_some_and(|l| l["msg"] == "Sniffer entrypoint starting"),
        "first line: {:?}",
        bad.logs
    );
    eprintln!(
        "image-test: PORTS=0 → exit 1: {}",
        bad.logs
            .iter()
            .find(|l| l["level"] == "ERROR")
            .map(|l| l["error"].to_string())
            .unwrap_or_default()
    );

    // The runtime's default seccomp profile refuses bpf() without CAP_SYS_ADMIN: exit 2.
    let filtered = run_sniffer(
        containers,
        &least_privilege(&netns, None),
        &[("PORTS", "8080"), ("INTERFACE", "eth0")],
    )?;
    ensure!(
        filtered.code == 2,
        "with the default seccomp profile the sniffer exited {}: {:?}",
        filtered.code,
        filtered.logs
    );
    eprintln!(
        "image-test: default seccomp profile → exit 2: {}",
        filtered
            .logs
            .iter()
            .find(|l| l["level"] == "ERROR")
            .map(|l| l["error"].to_string())
            .unwrap_or_default()
    );

    // With exactly the injector's grant: start, capture real traffic, stop on SIGTERM.
    let name = format!("tcp-sniffer-image-test-{}", std::process::id());
    let mut cmd = containers.command("podman");
    cmd.args(["run", "--name", &name])
        .args(least_privilege(&netns, Some("unconfined")));
    for env in [
        "PORTS=8080",
        "INTERFACE=eth0",
        "POD_NAME=web-1",
        "POD_NAMESPACE=demo",
        "NODE_NAME=node-a",
    ] {
        cmd.args(["-e", env]);
    }
    let mut child = cmd
        .arg(SNIFFER_IMAGE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs.iter().any(|l: &Value| l["msg"] == "capture attached") {
        ensure!(
            Instant::now() < deadline,
            "the sniffer image never attached: {logs:?}"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            logs.extend(json_lines(&line));
        }
    }
    let first = &logs[0];
    ensure!(
        first["msg"] == "Sniffer entrypoint starting"
            && first["interface"] == "eth0"
            && first["ports"] == "8080"
            && first["pod"] == "web-1",
        "unexpected first log line: {first}"
    );
    exchange(&bed)?;
    thread::sleep(Duration::from_millis(300));
    cmd::run(
        containers
            .command("podman")
            .args(["kill", "--signal", "TERM", &name]),
    )?;
    let status = child.wait()?;
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().context("stdout")?, &mut stdout)?;
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        logs.extend(json_lines(&line));
    }
    let _ = containers
        .command("podman")
        .args(["rm", "-f", &name])
        .output();
    ensure!(status.code() == Some(0), "SIGTERM: exit {status}: {logs:?}");
    ensure!(
        logs.iter().any(|l| l["msg"] == "stopping") && logs.iter().any(|l| l["msg"] == "stopped"),
        "no stopping/stopped: {logs:?}"
    );
    let records = json_lines(&stdout);
    let syn = records
        .iter()
        .any(|r| r["dst_port"] == 8080 && r["flags"] == serde_json::json!(["SYN"]));
    ensure!(
        syn && records.len() >= 6,
        "expected the connection's packets, got {} records",
        records.len()
    );
    eprintln!(
        "image-test: sniffer image with NET_RAW+BPF, seccomp unconfined: {} records, SIGTERM → exit 0",
        records.len()
    );

    verify_injector(containers)?;
    eprintln!("image-test: all checks passed");
    Ok(())
}

/// One TCP exchange from the client namespace to a listener on 10.0.0.2:8080.
fn exchange(bed: &Topology) -> Result<()> {
    let script = "import socket,threading\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.0.0.2',8080)); s.listen()\n\
def serve():\n    c,_=s.accept(); c.recv(100); c.sendall(b'pong'); c.close()\n\
t=threading.Thread(target=serve); t.start()\n";
    let mut server = bed
        .server
        .command("python3")
        .args(["-c", &format!("{script}t.join()")])
        .spawn()
        .context("python3 server")?;
    thread::sleep(Duration::from_millis(300));
    cmd::run(bed.client.command("python3").args([
        "-c",
        "import socket\nc=socket.create_connection(('10.0.0.2',8080),timeout=5); c.sendall(b'ping'); c.recv(100); c.close()",
    ]))?;
    let status = server.wait()?;
    ensure!(status.success(), "test server failed");
    Ok(())
}

/// The injector image runs as 65532 and serves HTTPS with a mounted certificate.
fn verify_injector(containers: &Containers) -> Result<()> {
    let certs = containers.dir.join("injector-certs");
    let _ = fs::remove_dir_all(&certs);
    let out = containers
        .command("podman")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            INJECTOR_IMAGE,
            "gen-certs",
            "--service",
            "localhost",
        ])
        .output()?;
    ensure!(out.status.success(), "gen-certs in the image failed");
    // The files for the server run come from the host build of the same source.
    let host = target_dir().join(MUSL).join("release/injector");
    localhost_certs(&host, &certs)?;
    make_readable(&certs.join("tls.key"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let name = format!("tcp-sniffer-injector-image-test-{}", std::process::id());
    cmd::run(
        containers
            .command("podman")
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "host",
                "--read-only",
                "--cap-drop",
                "ALL",
            ])
            .arg("-v")
            .arg(format!("{}:/etc/tcp-sniffer/tls:ro", certs.display()))
            .args([
                "-e",
                &format!("LISTEN_ADDR=127.0.0.1:{port}"),
                INJECTOR_IMAGE,
            ]),
    )?;
    let result = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = Command::new("curl")
                .args(["-s", "--cacert"])
                .arg(certs.join("ca.crt"))
                .args([
                    "--resolve",
                    &format!("localhost:{port}:127.0.0.1"),
                    &format!("https://localhost:{port}/healthz"),
                ])
                .output()?;
            if out.stdout == b"ok\n" {
                break;
            }
            if Instant::now() > deadline {
                let logs = containers
                    .command("podman")
                    .args(["logs", &name])
                    .output()?;
                bail!(
                    "the injector image never answered /healthz: {}",
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
        let user = containers
            .command("podman")
            .args(["inspect", "--format", "{{.Config.User}}", &name])
            .output()?;
        ensure!(
            String::from_utf8_lossy(&user.stdout).trim() == "65532:65532",
            "the injector image does not run as 65532"
        );
        Ok(())
    })();
    let _ = containers
        .command("podman")
        .args(["rm", "-f", &name])
        .output();
    result?;
    eprintln!("image-test: injector image as 65532 with no capabilities serves HTTPS /healthz");
    Ok(())
}

fn make_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // The key is mounted into a container running as 65532.
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}
