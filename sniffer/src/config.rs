//! Configuration: environment variables (each also a flag) and their validation.

use std::{ffi::CString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, builder::BoolishValueParser};
use sidecar_contract::{
    echo::Echo,
    env,
    headers::{self, Credential, HeaderError},
    ports::{PortsError, parse_ports},
    url::{Scheme, UrlError, parse_http_url},
};
use sniffer_common::{DEFAULT_RING_BYTES, DEFAULT_WAKEUP_BYTES, RING_ENTRY_BYTES};
use thiserror::Error;

use crate::{
    connections::TrackerConfig,
    encode::{Format, UnknownFormat},
    pcap::config::{CaptureArgs, CaptureConfig, CaptureConfigError},
    ports::watch::MAX_PORTS_FILE_BYTES,
};
use cli_support::small_file::{SmallFileError, read_small_file};

/// Command line and environment, as given. [`Args::validate`] turns it into a [`Config`].
#[derive(Clone, Debug, Parser)]
#[command(
    name = "sniffer",
    version,
    about = "Capture TCP packet metadata on an interface with eBPF"
)]
pub struct Args {
    /// TCP ports to capture, comma-separated (e.g. `8080,8443`); a packet matches when its source
    /// or destination port is listed.
    #[arg(long, env = env::PORTS)]
    pub ports: String,
    /// The pod's annotations file (a downward-API volume of `metadata.annotations`): when its
    /// `tcp-sniffer/ports` changes, the captured ports follow without a restart; without the
    /// annotation, `PORTS` applies.
    #[arg(long, env = env::PORTS_FILE)]
    pub ports_file: Option<PathBuf>,
    /// Interface to capture on.
    #[arg(long, env = env::INTERFACE, default_value = "eth0")]
    pub interface: String,
    /// http(s) URL that receives batches by POST; when unset, records go to stdout as NDJSON.
    #[arg(long, env = env::OUTPUT_URL)]
    pub output_url: Option<String>,
    /// Sent as `Authorization: Bearer <token>`; prefer the variable to the flag (visible in `ps`).
    /// One trailing newline is removed (with a warning); other control characters are refused.
    #[arg(long, env = env::OUTPUT_URL_AUTH_TOKEN, hide_env_values = true)]
    pub output_url_auth_token: Option<String>,
    /// The header that carries the token (`X-ClickHouse-Key`, …).
    #[arg(long, env = env::OUTPUT_AUTH_HEADER, default_value = "Authorization")]
    pub output_auth_header: String,
    /// The word before the token in its header (`Bearer`, `Basic`, `ApiKey`, …); empty: the token
    /// alone.
    #[arg(long, env = env::OUTPUT_AUTH_SCHEME, default_value = "Bearer")]
    pub output_auth_scheme: String,
    /// More headers for every request, `Name=value` pairs separated by commas, values
    /// percent-encoded where needed (`X-Scope-OrgID=tenant-1,X-ClickHouse-User=sniffer`); values
    /// are never logged.
    #[arg(long, env = env::OUTPUT_HEADERS, hide_env_values = true)]
    pub output_headers: Option<String>,
    /// The body format: `batch`, `ndjson`, `otlp` or `loki`.
    #[arg(long, env = env::OUTPUT_FORMAT, default_value = "batch")]
    pub output_format: String,
    /// With `OUTPUT_FORMAT=otlp`: `protobuf` or `json`.
    #[arg(long, env = env::OTLP_ENCODING, default_value = "protobuf")]
    pub otlp_encoding: String,
    /// Allow sending the token over `http://` (plaintext), e.g. when a service mesh already
    /// encrypts the connection with mTLS; without it such a configuration is refused.
    #[arg(long, env = env::OUTPUT_ALLOW_PLAINTEXT_TOKEN, default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub output_allow_plaintext_token: bool,
    /// A batch is sent when it holds this many records.
    #[arg(long, env = env::BATCH_MAX_RECORDS, default_value_t = 1000)]
    pub batch_max_records: usize,
    /// … or when its oldest record is this old (milliseconds).
    #[arg(long, env = env::BATCH_MAX_WAIT_MS, default_value_t = 1000)]
    pub batch_max_wait_ms: u64,
    /// Records that may wait for delivery (to the collector, or for stdout to take them);
    /// beyond it new records are dropped and counted.
    #[arg(long, env = env::BUFFER_MAX_RECORDS, default_value_t = 50_000)]
    pub buffer_max_records: usize,
    /// Delivery requests in flight at once (sender threads), 1-64.
    #[arg(long, env = env::OUTPUT_CONCURRENCY, default_value_t = 4)]
    pub output_concurrency: usize,
    /// Compress batch bodies with gzip (`Content-Encoding: gzip`).
    #[arg(long, env = env::OUTPUT_GZIP, default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub output_gzip: bool,
    /// Connect timeout towards the collector (milliseconds).
    #[arg(long, env = env::OUTPUT_CONNECT_TIMEOUT_MS, default_value_t = 3000)]
    pub output_connect_timeout_ms: u64,
    /// Timeout of one whole delivery request (milliseconds).
    #[arg(long, env = env::OUTPUT_TIMEOUT_MS, default_value_t = 10_000)]
    pub output_timeout_ms: u64,
    /// PEM file of CA certificates to trust for an https `OUTPUT_URL`, instead of the system's.
    #[arg(long, env = env::OUTPUT_CA_FILE)]
    pub output_ca_file: Option<PathBuf>,
    /// First retry delay (milliseconds); it doubles per attempt, with jitter.
    #[arg(long, env = env::RETRY_INITIAL_MS, default_value_t = 200)]
    pub retry_initial_ms: u64,
    /// Longest retry delay (milliseconds).
    #[arg(long, env = env::RETRY_MAX_MS, default_value_t = 30_000)]
    pub retry_max_ms: u64,
    /// After SIGTERM, how long queued batches may still be delivered (milliseconds).
    #[arg(long, env = env::SHUTDOWN_GRACE_MS, default_value_t = 20_000)]
    pub shutdown_grace_ms: u64,
    /// Address of the plain-HTTP metrics endpoint (`/metrics`, `/healthz`), e.g. `0.0.0.0:9090`.
    #[arg(long, env = env::METRICS_ADDR)]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between `stats` log lines; 0 turns them off.
    #[arg(long, env = env::STATS_INTERVAL_SECS, default_value_t = 60)]
    pub stats_interval_secs: u64,
    /// Ring buffer size in bytes (a power of two, at least one page).
    #[arg(long, env = env::RING_BUFFER_BYTES, default_value_t = DEFAULT_RING_BYTES)]
    pub ring_buffer_bytes: u32,
    /// Unread ring bytes that wake the reader (a power of two, at most half the ring). Larger
    /// values mean fewer wakeups at high packet rates.
    #[arg(long, env = env::RING_WAKEUP_BYTES, default_value_t = DEFAULT_WAKEUP_BYTES)]
    pub ring_wakeup_bytes: u64,
    /// The reader reads the ring at most this often (milliseconds) while less than
    /// `RING_WAKEUP_BYTES` waits: the longest a record of slow traffic waits before it is read.
    /// An empty ring is not polled: the kernel wakes the reader for its first record.
    #[arg(long, env = env::RING_POLL_INTERVAL_MS, default_value_t = 50)]
    pub ring_poll_interval_ms: u64,
    /// What to send: `packets` (a record per packet), `connections` (a record per connection),
    /// or `both`.
    #[arg(long, env = env::RECORDS, default_value = "packets")]
    pub records: String,
    /// Connections tracked at once (`RECORDS` `connections` or `both`); beyond it the least
    /// recently seen is reported as evicted.
    #[arg(long, env = env::CONNECTION_MAX, default_value_t = 32_768)]
    pub connection_max: u64,
    /// A connection with no packet for this long is reported as timed out.
    #[arg(long, env = env::CONNECTION_IDLE_TIMEOUT_MS, default_value_t = 300_000)]
    pub connection_idle_timeout_ms: u64,
    /// Open connections are reported this often; 0 never.
    #[arg(long, env = env::CONNECTION_REPORT_INTERVAL_MS, default_value_t = 60_000)]
    pub connection_report_interval_ms: u64,
    /// Pod name (downward API), included in logs.
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: Option<String>,
    /// Pod namespace (downward API), included in logs.
    #[arg(long, env = env::POD_NAMESPACE)]
    pub pod_namespace: Option<String>,
    /// Node name (downward API), included in logs.
    #[arg(long, env = env::NODE_NAME)]
    pub node_name: Option<String>,
    /// The packet capture endpoint (`CAPTURE_*`).
    #[command(flatten)]
    pub capture: CaptureArgs,
}

/// How to reach the collector.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// `OUTPUT_URL`, checked by the URL rule.
    pub url: String,
    /// The body format.
    pub format: Format,
    /// Every header sent besides `Content-Type` and `Content-Encoding`: the token's (name and
    /// value, scheme included) first, then `OUTPUT_HEADERS`. Values are never logged.
    pub headers: Vec<(String, String)>,
    /// Compress bodies with gzip (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of a whole request (connect, send, response).
    pub request_timeout: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay, and longest wait of any kind (a `Retry-After` too).
    pub backoff_max: Duration,
    /// PEM file of CA certificates to trust instead of the platform's.
    pub ca_file: Option<PathBuf>,
    /// Records per batch.
    pub batch_max_records: usize,
    /// Age of a batch's oldest record that closes it.
    pub batch_max_wait: Duration,
    /// Records that may wait for delivery.
    pub buffer_max_records: usize,
    /// Requests in flight at once (sender threads), 1–64.
    pub concurrency: usize,
}

/// Something the operator should know about an accepted configuration, logged as a warning at
/// start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The token ended with a newline (`kubectl create secret --from-file` of a file written by
    /// `echo`), which was removed.
    TokenNewlineTrimmed,
    /// A credential (the first, if several) goes over `http://` because
    /// `OUTPUT_ALLOW_PLAINTEXT_TOKEN` says so.
    PlaintextCredential(Credential),
    /// The token is set but empty: no `Authorization` header is sent.
    EmptyToken,
}

impl Warning {
    /// The log message.
    #[must_use]
    pub fn message(self) -> String {
        let text = match self {
            Self::TokenNewlineTrimmed => {
                "OUTPUT_URL_AUTH_TOKEN ended with a newline, which was removed (a Secret made with --from-file of a file that ends in a newline)"
            }
            Self::PlaintextCredential(credential) => {
                return format!(
                    "{credential} is sent over http:// in plaintext, as OUTPUT_ALLOW_PLAINTEXT_TOKEN allows"
                );
            }
            Self::EmptyToken => {
                "OUTPUT_URL_AUTH_TOKEN is empty: batches are sent without an Authorization header"
            }
        };
        text.to_owned()
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Things to warn about at start.
    pub warnings: Vec<Warning>,
    /// Delivery to a collector; `None` writes NDJSON to stdout.
    pub output: Option<DeliveryConfig>,
    /// Records that may wait for stdout to take them (`BUFFER_MAX_RECORDS`), without
    /// `OUTPUT_URL`.
    pub stdout_buffer_records: usize,
    /// Metrics endpoint address.
    pub metrics_addr: Option<SocketAddr>,
    /// Interval of the `stats` log line; `None` when off.
    pub stats_interval: Option<Duration>,
    /// Delivery time allowed after SIGTERM.
    pub shutdown_grace: Duration,
    /// Ports to capture, sorted, unique, non-zero.
    pub ports: Vec<u16>,
    /// The annotations file whose `tcp-sniffer/ports` changes the ports while running.
    pub ports_file: Option<PathBuf>,
    /// Interface name.
    pub interface: String,
    /// Interface index in this network namespace.
    pub ifindex: u32,
    /// Ring buffer size in bytes.
    pub ring_buffer_bytes: u32,
    /// Unread ring bytes that wake the reader.
    pub ring_wakeup_bytes: u64,
    /// How often the reader checks the ring without a wakeup.
    pub ring_poll_interval: Duration,
    /// What records are sent (`RECORDS`).
    pub records: Records,
    /// The connection tracker's limits, used unless `records` is [`Records::Packets`].
    pub tracker: TrackerConfig,
    /// The packet capture endpoint; `None` when `CAPTURE_LISTEN` is `off`.
    pub capture: Option<CaptureConfig>,
}

/// What the agent sends (`RECORDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// A record per packet (the default).
    Packets,
    /// A record per connection, no packet records.
    Connections,
    /// Both.
    Both,
}

impl Records {
    /// Whether packet records are sent.
    #[must_use]
    pub const fn packets(self) -> bool {
        matches!(self, Self::Packets | Self::Both)
    }

    /// Whether connections are tracked and reported.
    #[must_use]
    pub const fn connections(self) -> bool {
        matches!(self, Self::Connections | Self::Both)
    }
}

/// A configuration the sniffer cannot start with (exit code 1).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `PORTS` is invalid.
    #[error("PORTS {:?} is invalid: {problem}", Echo(value))]
    Ports {
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: PortsError,
    },
    /// `PORTS_FILE` cannot be read.
    #[error("PORTS_FILE {path:?} {problem}")]
    PortsFile {
        /// The file.
        path: PathBuf,
        /// Why (said in the message, so not a separate cause).
        problem: SmallFileError,
    },
    /// `INTERFACE` does not exist in this network namespace.
    #[error("INTERFACE {:?} does not exist in this network namespace", Echo(name))]
    UnknownInterface {
        /// The name given.
        name: String,
    },
    /// `RING_BUFFER_BYTES` is not a power of two of at least one page.
    #[error("RING_BUFFER_BYTES={value} must be a power of two and at least {page} bytes")]
    RingBufferSize {
        /// The value given.
        value: u32,
        /// The page size.
        page: u32,
    },
    /// `RING_WAKEUP_BYTES` is not a power of two between one record and half the ring.
    #[error(
        "RING_WAKEUP_BYTES={value} must be a power of two from {min} to half of RING_BUFFER_BYTES ({max})"
    )]
    RingWakeupBytes {
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// `RING_POLL_INTERVAL_MS` is 0 or above a minute.
    #[error("RING_POLL_INTERVAL_MS={value} must be from 1 to 60000")]
    RingPollInterval {
        /// The value given.
        value: u64,
    },
    /// `OUTPUT_URL` breaks the URL rule shared with the injector ([`sidecar_contract::url`]).
    #[error("OUTPUT_URL {:?} {problem}", Echo(value))]
    OutputUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: UrlError,
    },
    /// `OUTPUT_URL_AUTH_TOKEN` holds a character no HTTP header can carry.
    #[error(
        "OUTPUT_URL_AUTH_TOKEN contains a control character (byte {byte:#04x} at position {position}); only one trailing newline is removed: fix the Secret"
    )]
    TokenCharacter {
        /// The character's byte value (the token itself is never shown).
        byte: u8,
        /// Its 0-based byte position.
        position: usize,
    },
    /// A credential would travel over plain HTTP: the token, or a header whose name says it
    /// carries one ([`headers::plaintext_credentials`], the rule the injector applies too).
    #[error(
        "{0} would be sent in plaintext to an http:// OUTPUT_URL: use https://, or set OUTPUT_ALLOW_PLAINTEXT_TOKEN=true if the network already encrypts it (e.g. a service mesh with mTLS)"
    )]
    PlaintextCredential(Credential),
    /// `OUTPUT_FORMAT` or `OTLP_ENCODING` names no format.
    #[error("{name} {:?} {problem}", Echo(value))]
    Format {
        /// The variable.
        name: &'static str,
        /// The value given.
        value: String,
        /// The values accepted.
        problem: &'static str,
    },
    /// `RECORDS` names nothing known.
    #[error("RECORDS {:?} is not one of packets, connections, both", Echo(.0))]
    Records(String),
    /// `OUTPUT_FORMAT` is set, but records go to stdout.
    #[error("OUTPUT_FORMAT={0} needs OUTPUT_URL: stdout always carries NDJSON records")]
    FormatWithoutUrl(String),
    /// `OUTPUT_HEADERS` or the token's header cannot be sent.
    #[error("{0}")]
    Header(HeaderError),
    /// A number outside its range.
    #[error("{name}={value} is out of range: it must be from {min} to {max}")]
    OutOfRange {
        /// The variable.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A `CAPTURE_*` value is invalid.
    #[error(transparent)]
    Capture(#[from] CaptureConfigError),
}

impl Args {
    /// Checks every value and resolves the interface.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let ports = parse_ports(&self.ports).map_err(|problem| ConfigError::Ports {
            value: self.ports.clone(),
            problem,
        })?;
        if let Some(path) = &self.ports_file {
            // Read once now, so a wrong path stops the start instead of a warning later.
            read_small_file(path, MAX_PORTS_FILE_BYTES).map_err(|problem| {
                ConfigError::PortsFile {
                    path: path.clone(),
                    problem,
                }
            })?;
        }
        let mut warnings = Vec::new();
        let output = self
            .output_url
            .as_deref()
            .map(|url| self.delivery(url, &mut warnings))
            .transpose()?;
        if output.is_none() {
            if self.output_format != "batch" {
                return Err(ConfigError::FormatWithoutUrl(
                    Echo(&self.output_format).to_string(),
                ));
            }
            range(
                "BUFFER_MAX_RECORDS",
                self.buffer_max_records as u64,
                1,
                10_000_000,
            )?;
        }
        range("SHUTDOWN_GRACE_MS", self.shutdown_grace_ms, 0, 600_000)?;
        range("STATS_INTERVAL_SECS", self.stats_interval_secs, 0, 86_400)?;
        let records = match self.records.as_str() {
            "packets" => Records::Packets,
            "connections" => Records::Connections,
            "both" => Records::Both,
            other => return Err(ConfigError::Records(other.to_owned())),
        };
        range("CONNECTION_MAX", self.connection_max, 1, 10_000_000)?;
        range(
            "CONNECTION_IDLE_TIMEOUT_MS",
            self.connection_idle_timeout_ms,
            1_000,
            86_400_000,
        )?;
        if self.connection_report_interval_ms != 0 {
            range(
                "CONNECTION_REPORT_INTERVAL_MS",
                self.connection_report_interval_ms,
                1_000,
                86_400_000,
            )?;
        }
        let tracker = TrackerConfig {
            max_connections: usize::try_from(self.connection_max).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_millis(self.connection_idle_timeout_ms),
            report_interval: (self.connection_report_interval_ms > 0)
                .then(|| Duration::from_millis(self.connection_report_interval_ms)),
        };
        let page = page_size();
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < page {
            return Err(ConfigError::RingBufferSize {
                value: self.ring_buffer_bytes,
                page,
            });
        }
        let min = RING_ENTRY_BYTES.next_power_of_two();
        let max = u64::from(self.ring_buffer_bytes / 2);
        let wakeup = self.ring_wakeup_bytes;
        if !wakeup.is_power_of_two() || wakeup < min || wakeup > max {
            return Err(ConfigError::RingWakeupBytes {
                value: wakeup,
                min,
                max,
            });
        }
        if !(1..=60_000).contains(&self.ring_poll_interval_ms) {
            return Err(ConfigError::RingPollInterval {
                value: self.ring_poll_interval_ms,
            });
        }
        let ifindex =
            interface_index(&self.interface).ok_or_else(|| ConfigError::UnknownInterface {
                name: self.interface.clone(),
            })?;
        Ok(Config {
            warnings,
            output,
            stdout_buffer_records: self.buffer_max_records,
            metrics_addr: self.metrics_addr,
            stats_interval: (self.stats_interval_secs > 0)
                .then(|| Duration::from_secs(self.stats_interval_secs)),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            ports,
            ports_file: self.ports_file.clone(),
            interface: self.interface.clone(),
            ifindex,
            ring_buffer_bytes: self.ring_buffer_bytes,
            ring_wakeup_bytes: wakeup,
            ring_poll_interval: Duration::from_millis(self.ring_poll_interval_ms),
            records,
            tracker,
            capture: self.capture.validate()?,
        })
    }

    fn delivery(
        &self,
        url: &str,
        warnings: &mut Vec<Warning>,
    ) -> Result<DeliveryConfig, ConfigError> {
        let scheme = validate_url(url)?;
        range(
            "BATCH_MAX_RECORDS",
            self.batch_max_records as u64,
            1,
            100_000,
        )?;
        range("BATCH_MAX_WAIT_MS", self.batch_max_wait_ms, 1, 600_000)?;
        range(
            "BUFFER_MAX_RECORDS",
            self.buffer_max_records as u64,
            self.batch_max_records as u64,
            10_000_000,
        )?;
        range(
            "OUTPUT_CONNECT_TIMEOUT_MS",
            self.output_connect_timeout_ms,
            1,
            600_000,
        )?;
        range("OUTPUT_TIMEOUT_MS", self.output_timeout_ms, 1, 600_000)?;
        range("RETRY_INITIAL_MS", self.retry_initial_ms, 1, 600_000)?;
        range(
            "RETRY_MAX_MS",
            self.retry_max_ms,
            self.retry_initial_ms,
            3_600_000,
        )?;
        range(
            "OUTPUT_CONCURRENCY",
            self.output_concurrency as u64,
            1,
            MAX_OUTPUT_CONCURRENCY,
        )?;
        let format = match self.output_format.parse::<Format>() {
            Ok(Format::OtlpProtobuf) => match self.otlp_encoding.as_str() {
                "protobuf" => Format::OtlpProtobuf,
                "json" => Format::OtlpJson,
                other => {
                    return Err(ConfigError::Format {
                        name: "OTLP_ENCODING",
                        value: other.to_owned(),
                        problem: "is not one of protobuf, json",
                    });
                }
            },
            Ok(format) => format,
            Err(UnknownFormat) => {
                return Err(ConfigError::Format {
                    name: "OUTPUT_FORMAT",
                    value: self.output_format.clone(),
                    problem: "is not one of batch, ndjson, otlp, loki",
                });
            }
        };
        let token = match self.output_url_auth_token.as_deref() {
            None => None,
            Some(raw) => {
                let (token, trimmed) = clean_token(raw)?;
                if trimmed {
                    warnings.push(Warning::TokenNewlineTrimmed);
                }
                if token.is_empty() {
                    warnings.push(Warning::EmptyToken);
                    None
                } else {
                    Some(token.to_owned())
                }
            }
        };
        let auth = token
            .as_deref()
            .map(|token| headers::auth(&self.output_auth_header, &self.output_auth_scheme, token))
            .transpose()
            .map_err(ConfigError::Header)?;
        let extra = match self.output_headers.as_deref() {
            Some(text) => headers::parse(text, auth.as_ref()).map_err(ConfigError::Header)?,
            None => Vec::new(),
        };
        let credentials =
            auth.iter()
                .map(|_| Credential::Token)
                .chain(extra.iter().enumerate().filter_map(|(index, (name, _))| {
                    headers::carries_credential(name).then_some(Credential::Header {
                        position: index + 1,
                    })
                }));
        match headers::plaintext_credentials(scheme, self.output_allow_plaintext_token, credentials)
        {
            Ok(None) => {}
            Ok(Some(credential)) => warnings.push(Warning::PlaintextCredential(credential)),
            Err(credential) => return Err(ConfigError::PlaintextCredential(credential)),
        }
        let headers_list: Vec<(String, String)> = auth.into_iter().chain(extra).collect();
        Ok(DeliveryConfig {
            url: url.to_owned(),
            format,
            headers: headers_list,
            gzip: self.output_gzip,
            connect_timeout: Duration::from_millis(self.output_connect_timeout_ms),
            request_timeout: Duration::from_millis(self.output_timeout_ms),
            backoff_initial: Duration::from_millis(self.retry_initial_ms),
            backoff_max: Duration::from_millis(self.retry_max_ms),
            ca_file: self.output_ca_file.clone(),
            batch_max_records: self.batch_max_records,
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms),
            buffer_max_records: self.buffer_max_records,
            concurrency: self.output_concurrency,
        })
    }

    /// Placement fields from the downward API.
    #[must_use]
    pub fn placement(&self) -> Placement {
        Placement {
            pod: self.pod_name.clone(),
            namespace: self.pod_namespace.clone(),
            node: self.node_name.clone(),
        }
    }
}

/// Where this agent runs; added to every log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// `POD_NAME`.
    pub pod: Option<String>,
    /// `POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `NODE_NAME`.
    pub node: Option<String>,
}

impl Placement {
    /// Reads the placement variables directly, for errors raised before arguments parse.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            pod: var(env::POD_NAME),
            namespace: var(env::POD_NAMESPACE),
            node: var(env::NODE_NAME),
        }
    }
}

impl Placement {
    /// The fields every log line carries.
    #[must_use]
    pub fn log_fields(&self) -> [(&'static str, Option<String>); 3] {
        let Self {
            pod,
            namespace,
            node,
        } = self.clone();
        [("pod", pod), ("namespace", namespace), ("node", node)]
    }

    /// Where the sniffer runs, in words (a capture's interface description): `pod web-1,
    /// namespace shop, node n1`, the unknown parts left out.
    ///
    /// # Examples
    ///
    /// ```
    /// use sniffer::config::Placement;
    ///
    /// let placement = Placement { pod: Some("web-1".into()), namespace: None, node: Some("n1".into()) };
    /// assert_eq!(placement.describe(), "pod web-1, node n1");
    /// assert_eq!(Placement::default().describe(), "");
    /// ```
    #[must_use]
    pub fn describe(&self) -> String {
        self.log_fields()
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| format!("{name} {value}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The most sender threads `OUTPUT_CONCURRENCY` may ask for.
pub const MAX_OUTPUT_CONCURRENCY: u64 = 64;

/// The token without one trailing `\n` or `\r\n` (and whether one was there), or the position of
/// a control character no HTTP header can carry.
fn clean_token(raw: &str) -> Result<(&str, bool), ConfigError> {
    let token = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(raw);
    if let Some((position, byte)) = token
        .bytes()
        .enumerate()
        .find(|&(_, b)| b.is_ascii_control())
    {
        return Err(ConfigError::TokenCharacter { byte, position });
    }
    Ok((token, token.len() != raw.len()))
}

fn range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            name,
            value,
            min,
            max,
        })
    }
}

/// Checks `OUTPUT_URL` with the rule the injector applies to `outputUrl`
/// ([`sidecar_contract::url`]); returns its scheme.
///
/// # Examples
///
/// ```
/// use sniffer::config::validate_url;
///
/// assert!(validate_url("https://collector.observability:8443/v1/batches").is_ok());
/// assert!(validate_url("ftp://collector/").is_err());
/// assert!(validate_url("not a url").is_err());
/// ```
pub fn validate_url(value: &str) -> Result<Scheme, ConfigError> {
    parse_http_url(value)
        .map(|url| url.scheme)
        .map_err(|problem| ConfigError::OutputUrl {
            value: value.to_owned(),
            problem,
        })
}

/// The index of interface `name` in this network namespace, if it exists.
#[must_use]
pub fn interface_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use sidecar_contract::url::url_cases;

    use super::*;

    /// The sniffer reads exactly the variables of the contract the injector writes from.
    #[test]
    fn reads_exactly_the_contract_variables() {
        use clap::CommandFactory as _;

        let mut read: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        read.sort_unstable();
        let mut contract: Vec<&str> = env::ALL.to_vec();
        contract.sort_unstable();
        assert_eq!(read, contract);
    }

    #[test]
    fn ports_errors_name_the_variable_and_the_value() {
        let message = args("8080,80x", "lo").validate().unwrap_err().to_string();
        assert_eq!(
            message,
            r#"PORTS "8080,80x" is invalid: entry "80x" is not a port number"#
        );
    }

    #[test]
    fn an_unreadable_ports_file_stops_the_start() {
        for (path, problem) in [
            ("/nonexistent/annotations", "No such file or directory"),
            ("/dev/zero", "is not a regular file"),
        ] {
            let args =
                Args::try_parse_from(["sniffer", "--ports", "80", "--ports-file", path]).unwrap();
            let message = args.validate().unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("PORTS_FILE \"{path}\" "))
                    && message.contains(problem),
                "{message}"
            );
        }
    }

    fn args(ports: &str, interface: &str) -> Args {
        Args::try_parse_from(["sniffer", "--ports", ports, "--interface", interface]).unwrap()
    }

    #[test]
    fn validate_resolves_loopback() {
        let config = args("8080", "lo").validate().unwrap();
        assert_eq!(config.ports, vec![8080]);
        assert!(config.ifindex > 0);
        assert_eq!(config.ring_buffer_bytes, DEFAULT_RING_BYTES);
    }

    #[test]
    fn validate_rejects_unknown_interface_and_bad_ring() {
        let err = args("8080", "nosuchif0").validate().unwrap_err();
        assert!(matches!(err, ConfigError::UnknownInterface { ref name } if name == "nosuchif0"));
        let mut bad_ring = args("8080", "lo");
        bad_ring.ring_buffer_bytes = 5000;
        assert!(matches!(
            bad_ring.validate(),
            Err(ConfigError::RingBufferSize { value: 5000, .. })
        ));
    }

    #[test]
    fn records_and_tracker_settings() {
        for (name, records) in sidecar_contract::RECORDS.iter().zip([
            Records::Packets,
            Records::Connections,
            Records::Both,
        ]) {
            let mut ok = args("8080", "lo");
            ok.records = (*name).to_owned();
            assert_eq!(ok.validate().unwrap().records, records);
        }
        let mut bad = args("8080", "lo");
        bad.records = "flows".to_owned();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "RECORDS \"flows\" is not one of packets, connections, both"
        );
        let mut never = args("8080", "lo");
        never.connection_report_interval_ms = 0;
        let config = never.validate().unwrap();
        assert_eq!(config.tracker.report_interval, None);
        assert_eq!(config.tracker.max_connections, 32_768);
        for (field, value, name) in [
            (0, 0, "CONNECTION_MAX=0"),
            (1, 999, "CONNECTION_IDLE_TIMEOUT_MS=999"),
            (2, 10, "CONNECTION_REPORT_INTERVAL_MS=10"),
        ] {
            let mut bad = args("8080", "lo");
            match field {
                0 => bad.connection_max = value,
                1 => bad.connection_idle_timeout_ms = value,
                _ => bad.connection_report_interval_ms = value,
            }
            let message = bad.validate().unwrap_err().to_string();
            assert!(message.starts_with(name), "{message}");
        }
    }

    #[test]
    fn validate_rejects_bad_wakeup_and_poll_interval() {
        for value in [0, 100, 3 << 20, 4 << 20] {
            let mut bad = args("8080", "lo");
            bad.ring_wakeup_bytes = value;
            assert!(
                matches!(bad.validate(), Err(ConfigError::RingWakeupBytes { value: v, .. }) if v == value),
                "{value}"
            );
        }
        let mut ok = args("8080", "lo");
        ok.ring_wakeup_bytes = 2 << 20;
        assert_eq!(ok.validate().unwrap().ring_wakeup_bytes, 2 << 20);
        for value in [0, 60_001] {
            let mut bad = args("8080", "lo");
            bad.ring_poll_interval_ms = value;
            assert!(matches!(
                bad.validate(),
                Err(ConfigError::RingPollInterval { .. })
            ));
        }
    }

    /// Every URL of the shared table that the rule accepts is one the HTTP client takes as it is,
    /// with the same host and port; every other one is refused with the table's reason.
    #[test]
    fn output_urls_follow_the_shared_table_and_suit_the_http_client() {
        for (url, expected) in url_cases() {
            match (validate_url(url), expected) {
                (Ok(_), None) => {
                    let parts = parse_http_url(url).unwrap();
                    let uri: ureq::http::Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
                    let scheme = uri.scheme_str().unwrap().to_ascii_lowercase();
                    assert!(scheme == "http" || scheme == "https", "{url}");
                    let host = uri.host().unwrap();
                    assert_eq!(
                        host.trim_start_matches('[').trim_end_matches(']'),
                        parts.host,
                        "{url}"
                    );
                    assert_eq!(uri.port_u16(), parts.port, "{url}");
                }
                (Err(ConfigError::OutputUrl { value, problem }), Some(reason)) => {
                    assert_eq!((value.as_str(), problem), (url, reason));
                }
                (got, want) => panic!("{url:?}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn delivery_settings() {
        let mut with_url = args("8080", "lo");
        with_url.output_url = Some("https://collector:9000/".into());
        with_url.output_url_auth_token = Some("s3cret".into());
        let delivery = with_url.validate().unwrap().output.expect("delivery");
        assert_eq!(
            delivery.headers,
            [("Authorization".to_owned(), "Bearer s3cret".to_owned())]
        );
        assert_eq!(delivery.batch_max_records, 1000);
        assert_eq!(delivery.batch_max_wait, Duration::from_secs(1));
        assert!(!delivery.gzip);

        let mut small_buffer = with_url.clone();
        small_buffer.buffer_max_records = 10;
        assert!(matches!(
            small_buffer.validate(),
            Err(ConfigError::OutOfRange {
                name: "BUFFER_MAX_RECORDS",
                value: 10,
                min: 1000,
                ..
            })
        ));
        let mut zero_batch = with_url.clone();
        zero_batch.batch_max_records = 0;
        assert!(matches!(
            zero_batch.validate(),
            Err(ConfigError::OutOfRange {
                name: "BATCH_MAX_RECORDS",
                ..
            })
        ));
        assert!(args("8080", "lo").validate().unwrap().output.is_none());
    }

    fn with_token(url: &str, token: &str) -> Args {
        let mut args = args("8080", "lo");
        args.output_url = Some(url.into());
        args.output_url_auth_token = Some(token.into());
        args
    }

    #[test]
    fn one_trailing_newline_is_trimmed_with_a_warning() {
        for (raw, expected, warned) in [
            ("s3cret", "s3cret", false),
            ("s3cret\n", "s3cret", true),
            ("s3cret\r\n", "s3cret", true),
            ("s3 cret ", "s3 cret ", false),
        ] {
            let config = with_token("https://collector/", raw).validate().unwrap();
            assert_eq!(
                config.output.unwrap().headers,
                [("Authorization".to_owned(), format!("Bearer {expected}"))],
                "{raw:?}"
            );
            assert_eq!(
                config.warnings.contains(&Warning::TokenNewlineTrimmed),
                warned,
                "{raw:?}"
            );
        }
        let empty = with_token("https://collector/", "\n").validate().unwrap();
        assert!(empty.output.unwrap().headers.is_empty());
        assert!(empty.warnings.contains(&Warning::EmptyToken));
    }

    #[test]
    fn other_control_characters_are_refused_without_showing_the_token() {
        for (raw, byte, position) in [
            ("s3cret\n\n", 0x0a, 6),
            ("s3\ncret", 0x0a, 2),
            ("s3cret\r", 0x0d, 6),
            ("\ts3cret", 0x09, 0),
            ("s3cr\u{7f}et", 0x7f, 4),
            ("s3cret\0", 0x00, 6),
        ] {
            let err = with_token("https://collector/", raw)
                .validate()
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::TokenCharacter { byte: b, position: p } if (b, p) == (byte, position)),
                "{raw:?}: {err:?}"
            );
            assert!(!err.to_string().contains("s3"), "{err}");
        }
    }

    #[test]
    fn a_token_over_plain_http_needs_the_opt_in() {
        let err = with_token("http://collector/", "s3cret")
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::PlaintextCredential(Credential::Token)
        ));
        assert!(!err.to_string().contains("s3cret"));
        let mut allowed = with_token("HTTP://collector/", "s3cret");
        allowed.output_allow_plaintext_token = true;
        let config = allowed.validate().unwrap();
        assert_eq!(
            config.warnings,
            [Warning::PlaintextCredential(Credential::Token)]
        );
        // No token, nothing to protect.
        let mut no_token = args("8080", "lo");
        no_token.output_url = Some("http://collector/".into());
        assert!(no_token.validate().unwrap().warnings.is_empty());
    }

    #[test]
    fn credential_headers_follow_the_token_s_rule() {
        let mut clickhouse = args("8080", "lo");
        clickhouse.output_url = Some("http://ch:8123/".into());
        clickhouse.output_headers =
            Some("X-ClickHouse-User=sniffer,X-ClickHouse-Key=s3cret".into());
        let err = clickhouse.validate().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::PlaintextCredential(Credential::Header { position: 2 })
        ));
        assert!(
            err.to_string().starts_with("OUTPUT_HEADERS entry 2 (its name says it carries a credential) would be sent in plaintext"),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cret"));
        clickhouse.output_allow_plaintext_token = true;
        assert_eq!(
            clickhouse.validate().unwrap().warnings,
            [Warning::PlaintextCredential(Credential::Header {
                position: 2
            })]
        );
        clickhouse.output_url = Some("https://ch:8443/".into());
        clickhouse.output_allow_plaintext_token = false;
        assert!(clickhouse.validate().unwrap().warnings.is_empty());
        // A header that is no credential goes over http:// as it always did.
        let mut loki = args("8080", "lo");
        loki.output_url = Some("http://loki:3100/loki/api/v1/push".into());
        loki.output_headers = Some("X-Scope-OrgID=tenant-1".into());
        assert!(loki.validate().unwrap().warnings.is_empty());
    }

    #[test]
    fn output_concurrency_is_1_to_64() {
        for (value, ok) in [
            (0, false),
            (1, true),
            (64, true),
            (65, false),
            (100_000, false),
        ] {
            let mut args = args("8080", "lo");
            args.output_url = Some("http://collector/".into());
            args.output_concurrency = value;
            match args.validate() {
                Ok(config) => assert!(ok && config.output.unwrap().concurrency == value),
                Err(ConfigError::OutOfRange {
                    name,
                    min: 1,
                    max: 64,
                    ..
                }) => {
                    assert!(!ok && name == "OUTPUT_CONCURRENCY");
                }
                Err(other) => panic!("{value}: {other}"),
            }
        }
    }

    #[test]
    fn formats_and_encodings() {
        for (format, encoding, expected) in [
            ("batch", "protobuf", Format::Batch),
            ("ndjson", "protobuf", Format::Ndjson),
            ("otlp", "protobuf", Format::OtlpProtobuf),
            ("otlp", "json", Format::OtlpJson),
            ("loki", "json", Format::Loki),
        ] {
            let mut args = args("8080", "lo");
            args.output_url = Some("https://collector/".into());
            args.output_format = format.into();
            args.otlp_encoding = encoding.into();
            assert_eq!(args.validate().unwrap().output.unwrap().format, expected);
        }
        let mut bad = args("8080", "lo");
        bad.output_url = Some("https://collector/".into());
        bad.output_format = "json".into();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "OUTPUT_FORMAT \"json\" is not one of batch, ndjson, otlp, loki"
        );
        bad.output_format = "otlp".into();
        bad.otlp_encoding = "grpc".into();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "OTLP_ENCODING \"grpc\" is not one of protobuf, json"
        );
        let mut stdout = args("8080", "lo");
        stdout.output_format = "otlp".into();
        assert!(matches!(
            stdout.validate(),
            Err(ConfigError::FormatWithoutUrl(f)) if f == "otlp"
        ));
    }

    #[test]
    fn token_header_scheme_and_extra_headers() {
        let mut args = with_token("https://ch:8123/?query=INSERT", "k3y");
        args.output_auth_header = "X-ClickHouse-Key".into();
        args.output_auth_scheme = String::new();
        args.output_headers = Some("X-ClickHouse-User=sniffer".into());
        assert_eq!(
            args.validate().unwrap().output.unwrap().headers,
            [
                ("X-ClickHouse-Key".to_owned(), "k3y".to_owned()),
                ("X-ClickHouse-User".to_owned(), "sniffer".to_owned())
            ]
        );
        args.output_headers = Some("x-clickhouse-key=other".into());
        assert!(matches!(
            args.validate(),
            Err(ConfigError::Header(HeaderError::Duplicate { .. }))
        ));
        // Headers without a token are sent too.
        let mut no_token = self::args("8080", "lo");
        no_token.output_url = Some("http://loki:3100/loki/api/v1/push".into());
        no_token.output_headers = Some("X-Scope-OrgID=tenant-1".into());
        assert_eq!(
            no_token.validate().unwrap().output.unwrap().headers.len(),
            1
        );
    }

    #[test]
    fn gzip_flag_accepts_boolish_values() {
        for (value, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("false", false),
            ("0", false),
            ("off", false),
        ] {
            let parsed =
                Args::try_parse_from(["sniffer", "--ports", "80", "--output-gzip", value]).unwrap();
            assert_eq!(parsed.output_gzip, expected, "{value}");
        }
        assert!(
            Args::try_parse_from(["sniffer", "--ports", "80", "--output-gzip", "maybe"]).is_err()
        );
    }
}
