//! Decide the mutation: whether a pod gets the sniffer, on which ports, or why not.
//!
//! Pure: a parsed request and the options in, a [`Decision`] out.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use sidecar_contract::{CAPTURE_PORT, MAX_PORTS, echo::Echo, ports::parse_ports};

use crate::{
    annotations::{INJECT as INJECT_ANNOTATION, PORTS as PORTS_ANNOTATION},
    options::InjectorOptions,
    patch::{self, Add},
    sidecar::{
        CONTAINER_NAME, Endpoints, METRICS_PORT_NAME, PODINFO_VOLUME, podinfo_volume,
        sniffer_container,
    },
};

/// The parts of an admission request the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `kind.group`, `kind.version`, `kind.kind` of the object.
    pub group: &'a str,
    /// API version of the object's kind.
    pub version: &'a str,
    /// Kind of the object.
    pub kind: &'a str,
    /// Subresource, if the request is for one (`status`, `ephemeralcontainers` …).
    pub sub_resource: Option<&'a str>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'a str,
}

/// Why a request was let through unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not a Pod (or a subresource of one).
    NotAPod,
    /// Not a CREATE.
    Operation,
    /// `tcp-sniffer/inject: "false"`.
    OptedOut,
    /// `hostNetwork: true`: the sniffer would watch the node's interface.
    HostNetwork,
    /// The pod already has a `tcp-sniffer` container.
    AlreadyInjected,
    /// No annotation, no default ports, no declared TCP port.
    NoPorts,
}

impl Skip {
    /// Every reason, in the order of [`Skip::index`].
    pub const ALL: [Self; 6] = [
        Self::NotAPod,
        Self::Operation,
        Self::OptedOut,
        Self::HostNetwork,
        Self::AlreadyInjected,
        Self::NoPorts,
    ];

    /// Position in [`Skip::ALL`] (a test checks that the two agree).
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Short label for logs and metrics.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::NotAPod => "not_a_pod",
            Self::Operation => "operation",
            Self::OptedOut => "opted_out",
            Self::HostNetwork => "host_network",
            Self::AlreadyInjected => "already_injected",
            Self::NoPorts => "no_ports",
        }
    }
}

/// Where the ports came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSource {
    /// The `tcp-sniffer/ports` annotation.
    Annotation,
    /// The options' `defaultPorts`.
    Options,
    /// The pod's declared TCP `containerPort`s.
    ContainerPorts,
}

impl PortSource {
    /// Short label for logs.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Annotation => "annotation",
            Self::Options => "options",
            Self::ContainerPorts => "container_ports",
        }
    }
}

/// What to answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Allowed with this patch.
    Inject {
        /// Ports the sniffer will capture.
        ports: Vec<u16>,
        /// Where they came from.
        source: PortSource,
        /// The JSON Patch.
        patch: Vec<Add>,
        /// Shown to the user by `kubectl`: the Pod Security level the pod now needs, then
        /// anything the injection had to leave out.
        warnings: Vec<String>,
    },
    /// Allowed unchanged.
    Skip {
        /// Why.
        reason: Skip,
        /// Shown to the user by `kubectl` (admission `warnings`).
        warning: Option<String>,
    },
    /// Refused, with a message for the user.
    Deny {
        /// Why, naming the bad value.
        reason: String,
    },
}

fn skip(reason: Skip) -> Decision {
    Decision::Skip {
        reason,
        warning: None,
    }
}

/// Decides what to do with a request whose object (for Pods) is `pod`.
#[must_use]
pub fn decide(request: &Request<'_>, pod: Option<&Pod>, options: &InjectorOptions) -> Decision {
    let Request {
        group,
        version,
        kind,
        sub_resource,
        operation,
    } = *request;
    if (group, version, kind) != ("", "v1", "Pod") || sub_resource.is_some() {
        return skip(Skip::NotAPod);
    }
    if operation != "CREATE" {
        return skip(Skip::Operation);
    }
    let Some(pod) = pod else {
        return Decision::Deny {
            reason: "the AdmissionReview request has no object to inject into".to_owned(),
        };
    };
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    match annotation(INJECT_ANNOTATION) {
        None | Some("true") => {}
        Some("false") => return skip(Skip::OptedOut),
        Some(other) => {
            return Decision::Deny {
                reason: format!(
                    "annotation {INJECT_ANNOTATION} is {:?}; it must be \"true\" or \"false\"",
                    Echo(other)
                ),
            };
        }
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::Deny {
            reason: "the pod has no spec".to_owned(),
        };
    };
    if spec.host_network == Some(true) {
        return skip(Skip::HostNetwork);
    }
    let has_sniffer = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == CONTAINER_NAME);
    if has_sniffer {
        return skip(Skip::AlreadyInjected);
    }
    let (ports, source) = if let Some(value) = annotation(PORTS_ANNOTATION) {
        match parse_ports(value) {
            Ok(ports) => (ports, PortSource::Annotation),
            Err(err) => {
                return Decision::Deny {
                    reason: format!(
                        "annotation {PORTS_ANNOTATION} {:?} is invalid: {err}",
                        Echo(value)
                    ),
                };
            }
        }
    } else if !options.default_ports.is_empty() {
        (options.default_ports.clone(), PortSource::Options)
    } else {
        let declared: BTreeSet<u16> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
            .filter_map(|p| u16::try_from(p.container_port).ok().filter(|&p| p != 0))
            .collect();
        if declared.is_empty() {
            return Decision::Skip {
                reason: Skip::NoPorts,
                warning: Some(format!(
                    "tcp-sniffer was not injected: the pod declares no TCP containerPort; \
                     set the {PORTS_ANNOTATION} annotation to choose ports"
                )),
            };
        }
        if declared.len() > MAX_PORTS as usize {
            return Decision::Deny {
                reason: format!(
                    "the pod declares {} TCP ports; the sniffer captures at most {MAX_PORTS}: \
                     set the {PORTS_ANNOTATION} annotation",
                    declared.len()
                ),
            };
        }
        (declared.into_iter().collect(), PortSource::ContainerPorts)
    };
    let volume = options.live_ports.then(podinfo_volume);
    if volume.is_some()
        && spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == PODINFO_VOLUME)
    {
        return Decision::Deny {
            reason: format!(
                "the pod already has a volume named {PODINFO_VOLUME}, which the tcp-sniffer \
                 container needs: rename it, or opt out with {INJECT_ANNOTATION}: \"false\""
            ),
        };
    }
    let mut warnings = vec![pod_security_warning(options)];
    let clash = metrics_port_clash(spec, options.metrics_port);
    if let Some(clash) = &clash {
        warnings.push(format!(
            "tcp-sniffer serves no metrics and has no probe in this pod: {clash}; set the \
             injector's metricsPort to a free port"
        ));
    }
    let capture_clash = options
        .capture
        .then(|| port_clash(spec, CAPTURE_PORT, None))
        .flatten();
    if let Some(clash) = &capture_clash {
        warnings.push(format!(
            "tcp-sniffer serves no packet captures in this pod: {clash}, the capture endpoint's \
             loopback port"
        ));
    }
    let endpoints = Endpoints {
        metrics: clash.is_none(),
        capture: capture_clash.is_none(),
    };
    let container = sniffer_container(options, &ports, endpoints);
    Decision::Inject {
        patch: patch::injection(pod, &container, options.native_sidecar, volume.as_ref()),
        ports,
        source,
        warnings,
    }
}

/// What in the pod already uses the sniffer's metrics port (its number, or its name), if
/// anything: the sidecar shares the pod's network, so it could not listen there, and the
/// container port's name must be unique in the pod.
fn metrics_port_clash(spec: &PodSpec, metrics_port: u16) -> Option<String> {
    if metrics_port == 0 {
        return None;
    }
    port_clash(spec, metrics_port, Some(METRICS_PORT_NAME))
}

/// What in the pod declares TCP port `number`, or a port named `name`, if anything.
fn port_clash(spec: &PodSpec, number: u16, name: Option<&str>) -> Option<String> {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    containers
        .flat_map(|c| c.ports.iter().flatten().map(move |p| (c, p)))
        .find_map(|(container, port)| {
            if port.container_port == i32::from(number)
                && port.protocol.as_deref().is_none_or(|p| p == "TCP")
            {
                Some(format!(
                    "container {:?} declares port {number}",
                    Echo(&container.name)
                ))
            } else if let Some(name) = name
                && port.name.as_deref() == Some(name)
            {
                Some(format!(
                    "container {:?} declares a port named {name}",
                    Echo(&container.name)
                ))
            } else {
                None
            }
        })
}

/// Capabilities the Pod Security Standards' `baseline` level lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// What an injected pod asks of Pod Security admission, said on every injection: the sidecar's
/// capabilities (and an `Unconfined` seccomp profile) are beyond `baseline`, so a namespace
/// enforcing `baseline` or `restricted` refuses the pod after this webhook allowed it.
fn pod_security_warning(options: &InjectorOptions) -> String {
    let beyond_baseline: Vec<&str> = options
        .capabilities
        .iter()
        .map(String::as_str)
        .filter(|c| !BASELINE_CAPABILITIES.contains(c))
        .collect();
    let seccomp = options
        .seccomp_profile
        .as_ref()
        .map_or("the pod's", |p| p.type_.as_str());
    let mut reasons = Vec::new();
    if !beyond_baseline.is_empty() {
        reasons.push(format!("capabilities {}", beyond_baseline.join(", ")));
    }
    if seccomp == "Unconfined" {
        reasons.push("seccomp profile Unconfined".to_owned());
    }
    if reasons.is_empty() {
        // Running as UID 0 is still beyond `restricted`.
        return format!(
            "tcp-sniffer added a sidecar that runs as root with seccomp {seccomp}: the namespace's \
             Pod Security level must be baseline or privileged"
        );
    }
    format!(
        "tcp-sniffer added a sidecar with {}: the namespace's Pod Security level must be \
         privileged (pod-security.kubernetes.io/enforce), or the pod is refused",
        reasons.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CREATE: Request<'static> = Request {
        group: "",
        version: "v1",
        kind: "Pod",
        sub_resource: None,
        operation: "CREATE",
    };

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn app(ports: serde_json::Value) -> Pod {
        pod(json!({"metadata":{"name":"web"},"spec":{"containers":[{"name":"app","ports":ports}]}}))
    }

    fn annotated(annotations: serde_json::Value) -> Pod {
        pod(json!({"metadata":{"annotations":annotations},"spec":{"containers":[{"name":"app"}]}}))
    }

    fn injected_ports(decision: Decision) -> (Vec<u16>, PortSource) {
        match decision {
            Decision::Inject { ports, source, .. } => (ports, source),
            other => panic!("not injected: {other:?}"),
        }
    }

    #[test]
    fn ports_come_from_annotation_then_options_then_container_ports() {
        let options = InjectorOptions::default();
        let p = app(
            json!([{"containerPort":8080},{"containerPort":9090,"protocol":"TCP"},
                           {"containerPort":53,"protocol":"UDP"},{"name":"metrics","containerPort":9100}]),
        );
        assert_eq!(
            injected_ports(decide(&CREATE, Some(&p), &options)),
            (vec![8080, 9090, 9100], PortSource::ContainerPorts)
        );
        let with_defaults = InjectorOptions {
            default_ports: vec![443],
            ..InjectorOptions::default()
        };
        assert_eq!(
            injected_ports(decide(&CREATE, Some(&p), &with_defaults)),
            (vec![443], PortSource::Options)
        );
        let mut annotated = p;
        annotated.metadata.annotations =
            Some([(PORTS_ANNOTATION.to_owned(), "8443, 8080".to_owned())].into());
        assert_eq!(
            injected_ports(decide(&CREATE, Some(&annotated), &with_defaults)),
            (vec![8080, 8443], PortSource::Annotation)
        );
    }

    fn warning_of(decision: Decision) -> String {
        warnings_of(decision).remove(0)
    }

    fn warnings_of(decision: Decision) -> Vec<String> {
        match decision {
            Decision::Inject { warnings, .. } => warnings,
            other => panic!("not injected: {other:?}"),
        }
    }

    fn container_of(decision: Decision) -> serde_json::Value {
        match decision {
            Decision::Inject { patch, .. } => {
                let add = patch
                    .iter()
                    .find(|op| op.path.starts_with("/spec/containers"))
                    .expect("the container is added");
                serde_json::from_str(add.value.get()).unwrap()
            }
            other => panic!("not injected: {other:?}"),
        }
    }

    #[test]
    fn the_sidecar_serves_metrics_on_a_named_port_with_a_liveness_probe() {
        let p = app(json!([{"containerPort":8080}]));
        let container = container_of(decide(&CREATE, Some(&p), &InjectorOptions::default()));
        assert_eq!(
            container["ports"],
            json!([{"name":"sniffer-metrics","containerPort":9464,"protocol":"TCP"}])
        );
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name":"METRICS_ADDR","value":"[::]:9464"}))
        );
        assert_eq!(
            container["livenessProbe"],
            json!({"httpGet":{"path":"/healthz","port":"sniffer-metrics"},
                   "periodSeconds":10,"timeoutSeconds":2,"failureThreshold":3})
        );
        assert!(container.get("readinessProbe").is_none());
        let ready = InjectorOptions {
            readiness_probe: true,
            liveness_probe: false,
            ..InjectorOptions::default()
        };
        let container = container_of(decide(&CREATE, Some(&p), &ready));
        assert!(container.get("livenessProbe").is_none());
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        let off = InjectorOptions {
            metrics_port: 0,
            liveness_probe: false,
            ..InjectorOptions::default()
        };
        let container = container_of(decide(&CREATE, Some(&p), &off));
        assert!(container.get("ports").is_none() && container.get("livenessProbe").is_none());
        assert!(
            !container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "METRICS_ADDR")
        );
    }

    #[test]
    fn a_pod_using_the_metrics_port_gets_the_sniffer_without_metrics_and_a_warning() {
        for (ports, named) in [
            (json!([{"containerPort":9464}]), "declares port 9464"),
            (
                json!([{"containerPort":9000,"name":"sniffer-metrics"}]),
                "declares a port named sniffer-metrics",
            ),
        ] {
            let p = app(ports);
            let decision = decide(&CREATE, Some(&p), &InjectorOptions::default());
            let warnings = warnings_of(decision.clone());
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(
                warnings[1].starts_with(&format!(
                    "tcp-sniffer serves no metrics and has no probe in this pod: container \"app\" {named}"
                )),
                "{warnings:?}"
            );
            let container = container_of(decision);
            assert!(container.get("ports").is_none() && container.get("livenessProbe").is_none());
        }
        // The same number over UDP is no clash.
        let udp = app(json!([{"containerPort":9464,"protocol":"UDP"},{"containerPort":8080}]));
        assert_eq!(
            warnings_of(decide(&CREATE, Some(&udp), &InjectorOptions::default())).len(),
            1
        );
    }

    fn env_of(container: &serde_json::Value) -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
            .collect()
    }

    #[test]
    fn captures_are_served_on_loopback_unless_turned_off_or_the_port_is_the_app_s() {
        let capture_env = |options: &InjectorOptions, ports| {
            let decision = decide(&CREATE, Some(&app(ports)), options);
            let env = env_of(&container_of(decision.clone()));
            let find = |name: &str| {
                env.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, value)| value.clone())
            };
            (
                find("CAPTURE_LISTEN"),
                find("CAPTURE_RECORDER_BYTES"),
                warnings_of(decision),
            )
        };
        let http = json!([{"containerPort":8080}]);
        let (listen, recorder, warnings) = capture_env(&InjectorOptions::default(), http.clone());
        assert_eq!(
            (listen.as_deref(), recorder, warnings.len()),
            (Some("127.0.0.1:9465"), None, 1)
        );
        let recording = InjectorOptions {
            capture_recorder_bytes: 4 << 20,
            ..InjectorOptions::default()
        };
        let (_, recorder, _) = capture_env(&recording, http.clone());
        assert_eq!(recorder.as_deref(), Some("4194304"));
        let off = InjectorOptions {
            capture: false,
            ..InjectorOptions::default()
        };
        assert_eq!(capture_env(&off, http).0.as_deref(), Some("off"));
        // The app's own port 9465: no capture endpoint to take it from the app.
        let (listen, recorder, warnings) = capture_env(
            &recording,
            json!([{"containerPort":8080},{"containerPort":9465}]),
        );
        assert_eq!((listen.as_deref(), recorder), (Some("off"), None));
        assert_eq!(
            warnings[1],
            "tcp-sniffer serves no packet captures in this pod: container \"app\" declares \
             port 9465, the capture endpoint's loopback port"
        );
    }

    #[test]
    fn every_injection_says_which_pod_security_level_the_pod_needs() {
        let p = app(json!([{"containerPort":8080}]));
        assert_eq!(
            warning_of(decide(&CREATE, Some(&p), &InjectorOptions::default())),
            "tcp-sniffer added a sidecar with capabilities NET_RAW, BPF and seccomp profile \
             Unconfined: the namespace's Pod Security level must be privileged \
             (pod-security.kubernetes.io/enforce), or the pod is refused"
        );
        let localhost = InjectorOptions {
            seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("profiles/tcp-sniffer.json".into()),
            }),
            ..InjectorOptions::default()
        };
        assert_eq!(
            warning_of(decide(&CREATE, Some(&p), &localhost)),
            "tcp-sniffer added a sidecar with capabilities NET_RAW, BPF: the namespace's Pod \
             Security level must be privileged (pod-security.kubernetes.io/enforce), or the pod \
             is refused"
        );
        let baseline_only = InjectorOptions {
            capabilities: vec!["NET_BIND_SERVICE".into()],
            ..localhost
        };
        assert_eq!(
            warning_of(decide(&CREATE, Some(&p), &baseline_only)),
            "tcp-sniffer added a sidecar that runs as root with seccomp Localhost: the \
             namespace's Pod Security level must be baseline or privileged"
        );
    }

    #[test]
    fn live_ports_mount_the_annotations_unless_the_volume_name_is_taken() {
        let p = app(json!([{"containerPort":8080}]));
        let Decision::Inject { patch, .. } = decide(&CREATE, Some(&p), &InjectorOptions::default())
        else {
            panic!("not injected")
        };
        let ops = serde_json::to_value(&patch).unwrap();
        let volume = &ops.as_array().unwrap().last().unwrap();
        assert_eq!(volume["path"], "/spec/volumes");
        assert_eq!(
            volume["value"],
            json!([{"name":"tcp-sniffer-podinfo","downwardAPI":{"items":[
                {"path":"annotations","fieldRef":{"apiVersion":"v1","fieldPath":"metadata.annotations"}}]}}])
        );
        let container = &ops[ops.as_array().unwrap().len() - 2]["value"];
        assert_eq!(
            container["volumeMounts"],
            json!([{"name":"tcp-sniffer-podinfo","mountPath":"/etc/tcp-sniffer/podinfo","readOnly":true}])
        );
        assert!(container["env"].as_array().unwrap().contains(
            &json!({"name":"PORTS_FILE","value":"/etc/tcp-sniffer/podinfo/annotations"})
        ));

        let fixed = InjectorOptions {
            live_ports: false,
            ..InjectorOptions::default()
        };
        let Decision::Inject { patch, .. } = decide(&CREATE, Some(&p), &fixed) else {
            panic!("not injected")
        };
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            !text.contains("PORTS_FILE") && !text.contains("podinfo"),
            "{text}"
        );

        let taken = pod(
            json!({"spec":{"containers":[{"name":"app","ports":[{"containerPort":80}]}],
                                       "volumes":[{"name":"tcp-sniffer-podinfo","emptyDir":{}}]}}),
        );
        let Decision::Deny { reason } = decide(&CREATE, Some(&taken), &InjectorOptions::default())
        else {
            panic!("not denied")
        };
        assert!(
            reason.contains("volume named tcp-sniffer-podinfo"),
            "{reason}"
        );
    }

    #[test]
    fn invalid_ports_annotation_is_denied_naming_the_value() {
        let p = annotated(json!({"tcp-sniffer/ports":"8080,http"}));
        match decide(&CREATE, Some(&p), &InjectorOptions::default()) {
            Decision::Deny { reason } => {
                assert_eq!(
                    reason,
                    r#"annotation tcp-sniffer/ports "8080,http" is invalid: entry "http" is not a port number"#
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skips() {
        let options = InjectorOptions::default();
        let cases = [
            (
                annotated(json!({"tcp-sniffer/inject":"false","tcp-sniffer/ports":"80"})),
                Skip::OptedOut,
            ),
            (
                pod(
                    json!({"spec":{"hostNetwork":true,"containers":[{"name":"app","ports":[{"containerPort":80}]}]}}),
                ),
                Skip::HostNetwork,
            ),
            (
                pod(json!({"spec":{"containers":[{"name":"app"},{"name":"tcp-sniffer"}]}})),
                Skip::AlreadyInjected,
            ),
            (
                pod(
                    json!({"spec":{"containers":[{"name":"app"}],"initContainers":[{"name":"tcp-sniffer"}]}}),
                ),
                Skip::AlreadyInjected,
            ),
        ];
        for (p, expected) in cases {
            assert_eq!(decide(&CREATE, Some(&p), &options), skip(expected));
        }
        match decide(
            &CREATE,
            Some(&app(json!([{"containerPort":53,"protocol":"UDP"}]))),
            &options,
        ) {
            Decision::Skip {
                reason: Skip::NoPorts,
                warning: Some(w),
            } => assert!(w.contains(PORTS_ANNOTATION)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_skip_is_listed_once_at_its_index() {
        for (i, skip) in Skip::ALL.iter().enumerate() {
            assert_eq!(skip.index(), i, "{skip:?}");
        }
        // Exhaustive: a new variant fails to compile here until it is listed.
        let listed = |skip: Skip| match skip {
            Skip::NotAPod
            | Skip::Operation
            | Skip::OptedOut
            | Skip::HostNetwork
            | Skip::AlreadyInjected
            | Skip::NoPorts => Skip::ALL.contains(&skip),
        };
        assert!(Skip::ALL.into_iter().all(listed));
    }

    #[test]
    fn other_kinds_operations_and_subresources_pass_unchanged() {
        let options = InjectorOptions::default();
        let p = app(json!([{"containerPort":80}]));
        for operation in ["UPDATE", "DELETE", "CONNECT"] {
            let request = Request {
                operation,
                ..CREATE
            };
            assert_eq!(decide(&request, Some(&p), &options), skip(Skip::Operation));
        }
        let deployment = Request {
            group: "apps",
            kind: "Deployment",
            ..CREATE
        };
        assert_eq!(decide(&deployment, None, &options), skip(Skip::NotAPod));
        let ephemeral = Request {
            sub_resource: Some("ephemeralcontainers"),
            ..CREATE
        };
        assert_eq!(decide(&ephemeral, Some(&p), &options), skip(Skip::NotAPod));
    }

    #[test]
    fn bad_inject_annotation_and_missing_object_are_denied() {
        let options = InjectorOptions::default();
        let p = annotated(json!({"tcp-sniffer/inject":"flase"}));
        assert!(
            matches!(decide(&CREATE, Some(&p), &options), Decision::Deny { reason } if reason.contains("\"flase\""))
        );
        assert!(matches!(
            decide(&CREATE, None, &options),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn too_many_declared_ports_are_denied() {
        let ports: Vec<serde_json::Value> = (1..=65).map(|p| json!({"containerPort": p})).collect();
        let p = app(serde_json::Value::Array(ports));
        assert!(matches!(
            decide(&CREATE, Some(&p), &InjectorOptions::default()),
            Decision::Deny { reason } if reason.contains("65 TCP ports")
        ));
    }
}
