//! Bad input: every case gets a clear 4xx or a denial, never a crash, and the server keeps
//! answering.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
};

use tokio_rustls::rustls::{self, ClientConnection, StreamOwned};

use crate::common::{Server, client, post, start_default, tls_config};

#[test]
fn hostile_bodies_get_clear_errors_and_the_server_stays_up() {
    let (_dir, certs, server) = start_default();
    let agent = client(&[&certs.ca_pem]);
    let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    // Nested where the review keeps arbitrary JSON (the object's fields), so the parser recurses.
    let nested_object = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"n",
            "kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},
            "operation":"CREATE","userInfo":{{}},"object":{{"spec":{{"containers":{}{}}}}}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: [(&str, Vec<u8>, u16, &str); 8] = [
        (
            "malformed JSON",
            b"{\"apiVersion\":".to_vec(),
            400,
            "not an AdmissionReview",
        ),
        ("not JSON", b"hello".to_vec(), 400, "not an AdmissionReview"),
        ("empty body", Vec::new(), 400, "not an AdmissionReview"),
        (
            "wrong apiVersion",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#
                .to_vec(),
            400,
            "admission.k8s.io/v1beta1",
        ),
        (
            "wrong kind",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#.to_vec(),
            400,
            "kind \"Pod\"",
        ),
        (
            "missing request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "has no request",
        ),
        (
            "deeply nested array",
            nested.into_bytes(),
            400,
            "not an AdmissionReview",
        ),
        (
            "deeply nested object",
            nested_object.into_bytes(),
            400,
            "recursion limit",
        ),
    ];
    for (what, body, status, needle) in cases {
        let (got, text) = post(&agent, &server, &body);
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(needle), "{what}: {text}");
        assert_eq!(
            agent.get(&server.url("/healthz")).call().unwrap().status(),
            200,
            "after {what}"
        );
    }

    // A Pod CREATE without an object, and one whose spec is not a PodSpec: denied, with reasons.
    let no_object = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x1",
        "kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
        "operation":"CREATE","userInfo":{}}}"#;
    let (status, text) = post(&agent, &server, no_object);
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no object")
    );
    let bad_spec = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x2",
        "kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
        "operation":"CREATE","userInfo":{},"object":{"metadata":{"name":"p"},"spec":{"containers":[{"image":42}]}}}}"#;
    let (_, text) = post(&agent, &server, bad_spec);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be read")
    );

    let bad = server.wait_for_lines("bad admission request", 8).len();
    assert_eq!(bad, 8);
    assert_eq!(
        agent.get(&server.url("/healthz")).call().unwrap().status(),
        200
    );
}

/// A TLS stream to the server, for requests no HTTP client library would send.
fn raw_tls(server: &Server, ca_pem: &str) -> StreamOwned<ClientConnection, TcpStream> {
    let config = tls_config(ca_pem, rustls::DEFAULT_VERSIONS, &[]);
    let connection = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    StreamOwned::new(connection, tcp)
}

/// Reads what the server answered, up to when it closes.
fn answer(tls: &mut StreamOwned<ClientConnection, TcpStream>) -> String {
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn oversized_body_gets_413_before_it_is_read() {
    let (_dir, certs, server) = start_default();
    let mut tls = raw_tls(&server, &certs.ca_pem);
    let length = 10 << 20;
    write!(tls, "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n").unwrap();
    tls.write_all(&vec![b' '; 64 << 10]).unwrap();
    let text = answer(&mut tls);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("larger than the 4 MiB limit"), "{text}");
    assert_eq!(server.health(&[&certs.ca_pem]).unwrap(), 200);
}

/// A body cut short of its `Content-Length` (the client closes TLS 100 bytes early) is never
/// decided: counted as `body_aborted`, no decision logged (before, the truncated review was
/// decided and answered).
#[test]
fn a_body_shorter_than_its_length_is_not_decided() {
    let (_dir, certs, server) = start_default();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/deployment-pod.json"
    ))
    .unwrap();
    let mut tls = raw_tls(&server, &certs.ca_pem);
    write!(
        tls,
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    tls.write_all(&body[..body.len() - 100]).unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let text = answer(&mut tls);
    assert!(!text.contains("AdmissionReview"), "answered: {text}");
    let metrics = metrics_text(&server);
    assert!(
        metrics.contains("tcp_sniffer_injector_cuts_total{reason=\"body_aborted\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tcp_sniffer_injector_decisions_total{decision=\"injected\",reason=\"\"} 0\n"
        ),
        "{metrics}"
    );
    assert!(
        server
            .log_lines()
            .iter()
            .all(|l| l["msg"] != "admission decision")
    );
    // A whole body on a new connection is decided as usual.
    let (status, _) = post(&client(&[&certs.ca_pem]), &server, &body);
    assert_eq!(status, 200);
}

/// The metrics port's `/metrics`, over plain HTTP.
fn metrics_text(server: &Server) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", server.metrics_port)).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn body_without_content_length_is_refused() {
    let (_dir, certs, server) = start_default();
    let mut tls = raw_tls(&server, &certs.ca_pem);
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n").unwrap();
    let text = answer(&mut tls);
    assert!(text.starts_with("HTTP/1.1 411"), "{text}");
}

/// A 2 MiB annotation, uid, name, namespace or enum value comes back cut to 256 bytes with a
/// marker, in the response and in the log line, never whole.
#[test]
fn huge_values_are_never_echoed_whole() {
    let (_dir, certs, server) = start_default();
    let agent = client(&[&certs.ca_pem]);
    let huge = "9".repeat(2 << 20);
    // Two fields of 1 MiB: the body stays under the 4 MiB limit.
    let large = "9".repeat(1 << 20);
    let review = |uid: &str,
                  namespace: &str,
                  operation: &str,
                  name: &str,
                  annotations: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": operation, "userInfo": {},
                "object": {"metadata": {"name": name, "annotations": annotations},
                           "spec": {"containers": [{"name": "app"}]}}
            }
        }))
        .unwrap()
    };
    let cases = [
        (
            "ports annotation",
            review(
                "u1",
                "shop",
                "CREATE",
                "web",
                serde_json::json!({"tcp-sniffer/ports": huge}),
            ),
            200,
        ),
        (
            "inject annotation",
            review(
                "u2",
                "shop",
                "CREATE",
                "web",
                serde_json::json!({"tcp-sniffer/inject": huge}),
            ),
            200,
        ),
        (
            "uid",
            review(
                &huge,
                "shop",
                "CREATE",
                "web",
                serde_json::json!({"tcp-sniffer/ports": "x"}),
            ),
            400,
        ),
        (
            "operation",
            review("u3", "shop", &huge, "web", serde_json::json!({})),
            400,
        ),
        (
            "name and namespace",
            review(
                "u4",
                &large,
                "CREATE",
                &large,
                serde_json::json!({"tcp-sniffer/ports": "0"}),
            ),
            200,
        ),
    ];
    for (what, body, status) in cases {
        let (got, text) = post(&agent, &server, &body);
        assert_eq!(got, status, "{what}: {}", &text[..text.len().min(500)]);
        assert!(text.len() < 2048, "{what}: a {} byte answer", text.len());
        // The name and namespace are only logged.
        assert!(
            text.contains("truncated")
                || text.contains("bytes long")
                || what == "name and namespace",
            "{what}: {text}"
        );
    }
    let lines = server.wait_for_lines("admission decision", 3);
    let bad = server.wait_for_lines("bad admission request", 2);
    for line in lines.iter().chain(&bad) {
        let text = line.to_string();
        assert!(text.len() < 4096, "a {} byte log line", text.len());
    }
    let denied = lines.iter().find(|l| l["uid"] == "u4").expect("u4 logged");
    assert!(
        denied["namespace"]
            .as_str()
            .unwrap()
            .ends_with("bytes, truncated)")
    );
    assert!(
        denied["pod"]
            .as_str()
            .unwrap()
            .ends_with("bytes, truncated)")
    );
}
