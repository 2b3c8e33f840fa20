//! Cluster-shaped AdmissionReviews over HTTPS: each fixture's decision, and for mutated pods the
//! patch applied with an independent JSON Patch implementation, the result checked field by field.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::common::{Server, TempDir, client, localhost_certs, mount_secret, post};

const OPTIONS: &str = r#"{
  "image": "registry.example/tcp-sniffer:0.1.0",
  "imagePullPolicy": "IfNotPresent",
  "outputUrl": "https://collector.observability.svc:8443/v1/batches",
  "outputUrlAuthTokenSecret": {"name": "tcp-sniffer-output-auth", "key": "token"},
  "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "96Mi"}}
}"#;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The expected outcome of a fixture.
enum Expect {
    /// Injected on these ports.
    Inject(&'static [u16]),
    /// Allowed without a patch, optionally with a warning containing the text.
    Allow(Option<&'static str>),
    /// Denied with a message containing the text.
    Deny(&'static str),
}

fn env_map(container: &Container) -> BTreeMap<String, Value> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect()
}

/// Checks the injected container of `pod` field by field.
fn check_sniffer(pod: &Pod, ports: &str, native: bool) {
    let spec = pod.spec.as_ref().unwrap();
    let sniffer = if native {
        &spec.init_containers.as_ref().unwrap()[0]
    } else {
        spec.containers.last().unwrap()
    };
    assert_eq!(sniffer.name, "tcp-sniffer");
    assert_eq!(
        sniffer.image.as_deref(),
        Some("registry.example/tcp-sniffer:0.1.0")
    );
    assert_eq!(sniffer.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        sniffer.restart_policy.as_deref(),
        native.then_some("Always")
    );
    let env = env_map(sniffer);
    assert_eq!(env["PORTS"], json!({"name":"PORTS","value":ports}));
    assert_eq!(env["INTERFACE"], json!({"name":"INTERFACE","value":"eth0"}));
    assert_eq!(
        env["OUTPUT_URL"]["value"],
        "https://collector.observability.svc:8443/v1/batches"
    );
    assert_eq!(
        env["OUTPUT_URL_AUTH_TOKEN"]["valueFrom"],
        json!({"secretKeyRef":{"name":"tcp-sniffer-output-auth","key":"token","optional":false}})
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let security = serde_json::to_value(sniffer.security_context.as_ref().unwrap()).unwrap();
    assert_eq!(
        security,
        json!({"allowPrivilegeEscalation":false,"privileged":false,"readOnlyRootFilesystem":true,
               "runAsUser":0,"runAsNonRoot":false,
               "capabilities":{"drop":["ALL"],"add":["NET_RAW","BPF"]},
               "seccompProfile":{"type":"Unconfined"}})
    );
    assert_eq!(
        serde_json::to_value(sniffer.resources.as_ref().unwrap()).unwrap(),
        json!({"requests":{"cpu":"20m","memory":"32Mi"},"limits":{"cpu":"500m","memory":"96Mi"}})
    );
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["tcp-sniffer/injected"], "true");
}

#[test]
fn fixtures_get_the_expected_decisions_over_https() {
    let dir = TempDir::new();
    let certs = localhost_certs();
    mount_secret(&dir.0, &certs);
    let config = dir.0.join("options.json");
    std::fs::write(&config, OPTIONS).unwrap();
    let server = Server::start(&dir.0, &["--config", config.to_str().unwrap()]);
    let agent = client(&[&certs.ca_pem]);

    let table = [
        ("deployment-pod.json", Expect::Inject(&[8080, 9090])),
        ("job-pod.json", Expect::Inject(&[5432])),
        ("init-containers-pod.json", Expect::Inject(&[8080, 9090])),
        (
            "named-and-udp-ports-pod.json",
            Expect::Inject(&[53, 8080, 9901]),
        ),
        ("ports-annotation-pod.json", Expect::Inject(&[5432, 8080])),
        ("dry-run-pod.json", Expect::Inject(&[8080, 9090])),
        ("hostnetwork-pod.json", Expect::Allow(None)),
        ("opted-out-pod.json", Expect::Allow(None)),
        ("already-injected-pod.json", Expect::Allow(None)),
        (
            "no-ports-pod.json",
            Expect::Allow(Some("declares no TCP containerPort")),
        ),
        ("deployment.json", Expect::Allow(None)),
        ("update-pod.json", Expect::Allow(None)),
        ("delete-pod.json", Expect::Allow(None)),
        ("ephemeral-containers-subresource.json", Expect::Allow(None)),
        (
            "invalid-ports-annotation-pod.json",
            Expect::Deny(
                r#"annotation tcp-sniffer/ports "8080,http" is invalid: entry "http" is not a port number"#,
            ),
        ),
    ];
    for (name, expect) in table {
        let review = fixture(name);
        let (status, text) = post(&agent, &server, &serde_json::to_vec(&review).unwrap());
        assert_eq!(status, 200, "{name}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(answer["kind"], "AdmissionReview", "{name}");
        let response = &answer["response"];
        assert_eq!(response["uid"], review["request"]["uid"], "{name}");
        match expect {
            Expect::Inject(ports) => {
                assert_eq!(response["allowed"], true, "{name}");
                assert_eq!(response["patchType"], "JSONPatch", "{name}");
                let patch = base64::engine::general_purpose::STANDARD
                    .decode(response["patch"].as_str().expect("base64 string"))
                    .unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
                let mut object = review["request"]["object"].clone();
                let before = object.clone();
                json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
                let pod: Pod = serde_json::from_value(object.clone()).unwrap();
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                check_sniffer(&pod, &list.join(","), false);
                // Nothing else changed: the app containers are as they were.
                assert_eq!(
                    object["spec"]["containers"][0], before["spec"]["containers"][0],
                    "{name}"
                );
                let default = &pod.metadata.annotations.as_ref().unwrap()["kubectl.kubernetes.io/default-container"];
                assert_eq!(
                    default,
                    before["spec"]["containers"][0]["name"].as_str().unwrap()
                );
            }
            Expect::Allow(warning) => {
                assert_eq!(response["allowed"], true, "{name}");
                assert!(response.get("patch").is_none(), "{name} was patched");
                match warning {
                    Some(text) => assert!(
                        response["warnings"][0].as_str().unwrap().contains(text),
                        "{name}"
                    ),
                    None => assert!(response.get("warnings").is_none(), "{name}"),
                }
            }
            Expect::Deny(message) => {
                assert_eq!(response["allowed"], false, "{name}");
                assert_eq!(response["status"]["code"], 403);
                assert_eq!(response["status"]["message"], message, "{name}");
            }
        }
    }
    // One decision line per review, naming the pod or its generateName.
    let decisions = server.wait_for_lines("admission decision", 15);
    assert_eq!(decisions.len(), 15);
    let job = decisions
        .iter()
        .find(|l| l["pod"] == "nightly-report-28901440-*")
        .expect("job decision");
    assert_eq!(
        (&job["namespace"], &job["decision"]),
        (&json!("shop"), &json!("injected"))
    );
    assert!(job["latency_us"].as_u64().is_some());
    let dry = decisions
        .iter()
        .find(|l| l["uid"] == "d0f3b6c9-9e2a-4b5c-b5ad-4a6e8c1b3f59")
        .unwrap();
    assert_eq!(dry["dry_run"], true);
    let mut metrics = agent.get(&server.url("/metrics")).call().unwrap();
    let metrics = metrics.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("decisions_total{decision=\"injected\",reason=\"\"} 6"),
        "{metrics}"
    );
    assert!(metrics.contains("decisions_total{decision=\"denied\",reason=\"\"} 1"));
    assert!(metrics.contains("decisions_total{decision=\"skipped\",reason=\"operation\"} 2"));
}

#[test]
fn native_sidecar_goes_first_among_init_containers() {
    let options: injector::options::InjectorOptions = serde_json::from_str(OPTIONS).unwrap();
    let options = injector::options::InjectorOptions {
        native_sidecar: true,
        ..options
    };
    for name in ["init-containers-pod.json", "deployment-pod.json"] {
        let review = fixture(name);
        let outcome =
            injector::review::review(&serde_json::to_vec(&review).unwrap(), &options).unwrap();
        let answer: Value = serde_json::from_slice(&outcome.body).unwrap();
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        let mut object = review["request"]["object"].clone();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        let pod: Pod = serde_json::from_value(object).unwrap();
        check_sniffer(&pod, "8080,9090", true);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers.len(), 1, "{name}: app containers untouched");
        if name.starts_with("init") {
            assert_eq!(spec.init_containers.unwrap()[1].name, "migrate");
        }
    }
}

/// The collector format, header and records options reach the sidecar's environment through
/// `/mutate`:
/// plain values as values, secret ones only as Secret references.
#[test]
fn format_and_header_options_reach_the_sidecar_over_https() {
    let dir = TempDir::new();
    let certs = localhost_certs();
    mount_secret(&dir.0, &certs);
    let agent = client(&[&certs.ca_pem]);
    for (options, expected) in [
        (
            r#"{"outputUrl":"https://otel-collector.observability.svc:4318/v1/logs",
                "outputFormat":"otlp","otlpEncoding":"json",
                "outputUrlAuthTokenSecret":{"name":"otel-auth","key":"token"}}"#,
            json!({"OUTPUT_FORMAT":{"name":"OUTPUT_FORMAT","value":"otlp"},
                   "OTLP_ENCODING":{"name":"OTLP_ENCODING","value":"json"},
                   "OUTPUT_URL_AUTH_TOKEN":{"name":"OUTPUT_URL_AUTH_TOKEN","valueFrom":
                       {"secretKeyRef":{"name":"otel-auth","key":"token","optional":false}}}}),
        ),
        (
            r#"{"outputUrl":"https://clickhouse.db.svc:8443/?query=INSERT%20INTO%20packets%20FORMAT%20JSONEachRow",
                "outputFormat":"ndjson","outputAuthHeader":"X-ClickHouse-Key","outputAuthScheme":"",
                "outputUrlAuthTokenSecret":{"name":"clickhouse","key":"key"},
                "outputHeaders":{"X-ClickHouse-User":"sniffer"}}"#,
            json!({"OUTPUT_FORMAT":{"name":"OUTPUT_FORMAT","value":"ndjson"},
                   "OUTPUT_AUTH_HEADER":{"name":"OUTPUT_AUTH_HEADER","value":"X-ClickHouse-Key"},
                   "OUTPUT_AUTH_SCHEME":{"name":"OUTPUT_AUTH_SCHEME","value":""},
                   "OUTPUT_HEADERS":{"name":"OUTPUT_HEADERS","value":"X-ClickHouse-User=sniffer"},
                   "OUTPUT_URL_AUTH_TOKEN":{"name":"OUTPUT_URL_AUTH_TOKEN","valueFrom":
                       {"secretKeyRef":{"name":"clickhouse","key":"key","optional":false}}}}),
        ),
        (
            r#"{"outputUrl":"https://loki.logging.svc:3100/loki/api/v1/push","outputFormat":"loki",
                "records":"connections",
                "outputHeadersSecret":{"name":"loki-headers","key":"headers"}}"#,
            json!({"OUTPUT_FORMAT":{"name":"OUTPUT_FORMAT","value":"loki"},
                   "RECORDS":{"name":"RECORDS","value":"connections"},
                   "OUTPUT_HEADERS":{"name":"OUTPUT_HEADERS","valueFrom":
                       {"secretKeyRef":{"name":"loki-headers","key":"headers","optional":false}}}}),
        ),
    ] {
        let config = dir.0.join("options.json");
        std::fs::write(&config, options).unwrap();
        let server = Server::start(&dir.0, &["--config", config.to_str().unwrap()]);
        let review = fixture("deployment-pod.json");
        let (status, text) = post(&agent, &server, &serde_json::to_vec(&review).unwrap());
        assert_eq!(status, 200, "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        let mut object = review["request"]["object"].clone();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        let pod: Pod = serde_json::from_value(object).unwrap();
        let env = env_map(pod.spec.unwrap().containers.last().unwrap());
        for (name, value) in expected.as_object().unwrap() {
            assert_eq!(&env[name], value, "{name}");
        }
        // Nothing secret is ever a plain value.
        assert!(!env.contains_key("OUTPUT_ALLOW_PLAINTEXT_TOKEN"));
    }
}
