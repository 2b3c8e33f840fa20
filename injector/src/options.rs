//! `InjectorOptions`: what the injected container looks like. Read from a JSON file
//! (`--config` / `INJECTOR_CONFIG`, camelCase keys), then overridden by flags/variables, then
//! validated; every error names the field.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use cli_support::small_file::{SmallFileError, read_small_file};
use k8s_openapi::{
    api::core::v1::{ResourceRequirements, SeccompProfile},
    apimachinery::pkg::api::resource::Quantity,
};
use serde::{Deserialize, Serialize};
use sidecar_contract::{
    MAX_RECORDER_BYTES, OTLP_ENCODINGS, OUTPUT_FORMATS, RECORDS,
    echo::Echo,
    headers,
    headers::Credential,
    ports::{PortsError, parse_ports},
    url::parse_http_url,
};
use thiserror::Error;

/// The largest options file read: the options of a real deployment take about 1 KiB.
pub const MAX_OPTIONS_BYTES: u64 = 1 << 20;

/// Where the sniffer reads the token from: a key of a Secret in the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// The injector's options (`InjectorOptions`), camelCase in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InjectorOptions {
    /// Sniffer image reference.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// Interface the sniffer captures on (`INTERFACE`).
    pub interface: String,
    /// Ports used when a pod has no `tcp-sniffer/ports` annotation; empty: the pod's declared
    /// TCP `containerPort`s.
    pub default_ports: Vec<u16>,
    /// Collector URL (`OUTPUT_URL`); unset: the sniffer prints NDJSON to its log.
    pub output_url: Option<String>,
    /// Secret key holding the collector token (`OUTPUT_URL_AUTH_TOKEN` via `secretKeyRef`).
    pub output_url_auth_token_secret: Option<SecretKeyRef>,
    /// Allow the token over an `http://` `outputUrl` (`OUTPUT_ALLOW_PLAINTEXT_TOKEN`), e.g. when
    /// a service mesh encrypts pod traffic; without it that combination is refused, as the
    /// sniffer would refuse it.
    pub output_allow_plaintext_token: bool,
    /// The body format (`OUTPUT_FORMAT`): `batch`, `ndjson`, `otlp` or `loki`.
    pub output_format: String,
    /// With `outputFormat: otlp`, `protobuf` or `json` (`OTLP_ENCODING`).
    pub otlp_encoding: String,
    /// What the sniffer sends (`RECORDS`): `packets`, `connections` or `both`.
    pub records: String,
    /// The header carrying the token (`OUTPUT_AUTH_HEADER`).
    pub output_auth_header: String,
    /// The word before the token (`OUTPUT_AUTH_SCHEME`); empty: the token alone.
    pub output_auth_scheme: String,
    /// More headers, not secret (`OUTPUT_HEADERS`), e.g. `{"X-Scope-OrgID": "tenant-1"}`.
    pub output_headers: BTreeMap<String, String>,
    /// A Secret key whose value is the whole `OUTPUT_HEADERS` (`Name=value,…`), for headers
    /// whose values are secret; instead of `outputHeaders`.
    pub output_headers_secret: Option<SecretKeyRef>,
    /// Capabilities added after dropping `ALL`.
    pub capabilities: Vec<String>,
    /// The container's seccomp profile; `None` leaves the pod's.
    pub seccomp_profile: Option<SeccompProfile>,
    /// Requests and limits.
    pub resources: ResourceRequirements,
    /// Inject as an init container with `restartPolicy: Always` (Kubernetes ≥ 1.29), so the
    /// sniffer starts before and stops after the app containers.
    pub native_sidecar: bool,
    /// Mount the pod's annotations (a downward-API volume) into the sniffer and point
    /// `PORTS_FILE` at them, so that editing `tcp-sniffer/ports` on a running pod changes the
    /// captured ports without a restart.
    pub live_ports: bool,
    /// The port of the sniffer's `/metrics` and `/healthz` (`METRICS_ADDR`), declared as the
    /// container port named [`METRICS_PORT_NAME`](crate::sidecar::METRICS_PORT_NAME) for a
    /// `PodMonitor`; `0` turns metrics and probes off.
    pub metrics_port: u16,
    /// A liveness probe on `/healthz`: the kubelet restarts a sniffer that stopped answering
    /// (only the sidecar, never the app).
    pub liveness_probe: bool,
    /// A readiness probe on `/healthz`. Off by default: a sidecar that is not ready makes its
    /// whole pod not ready (out of its Services' endpoints), which the sniffer must not do for
    /// its own sake unless the operator asks.
    pub readiness_probe: bool,
    /// Serve packet captures (pcapng for Wireshark) on the pod's loopback
    /// (`CAPTURE_LISTEN=127.0.0.1:9465`), which `kubectl port-forward` reaches and nothing
    /// outside the pod does; `false` turns the endpoint off (`CAPTURE_LISTEN=off`).
    pub capture: bool,
    /// Bytes of the most recent packets' headers the sniffer keeps for `GET /capture/recent`
    /// (`CAPTURE_RECORDER_BYTES`, counted in the container's memory); 0: no flight recorder.
    pub capture_recorder_bytes: u64,
}

impl Default for InjectorOptions {
    fn default() -> Self {
        let quantities = |cpu: &str, memory: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
            ])
        };
        Self {
            image: concat!("tcp-sniffer:", env!("CARGO_PKG_VERSION")).to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            interface: "eth0".to_owned(),
            default_ports: Vec::new(),
            output_url: None,
            output_url_auth_token_secret: None,
            output_allow_plaintext_token: false,
            output_format: "batch".to_owned(),
            otlp_encoding: "protobuf".to_owned(),
            records: "packets".to_owned(),
            output_auth_header: "Authorization".to_owned(),
            output_auth_scheme: "Bearer".to_owned(),
            output_headers: BTreeMap::new(),
            output_headers_secret: None,
            capabilities: vec!["NET_RAW".to_owned(), "BPF".to_owned()],
            // The runtimes' default profiles refuse bpf() without CAP_SYS_ADMIN.
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".to_owned(),
                localhost_profile: None,
            }),
            resources: ResourceRequirements {
                requests: Some(quantities("20m", "32Mi")),
                limits: Some(quantities("500m", "96Mi")),
                ..ResourceRequirements::default()
            },
            native_sidecar: false,
            live_ports: true,
            metrics_port: DEFAULT_METRICS_PORT,
            liveness_probe: true,
            readiness_probe: false,
            capture: true,
            capture_recorder_bytes: 0,
        }
    }
}

/// The sniffer's default metrics port: registered for no well-known service, and next to the
/// capture endpoint's 9465.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// Options that cannot be used (exit code 1 at start).
#[derive(Debug, Error)]
pub enum OptionsError {
    /// The config file could not be read, is not a regular file, or is too large.
    #[error("cannot read the options file {path}: {problem}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        problem: SmallFileError,
    },
    /// The config file is not valid `InjectorOptions` JSON.
    #[error("the options file {path} is not valid InjectorOptions JSON: {problem}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        problem: serde_json::Error,
    },
    /// A field has a value that cannot work.
    #[error("option {field}: {problem}")]
    Invalid {
        /// The field, as in the JSON (`imagePullPolicy`, `resources.limits.memory` …).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> OptionsError {
    OptionsError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Refuses `value` unless it is one of `allowed`, naming them.
fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), OptionsError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        field,
        format!("{:?} is not one of {}", Echo(value), allowed.join(", ")),
    ))
}

impl InjectorOptions {
    /// Reads options from a JSON file (a regular file of at most [`MAX_OPTIONS_BYTES`]); absent
    /// keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, OptionsError> {
        let display = path.display().to_string();
        let text =
            read_small_file(path, MAX_OPTIONS_BYTES).map_err(|problem| OptionsError::Read {
                path: display.clone(),
                problem,
            })?;
        serde_json::from_slice(&text).map_err(|problem| OptionsError::Parse {
            path: display,
            problem,
        })
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let Self {
            image,
            image_pull_policy,
            interface,
            default_ports,
            output_url,
            output_url_auth_token_secret,
            output_allow_plaintext_token,
            // Checked together by `validate_delivery`.
            output_format: _,
            otlp_encoding: _,
            records: _,
            output_auth_header: _,
            output_auth_scheme: _,
            output_headers: _,
            output_headers_secret: _,
            capabilities,
            seccomp_profile,
            resources,
            native_sidecar: _,
            live_ports: _,
            metrics_port,
            liveness_probe,
            readiness_probe,
            capture,
            capture_recorder_bytes,
        } = self;
        if *capture_recorder_bytes > MAX_RECORDER_BYTES {
            return Err(invalid(
                "captureRecorderBytes",
                format!("{capture_recorder_bytes} is more than the most, {MAX_RECORDER_BYTES}"),
            ));
        }
        if *capture_recorder_bytes > 0 && !capture {
            return Err(invalid(
                "captureRecorderBytes",
                "needs capture: the recorder's packets are served by the capture endpoint",
            ));
        }
        if *metrics_port == 0 {
            for (on, field) in [
                (*liveness_probe, "livenessProbe"),
                (*readiness_probe, "readinessProbe"),
            ] {
                if on {
                    return Err(invalid(
                        field,
                        "needs metricsPort: the probe asks the sniffer's /healthz on it",
                    ));
                }
            }
        }
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(invalid(
                "image",
                format!("{:?} is not an image reference", Echo(image)),
            ));
        }
        if !["Always", "IfNotPresent", "Never"].contains(&image_pull_policy.as_str()) {
            return Err(invalid(
                "imagePullPolicy",
                format!(
                    "{:?} is not one of Always, IfNotPresent, Never",
                    Echo(image_pull_policy)
                ),
            ));
        }
        if interface.is_empty()
            || interface.len() > 15
            || interface.contains(['/', ':'])
            || interface.chars().any(char::is_whitespace)
        {
            return Err(invalid(
                "interface",
                format!("{:?} is not an interface name", Echo(interface)),
            ));
        }
        if !default_ports.is_empty() {
            let list: Vec<String> = default_ports.iter().map(u16::to_string).collect();
            parse_ports(&list.join(","))
                .map_err(|err: PortsError| invalid("defaultPorts", err.to_string()))?;
        }
        if let Some(url) = output_url {
            // The sniffer's own rules, so what is accepted here never makes a sidecar exit 1.
            let parsed = parse_http_url(url)
                .map_err(|problem| invalid("outputUrl", format!("{:?} {problem}", Echo(url))))?;
            let credentials = [
                output_url_auth_token_secret
                    .as_ref()
                    .map(|_| ("outputUrlAuthTokenSecret", Credential::Token)),
                self.output_headers_secret
                    .as_ref()
                    .map(|_| ("outputHeadersSecret", Credential::SecretHeaders)),
            ];
            let fields = credentials.iter().flatten();
            if let Err(refused) = headers::plaintext_credentials(
                parsed.scheme,
                *output_allow_plaintext_token,
                fields.clone().map(|&(_, credential)| credential),
            ) {
                let (field, _) = fields
                    .into_iter()
                    .find(|&&(_, credential)| credential == refused)
                    .expect("the refused credential is one of them");
                return Err(invalid(
                    *field,
                    format!(
                        "{refused} would travel in plaintext to an http:// outputUrl: use \
                         https://, or set outputAllowPlaintextToken if the network already \
                         encrypts it"
                    ),
                ));
            }
        }
        if let Some(secret) = output_url_auth_token_secret {
            secret.validate("outputUrlAuthTokenSecret")?;
        }
        self.validate_delivery()?;
        for (index, capability) in capabilities.iter().enumerate() {
            if capability.is_empty()
                || capability.starts_with("CAP_")
                || !capability
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
            {
                return Err(invalid(
                    format!("capabilities[{index}]"),
                    format!(
                        "{:?} is not a capability name like NET_RAW (no CAP_ prefix)",
                        Echo(capability)
                    ),
                ));
            }
        }
        if let Some(SeccompProfile {
            type_,
            localhost_profile,
        }) = seccomp_profile
        {
            match (type_.as_str(), localhost_profile) {
                ("Unconfined" | "RuntimeDefault", None) => {}
                ("Localhost", Some(profile)) if !profile.is_empty() => {}
                ("Localhost", _) => {
                    return Err(invalid(
                        "seccompProfile.localhostProfile",
                        "is required when type is Localhost",
                    ));
                }
                ("Unconfined" | "RuntimeDefault", Some(_)) => {
                    return Err(invalid(
                        "seccompProfile.localhostProfile",
                        format!("is only allowed when type is Localhost, not {type_}"),
                    ));
                }
                (other, _) => {
                    return Err(invalid(
                        "seccompProfile.type",
                        format!(
                            "{:?} is not one of Unconfined, RuntimeDefault, Localhost",
                            Echo(other)
                        ),
                    ));
                }
            }
        }
        for (kind, map) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for (name, Quantity(value)) in map.iter().flatten() {
                if !is_quantity(value) {
                    return Err(invalid(
                        format!("resources.{kind}.{name}"),
                        format!("{:?} is not a Kubernetes quantity", Echo(value)),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl SecretKeyRef {
    fn validate(&self, field: &str) -> Result<(), OptionsError> {
        let Self { name, key } = self;
        if !is_dns_subdomain(name) {
            return Err(invalid(
                format!("{field}.name"),
                format!(
                    "{:?} is not a valid Secret name (a DNS subdomain)",
                    Echo(name)
                ),
            ));
        }
        if key.is_empty()
            || key.len() > 253
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(invalid(
                format!("{field}.key"),
                format!("{:?} is not a valid Secret key", Echo(key)),
            ));
        }
        Ok(())
    }
}

/// Where the options come from: the JSON file, then single options overridden by flags or
/// `SNIFFER_*` variables (what `injector serve` and `injector inject` take).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OptionSources {
    /// `InjectorOptions` JSON file.
    #[arg(long, env = "INJECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `image`.
    #[arg(long, env = "SNIFFER_IMAGE")]
    pub image: Option<String>,
    /// Overrides `imagePullPolicy`.
    #[arg(long, env = "SNIFFER_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// Overrides `interface`.
    #[arg(long, env = "SNIFFER_INTERFACE")]
    pub interface: Option<String>,
    /// Overrides `defaultPorts` (comma-separated, e.g. `8080,8443`).
    #[arg(long, env = "SNIFFER_DEFAULT_PORTS")]
    pub default_ports: Option<String>,
    /// Overrides `outputUrl`.
    #[arg(long, env = "SNIFFER_OUTPUT_URL")]
    pub output_url: Option<String>,
    /// Overrides `nativeSidecar` (`true`/`false`).
    #[arg(long, env = "SNIFFER_NATIVE_SIDECAR", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub native_sidecar: Option<bool>,
}

impl OptionSources {
    /// The file's options (or the defaults), with the overrides applied, validated.
    pub fn load(&self) -> Result<InjectorOptions, OptionsError> {
        let mut options = match &self.config {
            Some(path) => InjectorOptions::from_file(path)?,
            None => InjectorOptions::default(),
        };
        let Self {
            config: _,
            image,
            image_pull_policy,
            interface,
            default_ports,
            output_url,
            native_sidecar,
        } = self.clone();
        if let Some(image) = image {
            options.image = image;
        }
        if let Some(policy) = image_pull_policy {
            options.image_pull_policy = policy;
        }
        if let Some(interface) = interface {
            options.interface = interface;
        }
        if let Some(ports) = default_ports {
            options.default_ports = parse_ports(&ports).map_err(|err| OptionsError::Invalid {
                field: "defaultPorts".to_owned(),
                problem: format!("{:?} is invalid: {err}", Echo(&ports)),
            })?;
        }
        if let Some(url) = output_url {
            options.output_url = Some(url);
        }
        if let Some(native) = native_sidecar {
            options.native_sidecar = native;
        }
        options.validate()?;
        Ok(options)
    }
}

impl InjectorOptions {
    /// The format and header options, checked with the sniffer's own rules.
    fn validate_delivery(&self) -> Result<(), OptionsError> {
        one_of("outputFormat", &self.output_format, &OUTPUT_FORMATS)?;
        one_of("records", &self.records, &RECORDS)?;
        one_of("otlpEncoding", &self.otlp_encoding, &OTLP_ENCODINGS)?;
        let delivers = self.output_url.is_some();
        for (set, field) in [
            (self.output_format != "batch", "outputFormat"),
            (!self.output_headers.is_empty(), "outputHeaders"),
            (self.output_headers_secret.is_some(), "outputHeadersSecret"),
        ] {
            if set && !delivers {
                return Err(invalid(
                    field,
                    "needs outputUrl: without it the sniffer writes records to its log",
                ));
            }
        }
        // A token is what the header carries: check name and scheme as the sniffer will.
        let auth = headers::auth(&self.output_auth_header, &self.output_auth_scheme, "token")
            .map_err(|err| invalid("outputAuthHeader/outputAuthScheme", err.to_string()))?;
        // Names are checked here, by position, before they are rendered into `OUTPUT_HEADERS`:
        // `{"X-A=B": "v"}` would otherwise become header `X-A: B=v`, and a name holding a
        // credential must not be echoed.
        for (index, name) in self.output_headers.keys().enumerate() {
            let key = index + 1;
            if !headers::is_token(name) {
                return Err(invalid(
                    "outputHeaders",
                    format!(
                        "key {key} (in alphabetical order) is not an HTTP header name (letters, \
                         digits and !#$%&'*+-.^_`|~); it is not shown, it may hold a credential"
                    ),
                ));
            }
            if name.eq_ignore_ascii_case(&self.output_auth_header)
                || headers::carries_credential(name)
            {
                return Err(invalid(
                    "outputHeaders",
                    format!(
                        "{} carries a credential: give it through outputUrlAuthTokenSecret (with \
                         outputAuthHeader and outputAuthScheme) or outputHeadersSecret, never in \
                         plain options",
                        Echo(name)
                    ),
                ));
            }
        }
        if let Some(rendered) = self.rendered_headers() {
            headers::parse(&rendered, Some(&auth))
                .map_err(|err| invalid("outputHeaders", err.to_string()))?;
        }
        if let Some(secret) = &self.output_headers_secret {
            if !self.output_headers.is_empty() {
                return Err(invalid(
                    "outputHeadersSecret",
                    "cannot be set with outputHeaders: put every header in the Secret",
                ));
            }
            secret.validate("outputHeadersSecret")?;
        }
        Ok(())
    }

    /// `outputHeaders` as the sniffer's `OUTPUT_HEADERS` (`Name=value,…`, values
    /// percent-encoded where they hold `%`, `,` or `=`), or `None` when empty.
    #[must_use]
    pub fn rendered_headers(&self) -> Option<String> {
        (!self.output_headers.is_empty()).then(|| {
            let encode = |value: &str| {
                value
                    .replace('%', "%25")
                    .replace(',', "%2C")
                    .replace('=', "%3D")
            };
            self.output_headers
                .iter()
                .map(|(name, value)| format!("{name}={}", encode(value)))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of object names.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Kubernetes resource quantity: a decimal number with an optional binary (`Ki` … `Ei`),
/// decimal (`n`, `u`, `m`, `k`, `M` … `E`) or exponent (`e3`) suffix.
fn is_quantity(value: &str) -> bool {
    let number_end = value
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(value.len(), |(i, _)| i);
    let (number, suffix) = value.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    let valid_number = !digits.is_empty()
        && digits.matches('.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    let valid_suffix = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.trim_start_matches(['+', '-']))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    valid_number && valid_suffix
}

#[cfg(test)]
mod tests {
    use sidecar_contract::url::url_cases;

    use super::*;

    fn with(json: &str) -> Result<InjectorOptions, String> {
        let options: InjectorOptions = serde_json::from_str(json).map_err(|e| e.to_string())?;
        options.validate().map_err(|e| e.to_string())?;
        Ok(options)
    }

    #[test]
    fn defaults_are_valid_and_least_privilege() {
        let options = with("{}").unwrap();
        assert_eq!(options.capabilities, ["NET_RAW", "BPF"]);
        assert_eq!(options.seccomp_profile.unwrap().type_, "Unconfined");
        assert_eq!(options.interface, "eth0");
        assert!(!options.native_sidecar);
    }

    #[test]
    fn full_options_parse() {
        let options = with(
            r#"{"image":"registry.example/tcp-sniffer:0.1.0","imagePullPolicy":"Always",
                "interface":"eth1","defaultPorts":[8080,8443],
                "outputUrl":"https://collector.observability.svc:8443/v1/batches",
                "outputUrlAuthTokenSecret":{"name":"tcp-sniffer-output-auth","key":"token"},
                "capabilities":["NET_RAW","BPF"],
                "seccompProfile":{"type":"Localhost","localhostProfile":"profiles/tcp-sniffer.json"},
                "resources":{"requests":{"cpu":"10m","memory":"24Mi"},"limits":{"memory":"1.5Gi"}},
                "nativeSidecar":true}"#,
        )
        .unwrap();
        assert_eq!(options.default_ports, [8080, 8443]);
        assert!(options.native_sidecar);
        assert_eq!(options.output_url_auth_token_secret.unwrap().key, "token");
    }

    #[test]
    fn errors_name_the_field() {
        for (json, needle) in [
            (r#"{"imge":"x"}"#, "unknown field `imge`"),
            (r#"{"image":""}"#, "option image:"),
            (
                r#"{"imagePullPolicy":"Sometimes"}"#,
                "option imagePullPolicy: \"Sometimes\"",
            ),
            (r#"{"interface":"a/b"}"#, "option interface:"),
            (
                r#"{"defaultPorts":[0]}"#,
                "option defaultPorts: entry \"0\" is out of range",
            ),
            (
                r#"{"defaultPorts":[80,80]}"#,
                "option defaultPorts: port 80 is listed more than once",
            ),
            (
                r#"{"defaultPorts":[70000]}"#,
                "invalid value: integer `70000`",
            ),
            (
                r#"{"outputUrl":"ftp://x"}"#,
                "option outputUrl: \"ftp://x\" must use http or https",
            ),
            (
                r#"{"outputUrl":"collector:9000"}"#,
                "option outputUrl: \"collector:9000\" is not an absolute",
            ),
            (
                r#"{"outputUrlAuthTokenSecret":{"name":"Bad_Name","key":"t"}}"#,
                "option outputUrlAuthTokenSecret.name",
            ),
            (
                r#"{"outputUrlAuthTokenSecret":{"name":"ok","key":"a b"}}"#,
                "option outputUrlAuthTokenSecret.key",
            ),
            (
                r#"{"capabilities":["CAP_NET_RAW"]}"#,
                "option capabilities[0]",
            ),
            (
                r#"{"seccompProfile":{"type":"Localhost"}}"#,
                "option seccompProfile.localhostProfile",
            ),
            (
                r#"{"seccompProfile":{"type":"Off"}}"#,
                "option seccompProfile.type: \"Off\"",
            ),
            (
                r#"{"resources":{"limits":{"memory":"lots"}}}"#,
                "option resources.limits.memory: \"lots\"",
            ),
            (
                r#"{"metricsPort":0}"#,
                "option livenessProbe: needs metricsPort",
            ),
            (
                r#"{"metricsPort":0,"livenessProbe":false,"readinessProbe":true}"#,
                "option readinessProbe: needs metricsPort",
            ),
            (r#"{"metricsPort":70000}"#, "invalid value: integer `70000`"),
            (
                r#"{"capture":false,"captureRecorderBytes":1000000}"#,
                "option captureRecorderBytes: needs capture",
            ),
            (
                r#"{"captureRecorderBytes":2000000000}"#,
                "option captureRecorderBytes: 2000000000 is more than the most",
            ),
            (
                r#"{"nativeSidecar":"yes"}"#,
                "invalid type: string \"yes\", expected a boolean",
            ),
        ] {
            let err = with(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn a_token_over_plain_http_needs_the_opt_in() {
        let secret = r#""outputUrlAuthTokenSecret":{"name":"auth","key":"token"}"#;
        let err = with(&format!(r#"{{"outputUrl":"http://collector/",{secret}}}"#)).unwrap_err();
        assert!(
            err.contains("option outputUrlAuthTokenSecret: the token would travel in plaintext"),
            "{err}"
        );
        with(&format!(
            r#"{{"outputUrl":"http://collector/",{secret},"outputAllowPlaintextToken":true}}"#
        ))
        .unwrap();
        with(&format!(r#"{{"outputUrl":"https://collector/",{secret}}}"#)).unwrap();
        with(r#"{"outputUrl":"http://collector/"}"#).unwrap();
    }

    #[test]
    fn formats_and_headers() {
        let options = with(
            r#"{"outputUrl":"https://loki:3100/loki/api/v1/push","outputFormat":"loki",
                "outputAuthScheme":"Basic","outputHeaders":{"X-Scope-OrgID":"a,b=c%"}}"#,
        )
        .unwrap();
        assert_eq!(
            options.rendered_headers().as_deref(),
            Some("X-Scope-OrgID=a%2Cb%3Dc%25")
        );
        for (json, needle) in [
            (
                r#"{"outputUrl":"https://c/","outputFormat":"json"}"#,
                "option outputFormat: \"json\" is not one of batch, ndjson, otlp, loki",
            ),
            (
                r#"{"outputFormat":"ndjson"}"#,
                "option outputFormat: needs outputUrl",
            ),
            (
                r#"{"records":"flows"}"#,
                "option records: \"flows\" is not one of packets, connections, both",
            ),
            (
                r#"{"outputUrl":"https://c/","otlpEncoding":"grpc"}"#,
                "option otlpEncoding: \"grpc\" is not one of protobuf, json",
            ),
            (
                r#"{"outputUrl":"https://c/","outputHeaders":{"Content-Type":"text/plain"}}"#,
                "option outputHeaders: OUTPUT_HEADERS entry 1 sets Content-Type, which the sniffer sets itself",
            ),
            (
                r#"{"outputUrl":"https://c/","outputHeaders":{"authorization":"Basic x"}}"#,
                "option outputHeaders: authorization carries a credential",
            ),
            (
                r#"{"outputUrl":"https://c/","outputAuthHeader":"X Key"}"#,
                "option outputAuthHeader/outputAuthScheme: OUTPUT_AUTH_HEADER \"X Key\"",
            ),
            (
                r#"{"outputUrl":"https://c/","outputHeaders":{"A":"1"},"outputHeadersSecret":{"name":"h","key":"k"}}"#,
                "option outputHeadersSecret: cannot be set with outputHeaders",
            ),
            (
                r#"{"outputUrl":"https://c/","outputHeadersSecret":{"name":"Bad","key":"k"}}"#,
                "option outputHeadersSecret.name",
            ),
        ] {
            let err = with(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn header_names_are_checked_before_rendering_and_never_echoed() {
        for (headers, needle) in [
            (
                r#"{"X-A=B":"v"}"#,
                "key 1 (in alphabetical order) is not an HTTP header name",
            ),
            (
                r#"{"X-Tenant":"t","Authorization=Bearer s3cr3t":""}"#,
                "key 1 (in alphabetical order) is not an HTTP header name",
            ),
            (
                r#"{"X b":"v"}"#,
                "key 1 (in alphabetical order) is not an HTTP header name",
            ),
            (
                r#"{"X-Api-Key":"s3cr3t"}"#,
                "X-Api-Key carries a credential",
            ),
            (r#"{"Cookie":"s3cr3t"}"#, "Cookie carries a credential"),
        ] {
            let err = with(&format!(
                r#"{{"outputUrl":"https://c/","outputHeaders":{headers}}}"#
            ))
            .unwrap_err();
            assert!(err.starts_with("option outputHeaders: "), "{err}");
            assert!(err.contains(needle), "{headers}: {err}");
            assert!(!err.contains("s3cr3t") && !err.contains("X-A=B"), "{err}");
        }
    }

    #[test]
    fn headers_from_a_secret_follow_the_token_s_rule() {
        let secret = r#""outputHeadersSecret":{"name":"ch","key":"headers"}"#;
        let err = with(&format!(r#"{{"outputUrl":"http://ch:8123/",{secret}}}"#)).unwrap_err();
        assert!(
            err.starts_with(
                "option outputHeadersSecret: the headers from a Secret would travel in plaintext"
            ),
            "{err}"
        );
        with(&format!(
            r#"{{"outputUrl":"http://ch:8123/",{secret},"outputAllowPlaintextToken":true}}"#
        ))
        .unwrap();
        with(&format!(r#"{{"outputUrl":"https://ch:8443/",{secret}}}"#)).unwrap();
        // Plain headers are not secret: they go over http:// as they always did.
        with(r#"{"outputUrl":"http://loki:3100/","outputHeaders":{"X-Scope-OrgID":"t"}}"#).unwrap();
    }

    #[test]
    fn quantities() {
        for good in [
            "1", "0.5", "500m", "64Mi", "1Gi", "1e3", "1.5E+2", "+1", "100k", ".5",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Mi", "1.2.3", "lots", "1mi", "1 Gi", "-", "1e", "1KiB"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn output_urls_follow_the_shared_table() {
        for (url, expected) in url_cases() {
            let options = InjectorOptions {
                output_url: Some(url.to_owned()),
                ..InjectorOptions::default()
            };
            match (options.validate(), expected) {
                (Ok(()), None) => {}
                (Err(err), Some(reason)) => {
                    assert!(err.to_string().starts_with("option outputUrl: "), "{err}");
                    assert!(
                        err.to_string().ends_with(&reason.to_string()),
                        "{url:?}: {err}"
                    );
                }
                (got, want) => panic!("{url:?}: got {got:?}, expected {want:?}"),
            }
        }
    }

    /// An override replaces the file's value and leaves the file's other values alone.
    #[test]
    fn overrides_apply_over_the_file() {
        let path =
            std::env::temp_dir().join(format!("injector-options-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"image":"from-file", "interface":"net1", "defaultPorts":[80]}"#,
        )
        .unwrap();
        let sources = OptionSources {
            config: Some(path.clone()),
            image: Some("from-override".to_owned()),
            default_ports: Some("8080, 8443".to_owned()),
            native_sidecar: Some(true),
            ..OptionSources::default()
        };
        let options = sources.load();
        std::fs::remove_file(&path).unwrap();
        let options = options.unwrap();
        assert_eq!(options.image, "from-override");
        assert_eq!(options.interface, "net1");
        assert_eq!(options.default_ports, [8080, 8443]);
        assert!(options.native_sidecar);
        assert_eq!(
            OptionSources::default().load().unwrap(),
            InjectorOptions::default()
        );
    }
}
