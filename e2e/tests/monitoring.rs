//! The monitoring component (`manifests/components/monitoring`), checked with Prometheus' own
//! tools: the rules with `promtool check rules` and their unit tests with `promtool test rules`;
//! the PodMonitors and the PrometheusRule against the operator's schemas; both binaries' live
//! `/metrics` with `promtool check metrics`, and every metric the rules and the dashboard query
//! against what the binaries export from their first scrape; and a real Prometheus scraping a
//! live sniffer and injector, whose loss alert fires when the collector refuses every batch.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use e2e::{Process, TempDir, binary, free_port, http_get, kustomize, privileged, python, tool};
use serde::Deserialize as _;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use testbed::paths::workspace_root;

/// The kustomization that carries the component.
const OVERLAY: &str = "overlays/monitoring";

fn component() -> PathBuf {
    workspace_root().join("manifests/components/monitoring")
}

/// The rendered objects of `kind`.
fn objects(rendered: &str, kind: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(|document| Yaml::deserialize(document).expect("rendered YAML"))
        .filter(|object| object["kind"].as_str() == Some(kind))
        .collect()
}

/// The PrometheusRule's `spec`: a Prometheus rule file.
fn rule_file(rendered: &str) -> Yaml {
    let rules = objects(rendered, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0]["spec"].clone()
}

/// Every alert of a rule file: name to rule.
fn alerts(rules: &Yaml) -> BTreeMap<String, Yaml> {
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules").iter())
        .filter_map(|rule| Some((rule["alert"].as_str()?.to_owned(), rule.clone())))
        .collect()
}

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("run a tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests_cover_every_alert() {
    let test = "the_rules_pass_promtool_and_their_unit_tests_cover_every_alert";
    if !tool(test, "promtool") || !tool(test, "kubectl") {
        return;
    }
    let rules = rule_file(&kustomize(OVERLAY));
    let dir = TempDir::new("rules");
    std::fs::write(
        dir.0.join("rules.yaml"),
        serde_yaml::to_string(&rules).unwrap(),
    )
    .unwrap();
    let (ok, text) = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.0.join("rules.yaml")));
    assert!(ok, "promtool check rules:\n{text}");
    std::fs::copy(
        component().join("tests/alerts.test.yaml"),
        dir.0.join("alerts.test.yaml"),
    )
    .unwrap();
    let (ok, text) = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.0.join("alerts.test.yaml")));
    assert!(ok, "promtool test rules:\n{text}");

    // Each alert is shown firing somewhere and quiet somewhere.
    let tests: Yaml = serde_yaml::from_str(
        &std::fs::read_to_string(component().join("tests/alerts.test.yaml")).unwrap(),
    )
    .unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_sequence().unwrap() {
        for check in case["alert_rule_test"].as_sequence().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            if check["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for alert in alerts(&rules).keys() {
        assert!(firing.contains(alert), "no unit test where {alert} fires");
        assert!(
            quiet.contains(alert),
            "no unit test where {alert} stays quiet"
        );
    }
}

#[test]
fn every_alert_says_what_it_means_and_what_to_do() {
    if !tool("every_alert_says_what_it_means_and_what_to_do", "kubectl") {
        return;
    }
    for (name, rule) in alerts(&rule_file(&kustomize(OVERLAY))) {
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name} has no real {annotation}: {text:?}");
        }
    }
}

#[test]
fn the_monitors_and_the_rule_match_the_operator_s_schemas() {
    let test = "the_monitors_and_the_rule_match_the_operator_s_schemas";
    if !tool(test, "kubectl") {
        return;
    }
    let Some(python) = python(test) else { return };
    let dir = TempDir::new("crds");
    let rendered = dir.0.join("rendered.yaml");
    std::fs::write(&rendered, kustomize(OVERLAY)).unwrap();
    let (ok, text) = run(Command::new(python)
        .arg(workspace_root().join("e2e/python/monitoring_crds.py"))
        .arg(&rendered));
    assert!(ok, "{text}");
    for object in [
        "PodMonitor tcp-sniffer-sidecars",
        "PodMonitor tcp-sniffer-injector",
        "PrometheusRule tcp-sniffer",
    ] {
        assert!(
            text.contains(&format!("{object}: matches the operator's schema")),
            "{text}"
        );
    }
    // The sidecars' monitor selects the port the injector declares.
    let monitors = objects(&kustomize(OVERLAY), "PodMonitor");
    let sidecars = monitors
        .iter()
        .find(|m| m["metadata"]["name"].as_str() == Some("tcp-sniffer-sidecars"))
        .unwrap();
    assert_eq!(
        sidecars["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some("sniffer-metrics")
    );
    // The dashboard's ConfigMap is the importable file, labelled for Grafana's sidecar.
    let dashboards: Vec<Yaml> = objects(&kustomize(OVERLAY), "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
        .collect();
    assert_eq!(dashboards.len(), 1);
    let file = std::fs::read_to_string(component().join("tcp-sniffer-dashboard.json")).unwrap();
    assert_eq!(
        dashboards[0]["data"]["tcp-sniffer-dashboard.json"].as_str(),
        Some(file.as_str())
    );
}

/// A collector that answers every request with `status`, counting them.
struct Collector {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || answer(stream, status));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads requests on `stream` (keep-alive) and answers each with `status`.
fn answer(mut stream: TcpStream, status: u16) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + 4 + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + 4 + length);
        let body = "refused by the test collector\n";
        let reply = format!(
            "HTTP/1.1 {status} Test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A live sniffer (on `lo`, connection records too, delivering to a collector that answers
/// `status`) and a live injector, each with its metrics port.
struct Live {
    sniffer: Process,
    injector: Process,
    sniffer_metrics: SocketAddr,
    injector_metrics: SocketAddr,
    captured: u16,
    _collector: Collector,
    _certs: TempDir,
}

impl Live {
    fn start(status: u16) -> Self {
        let collector = Collector::start(status);
        let sniffer_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let captured = free_port();
        let mut command = Command::new(binary("sniffer"));
        command
            .env_clear()
            .env("PORTS", captured.to_string())
            .env("INTERFACE", "lo")
            .env("RECORDS", "both")
            .env("OUTPUT_URL", format!("http://{}/", collector.addr))
            .env("BATCH_MAX_WAIT_MS", "100")
            .env("RETRY_MAX_MS", "500")
            .env("METRICS_ADDR", sniffer_metrics.to_string());
        let mut sniffer = Process::start("sniffer", command);
        sniffer.wait_until("its metrics endpoint", Duration::from_secs(20), || {
            http_get(sniffer_metrics, "/healthz").is_ok_and(|(status, _)| status == 200)
        });

        let certs = TempDir::new("injector-certs");
        let out = Command::new(binary("injector"))
            .args(["gen-certs", "--out-dir"])
            .arg(&certs.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gen-certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let injector_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(binary("injector"));
        command
            .env_clear()
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-listen", &injector_metrics.to_string()])
            .arg("--tls-cert")
            .arg(certs.0.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.0.join("tls.key"));
        let mut injector = Process::start("injector", command);
        injector.wait_until("its metrics endpoint", Duration::from_secs(20), || {
            http_get(injector_metrics, "/healthz").is_ok_and(|(status, _)| status == 200)
        });
        Self {
            sniffer,
            injector,
            sniffer_metrics,
            injector_metrics,
            captured,
            _collector: collector,
            _certs: certs,
        }
    }

    /// `count` connections with a little data to the captured port on `lo`.
    fn traffic(&self, count: usize) {
        let listener = TcpListener::bind(("127.0.0.1", self.captured)).unwrap();
        let server = thread::spawn(move || {
            for _ in 0..count {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = [0u8; 64];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"pong");
            }
        });
        for _ in 0..count {
            let mut stream = TcpStream::connect(("127.0.0.1", self.captured)).unwrap();
            stream.write_all(b"ping").unwrap();
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
        }
        server.join().unwrap();
    }
}

fn metrics_of(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The families of an exposition, with their types, and the label values each sample has.
struct Exposed {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>)>,
}

impl Exposed {
    fn parse(texts: &[String]) -> Self {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in texts.iter().flat_map(|t| t.lines()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, _) = line.rsplit_once(' ').unwrap();
                let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
                let labels = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .collect();
                samples.push((name.to_owned(), labels));
            }
        }
        Self { types, samples }
    }

    /// Whether `name` is an exported series name (a histogram's `_bucket`, `_sum` and `_count`
    /// included).
    fn knows(&self, name: &str) -> bool {
        self.types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| self.types.get(base).is_some_and(|k| k == "histogram"))
            })
    }

    /// Whether a sample of `name` has `label` = `value`.
    fn has(&self, name: &str, label: &str, value: &str) -> bool {
        self.samples
            .iter()
            .any(|(n, labels)| n == name && labels.get(label).is_some_and(|v| v == value))
    }
}

/// The PromQL of the rules and of every dashboard panel.
fn queries() -> Vec<String> {
    let mut queries: Vec<String> = alerts(&rule_file(&kustomize(OVERLAY)))
        .values()
        .map(|rule| rule["expr"].as_str().unwrap().to_owned())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(component().join("tcp-sniffer-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// A metric name a query reads, with the values each label matcher on it accepts.
type Selector = (String, Vec<(String, Vec<String>)>);

/// The metric names a query reads, with the `label="value"` matchers it puts on each (labels
/// a scrape adds, `job`, `namespace`, `pod`, `instance`, are left out).
fn selectors(query: &str) -> Vec<Selector> {
    const FUNCTIONS: [&str; 2] = ["label_values", "histogram_quantile"];
    let mut found = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let word = &query[start..i];
        if word.starts_with("tcp_sniffer_") || word == "process_start_time_seconds" {
            assert!(!FUNCTIONS.contains(&word));
            let mut matchers = Vec::new();
            if bytes.get(i) == Some(&b'{') {
                let end = query[i..]
                    .find('}')
                    .map(|e| i + e)
                    .expect("closed selector");
                for matcher in query[i + 1..end].split(',') {
                    let matcher = matcher.trim();
                    let (label, value) = if let Some((l, v)) = matcher.split_once("=~") {
                        (
                            l,
                            v.trim_matches('"').split('|').map(str::to_owned).collect(),
                        )
                    } else if let Some((l, v)) = matcher.split_once('=') {
                        (l, vec![v.trim_matches('"').to_owned()])
                    } else {
                        continue;
                    };
                    let label = label.trim();
                    if !["job", "namespace", "pod", "instance", "le"].contains(&label)
                        && !value.iter().any(|v| v.contains('$'))
                    {
                        matchers.push((label.to_owned(), value));
                    }
                }
                i = end;
            }
            found.push((word.to_owned(), matchers));
        }
        i += 1;
    }
    found
}

#[test]
fn live_metrics_pass_promtool_and_carry_every_series_the_rules_and_dashboard_query() {
    let test = "live_metrics_pass_promtool_and_carry_every_series_the_rules_and_dashboard_query";
    if !privileged(test) || !tool(test, "promtool") || !tool(test, "kubectl") {
        return;
    }
    let live = Live::start(200);
    // The first scrape, before any traffic: every series an alert or a panel reads exists, with
    // its label values at zero.
    let texts = [
        metrics_of(live.sniffer_metrics),
        metrics_of(live.injector_metrics),
    ];
    for (who, text) in ["sniffer", "injector"].iter().zip(&texts) {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on the {who}'s /metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exposed = Exposed::parse(&texts);
    let mut checked = BTreeSet::new();
    for query in queries() {
        for (name, matchers) in selectors(&query) {
            assert!(
                exposed.knows(&name),
                "{name} (queried by `{query}`) is not exported by either binary"
            );
            for (label, values) in matchers {
                for value in values {
                    assert!(
                        exposed.has(&name, &label, &value),
                        "{name}{{{label}=\"{value}\"}} (queried by `{query}`) is not exported from the start"
                    );
                }
            }
            checked.insert(name);
        }
    }
    assert!(checked.len() > 20, "only {} names checked", checked.len());
    drop(live);
}

#[test]
fn a_real_prometheus_fires_the_loss_alert_when_the_collector_refuses_every_batch() {
    let test = "a_real_prometheus_fires_the_loss_alert_when_the_collector_refuses_every_batch";
    if !privileged(test) || !tool(test, "prometheus") || !tool(test, "kubectl") {
        return;
    }
    let live = Live::start(400);
    let dir = TempDir::new("prometheus");
    // Stand-in for the operator: static targets with the labels the PodMonitors give (job by
    // relabeling, namespace and pod from the pod), and every `for:` shortened to 0s so the alert
    // fires within seconds; the promtool unit tests check the real durations.
    let mut rules = rule_file(&kustomize(OVERLAY));
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            if let Some(rule) = rule.as_mapping_mut() {
                rule.insert(Yaml::from("for"), Yaml::from("0s"));
            }
        }
    }
    std::fs::write(
        dir.0.join("rules.yaml"),
        serde_yaml::to_string(&rules).unwrap(),
    )
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yaml]\n\
         scrape_configs:\n\
         - job_name: tcp-sniffer-sidecar\n  static_configs:\n  - targets: ['{}']\n    labels: {{namespace: e2e, pod: web-0}}\n\
         - job_name: tcp-sniffer-injector\n  static_configs:\n  - targets: ['{}']\n    labels: {{namespace: tcp-sniffer, pod: tcp-sniffer-injector-0}}\n",
        live.sniffer_metrics, live.injector_metrics
    );
    std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new("prometheus");
    command
        .current_dir(&dir.0)
        .arg(format!(
            "--config.file={}",
            dir.0.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"));
    let mut prometheus = Process::start("prometheus", command);
    let query = |q: &str| -> Value {
        let path = format!("/api/v1/query?query={}", encode(q));
        http_get(web, &path)
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(Value::Null)
    };
    prometheus.wait_until("both targets up", Duration::from_secs(60), || {
        query("sum(up)")["data"]["result"][0]["value"][1] == "2"
    });
    // With every `for:` at 0s, an `absent(up{…})` alert fires if its rule is evaluated before
    // the target's first scrape, and stays until the next evaluation: the scenario starts once
    // nothing fires, so that what fires afterwards is its doing.
    prometheus.wait_until(
        "no alert firing before the scenario",
        Duration::from_secs(60),
        || {
            query("ALERTS{alertstate=\"firing\"}")["data"]["result"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
    );
    live.traffic(20);
    let mut alerts = Value::Null;
    prometheus.wait_until(
        "TcpSnifferRecordsRejected firing",
        Duration::from_secs(60),
        || {
            alerts = http_get(web, "/api/v1/alerts")
                .ok()
                .and_then(|(_, body)| serde_json::from_str(&body).ok())
                .unwrap_or(Value::Null);
            alerts["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|alert| {
                    alert["labels"]["alertname"] == "TcpSnifferRecordsRejected"
                        && alert["state"] == "firing"
                        && alert["labels"]["pod"] == "web-0"
                })
            })
        },
    );
    // Nothing else is wrong, so nothing else fires.
    let firing: Vec<&str> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert_eq!(firing, ["TcpSnifferRecordsRejected"], "{alerts:#}");
    let sniffer_log = live.sniffer.stderr();
    assert!(
        sniffer_log.contains("collector refused the batch with HTTP 400"),
        "{sniffer_log}"
    );
    let _ = live.injector.stderr();
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
