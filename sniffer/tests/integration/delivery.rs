//! Delivery to a real HTTP collector in the sniffer's namespace: batching, auth, retries,
//! refusals, an outage with a small buffer, shutdown flushing, metrics.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::{
    agent::{Agent, Finished, SNIFFER},
    collector::{Collector, Received, Reply, accept_all},
    netns::{CLIENT_V4, SERVER_V4, Topology, http_get, topology},
    traffic::{MATCHED, check_flow, exchange, serve},
};

const TOKEN: &str = "tok-SECRET-4242";

/// Binds a listener inside the server namespace's loopback.
fn listen(topology: &Topology) -> TcpListener {
    topology
        .server
        .run(|| TcpListener::bind("127.0.0.1:0").expect("bind"))
}

fn start_sniffer(topology: &Topology, collector: SocketAddr, env: &[(&str, String)]) -> Agent {
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env("OUTPUT_URL", format!("http://{collector}/v1/batches"))
        .env("OUTPUT_URL_AUTH_TOKEN", TOKEN)
        // The test collector speaks plain HTTP on the namespace's loopback.
        .env("OUTPUT_ALLOW_PLAINTEXT_TOKEN", "true")
        .env("POD_NAME", "web-7d9c")
        .env("POD_NAMESPACE", "shop")
        .env("NODE_NAME", "node-3")
        .env("STATS_INTERVAL_SECS", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    Agent::attached(cmd)
}

/// Runs `connections` exchanges of `size` bytes to the matched port; returns the client ports.
fn traffic(topology: &Topology, connections: usize, size: usize) -> Vec<u16> {
    let addr: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(addr).expect("bind"));
    let server = serve(listener, connections);
    let ports = topology
        .client
        .run(move || (0..connections).map(|_| exchange(addr, size)).collect());
    server.join().unwrap();
    // Let the last ACKs reach the wire before anyone stops.
    thread::sleep(Duration::from_millis(200));
    ports
}

/// Distinct batches by `seq` (a retried batch arrives more than once), checking that every copy
/// of a batch is identical.
fn unique_batches(received: &[Received]) -> BTreeMap<u64, Value> {
    let mut batches = BTreeMap::new();
    for request in received {
        let seq = request.body["seq"].as_u64().expect("seq");
        if let Some(previous) = batches.insert(seq, request.body.clone()) {
            assert_eq!(
                previous, request.body,
                "batch {seq} changed between attempts"
            );
        }
    }
    batches
}

fn records_of(batches: &BTreeMap<u64, Value>) -> Vec<Value> {
    batches
        .values()
        .flat_map(|b| b["records"].as_array().unwrap().clone())
        .collect()
}

fn total(batches: &BTreeMap<u64, Value>, field: &str) -> u64 {
    batches
        .values()
        .map(|b| match field {
            "records" => b["records"].as_array().unwrap().len() as u64,
            _ => b[field].as_u64().unwrap(),
        })
        .sum()
}

fn stopped_count(finished: &Finished, field: &str) -> u64 {
    finished.log("stopped")[field]
        .as_u64()
        .unwrap_or_else(|| panic!("stopped line has no {field}"))
}

/// The token must not appear anywhere in the logs.
fn assert_token_never_logged(finished: &Finished) {
    for line in &finished.logs {
        assert!(!line.to_string().contains(TOKEN), "token logged: {line}");
    }
}

#[test]
fn healthy_collector_gets_every_record_exactly_once() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), accept_all);
    let metrics_addr = listen(&topology).local_addr().unwrap();
    let mut agent = start_sniffer(
        &topology,
        collector.addr,
        &[
            ("BATCH_MAX_RECORDS", "7".into()),
            ("BATCH_MAX_WAIT_MS", "100".into()),
            ("METRICS_ADDR", metrics_addr.to_string()),
        ],
    );
    let ports = traffic(&topology, 3, 1000);
    thread::sleep(Duration::from_millis(500));

    let metrics = http_get(&topology, metrics_addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(metrics.contains("# TYPE tcp_sniffer_records_delivered_total counter"));
    assert!(
        metrics.contains("tcp_sniffer_last_delivery_status 200"),
        "{metrics}"
    );
    assert!(!metrics.contains(TOKEN));
    assert!(http_get(&topology, metrics_addr, "/healthz").ends_with("\r\n\r\nok\n"));
    let stats = agent.wait_for_log("stats", Duration::from_secs(5));
    assert!(stats["delivered"].as_u64().unwrap() > 0, "{stats}");

    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let received = collector.received();
    let batches = unique_batches(&received);
    assert_eq!(
        batches.len(),
        received.len(),
        "a healthy collector sees no retries"
    );
    assert_eq!(
        batches.keys().copied().collect::<Vec<_>>(),
        (0..batches.len() as u64).collect::<Vec<_>>()
    );
    for request in &received {
        assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(request.body["records"].as_array().unwrap().len() <= 7);
        assert_eq!(request.body["dropped"], 0);
        let agent = &request.body["agent"];
        assert_eq!(
            (&agent["pod"], &agent["namespace"], &agent["node"]),
            (&"web-7d9c".into(), &"shop".into(), &"node-3".into())
        );
        assert_eq!(agent["interface"], "eth0");
        assert_eq!(agent["instance"], received[0].body["agent"]["instance"]);
    }
    let records = records_of(&batches);
    for port in ports {
        let flow: Vec<&Value> = records
            .iter()
            .filter(|r| r["src_port"] == port || r["dst_port"] == port)
            .collect();
        check_flow(&flow, CLIENT_V4, SERVER_V4, 4, 1000);
    }
    let delivered = records.len() as u64;
    assert_eq!(stopped_count(&finished, "matched"), delivered);
    assert_eq!(stopped_count(&finished, "delivered"), delivered);
    assert_eq!(stopped_count(&finished, "dropped"), 0);
    assert_token_never_logged(&finished);
    assert!(
        finished
            .logs
            .iter()
            .any(|l| l["level"] == "WARN" && l["msg"].as_str().unwrap().contains("plaintext")),
        "the plaintext token is not warned about"
    );
}

#[test]
fn retryable_statuses_are_retried_honouring_retry_after() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), |index, _| {
        if index < 3 {
            Reply::Status(503, vec![("Retry-After", "1".into())])
        } else {
            Reply::Status(200, Vec::new())
        }
    });
    let agent = start_sniffer(
        &topology,
        collector.addr,
        &[
            ("BATCH_MAX_WAIT_MS", "100".into()),
            ("RETRY_INITIAL_MS", "20".into()),
        ],
    );
    traffic(&topology, 1, 100);
    collector.wait_until(Duration::from_secs(15), |r| r.len() >= 4);
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);

    let received = collector.received();
    // The first batch was tried four times, unchanged, at least a second apart.
    let first: Vec<&Received> = received.iter().filter(|r| r.body["seq"] == 0).collect();
    assert_eq!(first.len(), 4);
    for pair in first.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 not honoured: {gap:?}"
        );
    }
    let batches = unique_batches(&received);
    assert_eq!(
        total(&batches, "records"),
        stopped_count(&finished, "matched")
    );
    assert_eq!(stopped_count(&finished, "dropped"), 0);
    let warnings = finished
        .logs
        .iter()
        .filter(|l| l["level"] == "WARN" && l["status"] == 503)
        .count();
    assert_eq!(warnings, 3);
    assert_token_never_logged(&finished);
}

#[test]
fn refused_batch_is_dropped_counted_and_reported_in_the_next_batch() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), |index, _| {
        Reply::Status(if index == 0 { 400 } else { 200 }, Vec::new())
    });
    let agent = start_sniffer(
        &topology,
        collector.addr,
        &[("BATCH_MAX_WAIT_MS", "100".into())],
    );
    traffic(&topology, 1, 100);
    collector.wait_until(Duration::from_secs(10), |r| !r.is_empty());
    // Still running: later traffic is delivered, and carries the loss.
    traffic(&topology, 1, 100);
    collector.wait_until(Duration::from_secs(10), |r| r.len() >= 2);
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);

    let received = collector.received();
    let refused = received[0].body["records"].as_array().unwrap().len() as u64;
    assert!(refused > 0);
    assert_eq!(received[1].body["seq"], 1);
    assert_eq!(received[1].body["dropped"], refused);
    assert_eq!(stopped_count(&finished, "dropped_rejected"), refused);
    let delivered: BTreeMap<u64, Value> = received[1..]
        .iter()
        .map(|r| (r.body["seq"].as_u64().unwrap(), r.body.clone()))
        .collect();
    assert_eq!(
        total(&delivered, "records") + total(&delivered, "dropped"),
        stopped_count(&finished, "matched")
    );
    let error = finished
        .logs
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("an error line");
    assert_eq!(error["status"], 400);
    assert!(
        error["msg"].as_str().unwrap().contains("HTTP 400"),
        "{error}"
    );
}

#[test]
fn collector_outage_with_a_small_buffer_loses_nothing_unaccounted() {
    testbed::skip_unless_root!();
    let topology = topology();
    // Reserve a port, then leave it closed: connections are refused until the collector starts.
    let addr = listen(&topology).local_addr().unwrap();
    let agent = start_sniffer(
        &topology,
        addr,
        &[
            ("BATCH_MAX_RECORDS", "10".into()),
            ("BATCH_MAX_WAIT_MS", "50".into()),
            ("BUFFER_MAX_RECORDS", "20".into()),
            ("RETRY_INITIAL_MS", "50".into()),
            ("RETRY_MAX_MS", "400".into()),
        ],
    );
    traffic(&topology, 10, 1000);
    thread::sleep(Duration::from_secs(3));
    let collector = Collector::start(
        topology
            .server
            .run(move || TcpListener::bind(addr).expect("rebind")),
        accept_all,
    );
    collector.wait_until(Duration::from_secs(10), |r| {
        r.iter()
            .any(|b| b.body["dropped"].as_u64().unwrap_or(0) > 0)
    });
    let peak_kib = peak_rss_kib(&agent);
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);

    let batches = unique_batches(&collector.received());
    let matched = stopped_count(&finished, "matched");
    let buffer_full = stopped_count(&finished, "dropped_buffer_full");
    assert!(buffer_full > 0, "the buffer bound was never reached");
    assert_eq!(
        total(&batches, "records"),
        stopped_count(&finished, "delivered")
    );
    assert_eq!(
        total(&batches, "dropped"),
        stopped_count(&finished, "dropped")
    );
    assert_eq!(
        total(&batches, "records") + total(&batches, "dropped"),
        matched
    );
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
    assert!(finished.logs.iter().any(|l| {
        l["level"] == "WARN"
            && l["msg"]
                .as_str()
                .unwrap()
                .contains("cannot reach the collector")
    }));
}

fn peak_rss_kib(agent: &Agent) -> u64 {
    testbed::memory_kib(agent.pid(), "VmHWM").expect("VmHWM")
}

#[test]
fn sigterm_delivers_everything_queued_before_exit() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), accept_all);
    // Batches would only close after a minute: everything is still queued at SIGTERM.
    let agent = start_sniffer(
        &topology,
        collector.addr,
        &[
            ("BATCH_MAX_WAIT_MS", "60000".into()),
            ("BATCH_MAX_RECORDS", "100000".into()),
            ("BUFFER_MAX_RECORDS", "100000".into()),
            ("OUTPUT_GZIP", "true".into()),
        ],
    );
    traffic(&topology, 5, 1000);
    assert!(collector.received().is_empty());
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let received = collector.received();
    assert!(!received.is_empty());
    assert!(
        received
            .iter()
            .all(|r| r.headers["content-encoding"] == "gzip")
    );
    let batches = unique_batches(&received);
    let matched = stopped_count(&finished, "matched");
    assert!(matched >= 5 * 8, "{matched}");
    assert_eq!(total(&batches, "records"), matched);
    assert_eq!(stopped_count(&finished, "delivered"), matched);
}

/// A collector that misbehaves in a different way on each of its first connections, then
/// answers properly: silence, a reset in the middle of the request, a non-HTTP answer.
fn faulty_collector(listener: TcpListener) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut held = Vec::new();
        for fault in 0..3 {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut head = [0u8; 64];
            let _ = stream.read(&mut head);
            match fault {
                // Accept the request and never answer: the client's timeout must fire.
                0 => held.push(stream),
                // Reset the connection mid-request (SO_LINGER 0 turns close into RST).
                1 => {
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: setsockopt on a socket we own, with a valid linger struct.
                    unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&stream),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&raw const linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                }
                // Answer garbage.
                _ => {
                    let _ = stream.write_all(b"HELLO THERE\r\n\r\n");
                }
            }
        }
        // From now on a real collector serves the same listener.
        let collector = Collector::start(listener, accept_all);
        collector.wait_until(Duration::from_secs(20), |r| !r.is_empty());
        // Keep serving until the test is done with it.
        thread::sleep(Duration::from_secs(3));
        drop(held);
    })
}

#[test]
fn silent_resetting_and_garbage_collectors_are_retried_until_delivery() {
    testbed::skip_unless_root!();
    let topology = topology();
    let listener = listen(&topology);
    let addr = listener.local_addr().unwrap();
    let faults = faulty_collector(listener.try_clone().unwrap());
    let agent = start_sniffer(
        &topology,
        addr,
        &[
            ("BATCH_MAX_WAIT_MS", "100".into()),
            ("OUTPUT_TIMEOUT_MS", "500".into()),
            ("OUTPUT_CONCURRENCY", "1".into()),
            ("RETRY_INITIAL_MS", "50".into()),
        ],
    );
    traffic(&topology, 1, 100);
    faults.join().unwrap();
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let failures: Vec<&Value> = finished
        .logs
        .iter()
        .filter(|l| l["msg"] == "cannot reach the collector; will retry")
        .collect();
    assert!(failures.len() >= 3, "{:#?}", finished.logs);
    let errors: Vec<String> = failures
        .iter()
        .map(|l| l["error"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.to_lowercase().contains("timeout") || e.contains("timed out")),
        "{errors:?}"
    );
    assert_eq!(stopped_count(&finished, "dropped"), 0);
    assert_eq!(
        stopped_count(&finished, "delivered"),
        stopped_count(&finished, "matched")
    );
    assert_token_never_logged(&finished);
}

#[test]
fn unresolvable_collector_gives_up_at_shutdown_and_counts_everything() {
    testbed::skip_unless_root!();
    let topology = topology();
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env(
            "OUTPUT_URL",
            "http://collector.does-not-exist.invalid:9000/v1/batches",
        )
        .env("BATCH_MAX_WAIT_MS", "100")
        .env("RETRY_INITIAL_MS", "100")
        .env("SHUTDOWN_GRACE_MS", "1000");
    let mut agent = Agent::attached(cmd);
    traffic(&topology, 1, 100);
    agent.wait_for_log(
        "cannot reach the collector; will retry",
        Duration::from_secs(10),
    );
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    assert!(
        finished.elapsed < Duration::from_secs(5),
        "took {:?}",
        finished.elapsed
    );
    let matched = stopped_count(&finished, "matched");
    assert!(matched > 0);
    assert_eq!(stopped_count(&finished, "delivered"), 0);
    assert_eq!(stopped_count(&finished, "dropped_undeliverable"), matched);
    assert_eq!(stopped_count(&finished, "dropped"), matched);
}

/// `Retry-After: 18446744073709551615` used to panic the sender thread (delivery stopped for good,
/// `/healthz` stayed ok, the records were lost unaccounted) and `999999999` froze delivery: every
/// wait is capped at `RETRY_MAX_MS`.
#[test]
fn absurd_retry_after_is_capped_at_retry_max() {
    testbed::skip_unless_root!();
    for absurd in ["18446744073709551615", "999999999"] {
        let topology = topology();
        let collector = Collector::start(listen(&topology), move |index, _| {
            if index == 0 {
                Reply::Status(503, vec![("Retry-After", absurd.into())])
            } else {
                Reply::Status(200, Vec::new())
            }
        });
        let metrics_addr = listen(&topology).local_addr().unwrap();
        let agent = start_sniffer(
            &topology,
            collector.addr,
            &[
                ("BATCH_MAX_WAIT_MS", "100".into()),
                ("OUTPUT_CONCURRENCY", "1".into()),
                ("RETRY_MAX_MS", "1000".into()),
                ("METRICS_ADDR", metrics_addr.to_string()),
            ],
        );
        traffic(&topology, 1, 100);
        collector.wait_until(Duration::from_secs(5), |r| r.len() >= 2);
        let received = collector.received();
        let gap = received[1].at - received[0].at;
        assert!(
            gap < Duration::from_secs(3),
            "{absurd}: retried after {gap:?}"
        );
        assert!(http_get(&topology, metrics_addr, "/healthz").ends_with("ok\n"));
        let finished = agent.terminate();
        assert_eq!(
            finished.status.code(),
            Some(0),
            "{absurd}: {:#?}",
            finished.logs
        );
        assert!(
            !finished.logs.iter().any(|l| l["msg"] == "panic"),
            "{absurd}: {:#?}",
            finished.logs
        );
        let matched = stopped_count(&finished, "matched");
        assert!(matched > 0);
        assert_eq!(stopped_count(&finished, "delivered"), matched, "{absurd}");
        assert_eq!(total(&unique_batches(&received), "records"), matched);
    }
}

/// With a collector that never answers and a 30 s request timeout, a 2 s grace used to end
/// 29 s after SIGTERM: the grace bounds the exit, and the batch in flight is undeliverable.
#[test]
fn shutdown_grace_bounds_the_exit_with_requests_in_flight() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), |_, _| Reply::Hang);
    let agent = start_sniffer(
        &topology,
        collector.addr,
        &[
            ("BATCH_MAX_WAIT_MS", "100".into()),
            ("OUTPUT_TIMEOUT_MS", "30000".into()),
            ("SHUTDOWN_GRACE_MS", "2000".into()),
        ],
    );
    traffic(&topology, 2, 1000);
    collector.wait_until(Duration::from_secs(5), |r| !r.is_empty());
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    assert!(
        finished.elapsed < Duration::from_millis(3000),
        "exit {:?} after SIGTERM with SHUTDOWN_GRACE_MS=2000",
        finished.elapsed
    );
    let matched = stopped_count(&finished, "matched");
    assert!(matched > 0);
    assert_eq!(stopped_count(&finished, "delivered"), 0);
    assert_eq!(stopped_count(&finished, "dropped_undeliverable"), matched);
    assert_eq!(stopped_count(&finished, "dropped"), matched);
    assert!(finished.logs.iter().any(|l| {
        l["msg"]
            .as_str()
            .unwrap()
            .starts_with("shutdown grace ran out with batches queued or in flight")
    }));
}

/// A token that ends with a newline (a Secret made with `--from-file` of an `echo`ed file) used
/// to fail every POST forever: it is trimmed, with a warning, and batches arrive.
#[test]
fn a_token_with_a_trailing_newline_is_trimmed() {
    testbed::skip_unless_root!();
    let topology = topology();
    let collector = Collector::start(listen(&topology), accept_all);
    let agent = start_sniffer(
        &topology,
        collector.addr,
        &[
            ("OUTPUT_URL_AUTH_TOKEN", format!("{TOKEN}\n")),
            ("BATCH_MAX_WAIT_MS", "100".into()),
        ],
    );
    traffic(&topology, 1, 100);
    collector.wait_until(Duration::from_secs(5), |r| !r.is_empty());
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    for request in collector.received() {
        assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
    }
    assert_eq!(
        stopped_count(&finished, "delivered"),
        stopped_count(&finished, "matched")
    );
    assert!(finished.logs.iter().any(
        |l| l["level"] == "WARN" && l["msg"].as_str().unwrap().contains("ended with a newline")
    ));
    assert_token_never_logged(&finished);
}
