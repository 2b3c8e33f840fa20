//! The names of the environment variables the sniffer reads: its command line reads each with
//! this name, and the injector writes the container's `env` with these names, so a variable is
//! spelled once. What each means and takes is in the sniffer's `--help` and the table in
//! `docs/specs/DEPLOYMENT_OPS.md`.

// What to capture.
/// TCP ports to capture ([`crate::ports`]).
pub const PORTS: &str = "PORTS";
/// The pod's annotations file, for live ports.
pub const PORTS_FILE: &str = "PORTS_FILE";
/// The interface to capture on.
pub const INTERFACE: &str = "INTERFACE";
/// What to send: one of [`crate::RECORDS`].
pub const RECORDS: &str = "RECORDS";

// Where records go.
/// The collector's URL ([`crate::url`]); unset: NDJSON on stdout.
pub const OUTPUT_URL: &str = "OUTPUT_URL";
/// The token sent to the collector.
pub const OUTPUT_URL_AUTH_TOKEN: &str = "OUTPUT_URL_AUTH_TOKEN";
/// The header that carries the token.
pub const OUTPUT_AUTH_HEADER: &str = "OUTPUT_AUTH_HEADER";
/// The word before the token in its header.
pub const OUTPUT_AUTH_SCHEME: &str = "OUTPUT_AUTH_SCHEME";
/// More request headers ([`crate::headers`]).
pub const OUTPUT_HEADERS: &str = "OUTPUT_HEADERS";
/// Allows a credential over `http://` ([`crate::headers::plaintext_credentials`]).
pub const OUTPUT_ALLOW_PLAINTEXT_TOKEN: &str = "OUTPUT_ALLOW_PLAINTEXT_TOKEN";
/// The body format: one of [`crate::OUTPUT_FORMATS`].
pub const OUTPUT_FORMAT: &str = "OUTPUT_FORMAT";
/// OTLP's encoding: one of [`crate::OTLP_ENCODINGS`].
pub const OTLP_ENCODING: &str = "OTLP_ENCODING";
/// Gzip request bodies.
pub const OUTPUT_GZIP: &str = "OUTPUT_GZIP";
/// Delivery requests in flight at once.
pub const OUTPUT_CONCURRENCY: &str = "OUTPUT_CONCURRENCY";
/// Connect timeout towards the collector.
pub const OUTPUT_CONNECT_TIMEOUT_MS: &str = "OUTPUT_CONNECT_TIMEOUT_MS";
/// Timeout of one delivery request.
pub const OUTPUT_TIMEOUT_MS: &str = "OUTPUT_TIMEOUT_MS";
/// CA certificates for an https collector.
pub const OUTPUT_CA_FILE: &str = "OUTPUT_CA_FILE";
/// Records per batch.
pub const BATCH_MAX_RECORDS: &str = "BATCH_MAX_RECORDS";
/// Age of a batch's oldest record when it is sent.
pub const BATCH_MAX_WAIT_MS: &str = "BATCH_MAX_WAIT_MS";
/// Records that may wait for delivery.
pub const BUFFER_MAX_RECORDS: &str = "BUFFER_MAX_RECORDS";
/// First retry delay.
pub const RETRY_INITIAL_MS: &str = "RETRY_INITIAL_MS";
/// Longest retry delay.
pub const RETRY_MAX_MS: &str = "RETRY_MAX_MS";
/// How long queued batches may still be delivered after SIGTERM.
pub const SHUTDOWN_GRACE_MS: &str = "SHUTDOWN_GRACE_MS";

// Connection records.
/// Connections tracked at once.
pub const CONNECTION_MAX: &str = "CONNECTION_MAX";
/// Idle time after which a connection is reported as timed out.
pub const CONNECTION_IDLE_TIMEOUT_MS: &str = "CONNECTION_IDLE_TIMEOUT_MS";
/// How often open connections are reported.
pub const CONNECTION_REPORT_INTERVAL_MS: &str = "CONNECTION_REPORT_INTERVAL_MS";

// The kernel ring.
/// The ring buffer's size.
pub const RING_BUFFER_BYTES: &str = "RING_BUFFER_BYTES";
/// Unread ring bytes that wake the reader.
pub const RING_WAKEUP_BYTES: &str = "RING_WAKEUP_BYTES";
/// How often the reader reads a ring holding less than a wake-up's worth.
pub const RING_POLL_INTERVAL_MS: &str = "RING_POLL_INTERVAL_MS";

// Operating it.
/// The metrics endpoint's address.
pub const METRICS_ADDR: &str = "METRICS_ADDR";
/// Seconds between `stats` log lines.
pub const STATS_INTERVAL_SECS: &str = "STATS_INTERVAL_SECS";
/// The pod's name (downward API).
pub const POD_NAME: &str = "POD_NAME";
/// The pod's namespace (downward API).
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// The node's name (downward API).
pub const NODE_NAME: &str = "NODE_NAME";

// Packet captures.
/// The capture endpoint's address, or `off`.
pub const CAPTURE_LISTEN: &str = "CAPTURE_LISTEN";
/// Allows a capture endpoint beyond loopback.
pub const CAPTURE_ALLOW_REMOTE: &str = "CAPTURE_ALLOW_REMOTE";
/// The longest capture.
pub const CAPTURE_MAX_SECONDS: &str = "CAPTURE_MAX_SECONDS";
/// The most bytes of a packet a capture may ask for.
pub const CAPTURE_MAX_SNAPLEN: &str = "CAPTURE_MAX_SNAPLEN";
/// Captures at once.
pub const CAPTURE_MAX_CONCURRENT: &str = "CAPTURE_MAX_CONCURRENT";
/// The flight recorder's size (at most [`crate::MAX_RECORDER_BYTES`]).
pub const CAPTURE_RECORDER_BYTES: &str = "CAPTURE_RECORDER_BYTES";

/// Every variable above: the sniffer's tests check that it reads exactly these, the injector's
/// that it writes no other.
pub const ALL: [&str; 40] = [
    PORTS,
    PORTS_FILE,
    INTERFACE,
    RECORDS,
    OUTPUT_URL,
    OUTPUT_URL_AUTH_TOKEN,
    OUTPUT_AUTH_HEADER,
    OUTPUT_AUTH_SCHEME,
    OUTPUT_HEADERS,
    OUTPUT_ALLOW_PLAINTEXT_TOKEN,
    OUTPUT_FORMAT,
    OTLP_ENCODING,
    OUTPUT_GZIP,
    OUTPUT_CONCURRENCY,
    OUTPUT_CONNECT_TIMEOUT_MS,
    OUTPUT_TIMEOUT_MS,
    OUTPUT_CA_FILE,
    BATCH_MAX_RECORDS,
    BATCH_MAX_WAIT_MS,
    BUFFER_MAX_RECORDS,
    RETRY_INITIAL_MS,
    RETRY_MAX_MS,
    SHUTDOWN_GRACE_MS,
    CONNECTION_MAX,
    CONNECTION_IDLE_TIMEOUT_MS,
    CONNECTION_REPORT_INTERVAL_MS,
    RING_BUFFER_BYTES,
    RING_WAKEUP_BYTES,
    RING_POLL_INTERVAL_MS,
    METRICS_ADDR,
    STATS_INTERVAL_SECS,
    POD_NAME,
    POD_NAMESPACE,
    NODE_NAME,
    CAPTURE_LISTEN,
    CAPTURE_ALLOW_REMOTE,
    CAPTURE_MAX_SECONDS,
    CAPTURE_MAX_SNAPLEN,
    CAPTURE_MAX_CONCURRENT,
    CAPTURE_RECORDER_BYTES,
];
