//! The command line: exit codes, `gen-certs`, `inject -f`, clean stop.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sidecar_contract::url::url_cases;

use crate::common::{INJECTOR, Server, TempDir, localhost_certs, mount_secret, start_default};

/// Runs the injector to its end; killed, and the test failed, if that takes over 20 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(INJECTOR);
    cmd.args(args)
        .env_remove("INJECTOR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    // The output is read to its end on another thread, so a full pipe never stalls the child.
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(Duration::from_secs(20)).is_err() {
        // SAFETY: signalling our own child, which has not been reaped (the waiter is still in wait).
        unsafe { libc_kill(i32::try_from(pid).unwrap(), 9) };
        let out = waiter.join().unwrap().unwrap();
        panic!(
            "injector {args:?} still running after 20 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    waiter.join().unwrap().unwrap()
}

fn error_of(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line: Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line: {stderr}"));
    line["error"].as_str().unwrap().to_owned()
}

#[test]
fn bad_options_exit_1_naming_the_field() {
    let dir = TempDir::new();
    let certs = localhost_certs();
    mount_secret(&dir.0, &certs);
    let cert = dir.0.join("tls.crt");
    let key = dir.0.join("tls.key");
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let config = dir.0.join("options.json");
    std::fs::write(&config, r#"{"imagePullPolicy":"Sometimes"}"#).unwrap();
    let out = run(
        &[&["serve", "--config", config.to_str().unwrap()][..], &tls].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(error_of(&out).contains("option imagePullPolicy: \"Sometimes\""));

    std::fs::write(&config, r#"{"image":"x", "colour":"blue"}"#).unwrap();
    let out = run(
        &[&["serve", "--config", config.to_str().unwrap()][..], &tls].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(error_of(&out).contains("unknown field `colour`"));

    let out = run(
        &[&["serve"][..], &tls].concat(),
        &[("SNIFFER_DEFAULT_PORTS", "80,0")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(error_of(&out).contains("option defaultPorts: \"80,0\" is invalid"));

    let out = run(
        &[&["serve"][..], &tls].concat(),
        &[("SNIFFER_OUTPUT_URL", "ftp://collector")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(error_of(&out).contains("option outputUrl"));
}

#[test]
fn unusable_certificate_exits_1() {
    let out = run(
        &[
            "serve",
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(error_of(&out).contains("/nonexistent/tls.crt"));
    let dir = TempDir::new();
    std::fs::write(dir.0.join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.0.join("tls.key"), "not a key").unwrap();
    let cert = dir.0.join("tls.crt");
    let key = dir.0.join("tls.key");
    let out = run(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(error_of(&out).contains("holds no PEM certificate"));
}

/// `--config` and the certificate files are read with a bound: a device is refused at start
/// (before, `/dev/zero` was read until memory ran out), and a certificate replaced by one while
/// serving is reported and the previous pair kept, with memory flat.
#[test]
fn devices_and_fifos_are_refused_as_options_and_certificates() {
    let dir = TempDir::new();
    let certs = localhost_certs();
    mount_secret(&dir.0, &certs);
    let cert = dir.0.join("tls.crt");
    let key = dir.0.join("tls.key");
    let fifo = dir.0.join("fifo");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { mkfifo(name.as_ptr(), 0o600) }, 0);
    for (config, cert, key) in [
        ("/dev/zero", cert.to_str().unwrap(), key.to_str().unwrap()),
        (
            fifo.to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ),
        ("", "/dev/zero", key.to_str().unwrap()),
        ("", cert.to_str().unwrap(), fifo.to_str().unwrap()),
    ] {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ];
        if !config.is_empty() {
            args.extend(["--config", config]);
        }
        let start = Instant::now();
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            start.elapsed()
        );
        let error = error_of(&out);
        assert_eq!(
            error.matches("is not a regular file").count(),
            1,
            "{args:?}: {error}"
        );
    }

    let server = Server::start(&dir.0, &[]);
    let before = crate::limits::peak_rss_kib(server.child.id());
    std::fs::remove_file(&cert).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &cert).unwrap();
    let line = server.wait_for_log("still serving the previous one");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("is not a regular file"),
        "{line}"
    );
    // Two more reloads pass; the old pair still serves and nothing was read whole.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.health(&[&certs.ca_pem]), Some(200));
    let after = crate::limits::peak_rss_kib(server.child.id());
    assert!(
        after < before + 8 * 1024,
        "VmHWM {before} KiB -> {after} KiB"
    );
}

/// `install-seccomp-profile` keeps answering SIGTERM when its source turns into a FIFO (before,
/// the open blocked the loop and only SIGKILL stopped it), and says what is wrong.
#[test]
fn the_profile_installer_stops_on_sigterm_whatever_its_source_becomes() {
    let dir = TempDir::new();
    let source = dir.0.join("tcp-sniffer.json");
    std::fs::write(
        &source,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let target = dir.0.join("kubelet/seccomp/profiles/tcp-sniffer.json");
    let mut child = Command::new(INJECTOR)
        .arg("install-seccomp-profile")
        .arg("--from")
        .arg(&source)
        .arg("--to")
        .arg(&target)
        .args(["--interval-secs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !target.exists() {
        assert!(Instant::now() < deadline, "the profile was not installed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&source).unwrap();
    let name = std::ffi::CString::new(source.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { mkfifo(name.as_ptr(), 0o600) }, 0);
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc_kill(i32::try_from(child.id()).unwrap(), 15) },
        0
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("install-seccomp-profile ignored SIGTERM with a FIFO as its source");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("cannot reinstall the seccomp profile")
            && logs.contains("is not a regular file"),
        "{logs}"
    );
}

unsafe extern "C" {
    fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

#[test]
fn sigterm_stops_cleanly() {
    let (_dir, _certs, mut server) = start_default();
    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    server.wait_for_log("stopping");
    server.wait_for_log("stopped");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn gen_certs_writes_a_working_pair_and_prints_the_secret() {
    let dir = TempDir::new();
    let out = run(
        &[
            "gen-certs",
            "--service",
            "hook",
            "--namespace",
            "ops",
            "--out-dir",
            dir.0.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("kind: Secret\nmetadata:\n  name: tcp-sniffer-injector-tls\n  namespace: ops\ntype: kubernetes.io/tls"));
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.0.join(file).is_file(), "{file}");
    }
    let store = injector::tls::CertStore::load(injector::tls::CertPaths {
        cert: dir.0.join("tls.crt"),
        key: dir.0.join("tls.key"),
    });
    assert!(store.is_ok(), "the generated pair is not usable");
}

#[test]
fn inject_previews_the_mutation_of_a_pod_file() {
    let dir = TempDir::new();
    let pod = dir.0.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    tcp-sniffer/ports: \"8443\"\nspec:\n  containers:\n  - name: app\n    image: nginx\n",
    )
    .unwrap();
    let out = run(
        &[
            "inject",
            "-f",
            pod.to_str().unwrap(),
            "-o",
            "json",
            "--image",
            "registry.example/tcp-sniffer:9",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mutated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sniffer = &mutated["spec"]["containers"][1];
    assert_eq!(sniffer["name"], "tcp-sniffer");
    assert_eq!(sniffer["image"], "registry.example/tcp-sniffer:9");
    assert_eq!(
        sniffer["env"][0],
        serde_json::json!({"name":"PORTS","value":"8443"})
    );
    let out = run(
        &[
            "inject",
            "-f",
            pod.to_str().unwrap(),
            "--native-sidecar",
            "true",
        ],
        &[],
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("initContainers:\n  - env:"), "{yaml}");
    assert!(yaml.contains("restartPolicy: Always"));
}

/// `inject` on the URL table the sniffer's tests also use: what the injector accepts reaches the
/// container's `OUTPUT_URL` unchanged, and what it refuses names the option and the reason.
#[test]
fn output_urls_follow_the_table_shared_with_the_sniffer() {
    let dir = TempDir::new();
    let pod = dir.0.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    ports:\n    - containerPort: 8080\n",
    )
    .unwrap();
    for (url, expected) in url_cases() {
        let out = run(
            &["inject", "-f", pod.to_str().unwrap(), "-o", "json"],
            &[("SNIFFER_OUTPUT_URL", url)],
        );
        match expected {
            None => {
                assert!(
                    out.status.success(),
                    "{url:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let mutated: Value = serde_json::from_slice(&out.stdout).unwrap();
                let env = mutated["spec"]["containers"][1]["env"]
                    .as_array()
                    .unwrap()
                    .clone();
                let output_url = env
                    .iter()
                    .find(|e| e["name"] == "OUTPUT_URL")
                    .expect("OUTPUT_URL");
                assert_eq!(output_url["value"], url);
            }
            Some(reason) => {
                assert_eq!(out.status.code(), Some(1), "{url:?}");
                assert_eq!(
                    error_of(&out),
                    format!("option outputUrl: {url:?} {reason}")
                );
            }
        }
    }
}

/// `--days 0` wrote an expired certificate and `--days 3000000` panicked (exit 101); a world-
/// readable `tls.key` stayed world-readable and a `tls.key` symlink was written through.
#[test]
fn gen_certs_refuses_bad_days_and_replaces_keys_privately() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = TempDir::new();
    for days in ["0", "3000000", "36501"] {
        let out = run(
            &[
                "gen-certs",
                "--days",
                days,
                "--out-dir",
                dir.0.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "--days {days}");
        let error = error_of(&out);
        assert!(
            error.contains("--days") && error.contains("1..=36500"),
            "{error}"
        );
    }
    assert!(
        !dir.0.join("tls.key").exists(),
        "nothing is written on a refusal"
    );
    std::fs::write(dir.0.join("tls.key"), "old").unwrap();
    std::fs::set_permissions(
        dir.0.join("tls.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let target = dir.0.join("shared-file");
    std::fs::write(&target, "not yours").unwrap();
    std::os::unix::fs::symlink(&target, dir.0.join("ca.crt")).unwrap();
    let out = run(&["gen-certs", "--out-dir", dir.0.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::symlink_metadata(dir.0.join("tls.key")).unwrap();
    assert_eq!(key.mode() & 0o777, 0o600);
    assert!(
        std::fs::symlink_metadata(dir.0.join("ca.crt"))
            .unwrap()
            .is_file()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "not yours");
}

/// An expired certificate is served but logged as an error at start, and a not-yet-valid one
/// at its reload.
#[test]
fn unusable_certificate_dates_are_logged_at_start_and_reload() {
    let dir = TempDir::new();
    let now = time::OffsetDateTime::now_utc();
    let names = vec!["localhost".to_owned()];
    let expired = injector::certs::generate_between(
        names.clone(),
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    )
    .unwrap();
    mount_secret(&dir.0, &expired);
    let server = crate::common::Server::start(&dir.0, &[]);
    let line = server.wait_for_log("the TLS certificate has expired");
    assert_eq!(line["level"], "ERROR");
    assert!(line["not_after"].as_str().unwrap().ends_with('Z'));
    let future = injector::certs::generate_between(
        names,
        now + time::Duration::days(1),
        now + time::Duration::days(2),
    )
    .unwrap();
    crate::common::swap_secret(&dir.0, &future, "..2026_11_28_00_00_00.000000002");
    server.wait_for_log("TLS certificate reloaded");
    let line = server.wait_for_log("the TLS certificate is not valid yet");
    assert_eq!(line["level"], "ERROR");
}

/// A 200 KB Pod with `x: [[[…]]]` took 44 s to be refused (the YAML scanner is quadratic in
/// flow nesting): refused at once, naming the problem.
#[test]
fn inject_refuses_deep_nesting_at_once() {
    let dir = TempDir::new();
    let pod = dir.0.join("deep.yaml");
    std::fs::write(
        &pod,
        format!(
            "kind: Pod\nx: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = run(&["inject", "-f", pod.to_str().unwrap()], &[]);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_of(&out).contains("more than 64 deep (line 2)"),
        "{}",
        error_of(&out)
    );
    // A parser's message is said once, not repeated as a separate cause.
    std::fs::write(&pod, "kind: Pod\nspec: [\n").unwrap();
    let out = run(&["inject", "-f", pod.to_str().unwrap()], &[]);
    let error = error_of(&out);
    let reason = error.split_once("not YAML or JSON: ").unwrap().1;
    assert_eq!(error.matches(reason).count(), 1, "{error}");
}
