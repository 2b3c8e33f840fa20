//! Configuration: the command line (every setting is an environment variable and a flag) and
//! its validation into a [`Config`]. Each stage's settings and checks live with the stage and
//! are flattened in here: the ring ([`crate::capture::config`]), delivery
//! ([`crate::deliver::config`]), connection tracking ([`crate::pipeline::tracking`]) and
//! packet captures ([`crate::pcap::config`]).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use sidecar_contract::{
    echo::Echo,
    env,
    ports::{PortsError, parse_ports},
};
use thiserror::Error;

use cli_support::exit::{OutOfRange, in_range};

use crate::{
    capture::config::{RingArgs, RingConfig, RingConfigError, interface_index},
    connections::TrackerConfig,
    deliver::config::{Delivery, DeliveryArgs, DeliveryConfigError},
    pcap::config::{CaptureArgs, CaptureConfig, CaptureConfigError},
    pipeline::tracking::TrackerArgs,
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
    /// Where records go (`OUTPUT_*`, `BATCH_*`, `BUFFER_MAX_RECORDS`, `RETRY_*`).
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// After SIGTERM, how long queued batches may still be delivered (milliseconds).
    #[arg(long, env = env::SHUTDOWN_GRACE_MS, default_value_t = 20_000)]
    pub shutdown_grace_ms: u64,
    /// Address of the plain-HTTP metrics endpoint (`/metrics`, `/healthz`), e.g. `0.0.0.0:9090`.
    #[arg(long, env = env::METRICS_ADDR)]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between `stats` log lines; 0 turns them off.
    #[arg(long, env = env::STATS_INTERVAL_SECS, default_value_t = 60)]
    pub stats_interval_secs: u64,
    /// The kernel ring (`RING_*`).
    #[command(flatten)]
    pub ring: RingArgs,
    /// What to send: `packets` (a record per packet), `connections` (a record per connection),
    /// or `both`.
    #[arg(long, env = env::RECORDS, default_value = "packets")]
    pub records: String,
    /// Connection tracking (`CONNECTION_*`).
    #[command(flatten)]
    pub tracker: TrackerArgs,
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

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where records go: a collector or stdout, and what to warn about at start.
    pub delivery: Delivery,
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
    /// The ring's size and when its reader wakes.
    pub ring: RingConfig,
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
    /// `RECORDS` names nothing known.
    #[error("RECORDS {:?} is not one of packets, connections, both", Echo(.0))]
    Records(String),
    /// A number outside its range.
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    /// A `RING_*` value is invalid.
    #[error(transparent)]
    Ring(#[from] RingConfigError),
    /// A delivery setting is invalid.
    #[error(transparent)]
    Delivery(#[from] DeliveryConfigError),
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
        let delivery = self.delivery.validate()?;
        in_range("SHUTDOWN_GRACE_MS", self.shutdown_grace_ms, 0, 600_000)?;
        in_range("STATS_INTERVAL_SECS", self.stats_interval_secs, 0, 86_400)?;
        let records = match self.records.as_str() {
            "packets" => Records::Packets,
            "connections" => Records::Connections,
            "both" => Records::Both,
            other => return Err(ConfigError::Records(other.to_owned())),
        };
        let tracker = self.tracker.validate()?;
        let ring = self.ring.validate()?;
        let ifindex =
            interface_index(&self.interface).ok_or_else(|| ConfigError::UnknownInterface {
                name: self.interface.clone(),
            })?;
        Ok(Config {
            delivery,
            metrics_addr: self.metrics_addr,
            stats_interval: (self.stats_interval_secs > 0)
                .then(|| Duration::from_secs(self.stats_interval_secs)),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            ports,
            ports_file: self.ports_file.clone(),
            interface: self.interface.clone(),
            ifindex,
            ring,
            records,
            tracker,
            capture: self.capture.validate()?,
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

#[cfg(test)]
mod tests {
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
        assert_eq!(config.ring.bytes, sniffer_common::DEFAULT_RING_BYTES);
    }

    #[test]
    fn validate_rejects_unknown_interface_and_bad_ring() {
        let err = args("8080", "nosuchif0").validate().unwrap_err();
        assert!(matches!(err, ConfigError::UnknownInterface { ref name } if name == "nosuchif0"));
        let mut bad_ring = args("8080", "lo");
        bad_ring.ring.ring_buffer_bytes = 5000;
        assert!(matches!(
            bad_ring.validate(),
            Err(ConfigError::Ring(RingConfigError::BufferSize {
                value: 5000,
                ..
            }))
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
        never.tracker.connection_report_interval_ms = 0;
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
                0 => bad.tracker.connection_max = value,
                1 => bad.tracker.connection_idle_timeout_ms = value,
                _ => bad.tracker.connection_report_interval_ms = value,
            }
            let message = bad.validate().unwrap_err().to_string();
            assert!(message.starts_with(name), "{message}");
        }
    }

    #[test]
    fn validate_rejects_bad_wakeup_and_poll_interval() {
        for value in [0, 100, 3 << 20, 4 << 20] {
            let mut bad = args("8080", "lo");
            bad.ring.ring_wakeup_bytes = Some(value);
            assert!(
                matches!(bad.validate(), Err(ConfigError::Ring(RingConfigError::WakeupBytes { value: v, .. })) if v == value),
                "{value}"
            );
        }
        let mut ok = args("8080", "lo");
        ok.ring.ring_wakeup_bytes = Some(2 << 20);
        assert_eq!(ok.validate().unwrap().ring.wakeup_bytes, 2 << 20);
        // Unset: a sixteenth of the ring, however small the ring.
        let mut unset = args("8080", "lo");
        assert_eq!(unset.validate().unwrap().ring.wakeup_bytes, 256 << 10);
        unset.ring.ring_buffer_bytes = 4096;
        assert_eq!(unset.validate().unwrap().ring.wakeup_bytes, 256);
        for value in [0, 60_001] {
            let mut bad = args("8080", "lo");
            bad.ring.ring_poll_interval_ms = value;
            assert!(matches!(
                bad.validate(),
                Err(ConfigError::Ring(RingConfigError::PollInterval { .. }))
            ));
        }
    }
}
