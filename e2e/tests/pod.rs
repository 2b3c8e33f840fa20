//! The injected example pod, run in a real container runtime (`cargo xtask pod-test` runs this
//! file alone; `cargo xtask test` builds the images first as root).
//!
//! No Kubernetes cluster runs on these machines, so `podman kube play` stands in for the
//! kubelet: it runs Pod YAML with real containers (runc, cgroups, one network namespace per pod).
//! The example pod goes through the real injector (`injector inject`) with the shipped seccomp
//! profile (`Localhost`), then each podman limitation is worked around by one small function
//! below ([`for_podman`]), so the difference from what a cluster runs stays visible. The checks
//! read the sidecar's logs, the collector's requests and `/proc` of the running sniffer.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use sidecar_contract::CAPTURE_PORT;

use e2e::podman::{Containers, SNIFFER_IMAGE, images, least_privilege};
use testbed::{
    cmd,
    containers::MUSL,
    paths::{target_dir, workspace_root},
};

/// The app container's image: Debian's static busybox serving a page on port 8080.
const APP_IMAGE: &str = "localhost/tcp-sniffer-pod-test-app:1";
/// The example pod, as a user applies it.
const EXAMPLE_POD: &str = "manifests/examples/test-pod.yaml";
/// Its namespace and name (`metadata` of [`EXAMPLE_POD`]).
const NAMESPACE: &str = "tcp-sniffer-demo";
const POD: &str = "web";
/// The app's port, which the example pod's annotation selects.
const APP_PORT: u16 = 8080;
/// A port nothing listens on: the live change switches the capture to it.
const NEW_PORT: u16 = 8081;
/// The token Secret the injector references, as in `manifests/examples/output-auth-secret.yaml`.
const SECRET: &str = "tcp-sniffer-output-auth";
/// The Localhost profile the seccomp-localhost overlay installs, relative to the seccomp root.
const PROFILE: &str = "profiles/tcp-sniffer.json";
/// The pod's own bridge network; the collector is reached at its gateway, the host's side.
const NETWORK: &str = "tcp-sniffer-pod-test";
/// Connections made to the app; each must show up as exactly one SYN record.
const CONNECTIONS: usize = 5;
/// The seccomp profile the seccomp-localhost component ships (`cargo xtask seccomp-profile`
/// writes it; `cargo xtask test` checks it is still what that derivation makes).
const SHIPPED_PROFILE: &str = "manifests/components/seccomp-localhost/tcp-sniffer.json";
/// CapEff of the sniffer: `CAP_NET_RAW` (13) and `CAP_BPF` (39), nothing else.
const NET_RAW_AND_BPF: u64 = (1 << 13) | (1 << 39);

/// The app image, built once for every check of this file that runs it.
fn app_image(containers: &Containers) -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let work = target_dir().join("pod-test-app");
            let _ = fs::remove_dir_all(&work);
            build_app_image(containers, &work).map_err(|err| format!("{err:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The example pod through the real injector under `podman kube play`, checked from its logs,
/// `/proc`, its metrics and capture endpoints and the collector's requests. The checks on the
/// running pod are independent: each failure is reported, not only the first.
#[test]
fn the_injected_example_pod_runs_end_to_end() -> Result<()> {
    let Some(containers) = images("the_injected_example_pod_runs_end_to_end") else {
        return Ok(());
    };
    let containers = &containers;
    let work = target_dir().join("pod-test");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    app_image(containers)?;

    let inbox = Inbox::start()?;
    let running = RunningPod { containers };
    let gateway = running.network()?;
    let token = random_token()?;
    create_secret(containers, &work, &token)?;
    let podinfo = work.join("podinfo");
    write_annotations(&podinfo, APP_PORT)?;
    let seccomp_root = work.join("seccomp");
    fs::create_dir_all(seccomp_root.join("profiles"))?;
    fs::copy(
        workspace_root().join(SHIPPED_PROFILE),
        seccomp_root.join(PROFILE),
    )?;

    let mut pod = inject(&work, SocketAddr::from((gateway, inbox.port)))?;
    for_podman(&mut pod, &podinfo)?;
    let yaml = work.join("pod.json");
    fs::write(&yaml, serde_json::to_vec_pretty(&pod)?)?;

    running.play(&yaml, &seccomp_root)?;
    check_pod(&running, &inbox, &token, &podinfo, &work)
}

/// Checks that do not depend on one another: each runs, and all failures are reported together.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    /// Runs `check`, which says what it saw when it passes.
    fn check(&mut self, what: &str, check: impl FnOnce() -> Result<String>) {
        match check() {
            Ok(seen) => eprintln!("pod-test: {what}: {seen}"),
            Err(err) => self.0.push(format!("{what}: {err:#}")),
        }
    }

    fn finish(self) -> Result<()> {
        ensure!(
            self.0.is_empty(),
            "{} check(s) failed:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
        Ok(())
    }
}

/// Every check on the running pod; the pod is stopped by the last one.
fn check_pod(
    running: &RunningPod,
    inbox: &Inbox,
    token: &str,
    podinfo: &Path,
    work: &Path,
) -> Result<()> {
    let sidecar = format!("{POD}-tcp-sniffer");
    // Every check below needs the sidecar attached and the pod's address.
    let logs = running.wait_for_log(&sidecar, "capture attached")?;
    let pod_ip = running.pod_ip()?;
    let mut checks = Checks::default();

    checks.check(
        "the first log line names the pod, interface and port",
        || {
            let first = logs.first().context("no log line")?;
            ensure!(
                first["msg"] == "Sniffer entrypoint starting"
                    && first["pod"] == POD
                    && first["interface"] == "eth0"
                    && first["ports"].as_str().and_then(|p| p.parse().ok()) == Some(APP_PORT),
                "unexpected first log line: {first}"
            );
            Ok(first.to_string())
        },
    );

    checks.check(
        "the running sniffer has CapEff NET_RAW+BPF, NoNewPrivs 1, Seccomp 2",
        || {
            let status = running.proc_status(&sidecar)?;
            let field = |name: &str| -> Result<&str> {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .with_context(|| format!("no {name} in /proc/<pid>/status"))
            };
            let cap_eff = u64::from_str_radix(field("CapEff")?, 16)?;
            ensure!(
                cap_eff == NET_RAW_AND_BPF,
                "the sniffer's CapEff is {cap_eff:#018x}, expected NET_RAW+BPF {NET_RAW_AND_BPF:#018x}"
            );
            ensure!(field("NoNewPrivs")? == "1", "the sniffer has NoNewPrivs 0");
            // 2 = SECCOMP_MODE_FILTER: the Localhost profile is applied.
            ensure!(
                field("Seccomp")? == "2",
                "the sniffer runs without a seccomp filter"
            );
            Ok(format!("CapEff {cap_eff:#018x}, filter {PROFILE}"))
        },
    );

    checks.check(
        "the sidecar answers /healthz and /metrics on the injected sniffer-metrics port",
        || {
            let health = metrics_get(pod_ip, "/healthz")?;
            let metrics = metrics_get(pod_ip, "/metrics")?;
            ensure!(
                health.starts_with("HTTP/1.1 200")
                    && metrics.contains("\ntcp_sniffer_packets_matched_total "),
                "{pod_ip}:{METRICS_PORT}: /healthz {health:?}, /metrics without the counters"
            );
            Ok(format!("{pod_ip}:{METRICS_PORT}"))
        },
    );

    checks.check(
        "one SYN record per connection to the app at the collector",
        || {
            let ports: Vec<u16> = (0..CONNECTIONS)
                .map(|_| http_get(pod_ip, APP_PORT))
                .collect::<Result<_>>()?;
            let syns = wait_for_syns(inbox, pod_ip, APP_PORT, &ports)?;
            Ok(format!(
                "{CONNECTIONS} requests to {pod_ip}:{APP_PORT} → {syns} SYN records"
            ))
        },
    );

    checks.check("packet captures through the pod's loopback", || {
        captures_through_the_pod_s_loopback(running, pod_ip, work)
    });

    checks.check("the captured ports follow the annotation live", || {
        // The live port change, as the kubelet rewrites a downward-API volume.
        write_annotations(podinfo, NEW_PORT)?;
        let logs = running.wait_for_log(&sidecar, "ports changed")?;
        let changed = logs
            .iter()
            .find(|l| l["msg"] == "ports changed")
            .context("no ports changed line")?
            .clone();
        let old = http_get(pod_ip, APP_PORT)?;
        let refused = syn_to_closed_port(pod_ip, NEW_PORT)?;
        wait_for_syns(inbox, pod_ip, NEW_PORT, &[refused])?;
        // Batches from several sender threads may arrive out of order: give stragglers time.
        thread::sleep(Duration::from_secs(2));
        let old_connection = |r: &Value| {
            (r["src_port"] == old && r["dst_port"] == APP_PORT)
                || (r["src_port"] == APP_PORT && r["dst_port"] == old)
        };
        ensure!(
            !inbox.records().iter().any(old_connection),
            "port {APP_PORT} was still captured after the change to {NEW_PORT}"
        );
        Ok(format!("{changed}; {APP_PORT} no longer captured"))
    });

    checks.check(
        "every batch carries the Secret's token and the pod's agent",
        || {
            let requests = inbox.requests();
            let expected = format!("Bearer {token}");
            ensure!(!requests.is_empty(), "no batch reached the collector");
            ensure!(
                requests.iter().all(|r| r.authorization == expected),
                "a request came without the Secret's bearer token"
            );
            let agent = &requests[0].body["agent"];
            ensure!(
                agent["pod"] == POD
                    && agent["namespace"] == NAMESPACE
                    && agent["interface"] == "eth0",
                "unexpected agent in the batches: {agent}"
            );
            Ok(format!("{} batches; agent {agent}", requests.len()))
        },
    );

    checks.check(
        "pod stop: stopping, stopped, exit 0, every record accounted for",
        || {
            running.stop_pod()?;
            let logs = running.logs(&sidecar)?;
            let stopped = logs
                .iter()
                .find(|l| l["msg"] == "stopped")
                .with_context(|| format!("no stopped line: {logs:?}"))?;
            ensure!(
                logs.iter().any(|l| l["msg"] == "stopping"),
                "no stopping line"
            );
            let code = running.exit_code(&sidecar)?;
            ensure!(code == 0, "the sidecar exited {code} on pod stop");
            let delivered = inbox.records().len();
            ensure!(
                stopped["delivered"] == delivered && stopped["dropped"] == 0,
                "the collector holds {delivered} records; the sidecar says {stopped}"
            );
            Ok(stopped.to_string())
        },
    );
    checks.finish()
}

/// An app image from scratch: static busybox `httpd` on [`APP_PORT`], the example pod's port.
fn build_app_image(containers: &Containers, work: &Path) -> Result<()> {
    let context = work.join("app");
    fs::create_dir_all(context.join("www"))?;
    fs::copy("/bin/busybox", context.join("busybox"))
        .context("no /bin/busybox (Debian's busybox-static)")?;
    fs::write(context.join("www/index.html"), "tcp-sniffer pod-test app\n")?;
    // httpd in the background so that the shell, as PID 1, exits on SIGTERM (PID 1 gets no
    // default signal handling): the pod stops at once rather than after podman's 10 s timeout.
    let entrypoint =
        format!("trap 'exit 0' TERM; /bin/busybox httpd -f -p {APP_PORT} -h /www & wait");
    fs::write(
        context.join("Containerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
             ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"{entrypoint}\"]\n"
        ),
    )?;
    cmd::run(
        containers
            .command("buildah")
            .args(["build", "-t", APP_IMAGE, "-f"])
            .arg(context.join("Containerfile"))
            .arg(&context),
    )
}

/// The shipped profile still filters: a user namespace, which the kernel lets any process
/// create, is refused under it and allowed without it, with the sidecar's capabilities. The
/// sniffer image has no shell, so the probe is busybox in a container with the same options.
#[test]
fn the_shipped_seccomp_profile_still_filters() -> Result<()> {
    let Some(containers) = images("the_shipped_seccomp_profile_still_filters") else {
        return Ok(());
    };
    app_image(&containers)?;
    let profile = workspace_root().join(SHIPPED_PROFILE);
    // Not cmd::output: a refusal is a failing exit, which is the point.
    let probe = |seccomp: &str| -> Result<std::process::Output> {
        containers
            .command("podman")
            .args(["run", "--rm"])
            .args(least_privilege("none", Some(seccomp)))
            .args(["--entrypoint", "/bin/busybox", APP_IMAGE])
            .args(["unshare", "--user", "/bin/busybox", "true"])
            .output()
            .context("podman run")
    };
    let unconfined = probe("unconfined")?;
    ensure!(
        unconfined.status.success(),
        "unshare --user fails even without a seccomp filter, so it proves nothing: {}",
        String::from_utf8_lossy(&unconfined.stderr)
    );
    let filtered = probe(&profile.display().to_string())?;
    let stderr = String::from_utf8_lossy(&filtered.stderr);
    ensure!(
        !filtered.status.success() && stderr.contains("Operation not permitted"),
        "the profile let unshare(CLONE_NEWUSER) through: {}, {stderr}",
        filtered.status
    );
    Ok(())
}

/// The example pod through the real injector, with the options a user of the
/// seccomp-localhost overlay and a collector with a token would set.
fn inject(work: &Path, collector: SocketAddr) -> Result<Value> {
    let options = json!({
        "image": SNIFFER_IMAGE,
        "imagePullPolicy": "Never",
        "outputUrl": format!("http://{collector}/ingest"),
        "outputUrlAuthTokenSecret": {"name": SECRET, "key": "token"},
        // Plain HTTP inside the test: the collector is on the host's bridge.
        "outputAllowPlaintextToken": true,
        "seccompProfile": {"type": "Localhost", "localhostProfile": PROFILE},
        "captureRecorderBytes": 1_048_576,
    });
    let options_file = work.join("options.json");
    fs::write(&options_file, options.to_string())?;
    let injector = target_dir().join(MUSL).join("release/injector");
    let out = cmd::stdout(
        Command::new(injector)
            .args(["inject", "-n", NAMESPACE, "-o", "json", "--config"])
            .arg(&options_file)
            .arg("-f")
            .arg(workspace_root().join(EXAMPLE_POD)),
    )?;
    serde_json::from_str(&out).context("injector inject printed no JSON pod")
}

/// Applies every adjustment the pod needs under podman 4.3; each names what it works around.
fn for_podman(pod: &mut Value, podinfo: &Path) -> Result<()> {
    app_image_from_local_storage(pod)?;
    literal_namespace_and_node(pod)?;
    seccomp_as_legacy_annotation(pod)?;
    annotations_volume_as_host_directory(pod, podinfo)
}

fn containers_mut(pod: &mut Value) -> Result<&mut Vec<Value>> {
    pod["spec"]["containers"]
        .as_array_mut()
        .context("the pod has no containers")
}

/// Not a podman limitation: nothing can be pulled here, so the example's nginx image is replaced
/// by a local busybox `httpd` on the same port.
fn app_image_from_local_storage(pod: &mut Value) -> Result<()> {
    let app = containers_mut(pod)?
        .iter_mut()
        .find(|c| c["name"] == POD)
        .context("no app container")?;
    app["image"] = json!(APP_IMAGE);
    app["imagePullPolicy"] = json!("Never");
    Ok(())
}

/// podman rejects the downward-API fields `metadata.namespace` and `spec.nodeName` ("fieldPath
/// … is either not valid or not supported"); the kubelet resolves them. They become the literal
/// values it would resolve to (`metadata.name` works in podman and stays a reference).
fn literal_namespace_and_node(pod: &mut Value) -> Result<()> {
    let node = fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned();
    for container in containers_mut(pod)? {
        for env in container["env"].as_array_mut().into_iter().flatten() {
            let value = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => NAMESPACE.to_owned(),
                Some("spec.nodeName") => node.clone(),
                _ => continue,
            };
            *env = json!({"name": env["name"], "value": value});
        }
    }
    Ok(())
}

/// podman 4.3 ignores `securityContext.seccompProfile` and applies its default profile (which
/// refuses `bpf()`); it honours the legacy per-container annotation `localhost/<file>`, resolved
/// under `--seccomp-profile-root`. It keeps only the first path element after `localhost/`
/// (`profiles/tcp-sniffer.json` fails with "read …/profiles: is a directory"), so the annotation
/// names the file alone and [`RunningPod::play`] passes the profile's directory as the root.
fn seccomp_as_legacy_annotation(pod: &mut Value) -> Result<()> {
    let mut annotations = Vec::new();
    for container in containers_mut(pod)? {
        let profile = &container["securityContext"]["seccompProfile"];
        let value = match profile["type"].as_str() {
            None => continue,
            Some("Localhost") => {
                let path = profile["localhostProfile"]
                    .as_str()
                    .context("Localhost without localhostProfile")?;
                let file = Path::new(path)
                    .file_name()
                    .context("empty localhostProfile")?;
                format!("localhost/{}", file.to_string_lossy())
            }
            Some("Unconfined") => "unconfined".to_owned(),
            Some("RuntimeDefault") => "runtime/default".to_owned(),
            Some(other) => bail!("unknown seccomp profile type {other}"),
        };
        let name = container["name"].as_str().context("unnamed container")?;
        annotations.push((
            format!("container.seccomp.security.alpha.kubernetes.io/{name}"),
            value,
        ));
    }
    let map = pod["metadata"]["annotations"]
        .as_object_mut()
        .context("the pod has no annotations")?;
    for (key, value) in annotations {
        map.insert(key, json!(value));
    }
    Ok(())
}

/// podman 4.3 has no downward-API volumes. The injector's annotations volume becomes a host
/// directory that the test lays out and rewrites the way the kubelet does ([`write_annotations`]).
fn annotations_volume_as_host_directory(pod: &mut Value, podinfo: &Path) -> Result<()> {
    let volume = pod["spec"]["volumes"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .find(|v| v.get("downwardAPI").is_some())
        .context("the injector mounted no downward-API volume")?;
    *volume = json!({
        "name": volume["name"],
        "hostPath": {"path": podinfo, "type": "Directory"},
    });
    Ok(())
}

/// Writes the pod's annotations in the kubelet's downward-API layout and format: a timestamped
/// directory, `..data` pointing at it (swapped atomically by a rename), and `annotations`
/// pointing into `..data`; one `key="value"` line per annotation, sorted by key.
fn write_annotations(dir: &Path, port: u16) -> Result<()> {
    use std::os::unix::fs::symlink;
    fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    fs::create_dir(dir.join(&stamp))?;
    fs::write(
        dir.join(&stamp).join("annotations"),
        format!("tcp-sniffer/ports=\"{port}\"\n"),
    )?;
    let old = fs::read_link(dir.join("..data")).ok();
    symlink(&stamp, dir.join("..data_tmp"))?;
    fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    if dir.join("annotations").symlink_metadata().is_err() {
        symlink("..data/annotations", dir.join("annotations"))?;
    }
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// A random 32-character token, as an operator would put in the Secret.
fn random_token() -> Result<String> {
    let mut bytes = [0_u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token Secret as a podman secret: kube play resolves `secretKeyRef` against podman
/// secrets whose data is a JSON map of base64 values (a Secret's `data`).
fn create_secret(containers: &Containers, work: &Path, token: &str) -> Result<()> {
    let encoded =
        cmd::stdout(Command::new("sh").args(["-c", &format!("printf %s '{token}' | base64 -w0")]))?;
    let file = work.join("secret.json");
    fs::write(&file, json!({"token": encoded.trim()}).to_string())?;
    let _ = containers
        .command("podman")
        .args(["secret", "rm", SECRET])
        .output();
    cmd::run(
        containers
            .command("podman")
            .args(["secret", "create", SECRET])
            .arg(&file),
    )
}

/// The pod under `podman kube play`; removed with its network and secret when dropped, however
/// the test ends.
struct RunningPod<'a> {
    containers: &'a Containers,
}

impl RunningPod<'_> {
    fn podman(&self) -> Command {
        self.containers.command("podman")
    }

    /// (Re)creates the pod's network; returns its gateway.
    fn network(&self) -> Result<Ipv4Addr> {
        self.remove();
        cmd::run(self.podman().args(["network", "create", NETWORK]))?;
        let gateway = cmd::stdout(self.podman().args([
            "network",
            "inspect",
            "--format",
            "{{range .Subnets}}{{.Gateway}}{{end}}",
            NETWORK,
        ]))?;
        gateway
            .trim()
            .parse()
            .with_context(|| format!("network {NETWORK} has no IPv4 gateway: {gateway:?}"))
    }

    fn play(&self, yaml: &Path, seccomp_root: &Path) -> Result<()> {
        // The directory of the Localhost profile (see seccomp_as_legacy_annotation).
        let profiles = seccomp_root.join(PROFILE);
        cmd::run(
            self.podman()
                .args([
                    "kube",
                    "play",
                    "--network",
                    NETWORK,
                    "--seccomp-profile-root",
                ])
                .arg(profiles.parent().context("profile without a directory")?)
                .arg(yaml),
        )
    }

    /// The container's log lines (stdout and stderr) that are JSON.
    fn logs(&self, container: &str) -> Result<Vec<Value>> {
        let out = cmd::output(self.podman().args(["logs", container]))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Waits up to 30 s for a log line with `msg`; returns the lines so far.
    fn wait_for_log(&self, container: &str, msg: &str) -> Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs(container)?;
            if logs.iter().any(|l| l["msg"] == msg) {
                return Ok(logs);
            }
            if Instant::now() > deadline {
                bail!("{container} never logged {msg:?}: {logs:?}");
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn inspect(&self, container: &str, format: &str) -> Result<String> {
        Ok(cmd::stdout(
            self.podman()
                .args(["inspect", "--format", format, container]),
        )?
        .trim()
        .to_owned())
    }

    fn proc_status(&self, container: &str) -> Result<String> {
        let pid = self.inspect(container, "{{.State.Pid}}")?;
        fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status of {container}"))
    }

    /// The pod's address on the bridge (its infra container holds the network namespace).
    fn pod_ip(&self) -> Result<Ipv4Addr> {
        let infra = cmd::stdout(self.podman().args([
            "pod",
            "inspect",
            "--format",
            "{{.InfraContainerID}}",
            POD,
        ]))?;
        let ip = self.inspect(
            infra.trim(),
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        )?;
        ip.parse()
            .with_context(|| format!("the pod has no IPv4 address: {ip:?}"))
    }

    fn exit_code(&self, container: &str) -> Result<i32> {
        Ok(self.inspect(container, "{{.State.ExitCode}}")?.parse()?)
    }

    /// `podman pod stop` sends SIGTERM to every container, then SIGKILL after its 10 s timeout
    /// (a cluster's default grace is 30 s). `kube down` would SIGKILL at once (podman#22397).
    fn stop_pod(&self) -> Result<()> {
        cmd::run(self.podman().args(["pod", "stop", POD]))
    }

    /// Removes the pod and its network, whatever state they are in.
    fn remove(&self) {
        let _ = self.podman().args(["pod", "rm", "-f", POD]).output();
        let _ = self
            .podman()
            .args(["network", "rm", "-f", NETWORK])
            .output();
    }
}

impl Drop for RunningPod<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The injected sidecar's metrics port (the injector's default `metricsPort`).
const METRICS_PORT: u16 = 9464;

/// A capture pulled from the sidecar through the pod's loopback, from the app container
/// (`kubectl port-forward` connects to the same loopback), while requests come in; then what
/// the flight recorder holds. tshark reads both; the endpoint is not on the pod's address.
fn captures_through_the_pod_s_loopback(
    running: &RunningPod,
    pod_ip: Ipv4Addr,
    work: &Path,
) -> Result<String> {
    let app = format!("{POD}-{POD}");
    let url = |target: &str| format!("http://127.0.0.1:{CAPTURE_PORT}{target}");
    let download = running
        .podman()
        .args(["exec", &app, "/bin/busybox", "wget", "-q", "-O", "-"])
        .arg(url("/capture?seconds=3"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("podman exec wget")?;
    running.wait_for_log(&format!("{POD}-tcp-sniffer"), "packet capture started")?;
    let clients: Vec<u16> = (0..CONNECTIONS)
        .map(|_| http_get(pod_ip, APP_PORT))
        .collect::<Result<_>>()?;
    let out = download.wait_with_output()?;
    ensure!(
        out.status.success(),
        "wget /capture in the app container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = work.join("capture.pcapng");
    fs::write(&live, &out.stdout)?;
    let recent = work.join("recent.pcapng");
    fs::write(
        &recent,
        cmd::output(
            running
                .podman()
                .args(["exec", &app, "/bin/busybox", "wget", "-q", "-O", "-"])
                .arg(url("/capture/recent")),
        )?
        .stdout,
    )?;
    for file in [&live, &recent] {
        let syns = cmd::stdout(
            Command::new("tshark")
                .arg("-r")
                .arg(file)
                .args([
                    "-Y",
                    &format!("tcp.flags == 0x002 && tcp.dstport == {APP_PORT}"),
                ])
                .args(["-T", "fields", "-e", "tcp.srcport"]),
        )?;
        let seen: Vec<u16> = syns.lines().filter_map(|l| l.trim().parse().ok()).collect();
        ensure!(
            clients.iter().all(|c| seen.contains(c)),
            "{}: SYNs from {seen:?}, expected {clients:?}",
            file.display()
        );
        let payload = cmd::stdout(Command::new("tshark").arg("-r").arg(file).args([
            "-Y",
            "tcp.len > 0 && tcp.payload",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ]))?;
        ensure!(
            payload.trim().is_empty(),
            "{}: payload bytes in frames {payload}",
            file.display()
        );
    }
    let info = cmd::stdout(Command::new("capinfos").arg(&live))?;
    ensure!(
        info.contains(&format!("Description = pod {POD}, namespace {NAMESPACE}")),
        "the capture's interface does not name the pod: {info}"
    );
    ensure!(
        TcpStream::connect_timeout(
            &SocketAddr::from((pod_ip, CAPTURE_PORT)),
            Duration::from_secs(2)
        )
        .is_err(),
        "the capture endpoint answers on the pod's address {pod_ip}"
    );
    Ok(format!(
        "{CONNECTIONS} connections' SYNs in /capture and /capture/recent, headers only, not on {pod_ip}:{CAPTURE_PORT}"
    ))
}

/// The answer to `GET path` on the sidecar's metrics port, on the pod's address.
fn metrics_get(ip: Ipv4Addr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((ip, METRICS_PORT)),
        Duration::from_secs(5),
    )
    .with_context(|| format!("cannot connect to the sidecar's metrics at {ip}:{METRICS_PORT}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: web\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// One HTTP request on a new connection; returns the client's port.
fn http_get(ip: Ipv4Addr, port: u16) -> Result<u16> {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(5))
            .with_context(|| format!("cannot connect to the app at {ip}:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let local = stream.local_addr()?.port();
    stream.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    ensure!(
        answer.starts_with("HTTP/1.") && answer.contains("tcp-sniffer pod-test app"),
        "unexpected answer from the app: {answer:?}"
    );
    Ok(local)
}

/// A connection attempt to a closed port (the pod answers RST); returns the client's port.
fn syn_to_closed_port(ip: Ipv4Addr, port: u16) -> Result<u16> {
    let socket = TcpListener::bind("0.0.0.0:0")?;
    let local = socket.local_addr()?.port();
    drop(socket);
    let out = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.socket()\ns.bind(('0.0.0.0',{local}))\n\
                 try:\n    s.connect(('{ip}',{port}))\nexcept ConnectionRefusedError:\n    print('refused')"
            ),
        ])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == "refused",
        "connecting to {ip}:{port} was not refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(local)
}

/// Waits until the collector holds a SYN to `ip:port` from each of `clients`, and checks there is
/// exactly one per connection; returns how many.
fn wait_for_syns(inbox: &Inbox, ip: Ipv4Addr, port: u16, clients: &[u16]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = inbox.records();
        let syns: Vec<u64> = records
            .iter()
            .filter(|r| {
                r["flags"] == json!(["SYN"])
                    && r["dst_ip"] == ip.to_string()
                    && r["dst_port"] == port
            })
            .filter_map(|r| r["src_port"].as_u64())
            .filter(|p| clients.iter().any(|c| u64::from(*c) == *p))
            .collect();
        let all = clients.iter().all(|c| syns.contains(&u64::from(*c)));
        if all {
            ensure!(
                syns.len() == clients.len(),
                "{} SYN records for {} connections to {ip}:{port}",
                syns.len(),
                clients.len()
            );
            return Ok(syns.len());
        }
        if Instant::now() > deadline {
            bail!(
                "the collector has SYNs from {syns:?}, expected {clients:?} ({} records in all)",
                records.len()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// One POST the collector received.
struct Request {
    authorization: String,
    body: Value,
}

/// A collector for the sidecar: keeps every request's `Authorization` and body, answers 200.
struct Inbox {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Inbox {
    /// Listens on every address (the bridge to the pod exists only once the pod runs).
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("0.0.0.0:0")?;
        let port = listener.local_addr()?.port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let kept = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let kept = Arc::clone(&kept);
                thread::spawn(move || receive(stream, &kept));
            }
        });
        Ok(Self { port, requests })
    }

    fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|r| Request {
                authorization: r.authorization.clone(),
                body: r.body.clone(),
            })
            .collect()
    }

    /// Every record of every batch, in arrival order.
    fn records(&self) -> Vec<Value> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|r| r.body["records"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn receive(stream: TcpStream, kept: &Mutex<Vec<Request>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let (mut length, mut authorization) = (0, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("authorization") {
                    authorization = value.trim().to_owned();
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        kept.lock().expect("lock").push(Request {
            authorization,
            body,
        });
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
