//! The binary's contract: first log line, configuration errors (exit 1), runtime errors (exit 2),
//! clean stop on SIGTERM/SIGINT (exit 0).

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use sidecar_contract::url::url_cases;

use crate::{
    agent::{Agent, Finished, SNIFFER},
    netns::{Topology, topology},
};

/// Runs the sniffer with only the given environment and waits for it to exit by itself.
fn run_with_env(env: &[(&str, &str)]) -> Finished {
    let mut cmd = Command::new(SNIFFER);
    cmd.env_clear();
    for (key, value) in env {
        cmd.env(key, value);
    }
    Agent::spawn(cmd).wait(Duration::from_secs(10))
}

fn error_line(finished: &Finished) -> &Value {
    finished
        .logs
        .iter()
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line in {:#?}", finished.logs))
}

#[test]
fn bad_ports_exit_1_with_a_json_error_naming_the_value() {
    for (ports, named) in [
        ("80,http", "\"http\""),
        ("0", "\"0\""),
        ("70000", "\"70000\""),
        ("8080,-1", "\"-1\""),
        ("8080,,8443", "entry 2 is empty"),
        ("80,80", "port 80 is listed more than once"),
        (" ", "no port is listed"),
    ] {
        let finished = run_with_env(&[("PORTS", ports), ("INTERFACE", "lo")]);
        assert_eq!(
            finished.status.code(),
            Some(1),
            "PORTS={ports:?}: {:#?}",
            finished.logs
        );
        assert_eq!(finished.logs[0]["msg"], "Sniffer entrypoint starting");
        assert_eq!(finished.logs[0]["ports"], ports);
        let error = error_line(&finished);
        let text = error["error"].as_str().expect("error field");
        assert!(text.contains(named), "PORTS={ports:?}: {text}");
        assert!(
            text.starts_with(&format!("PORTS {ports:?} is invalid: ")),
            "{text}"
        );
        // The reason is said once, not repeated as a separate cause.
        let reason = text.split_once(" is invalid: ").unwrap().1;
        assert_eq!(text.matches(reason).count(), 1, "{text}");
        assert!(finished.stdout.is_empty());
    }
}

#[test]
fn too_many_ports_exit_1() {
    let ports: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
    let finished = run_with_env(&[("PORTS", &ports.join(",")), ("INTERFACE", "lo")]);
    assert_eq!(finished.status.code(), Some(1));
    assert!(
        error_line(&finished)["error"]
            .as_str()
            .unwrap()
            .contains("65 ports")
    );
}

#[test]
fn missing_ports_exit_1_naming_the_variable() {
    let finished = run_with_env(&[("INTERFACE", "lo"), ("POD_NAME", "web-1")]);
    assert_eq!(finished.status.code(), Some(1));
    let error = error_line(&finished);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("PORTS is required"),
        "{error}"
    );
    assert_eq!(error["pod"], "web-1");
}

#[test]
fn unknown_interface_exit_1() {
    let finished = run_with_env(&[("PORTS", "8080"), ("INTERFACE", "nosuch0")]);
    assert_eq!(finished.status.code(), Some(1));
    assert_eq!(finished.logs[0]["interface"], "nosuch0");
    assert!(
        error_line(&finished)["error"]
            .as_str()
            .unwrap()
            .contains("\"nosuch0\"")
    );
}

/// The binary on the URL table it shares with the injector: a refused URL exits 1 naming the value
/// and the reason; an accepted one passes (the run then stops at the unknown interface).
#[test]
fn output_urls_follow_the_table_shared_with_the_injector() {
    for (url, expected) in url_cases() {
        let finished = run_with_env(&[
            ("PORTS", "8080"),
            ("INTERFACE", "nosuch0"),
            ("OUTPUT_URL", url),
        ]);
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{url:?}: {:#?}",
            finished.logs
        );
        let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
        match expected {
            None => assert!(
                error.starts_with("INTERFACE \"nosuch0\""),
                "{url:?}: {error}"
            ),
            Some(reason) => assert_eq!(error, format!("OUTPUT_URL {url:?} {reason}")),
        }
    }
}

/// A mistyped header list holding a secret exits 1 naming the entry by its position: the secret
/// is nowhere in the logs (before, it was printed twice as "not a valid header name").
#[test]
fn a_secret_in_a_bad_header_entry_never_reaches_the_log() {
    for headers in [
        "Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "X-Tenant=a,Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "X-Tenant=a,dXNlcjpwYXNzd29yZA",
    ] {
        let finished = run_with_env(&[
            ("PORTS", "8080"),
            ("INTERFACE", "lo"),
            ("OUTPUT_URL", "https://collector.example/"),
            ("OUTPUT_HEADERS", headers),
        ]);
        assert_eq!(finished.status.code(), Some(1), "{:#?}", finished.logs);
        let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with("OUTPUT_HEADERS entry "), "{error}");
        let logs = serde_json::to_string(&finished.logs).unwrap();
        assert!(!logs.contains("dXNl"), "{logs}");
    }
}

/// A header whose name says it carries a credential follows the token's rule: refused towards
/// an http:// collector unless the operator opts in.
#[test]
fn a_credential_header_over_plain_http_exits_1() {
    let finished = run_with_env(&[
        ("PORTS", "8080"),
        ("INTERFACE", "lo"),
        ("OUTPUT_URL", "http://clickhouse.example:8123/"),
        (
            "OUTPUT_HEADERS",
            "X-ClickHouse-User=sniffer,X-ClickHouse-Key=s3cret",
        ),
    ]);
    assert_eq!(finished.status.code(), Some(1), "{:#?}", finished.logs);
    let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("OUTPUT_HEADERS entry 2 (its name says it carries a credential) would be sent in plaintext"),
        "{error}"
    );
    assert!(
        !serde_json::to_string(&finished.logs)
            .unwrap()
            .contains("s3cret")
    );
}

#[test]
fn unreadable_ca_file_exit_1() {
    let finished = run_with_env(&[
        ("PORTS", "8080"),
        ("INTERFACE", "lo"),
        ("OUTPUT_URL", "https://collector.example:8443/"),
        ("OUTPUT_CA_FILE", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(finished.status.code(), Some(1), "{:#?}", finished.logs);
    assert!(
        error_line(&finished)["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/ca.pem")
    );
}

#[test]
fn help_exits_0() {
    let out = Command::new(SNIFFER).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "PORTS",
        "INTERFACE",
        "OUTPUT_URL",
        "RING_BUFFER_BYTES",
        "POD_NAME",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}

fn start_in_netns(topology: &Topology) -> Agent {
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", "8080,8443")
        .env("INTERFACE", "eth0")
        .env("POD_NAME", "web-7d9c")
        .env("POD_NAMESPACE", "shop")
        .env("NODE_NAME", "node-3");
    Agent::attached(cmd)
}

#[test]
fn sigterm_stops_cleanly_within_2s() {
    testbed::skip_unless_root!();
    let topology = topology();
    let finished = start_in_netns(&topology).terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    assert!(
        finished.elapsed < Duration::from_secs(2),
        "took {:?}",
        finished.elapsed
    );

    let first = &finished.logs[0];
    assert_eq!(first["msg"], "Sniffer entrypoint starting");
    assert_eq!(first["interface"], "eth0");
    assert_eq!(first["ports"], "8080,8443");
    assert_eq!(
        (&first["pod"], &first["namespace"], &first["node"]),
        (
            &Value::from("web-7d9c"),
            &Value::from("shop"),
            &Value::from("node-3")
        )
    );
    let messages: Vec<&str> = finished
        .logs
        .iter()
        .filter_map(|l| l["msg"].as_str())
        .collect();
    let stopping = messages
        .iter()
        .position(|m| *m == "stopping")
        .expect("stopping");
    let stopped = messages
        .iter()
        .position(|m| *m == "stopped")
        .expect("stopped");
    assert!(stopping < stopped);
    assert_eq!(finished.log("stopping")["signal"], "SIGTERM");
}

/// The loader reads no kernel BTF (`capture/load.rs`): a socket filter has no CO-RE relocation,
/// and parsing `/sys/kernel/btf/vmlinux` took the sidecar's peak memory from 15 to 23 MiB.
#[test]
fn start_up_never_opens_the_kernel_btf() {
    testbed::skip_unless_root!();
    let topology = topology();
    let trace = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("start-up-{}.strace", std::process::id()));
    let mut cmd = topology.server.command("strace");
    cmd.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&trace)
        .arg(SNIFFER)
        .env("PORTS", "8080")
        .env("INTERFACE", "eth0");
    let agent = Agent::attached(cmd);
    // strace's child is the sniffer; stopped by SIGTERM, it takes strace with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", agent.pid()))
        .expect("strace's children");
    let sniffer: i32 = children.trim().parse().expect("one child");
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(sniffer, libc::SIGTERM) }, 0);
    let finished = agent.wait(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let opened = std::fs::read_to_string(&trace).expect("the trace");
    let _ = std::fs::remove_file(&trace);
    // The loader's own read of sysfs (the CPUs, for the per-CPU counters): the trace covers
    // the start-up.
    assert!(
        opened.contains("/sys/devices/system/cpu/possible"),
        "the trace misses the start-up: {opened}"
    );
    let btf: Vec<&str> = opened.lines().filter(|l| l.contains("/btf")).collect();
    assert!(btf.is_empty(), "opened: {btf:#?}");
}

#[test]
fn sigint_stops_cleanly() {
    testbed::skip_unless_root!();
    let topology = topology();
    let finished = start_in_netns(&topology).signal(libc::SIGINT);
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    assert_eq!(finished.log("stopping")["signal"], "SIGINT");
    finished.log("stopped");
}

#[test]
fn missing_capabilities_exit_2() {
    testbed::skip_unless_root!();
    // Root without any capability: validation passes, opening the packet socket does not.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-all", "--inh-caps=-all", SNIFFER])
        .env("PORTS", "8080")
        .env("INTERFACE", "lo");
    let finished = Agent::spawn(cmd).wait(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(2), "{:#?}", finished.logs);
    let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("CAP_NET_RAW"), "{error}");
}

#[test]
fn deleted_interface_is_a_runtime_error() {
    testbed::skip_unless_root!();
    let topology = topology();
    let agent = start_in_netns(&topology);
    crate::netns::ip(&["-n", &topology.server.name, "link", "del", "eth0"]).unwrap();
    let finished = agent.wait(Duration::from_secs(5));
    assert_eq!(finished.status.code(), Some(2), "{:#?}", finished.logs);
    let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("\"eth0\"") && error.contains("is gone"),
        "{error}"
    );
}

/// A huge bad value is quoted cut to 256 bytes, in the first line and in the error, never whole.
#[test]
fn huge_values_are_never_echoed_whole() {
    // An environment string is at most 128 KiB on Linux.
    let huge = "9".repeat(100_000);
    for (name, env) in [
        ("PORTS", [("PORTS", huge.as_str()), ("INTERFACE", "lo")]),
        (
            "INTERFACE",
            [("PORTS", "8080"), ("INTERFACE", huge.as_str())],
        ),
    ] {
        let finished = run_with_env(&env);
        assert_eq!(finished.status.code(), Some(1), "{name}");
        for line in &finished.logs {
            let text = line.to_string();
            assert!(text.len() < 2048, "{name}: a {} byte log line", text.len());
        }
        let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("(100000 bytes, truncated)"),
            "{name}: {error}"
        );
    }
}

/// Refused at start, with exit 1 and a message that names the problem but never the token: a
/// control character in the token, a token over plain http without the opt-in, an
/// `OUTPUT_CONCURRENCY` outside 1-64, and an `OUTPUT_CA_FILE` that is a device (`/dev/zero` used
/// to be read until the OOM killer came) or too large.
#[test]
fn unsafe_delivery_settings_exit_1() {
    let big = std::env::temp_dir().join(format!("big-ca-{}.pem", std::process::id()));
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    let big = big.to_str().unwrap().to_owned();
    let secret = "tok-S3CRET";
    let with_newlines = format!("{secret}\n\n");
    let inner_newline = "tok\nS3CRET";
    for (env, needle) in [
        (
            vec![
                ("OUTPUT_URL", "https://collector/"),
                ("OUTPUT_URL_AUTH_TOKEN", with_newlines.as_str()),
            ],
            "contains a control character (byte 0x0a at position 10)",
        ),
        (
            vec![
                ("OUTPUT_URL", "https://collector/"),
                ("OUTPUT_URL_AUTH_TOKEN", inner_newline),
            ],
            "contains a control character (byte 0x0a at position 3)",
        ),
        (
            vec![
                ("OUTPUT_URL", "http://collector/"),
                ("OUTPUT_URL_AUTH_TOKEN", secret),
            ],
            "would be sent in plaintext",
        ),
        (
            vec![
                ("OUTPUT_URL", "http://collector/"),
                ("OUTPUT_CONCURRENCY", "0"),
            ],
            "OUTPUT_CONCURRENCY=0 is out of range: it must be from 1 to 64",
        ),
        (
            vec![
                ("OUTPUT_URL", "http://collector/"),
                ("OUTPUT_CONCURRENCY", "100000"),
            ],
            "OUTPUT_CONCURRENCY=100000 is out of range",
        ),
        (
            vec![
                ("OUTPUT_URL", "https://collector/"),
                ("OUTPUT_CA_FILE", "/dev/zero"),
            ],
            "is not a regular file",
        ),
        (
            vec![
                ("OUTPUT_URL", "https://collector/"),
                ("OUTPUT_CA_FILE", big.as_str()),
            ],
            "is larger than 4194304 bytes",
        ),
    ] {
        let mut env = env;
        env.extend([("PORTS", "8080"), ("INTERFACE", "lo")]);
        let finished = run_with_env(&env);
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{env:?}: {:#?}",
            finished.logs
        );
        assert!(finished.elapsed < Duration::from_secs(2), "{env:?}");
        let error = error_line(&finished)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{env:?}: {error}");
        for line in &finished.logs {
            assert!(!line.to_string().contains("S3CRET"), "token logged: {line}");
        }
    }
    std::fs::remove_file(&big).unwrap();
}
