//! The collector formats against third-party readers: OTLP bodies parsed by the official
//! `opentelemetry-proto` package, NDJSON inserted into a real ClickHouse, Loki bodies checked
//! against the push API's shape — each record compared with an independent capture of the same
//! traffic, and the delivery accounting exact under partial success, refusal and retry.

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    agent::{Agent, Finished, SNIFFER},
    collector::{Collector, Received, Reply, accept_all},
    dissector::{RawCapture, expected_record},
    netns::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, Topology, topology},
    traffic::{MATCHED, exchange, serve},
};

const TOKEN: &str = "tok-FORMATS-7";

/// A Python that can import the official OpenTelemetry protos: `TCP_SNIFFER_PYTHON` (set by
/// `cargo xtask test`) or `python3`. `None` (the test is skipped) only when CI does not require
/// every test to run.
fn otlp_python(test: &str) -> Option<PathBuf> {
    let python =
        std::env::var_os("TCP_SNIFFER_PYTHON").map_or_else(|| "python3".into(), PathBuf::from);
    let ok = Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.proto.collector.logs.v1.logs_service_pb2",
        ])
        .output()
        .is_ok_and(|out| out.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("TCP_SNIFFER_REQUIRE_PRIVILEGED").is_none(),
        "{test} needs opentelemetry-proto (cargo xtask test installs it)"
    );
    eprintln!("skipping {test}: no Python with opentelemetry-proto");
    None
}

/// The log records of OTLP `bodies` in `encoding`, as decoded by the official protos
/// (`tests/python/otlp_decode.py`), one JSON object each; fails on a body they refuse.
fn decode_otlp(python: &Path, encoding: &str, bodies: &[Received]) -> Vec<Value> {
    let dir = scratch(&format!("otlp-{encoding}"));
    let files: Vec<PathBuf> = bodies
        .iter()
        .enumerate()
        .map(|(i, request)| {
            let file = dir.join(format!("body-{i}"));
            std::fs::write(&file, &request.raw).unwrap();
            file
        })
        .collect();
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/otlp_decode.py"
        ))
        .arg(encoding)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the official protos refused an {encoding} body: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A scratch directory under the target directory, removed first.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one run saw.
struct Run {
    /// The records the independent capture says the sniffer must emit (without `ts`).
    expected: Vec<Value>,
    /// The client address and port of each connection. An IPv4 and an IPv6 connection may get
    /// the same port: only the pair names a connection.
    connections: Vec<(&'static str, u16)>,
    finished: Finished,
}

/// Starts the sniffer delivering to `url` with `env`, runs IPv4 and IPv6 connections to the
/// matched port, stops it, and returns what the independent capture saw.
fn run_traffic(topology: &Topology, url: &str, env: &[(&str, &str)]) -> Run {
    let v4: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let v6: SocketAddr = format!("[{SERVER_V6}]:{MATCHED}").parse().unwrap();
    let listeners = topology
        .server
        .run(move || [v4, v6].map(|addr| TcpListener::bind(addr).expect("bind")));
    let raw = RawCapture::start(&topology.server, "eth0");
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env("OUTPUT_URL", url)
        .env("OUTPUT_URL_AUTH_TOKEN", TOKEN)
        // The test collectors speak plain HTTP on the namespace's loopback.
        .env("OUTPUT_ALLOW_PLAINTEXT_TOKEN", "true")
        .env("POD_NAME", "web-7d9c")
        .env("POD_NAMESPACE", "shop")
        .env("NODE_NAME", "node-3")
        .env("BATCH_MAX_RECORDS", "25")
        .env("BATCH_MAX_WAIT_MS", "100");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let agent = Agent::attached(cmd);
    let [l4, l6] = listeners;
    let sizes = [1, 1000, 20_000];
    let servers = [serve(l4, sizes.len()), serve(l6, sizes.len())];
    let connections = topology.client.run(move || {
        let mut ports = Vec::new();
        for size in sizes {
            ports.push((CLIENT_V4, exchange(v4, size)));
            ports.push((CLIENT_V6, exchange(v6, size)));
        }
        ports
    });
    for server in servers {
        server.join().unwrap();
    }
    thread::sleep(Duration::from_millis(400));
    let frames = raw.stop();
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let expected = frames
        .iter()
        .filter_map(expected_record)
        .filter(|r| r["src_port"] == MATCHED || r["dst_port"] == MATCHED)
        .collect();
    Run {
        expected,
        connections,
        finished,
    }
}

fn stopped(finished: &Finished, field: &str) -> u64 {
    finished.log("stopped")[field]
        .as_u64()
        .unwrap_or_else(|| panic!("stopped has no {field}"))
}

/// Sorted JSON texts, to compare record sets.
fn sorted(records: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut texts: Vec<String> = records.into_iter().map(|r| r.to_string()).collect();
    texts.sort();
    texts
}

fn without_ts(mut record: Value) -> Value {
    let ts = record.as_object_mut().unwrap().remove("ts").expect("ts");
    assert!(
        ts.as_str()
            .is_some_and(|t| t.len() == 30 && t.ends_with('Z')),
        "{ts}"
    );
    record
}

fn listen(topology: &Topology) -> TcpListener {
    topology
        .server
        .run(|| TcpListener::bind("127.0.0.1:0").expect("bind"))
}

/// The record an OTLP log record's attributes describe.
fn record_of_log(log: &Value) -> Value {
    let attributes = &log["attributes"];
    let direction = match attributes["network.io.direction"].as_str() {
        Some("receive") => "ingress",
        Some("transmit") => "egress",
        other => panic!("network.io.direction {other:?}"),
    };
    let ip_version = match attributes["network.type"].as_str() {
        Some("ipv4") => 4,
        Some("ipv6") => 6,
        other => panic!("network.type {other:?}"),
    };
    assert_eq!(attributes["network.transport"], "tcp");
    assert_eq!(log["event_name"], "tcp.packet");
    json!({
        "direction": direction,
        "ip_version": ip_version,
        "src_ip": attributes["source.address"],
        "src_port": attributes["source.port"],
        "dst_ip": attributes["destination.address"],
        "dst_port": attributes["destination.port"],
        "flags": attributes["tcp.flags"],
        "seq": attributes["tcp.seq"],
        "ack": attributes["tcp.ack"],
        "window": attributes["tcp.window"],
        "payload_len": attributes["tcp.payload_len"],
        "len": attributes["tcp.len"],
    })
}

#[test]
fn otlp_bodies_parse_with_the_official_protos_and_match_an_independent_capture() {
    testbed::skip_unless_root!();
    let Some(python) = otlp_python("otlp_bodies_parse_with_the_official_protos") else {
        return;
    };
    for (encoding, content_type) in [
        ("protobuf", "application/x-protobuf"),
        ("json", "application/json"),
    ] {
        let topology = topology();
        let collector = Collector::start(listen(&topology), accept_all);
        let url = format!("http://{}/v1/logs", collector.addr);
        let run = run_traffic(
            &topology,
            &url,
            &[("OUTPUT_FORMAT", "otlp"), ("OTLP_ENCODING", encoding)],
        );
        let received = collector.received();
        for request in &received {
            assert_eq!(request.headers["content-type"], content_type);
            assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
            assert_eq!(request.target, "/v1/logs");
            if encoding == "json" {
                // The OTLP JSON mapping writes 64-bit integers as strings.
                let log = &request.body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
                assert!(log["timeUnixNano"].is_string(), "{log}");
                assert!(
                    log["attributes"][4]["value"]["intValue"].is_string(),
                    "{log}"
                );
            }
        }
        let logs = decode_otlp(&python, encoding, &received);
        let instance = logs[0]["resource"]["service.instance.id"].clone();
        for log in &logs {
            assert_eq!(
                log["resource"],
                json!({"service.name":"tcp-sniffer","service.version":env!("CARGO_PKG_VERSION"),
                       "service.instance.id":instance,"k8s.pod.name":"web-7d9c",
                       "k8s.namespace.name":"shop","k8s.node.name":"node-3",
                       "network.interface.name":"eth0"})
            );
            assert_eq!(
                log["scope"],
                json!(["tcp-sniffer", env!("CARGO_PKG_VERSION")])
            );
            let ns = log["time_unix_nano"].as_u64().unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            assert!(
                now - ns < 120_000_000_000,
                "time_unix_nano {ns} is not capture time"
            );
        }
        assert_eq!(
            sorted(logs.iter().map(record_of_log)),
            sorted(run.expected.clone()),
            "{encoding}: the log records vs the independent capture"
        );
        let matched = stopped(&run.finished, "matched");
        assert_eq!(logs.len() as u64, matched);
        assert_eq!(stopped(&run.finished, "delivered"), matched);
    }
}

/// `ExportLogsServiceResponse { partial_success { rejected_log_records: n, error_message } }`.
fn partial_success_protobuf(rejected: u8) -> Vec<u8> {
    let message = b"too old";
    let inner_len = 2 + 2 + message.len();
    let mut body = vec![
        0x0a,
        inner_len as u8,
        0x08,
        rejected,
        0x12,
        message.len() as u8,
    ];
    body.extend_from_slice(message);
    body
}

#[test]
fn otlp_partial_success_refusal_and_retry_are_accounted_exactly() {
    testbed::skip_unless_root!();
    let topology = topology();
    // The first batch: 503 with Retry-After, then accepted with 3 records rejected. The second:
    // 500, which OTLP does not retry. The third: 400. The rest: accepted.
    let collector = Collector::start(listen(&topology), |index, _| match index {
        0 => Reply::Status(503, vec![("Retry-After", "1".into())]),
        1 => Reply::Body(200, "application/x-protobuf", partial_success_protobuf(3)),
        2 => Reply::Status(500, Vec::new()),
        3 => Reply::Status(400, Vec::new()),
        _ => Reply::Body(200, "application/x-protobuf", Vec::new()),
    });
    let url = format!("http://{}/v1/logs", collector.addr);
    let run = run_traffic(
        &topology,
        &url,
        &[("OUTPUT_FORMAT", "otlp"), ("OUTPUT_CONCURRENCY", "1")],
    );
    let received = collector.received();
    assert!(received.len() >= 5, "{} requests", received.len());
    assert_eq!(received[0].raw, received[1].raw, "the 503 was retried");
    assert!(received[1].at - received[0].at >= Duration::from_millis(950));
    // 500 and 400 are not retried: the next request carries another batch.
    assert_ne!(received[2].raw, received[3].raw);
    assert_ne!(received[3].raw, received[4].raw);
    let finished = &run.finished;
    let matched = stopped(finished, "matched");
    assert_eq!(matched, run.expected.len() as u64);
    let count_records = |r: &Received| log_records(&r.raw);
    let first = count_records(&received[1]);
    let refused = count_records(&received[2]) + count_records(&received[3]);
    assert_eq!(stopped(finished, "dropped_rejected"), 3 + refused);
    assert_eq!(
        stopped(finished, "delivered"),
        received[4..].iter().map(count_records).sum::<u64>() + first - 3
    );
    assert_eq!(
        stopped(finished, "delivered") + stopped(finished, "dropped"),
        matched
    );
    assert!(finished.logs.iter().any(|l| {
        l["rejected"] == 3
            && l["msg"]
                .as_str()
                .unwrap()
                .contains("rejected 3 of its records")
    }));
}

/// Answers no reader could take whole, or whose counts are out of range, still say what they
/// say: a partial success rejecting every record with a 70 KB message counts every record as
/// rejected (before: all counted delivered, with no warning), in both encodings; counts past 64
/// bits or written `40.0` saturate to the batch; an answer that says nothing readable is
/// delivered with a warning.
#[test]
fn oversized_and_odd_otlp_answers_are_accounted_as_they_say() {
    testbed::skip_unless_root!();
    let long = "x".repeat(70_000);
    let mut protobuf_all = Vec::new();
    // partial_success { rejected_log_records: 1_000_000, error_message: <70 KB> }
    let mut inner = vec![0x08, 0xc0, 0x84, 0x3d, 0x12];
    let mut len = long.len();
    while len >= 0x80 {
        inner.push((len as u8) | 0x80);
        len >>= 7;
    }
    inner.push(len as u8);
    inner.extend_from_slice(long.as_bytes());
    protobuf_all.push(0x0a);
    let mut len = inner.len();
    while len >= 0x80 {
        protobuf_all.push((len as u8) | 0x80);
        len >>= 7;
    }
    protobuf_all.push(len as u8);
    protobuf_all.extend_from_slice(&inner);
    let json = |count: &str| {
        format!(r#"{{"partialSuccess":{{"rejectedLogRecords":{count},"errorMessage":"{long}"}}}}"#)
            .into_bytes()
    };
    for (encoding, content_type, answer, all_rejected) in [
        ("protobuf", "application/x-protobuf", protobuf_all, true),
        ("json", "application/json", json("\"1000000\""), true),
        (
            "json",
            "application/json",
            json("99999999999999999999"),
            true,
        ),
        ("json", "application/json", json("4.0"), false),
        (
            "json",
            "application/json",
            b"<html>ok</html>".to_vec(),
            false,
        ),
    ] {
        let topology = topology();
        let reply = answer.clone();
        let collector = Collector::start(listen(&topology), move |_, _| {
            Reply::Body(200, content_type, reply.clone())
        });
        let url = format!("http://{}/v1/logs", collector.addr);
        let run = run_traffic(
            &topology,
            &url,
            &[("OUTPUT_FORMAT", "otlp"), ("OTLP_ENCODING", encoding)],
        );
        let finished = &run.finished;
        let matched = stopped(finished, "matched");
        let rejected = stopped(finished, "dropped_rejected");
        let delivered = stopped(finished, "delivered");
        assert_eq!(delivered + stopped(finished, "dropped"), matched);
        let what = String::from_utf8_lossy(&answer[..answer.len().min(60)]).into_owned();
        if all_rejected {
            assert_eq!((delivered, rejected), (0, matched), "{encoding} {what}");
        } else if answer.starts_with(b"{") {
            // 40 per batch, at most the batch.
            assert!(
                rejected > 0 && delivered > 0,
                "{what}: {delivered} delivered"
            );
        } else {
            assert_eq!((delivered, rejected), (matched, 0), "{what}");
            assert!(finished.logs.iter().any(|l| {
                l["msg"]
                    .as_str()
                    .unwrap()
                    .starts_with("cannot read the collector's OTLP answer")
            }));
        }
    }
}

/// The number of log records in a protobuf `ExportLogsServiceRequest` (one resource, one scope,
/// as the sniffer writes them).
pub fn log_records(body: &[u8]) -> u64 {
    fn varint(bytes: &[u8], at: &mut usize) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        value
    }
    /// The content of each length-delimited field `field` of `bytes`.
    fn fields(bytes: &[u8], field: u64) -> Vec<&[u8]> {
        let (mut at, mut found) = (0, Vec::new());
        while at < bytes.len() {
            let key = varint(bytes, &mut at);
            match key & 7 {
                0 => {
                    varint(bytes, &mut at);
                }
                1 => at += 8,
                2 => {
                    let len = varint(bytes, &mut at) as usize;
                    if key >> 3 == field {
                        found.push(&bytes[at..at + len]);
                    }
                    at += len;
                }
                5 => at += 4,
                other => panic!("wire type {other}"),
            }
        }
        found
    }
    let resource_logs = fields(body, 1);
    let scope_logs = fields(resource_logs[0], 2);
    fields(scope_logs[0], 2).len() as u64
}

#[test]
fn loki_bodies_follow_the_push_api_and_match_an_independent_capture() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), |_, _| Reply::Status(204, Vec::new()));
    let url = format!("http://{}/loki/api/v1/push", collector.addr);
    let run = run_traffic(
        &topology,
        &url,
        &[
            ("OUTPUT_FORMAT", "loki"),
            ("OUTPUT_AUTH_SCHEME", "Basic"),
            ("OUTPUT_HEADERS", "X-Scope-OrgID=tenant-1"),
        ],
    );
    let mut lines = Vec::new();
    for request in collector.received() {
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["x-scope-orgid"], "tenant-1");
        assert_eq!(request.headers["authorization"], format!("Basic {TOKEN}"));
        let streams = request.body["streams"].as_array().expect("streams");
        assert_eq!(streams.len(), 1, "one stream per agent");
        let labels = streams[0]["stream"].as_object().unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["job", "namespace", "node", "pod"],
            "only the allowed low-cardinality labels"
        );
        assert_eq!(labels["job"], "tcp-sniffer");
        for value in streams[0]["values"].as_array().unwrap() {
            let [ns, line] = value.as_array().unwrap().as_slice() else {
                panic!("value {value}");
            };
            let ns: u64 = ns.as_str().expect("ns as a string").parse().unwrap();
            let record: Value = serde_json::from_str(line.as_str().unwrap()).unwrap();
            let ts = cli_support::time::Timestamp::from_unix_nanos(ns as i64).to_string();
            assert_eq!(record["ts"], ts, "the value's time is the record's");
            lines.push(without_ts(record));
        }
    }
    assert_eq!(sorted(lines.clone()), sorted(run.expected));
    assert_eq!(lines.len() as u64, stopped(&run.finished, "delivered"));
    for line in &run.finished.logs {
        assert!(
            !line.to_string().contains("tenant-1"),
            "a header value logged: {line}"
        );
    }
}

#[test]
fn configured_headers_are_sent_and_never_logged() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), accept_all);
    let url = format!("http://{}/ingest", collector.addr);
    let run = run_traffic(
        &topology,
        &url,
        &[
            ("OUTPUT_FORMAT", "ndjson"),
            ("OUTPUT_AUTH_HEADER", "X-Api-Key"),
            ("OUTPUT_AUTH_SCHEME", "ApiKey"),
            ("OUTPUT_HEADERS", "X-Tenant = acme%2Cprod , X-Env=test"),
        ],
    );
    let received = collector.received();
    let mut lines = Vec::new();
    for request in &received {
        assert_eq!(request.headers["content-type"], "application/x-ndjson");
        assert_eq!(request.headers["x-api-key"], format!("ApiKey {TOKEN}"));
        assert_eq!(request.headers["x-tenant"], "acme,prod");
        assert_eq!(request.headers["x-env"], "test");
        assert!(!request.headers.contains_key("authorization"));
        let text = String::from_utf8(request.raw.clone()).unwrap();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            let object = record.as_object_mut().unwrap();
            assert_eq!(object.remove("pod"), Some(json!("web-7d9c")));
            assert_eq!(object.remove("namespace"), Some(json!("shop")));
            assert_eq!(object.remove("node"), Some(json!("node-3")));
            assert!(
                object
                    .remove("instance")
                    .is_some_and(|i| i.as_str().unwrap().len() == 36)
            );
            lines.push(without_ts(record));
        }
    }
    assert_eq!(sorted(lines), sorted(run.expected));
    for line in &run.finished.logs {
        let text = line.to_string();
        assert!(
            !text.contains(TOKEN) && !text.contains("acme"),
            "a secret logged: {text}"
        );
    }
}

/// ClickHouse on the server namespace's loopback, with its own data directory; stopped on drop.
struct ClickHouse {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

/// The ClickHouse user the sniffer inserts as, and its key.
const CLICKHOUSE_USER: &str = "sniffer";
const CLICKHOUSE_KEY: &str = "ch-KEY-1234";

impl ClickHouse {
    fn start(topology: &Topology) -> Self {
        let dir = scratch("clickhouse");
        let [port, tcp] = topology.server.run(|| {
            // Both reserved at once so that they differ; released for ClickHouse to take.
            let listeners = [(); 2].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
            listeners.map(|l| l.local_addr().unwrap().port())
        });
        std::fs::write(
            dir.join("users.xml"),
            format!(
                "<yandex><profiles><default/></profiles><quotas><default/></quotas><users>\
                 <{CLICKHOUSE_USER}><password>{CLICKHOUSE_KEY}</password>\
                 <networks><ip>127.0.0.1</ip></networks><profile>default</profile>\
                 <quota>default</quota></{CLICKHOUSE_USER}></users></yandex>"
            ),
        )
        .unwrap();
        let path = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                "<yandex><logger><level>warning</level><log>{path}/server.log</log>\
                 <errorlog>{path}/error.log</errorlog></logger><http_port>{port}</http_port>\
                 <tcp_port>{tcp}</tcp_port><listen_host>127.0.0.1</listen_host>\
                 <path>{path}/data/</path><tmp_path>{path}/tmp/</tmp_path>\
                 <users_config>{path}/users.xml</users_config>\
                 <default_profile>default</default_profile><default_database>default</default_database>\
                 <mark_cache_size>67108864</mark_cache_size></yandex>"
            ),
        )
        .unwrap();
        let child = topology
            .server
            .command("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                dir.join("config.xml").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start clickhouse-server (Debian's clickhouse-server package)");
        let server = Self { child, port, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while server.query(topology, "SELECT 1").as_deref() != Some("1\n") {
            assert!(
                std::time::Instant::now() < deadline,
                "ClickHouse did not start: {}",
                std::fs::read_to_string(server.dir.join("error.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// Runs `sql` over the HTTP interface as the sniffer's user; its answer, or `None`.
    fn query(&self, topology: &Topology, sql: &str) -> Option<String> {
        let (port, sql) = (self.port, sql.to_owned());
        topology.server.run(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build(),
            );
            let mut response = agent
                .post(&format!("http://127.0.0.1:{port}/"))
                .header("X-ClickHouse-User", CLICKHOUSE_USER)
                .header("X-ClickHouse-Key", CLICKHOUSE_KEY)
                .send(sql.as_bytes())
                .ok()?;
            let text = response.body_mut().read_to_string().ok()?;
            (response.status() == 200).then_some(text)
        })
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The table the sniffer's NDJSON lines go into as they are (ClickHouse 18.16 has no
/// `DateTime64`: `ts` stays text, `parseDateTimeBestEffort(ts)` reads it; the documented DDL for
/// current ClickHouse uses `DateTime64(9)`).
const PACKETS_DDL: &str = "CREATE TABLE packets (ts String, direction String, ip_version UInt8, \
    src_ip String, src_port UInt16, dst_ip String, dst_port UInt16, flags Array(String), \
    seq UInt32, ack UInt32, window UInt16, payload_len UInt32, len UInt32, \
    pod Nullable(String), namespace Nullable(String), node Nullable(String), instance String) \
    ENGINE = MergeTree ORDER BY (src_port, dst_port, ts)";

#[test]
fn ndjson_lands_in_a_real_clickhouse_with_the_capture_s_counts() {
    testbed::skip_unless_root!();
    let topology = topology();
    let clickhouse = ClickHouse::start(&topology);
    clickhouse
        .query(&topology, PACKETS_DDL)
        .expect("create the table");
    let url = format!(
        "http://127.0.0.1:{}/?query=INSERT%20INTO%20packets%20FORMAT%20JSONEachRow",
        clickhouse.port
    );
    let run = run_traffic(
        &topology,
        &url,
        &[
            ("OUTPUT_FORMAT", "ndjson"),
            ("OUTPUT_URL_AUTH_TOKEN", CLICKHOUSE_KEY),
            ("OUTPUT_AUTH_HEADER", "X-ClickHouse-Key"),
            ("OUTPUT_AUTH_SCHEME", ""),
            (
                "OUTPUT_HEADERS",
                &format!("X-ClickHouse-User={CLICKHOUSE_USER}"),
            ),
        ],
    );
    let matched = stopped(&run.finished, "matched");
    assert_eq!(stopped(&run.finished, "delivered"), matched);
    let count = clickhouse
        .query(&topology, "SELECT count() FROM packets")
        .unwrap();
    assert_eq!(
        count.trim().parse::<u64>().unwrap(),
        matched,
        "rows vs matched"
    );

    // Per connection (the client's port), packets and payload bytes, by SQL and by the capture.
    let by_sql = clickhouse
        .query(
            &topology,
            "SELECT if(src_port = 8080, dst_ip, src_ip) AS ip, \
             if(src_port = 8080, dst_port, src_port) AS client, count(), sum(payload_len), \
             countIf(has(flags, 'SYN')), min(parseDateTimeBestEffort(ts)) > toDateTime('2020-01-01 00:00:00') \
             FROM packets WHERE namespace = 'shop' AND pod = 'web-7d9c' GROUP BY ip, client \
             ORDER BY ip, client FORMAT TSV",
        )
        .unwrap();
    let mut by_capture: BTreeMap<(String, u64), (u64, u64, u64)> = BTreeMap::new();
    for record in &run.expected {
        let client = if record["src_port"] == MATCHED {
            "dst"
        } else {
            "src"
        };
        let key = (
            record[format!("{client}_ip")].as_str().unwrap().to_owned(),
            record[format!("{client}_port")].as_u64().unwrap(),
        );
        let entry = by_capture.entry(key).or_default();
        entry.0 += 1;
        entry.1 += record["payload_len"].as_u64().unwrap();
        entry.2 += u64::from(record["flags"].as_array().unwrap().contains(&json!("SYN")));
    }
    let expected: String = by_capture
        .iter()
        .map(|((ip, client), (packets, bytes, syns))| {
            format!("{ip}\t{client}\t{packets}\t{bytes}\t{syns}\t1\n")
        })
        .collect();
    assert_eq!(by_sql, expected);
    assert_eq!(by_capture.len(), run.connections.len());
    eprintln!(
        "ClickHouse round trip: {matched} records matched, {} rows, per connection:\n{by_sql}",
        count.trim()
    );
}

/// The connection records' table of the recipe (docs/recipes.md), as ClickHouse 18.16 takes it:
/// times as text, `handshake_seen` as `UInt8`.
const CONNECTIONS_DDL: &str = "CREATE TABLE connections (type String, ts String, \
    state String, end_reason Nullable(String), rst_by Nullable(String), \
    conn_state String, history String, first_seen String, last_seen String, ip_version UInt8, \
    client_ip String, client_port UInt16, server_ip String, server_port UInt16, \
    handshake_seen UInt8, syn_to_synack_ns Nullable(UInt64), synack_to_ack_ns Nullable(UInt64), \
    client_packets UInt64, client_bytes UInt64, client_retransmits UInt32, \
    client_out_of_order UInt32, client_zero_windows UInt32, client_dup_acks UInt32, \
    client_window_min Nullable(UInt16), client_window_max Nullable(UInt16), \
    client_ack_rtt_samples UInt32, client_ack_rtt_min_ns Nullable(UInt64), \
    client_ack_rtt_mean_ns Nullable(UInt64), client_ack_rtt_max_ns Nullable(UInt64), \
    server_packets UInt64, server_bytes UInt64, server_retransmits UInt32, \
    server_out_of_order UInt32, server_zero_windows UInt32, server_dup_acks UInt32, \
    server_window_min Nullable(UInt16), server_window_max Nullable(UInt16), \
    server_ack_rtt_samples UInt32, server_ack_rtt_min_ns Nullable(UInt64), \
    server_ack_rtt_mean_ns Nullable(UInt64), server_ack_rtt_max_ns Nullable(UInt64), \
    pod Nullable(String), namespace Nullable(String), node Nullable(String), instance String) \
    ENGINE = MergeTree ORDER BY (client_port, ts)";

/// Connection records go into the recipe's `connections` table as they are, every field in a
/// column of the documented type: one row per connection, its verdict and round trips queryable.
#[test]
fn connection_records_land_in_a_real_clickhouse() {
    testbed::skip_unless_root!();
    let topology = topology();
    let clickhouse = ClickHouse::start(&topology);
    clickhouse
        .query(&topology, CONNECTIONS_DDL)
        .expect("create the table");
    let url = format!(
        "http://127.0.0.1:{}/?query=INSERT%20INTO%20connections%20FORMAT%20JSONEachRow",
        clickhouse.port
    );
    let run = run_traffic(
        &topology,
        &url,
        &[
            ("OUTPUT_FORMAT", "ndjson"),
            ("RECORDS", "connections"),
            ("OUTPUT_URL_AUTH_TOKEN", CLICKHOUSE_KEY),
            ("OUTPUT_AUTH_HEADER", "X-ClickHouse-Key"),
            ("OUTPUT_AUTH_SCHEME", ""),
            (
                "OUTPUT_HEADERS",
                &format!("X-ClickHouse-User={CLICKHOUSE_USER}"),
            ),
        ],
    );
    let made = stopped(&run.finished, "connection_records");
    assert_eq!(stopped(&run.finished, "delivered"), made);
    let rows = clickhouse
        .query(
            &topology,
            "SELECT client_ip, client_port, conn_state, substring(history, 1, 4), handshake_seen, \
             client_ack_rtt_samples > 0, server_ack_rtt_mean_ns >= server_ack_rtt_min_ns \
             FROM connections WHERE namespace = 'shop' ORDER BY client_ip, client_port FORMAT TSV",
        )
        .unwrap();
    let mut clients = run.connections.clone();
    clients.sort_unstable();
    let expected: String = clients
        .iter()
        .map(|(ip, port)| format!("{ip}\t{port}\tSF\tShAD\t1\t1\t1\n"))
        .collect();
    assert_eq!(rows, expected);
    eprintln!("ClickHouse connections:\n{rows}");
}

#[test]
fn the_plain_receiver_recipe_works() {
    testbed::skip_unless_root!();
    let topology = topology();
    let dir = scratch("receiver-recipe");
    let out = dir.join("records.ndjson");
    let port = listen(&topology).local_addr().unwrap().port();
    let mut receiver = topology
        .server
        .command("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/recipes/receiver.py"
        ))
        .args(["--port", &port.to_string(), "--out"])
        .arg(&out)
        .env("EXPECTED_TOKEN", TOKEN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 receiver.py");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while topology
        .server
        .run(move || std::net::TcpStream::connect(("127.0.0.1", port)).is_err())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let run = run_traffic(&topology, &format!("http://127.0.0.1:{port}/"), &[]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(receiver.id() as i32, libc::SIGTERM) };
    testbed::wait_within(&mut receiver, Duration::from_secs(10), "receiver.py");
    let mut summary = String::new();
    receiver
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut summary)
        .unwrap();
    let summary: Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(summary["dropped"], 0);
    let records: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let mut record: Value = serde_json::from_str(l).unwrap();
            assert_eq!(
                record.as_object_mut().unwrap().remove("pod"),
                Some(json!("web-7d9c"))
            );
            without_ts(record)
        })
        .collect();
    assert_eq!(sorted(records), sorted(run.expected));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The OTLP attributes of a connection's log record, back under the record's own names.
fn connection_of_log(log: &Value) -> Value {
    assert_eq!(log["event_name"], "tcp.connection", "{log}");
    let mut record = serde_json::Map::new();
    record.insert("type".into(), json!("connection"));
    for (key, value) in log["attributes"].as_object().expect("attributes") {
        let (name, value) = match key.as_str() {
            "network.transport" => continue,
            "network.type" => ("ip_version", json!(if value == "ipv6" { 6 } else { 4 })),
            "client.address" => ("client_ip", value.clone()),
            "client.port" => ("client_port", value.clone()),
            "server.address" => ("server_ip", value.clone()),
            "server.port" => ("server_port", value.clone()),
            "tcp.connection.state" => ("conn_state", value.clone()),
            other => {
                let field = other
                    .strip_prefix("tcp.connection.")
                    .unwrap_or_else(|| panic!("unexpected attribute {other}"));
                // `client.ack_rtt.mean` is the record's `client_ack_rtt_mean_ns`.
                if let Some((side, statistic)) = field.split_once(".ack_rtt.") {
                    let unit = if statistic == "samples" { "" } else { "_ns" };
                    record.insert(format!("{side}_ack_rtt_{statistic}{unit}"), value.clone());
                    continue;
                }
                assert!(!field.contains('.'), "unexpected attribute {other}");
                (field, value.clone())
            }
        };
        record.insert(name.into(), value);
    }
    Value::Object(record)
}

/// Every connection record the collector received, as flat JSON objects, and how many packet
/// records came with them (in the same bodies: third-party decoders read both kinds).
fn connection_records(
    python: &Path,
    format: &str,
    encoding: &str,
    received: &[Received],
) -> (Vec<Value>, usize) {
    let mut records = Vec::new();
    match format {
        "batch" => {
            for request in received {
                records.extend(
                    request.body["records"]
                        .as_array()
                        .expect("records")
                        .iter()
                        .cloned(),
                );
            }
        }
        "ndjson" => {
            for request in received {
                for line in String::from_utf8(request.raw.clone()).unwrap().lines() {
                    let record: Value = serde_json::from_str(line).unwrap();
                    assert_eq!(record["pod"], "web-7d9c", "{record}");
                    records.push(record);
                }
            }
        }
        "loki" => {
            for request in received {
                for value in request.body["streams"][0]["values"].as_array().unwrap() {
                    records.push(serde_json::from_str(value[1].as_str().unwrap()).unwrap());
                }
            }
        }
        _ => {
            let logs = decode_otlp(python, encoding, received);
            let (connections, packets): (Vec<&Value>, Vec<&Value>) = logs
                .iter()
                .partition(|log| log["event_name"] == "tcp.connection");
            assert!(
                packets.iter().all(|log| log["event_name"] == "tcp.packet"),
                "{packets:#?}"
            );
            return (
                connections.into_iter().map(connection_of_log).collect(),
                packets.len(),
            );
        }
    }
    let (connections, packets): (Vec<Value>, Vec<Value>) = records
        .into_iter()
        .partition(|record| record["type"] == "connection");
    (connections, packets.len())
}

#[test]
fn connection_records_reach_every_format_with_the_capture_s_counts() {
    testbed::skip_unless_root!();
    let Some(python) = otlp_python("connection_records_reach_every_format") else {
        return;
    };
    for (format, encoding) in [
        ("batch", ""),
        ("ndjson", ""),
        ("loki", ""),
        ("otlp", "protobuf"),
        ("otlp", "json"),
    ] {
        let topology = topology();
        let collector = Collector::start(listen(&topology), accept_all);
        let url = format!("http://{}/ingest", collector.addr);
        // Both kinds, and batches that stay open until the agent stops, so that the last body
        // carries packet and connection records together.
        let mut env = vec![
            ("OUTPUT_FORMAT", format),
            ("RECORDS", "both"),
            ("BATCH_MAX_WAIT_MS", "60000"),
        ];
        if !encoding.is_empty() {
            env.push(("OTLP_ENCODING", encoding));
        }
        let run = run_traffic(&topology, &url, &env);
        let received = collector.received();
        if format == "batch" {
            let mixed = received.iter().any(|request| {
                let kinds: Vec<bool> = request.body["records"]
                    .as_array()
                    .expect("records")
                    .iter()
                    .map(|r| r["type"] == "connection")
                    .collect();
                kinds.contains(&true) && kinds.contains(&false)
            });
            assert!(mixed, "no body carried both kinds");
        }
        let (records, packets) = connection_records(&python, format, encoding, &received);
        assert_eq!(
            packets,
            run.expected.len(),
            "{format} {encoding}: packet records"
        );
        assert_eq!(
            records.len(),
            run.connections.len(),
            "{format} {encoding}: {records:#?}"
        );
        for &(ip, port) in &run.connections {
            let record = records
                .iter()
                .find(|r| r["client_ip"] == ip && r["client_port"] == port)
                .unwrap_or_else(|| panic!("{format}: no record of client {ip} port {port}"));
            assert_eq!(record["type"], "connection", "{record}");
            assert_eq!(record["server_port"], MATCHED, "{record}");
            assert_eq!(record["end_reason"], "fin", "{record}");
            assert_eq!(record["handshake_seen"], true, "{record}");
            // Zeek's verdict and the round trips, in every format.
            assert_eq!(record["conn_state"], "SF", "{format}: {record}");
            let history = record["history"].as_str().unwrap_or_default();
            assert!(history.starts_with("ShAD"), "{format}: {record}");
            for side in ["client", "server"] {
                let samples = record[format!("{side}_ack_rtt_samples")]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{format}: {side} samples in {record}"));
                assert!(samples > 0, "{format}: {record}");
                let ns = |what: &str| record[format!("{side}_ack_rtt_{what}_ns")].as_u64();
                let (Some(min), Some(mean), Some(max)) = (ns("min"), ns("mean"), ns("max")) else {
                    panic!("{format}: {side} round trips in {record}");
                };
                assert!(min <= mean && mean <= max, "{format}: {record}");
            }
            // Each side's packets and bytes, from the independent capture.
            for (prefix, from) in [("client", port), ("server", MATCHED)] {
                let sent: Vec<&Value> = run
                    .expected
                    .iter()
                    .filter(|r| {
                        let client = if from == port { "src" } else { "dst" };
                        r["src_port"] == from
                            && r[format!("{client}_ip")] == ip
                            && r[format!("{client}_port")] == port
                    })
                    .collect();
                let bytes: u64 = sent
                    .iter()
                    .map(|r| r["payload_len"].as_u64().unwrap())
                    .sum();
                assert_eq!(
                    record[format!("{prefix}_packets")],
                    sent.len() as u64,
                    "{format}: {record}"
                );
                assert_eq!(
                    record[format!("{prefix}_bytes")],
                    bytes,
                    "{format}: {record}"
                );
            }
        }
        let made = stopped(&run.finished, "connection_records");
        assert_eq!(made, run.connections.len() as u64);
        assert_eq!(
            stopped(&run.finished, "delivered"),
            made + packets as u64,
            "connection and packet records are delivered"
        );
        assert_eq!(
            stopped(&run.finished, "records"),
            stopped(&run.finished, "matched")
        );
    }
}
