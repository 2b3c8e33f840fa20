//! The images as built (`cargo xtask image`), run under podman with exactly what the injector
//! grants the sniffer: a bad configuration exits 1, the runtime's default seccomp profile stops
//! the sniffer (exit 2), the injector's grant captures real traffic and stops cleanly, and the
//! injector image serves HTTPS as a non-root user without capabilities.
//!
//! Needs root and podman, and the images built; `cargo xtask test` builds them first as root.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::podman::{
    Containers, INJECTOR_IMAGE, SNIFFER_IMAGE, images, json_lines, least_privilege, make_readable,
};
use serde_json::Value;
use testbed::{Topology, cmd, containers::MUSL, injector::localhost_certs, paths::target_dir};

/// A container's exit code and log lines.
struct Exited {
    code: i32,
    logs: Vec<Value>,
}

impl Exited {
    /// The `error` of its ERROR line, for the check's output.
    fn error(&self) -> String {
        self.logs
            .iter()
            .find(|l| l["level"] == "ERROR")
            .map(|l| l["error"].to_string())
            .unwrap_or_default()
    }
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

/// `PORTS=0` exits 1, with the starting line first.
#[test]
fn a_bad_ports_list_exits_1() -> Result<()> {
    let Some(containers) = images("a_bad_ports_list_exits_1") else {
        return Ok(());
    };
    let bed = Topology::new("tsimg")?;
    let netns = format!("ns:/run/netns/{}", bed.server.name);
    let containers = &containers;
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
    eprintln!("PORTS=0 → exit 1: {}", bad.error());

    Ok(())
}

/// The runtime's default seccomp profile refuses `bpf()` without `CAP_SYS_ADMIN`: exit 2.
#[test]
fn the_runtime_default_seccomp_profile_stops_the_sniffer() -> Result<()> {
    let Some(containers) = images("the_runtime_default_seccomp_profile_stops_the_sniffer") else {
        return Ok(());
    };
    let bed = Topology::new("tsimg")?;
    let netns = format!("ns:/run/netns/{}", bed.server.name);
    let containers = &containers;
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
    eprintln!("default seccomp profile → exit 2: {}", filtered.error());

    Ok(())
}

/// With exactly the injector's grant: start, capture real traffic, stop on SIGTERM.
#[test]
fn with_the_injectors_grant_the_image_captures_and_stops_cleanly() -> Result<()> {
    let Some(containers) = images("with_the_injectors_grant_the_image_captures_and_stops_cleanly")
    else {
        return Ok(());
    };
    let bed = Topology::new("tsimg")?;
    let netns = format!("ns:/run/netns/{}", bed.server.name);
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
    let status = testbed::wait_within(
        &mut child,
        Duration::from_secs(30),
        "the sniffer container after SIGTERM",
    );
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
        "sniffer image with NET_RAW+BPF, seccomp unconfined: {} records, SIGTERM → exit 0",
        records.len()
    );

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
    let status = testbed::wait_within(&mut server, Duration::from_secs(10), "the test server");
    ensure!(status.success(), "test server failed");
    Ok(())
}

/// The injector image runs as 65532 and serves HTTPS with a mounted certificate.
#[test]
fn the_injector_image_serves_https_as_non_root() -> Result<()> {
    let Some(containers) = images("the_injector_image_serves_https_as_non_root") else {
        return Ok(());
    };
    let certs = containers.staging().join("injector-certs");
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
    Ok(())
}
