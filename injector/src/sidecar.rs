//! The `tcp-sniffer` container the injector adds, built from the options and the chosen ports.

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
        EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe, SecretKeySelector,
        SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use sidecar_contract::{CAPTURE_PORT, env, ports::format_ports};

use crate::options::{InjectorOptions, SecretKeyRef};

/// Name of the injected container; its presence makes injection a no-op.
pub const CONTAINER_NAME: &str = "tcp-sniffer";
/// Name of the volume holding the pod's annotations (with `livePorts`).
pub const PODINFO_VOLUME: &str = "tcp-sniffer-podinfo";
/// Where the sniffer sees that volume.
pub const PODINFO_DIR: &str = "/etc/tcp-sniffer/podinfo";
/// The annotations file in it, which `PORTS_FILE` names.
pub const PORTS_FILE: &str = "/etc/tcp-sniffer/podinfo/annotations";
/// The name of the container port of the sniffer's `/metrics` and `/healthz`: what the
/// monitoring component's `PodMonitor` selects (a port name has at most 15 characters).
pub const METRICS_PORT_NAME: &str = "sniffer-metrics";

/// The downward-API volume of the pod's annotations, which the kubelet keeps up to date when
/// they change.
#[must_use]
pub fn podinfo_volume() -> Volume {
    Volume {
        name: PODINFO_VOLUME.to_owned(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: "annotations".to_owned(),
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: "metadata.annotations".to_owned(),
                }),
                ..DownwardAPIVolumeFile::default()
            }]),
            ..DownwardAPIVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// A variable from a Secret key: only a reference, the injector never reads the Secret.
fn secret_env(name: &str, SecretKeyRef { name: secret, key }: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// `GET /healthz` on the metrics port, as the kubelet asks it.
fn health_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".to_owned()),
            port: IntOrString::String(METRICS_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Which of the sniffer's endpoints this pod leaves room for: each is off when the pod already
/// uses its port (the sidecar shares the pod's network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// `/metrics` and `/healthz` on the options' `metricsPort`, if it is not 0.
    pub metrics: bool,
    /// Packet captures on the loopback's [`CAPTURE_PORT`], if the options' `capture` is on.
    pub capture: bool,
}

/// The sniffer container for `ports`, serving the `endpoints` the pod leaves room for.
///
/// # Examples
///
/// ```
/// use injector::{options::InjectorOptions, sidecar::{Endpoints, sniffer_container}};
///
/// let endpoints = Endpoints { metrics: true, capture: true };
/// let container = sniffer_container(&InjectorOptions::default(), &[8080, 8443], endpoints);
/// let env = container.env.unwrap();
/// assert_eq!(env[0].name, "PORTS");
/// assert_eq!(env[0].value.as_deref(), Some("8080,8443"));
/// assert_eq!(container.ports.unwrap()[0].container_port, 9464);
/// ```
#[must_use]
pub fn sniffer_container(
    options: &InjectorOptions,
    ports: &[u16],
    endpoints: Endpoints,
) -> Container {
    let InjectorOptions {
        image,
        image_pull_policy,
        interface,
        default_ports: _,
        output_url,
        output_url_auth_token_secret,
        output_allow_plaintext_token,
        output_format,
        otlp_encoding,
        records,
        output_auth_header,
        output_auth_scheme,
        output_headers: _,
        output_headers_secret,
        capabilities,
        seccomp_profile,
        resources,
        native_sidecar,
        live_ports,
        metrics_port,
        liveness_probe,
        readiness_probe,
        capture,
        capture_recorder_bytes,
    } = options;
    let metrics = endpoints.metrics && *metrics_port != 0;
    let mut vars = vec![
        value(env::PORTS, format_ports(ports)),
        value(env::INTERFACE, interface),
    ];
    if let Some(url) = output_url {
        vars.push(value(env::OUTPUT_URL, url));
    }
    if let Some(secret) = output_url_auth_token_secret {
        vars.push(secret_env(env::OUTPUT_URL_AUTH_TOKEN, secret));
    }
    if *output_allow_plaintext_token {
        vars.push(value(env::OUTPUT_ALLOW_PLAINTEXT_TOKEN, "true"));
    }
    // Only what differs from the sniffer's defaults, so a default pod stays short.
    let defaults = InjectorOptions::default();
    for (name, option, default) in [
        (env::OUTPUT_FORMAT, output_format, &defaults.output_format),
        (env::OTLP_ENCODING, otlp_encoding, &defaults.otlp_encoding),
        (env::RECORDS, records, &defaults.records),
        (
            env::OUTPUT_AUTH_HEADER,
            output_auth_header,
            &defaults.output_auth_header,
        ),
        (
            env::OUTPUT_AUTH_SCHEME,
            output_auth_scheme,
            &defaults.output_auth_scheme,
        ),
    ] {
        if option != default {
            vars.push(value(name, option));
        }
    }
    if let Some(headers) = options.rendered_headers() {
        vars.push(value(env::OUTPUT_HEADERS, headers));
    }
    if let Some(secret) = output_headers_secret {
        vars.push(secret_env(env::OUTPUT_HEADERS, secret));
    }
    if *live_ports {
        vars.push(value(env::PORTS_FILE, PORTS_FILE));
    }
    if metrics {
        // Every address of the pod, IPv4 and IPv6 (the sniffer falls back to IPv4 alone where
        // the pod has no IPv6): the kubelet probes the pod's IP, Prometheus scrapes it.
        vars.push(value(env::METRICS_ADDR, format!("[::]:{metrics_port}")));
    }
    // Always said, on or off: the sniffer's own default is on, and a pod whose app uses the
    // port must not get a sidecar that takes it first.
    vars.push(value(
        env::CAPTURE_LISTEN,
        if endpoints.capture && *capture {
            format!("127.0.0.1:{CAPTURE_PORT}")
        } else {
            "off".to_owned()
        },
    ));
    if endpoints.capture && *capture && *capture_recorder_bytes > 0 {
        vars.push(value(
            env::CAPTURE_RECORDER_BYTES,
            capture_recorder_bytes.to_string(),
        ));
    }
    vars.push(field(env::POD_NAME, "metadata.name"));
    vars.push(field(env::POD_NAMESPACE, "metadata.namespace"));
    vars.push(field(env::NODE_NAME, "spec.nodeName"));
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(image.clone()),
        image_pull_policy: Some(image_pull_policy.clone()),
        env: Some(vars),
        volume_mounts: live_ports.then(|| {
            vec![VolumeMount {
                name: PODINFO_VOLUME.to_owned(),
                mount_path: PODINFO_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        ports: metrics.then(|| {
            vec![ContainerPort {
                name: Some(METRICS_PORT_NAME.to_owned()),
                container_port: i32::from(*metrics_port),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]
        }),
        liveness_probe: (metrics && *liveness_probe).then(health_probe),
        readiness_probe: (metrics && *readiness_probe).then(health_probe),
        resources: Some(resources.clone()),
        // A native sidecar is an init container that keeps running beside the app.
        restart_policy: native_sidecar.then(|| "Always".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            // Kubernetes grants added capabilities to root only (it sets no ambient
            // capabilities, and no_new_privs voids file capabilities), so the sniffer runs as
            // UID 0 even in a pod whose securityContext says runAsNonRoot: it is confined by
            // dropping everything but the two capabilities.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(capabilities.clone()),
            }),
            seccomp_profile: seccomp_profile.clone(),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every option that adds a variable turned on, the container names no variable the
    /// sniffer does not read (the sniffer's own tests check it reads exactly `env::ALL`).
    #[test]
    fn every_variable_written_is_one_the_sniffer_reads() {
        let secret = SecretKeyRef {
            name: "collector".to_owned(),
            key: "token".to_owned(),
        };
        let options = InjectorOptions {
            output_url: Some("https://collector:4318/v1/logs".to_owned()),
            output_url_auth_token_secret: Some(secret.clone()),
            output_allow_plaintext_token: true,
            output_format: "otlp".to_owned(),
            otlp_encoding: "json".to_owned(),
            records: "both".to_owned(),
            output_auth_header: "X-Api-Key".to_owned(),
            output_auth_scheme: String::new(),
            output_headers_secret: Some(secret),
            live_ports: true,
            capture_recorder_bytes: 1 << 20,
            ..InjectorOptions::default()
        };
        let endpoints = Endpoints {
            metrics: true,
            capture: true,
        };
        let container = sniffer_container(&options, &[8080], endpoints);
        let names: Vec<String> = container.env.unwrap().into_iter().map(|v| v.name).collect();
        for name in &names {
            assert!(
                env::ALL.contains(&name.as_str()),
                "{name} is not in the contract"
            );
        }
        for expected in [
            env::OUTPUT_URL_AUTH_TOKEN,
            env::OTLP_ENCODING,
            env::OUTPUT_AUTH_SCHEME,
            env::PORTS_FILE,
            env::METRICS_ADDR,
            env::CAPTURE_RECORDER_BYTES,
            env::NODE_NAME,
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing: {names:?}"
            );
        }
    }
}
