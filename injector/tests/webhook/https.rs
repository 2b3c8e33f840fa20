//! TLS: trust, protocols, plain HTTP refused, certificate rotation without failed handshakes.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::{TlsConnector, rustls};

use crate::common::{
    Server, TempDir, client, localhost_certs, mount_secret, start_default, swap_secret, tls_config,
};

#[test]
fn serves_health_and_readiness_to_a_client_trusting_only_the_ca() {
    let (_dir, certs, server) = start_default();
    let agent = client(&[&certs.ca_pem]);
    for (path, expected) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let mut response = agent.get(&server.url(path)).call().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body_mut().read_to_string().unwrap(), expected);
    }
    let mut metrics = agent.get(&server.url("/metrics")).call().unwrap();
    assert!(
        metrics
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("# TYPE tcp_sniffer_injector_requests_total counter")
    );
    assert_eq!(
        agent.get(&server.url("/nope")).call().unwrap().status(),
        404
    );
    assert_eq!(
        agent.get(&server.url("/mutate")).call().unwrap().status(),
        405
    );

    // Another CA's client must refuse the server.
    let stranger = localhost_certs();
    assert!(server.health(&[&stranger.ca_pem]).is_none());

    // The probes and metrics, and nothing else, on the plain-HTTP metrics port.
    let plain = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.metrics_port);
    for (path, status, expected) in [
        ("/healthz", 200, "ok\n"),
        ("/readyz", 200, "ready\n"),
        ("/mutate", 404, "not found"),
    ] {
        let mut response = plain.get(&url(path)).call().unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert!(
            response
                .body_mut()
                .read_to_string()
                .unwrap()
                .starts_with(expected),
            "{path}"
        );
    }
    let mut metrics = plain.get(&url("/metrics")).call().unwrap();
    let text = metrics.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("tcp_sniffer_injector_cuts_total{reason=\"idle_timeout\"}"),
        "{text}"
    );
    let review = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deployment-pod.json"),
    )
    .unwrap();
    let response = plain
        .post(&url("/mutate"))
        .header("Content-Type", "application/json")
        .send(&review[..])
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "the metrics port must not admit pods"
    );
}

#[test]
fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let (_dir, certs, server) = start_default();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The server is unharmed.
    assert_eq!(server.health(&[&certs.ca_pem]).unwrap(), 200);
}

#[test]
fn speaks_http2_and_http1_over_tls_1_2_and_1_3() {
    let (_dir, certs, server) = start_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (versions, expected_version) in [
            (
                &[&rustls::version::TLS13][..],
                rustls::ProtocolVersion::TLSv1_3,
            ),
            (
                &[&rustls::version::TLS12][..],
                rustls::ProtocolVersion::TLSv1_2,
            ),
        ] {
            let connector = TlsConnector::from(tls_config(&certs.ca_pem, versions, &[b"h2"]));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap();
            let tls = connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            assert_eq!(tls.get_ref().1.protocol_version(), Some(expected_version));
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = hyper::Request::get(server.url("/healthz"))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.version(), hyper::Version::HTTP_2);
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.into_body().collect().await.unwrap().to_bytes(),
                "ok\n"
            );
        }
        // Without ALPN the server speaks HTTP/1.1.
        let connector =
            TlsConnector::from(tls_config(&certs.ca_pem, &[&rustls::version::TLS13], &[]));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get("/readyz")
            .header("host", "localhost")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_11);
        assert_eq!(response.status(), 200);
    });
}

#[test]
fn rotated_certificate_is_served_without_restart_or_failed_handshakes() {
    let dir = TempDir::new();
    let old = localhost_certs();
    mount_secret(&dir.0, &old);
    let server = Server::start(&dir.0, &[]);
    let new = localhost_certs();

    // Clients trusting both CAs hammer the server across the swap: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (failures, successes) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let hammer = {
        let (stop, failures, successes) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&successes),
        );
        let (both, url) = (
            [old.ca_pem.clone(), new.ca_pem.clone()],
            server.url("/healthz"),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match client(&[&both[0], &both[1]]).get(&url).call() {
                    Ok(r) if r.status() == 200 => successes.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    swap_secret(&dir.0, &new, "..2026_11_27_01_00_00.000000002");

    let only_new = client(&[&new.ca_pem]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while only_new.get(&server.url("/healthz")).call().is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "handshakes failed during the swap"
    );
    assert!(successes.load(Ordering::Relaxed) > 10);
    server.wait_for_log("TLS certificate reloaded");
    // The old CA no longer verifies the server.
    assert!(server.health(&[&old.ca_pem]).is_none());
}

#[test]
fn broken_new_pair_keeps_the_old_certificate() {
    let (dir, certs, server) = start_default();
    // A key that belongs to another certificate.
    let other = localhost_certs();
    let mismatched = injector::certs::GeneratedCerts {
        ca_pem: certs.ca_pem.clone(),
        cert_pem: certs.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
    };
    swap_secret(&dir.0, &mismatched, "..2026_11_27_02_00_00.000000003");
    let error = server.wait_for_log("still serving the previous one");
    assert_eq!(error["level"], "ERROR");
    assert!(
        error["error"].as_str().unwrap().contains("does not match"),
        "{error}"
    );
    assert_eq!(server.health(&[&certs.ca_pem]).unwrap(), 200);
    // Garbage is refused the same way, and reported once, not on every poll.
    swap_secret(
        &dir.0,
        &injector::certs::GeneratedCerts {
            ca_pem: String::new(),
            cert_pem: "junk".into(),
            key_pem: "junk".into(),
        },
        "..2026_11_27_03_00_00.000000004",
    );
    thread::sleep(Duration::from_millis(3500));
    let reports = server
        .log_lines()
        .iter()
        .filter(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.contains("still serving"))
        })
        .count();
    assert_eq!(reports, 2);
    assert_eq!(server.health(&[&certs.ca_pem]).unwrap(), 200);
}

#[test]
fn deleted_certificate_files_keep_the_loaded_certificate() {
    let (dir, certs, server) = start_default();
    std::fs::remove_file(dir.0.join("tls.crt")).unwrap();
    std::fs::remove_file(dir.0.join("tls.key")).unwrap();
    let error = server.wait_for_log("still serving the previous one");
    assert!(
        error["error"].as_str().unwrap().contains("tls.crt"),
        "{error}"
    );
    for _ in 0..5 {
        assert_eq!(server.health(&[&certs.ca_pem]).unwrap(), 200);
    }
    // When the files come back, they are used again.
    let renewed = localhost_certs();
    std::fs::write(dir.0.join("tls.crt"), &renewed.cert_pem).unwrap();
    std::fs::write(dir.0.join("tls.key"), &renewed.key_pem).unwrap();
    server.wait_for_log("TLS certificate reloaded");
    assert_eq!(server.health(&[&renewed.ca_pem]).unwrap(), 200);
}

/// 200 stalled clients against a cap of 128 connections: the ones over the cap are closed at
/// once, the probes on the metrics port keep answering fast, and the stalled ones are cut by the
/// header and idle deadlines, after which the webhook port serves again.
#[test]
fn stalled_clients_beyond_the_cap_are_refused_and_the_probes_still_answer() {
    let (_dir, certs, server) = start_default();
    let config = tls_config(&certs.ca_pem, rustls::DEFAULT_VERSIONS, &[]);
    // Kept open and idle until the end of the test.
    let (mut idle_tcp, mut idle_tls) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        if i % 2 == 0 {
            // Half never even start the TLS handshake.
            idle_tcp.push(tcp);
            continue;
        }
        // The others send half a request, or a whole one whose answer they never read.
        let connection =
            rustls::ClientConnection::new(Arc::clone(&config), "localhost".try_into().unwrap())
                .unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let request: &[u8] = if i % 4 == 1 {
            b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n{"
        } else {
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
        };
        // Over the cap the server has closed the connection: the write may fail.
        let _ = tls.write_all(request);
        idle_tls.push(tls);
    }
    let plain = ureq::Agent::new_with_config(ureq::Agent::config_builder().build());
    for _ in 0..10 {
        let start = Instant::now();
        let response = plain
            .get(&format!("http://127.0.0.1:{}/healthz", server.metrics_port))
            .call()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "/healthz took {:?} with 200 stalled clients",
            start.elapsed()
        );
    }
    let refused = server.wait_for_log("connection refused: the connection limit is reached");
    assert_eq!(refused["reason"], "connection_cap");
    // Handshake (5 s), header (5 s) and idle (10 s) deadlines free the slots.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.health(&[&certs.ca_pem]) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the webhook port never recovered"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let metrics = plain
        .get(&format!("http://127.0.0.1:{}/metrics", server.metrics_port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let cut = |reason: &str| -> u64 {
        let prefix = format!("tcp_sniffer_injector_cuts_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(cut("connection_cap") >= 72, "{metrics}");
    assert!(cut("handshake_timeout") > 0, "{metrics}");
    drop((idle_tcp, idle_tls));
}
