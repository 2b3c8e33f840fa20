//! Encode: records become bytes. [`packet`] writes one packet record's JSON (a line on stdout,
//! an element of every JSON body); a connection record writes its own
//! ([`crate::connections::record`]). An [`Encoder`] turns a batch of [`Item`]s (what the batcher
//! closed: records of both kinds) into a request body in the configured [`Format`], one file
//! each, writing both kinds: [`batch`], [`ndjson`], [`otlp`] (protobuf or JSON, with [`proto`])
//! or [`loki`]; each sender thread has its own encoder.

pub mod batch;
mod digits;
pub mod loki;
pub mod ndjson;
pub mod otlp;
pub mod packet;
pub mod proto;
pub(crate) mod text;

use std::{
    fmt,
    io::{self, Write as _},
    str::FromStr,
    sync::Arc,
};

use cli_support::time::Rfc3339Writer;
use serde::Serialize;

use self::packet::Record;
use crate::connections::record::ConnectionRecord;

/// Who sent a batch; identical in every batch of one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// `POD_NAME`.
    pub pod: Option<String>,
    /// `POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `NODE_NAME`.
    pub node: Option<String>,
    /// Capture interface.
    pub interface: String,
    /// Sniffer version.
    pub version: &'static str,
    /// Random UUID chosen at process start; with `seq` it names a batch uniquely.
    pub instance: String,
}

impl AgentInfo {
    /// A fresh random instance id (UUID version 4) from the OS random source.
    ///
    /// # Errors
    ///
    /// When the OS random source fails.
    pub fn new_instance() -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes)?;
        Ok(uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string())
    }
}

/// What a request body looks like (`OUTPUT_FORMAT`, and `OTLP_ENCODING` for OTLP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"agent":…,"seq":…,"dropped":…,"records":[…]}`.
    Batch,
    /// One self-describing record per line.
    Ndjson,
    /// OTLP/HTTP logs, protobuf.
    OtlpProtobuf,
    /// OTLP/HTTP logs, JSON.
    OtlpJson,
    /// Grafana Loki's push API JSON.
    Loki,
}

impl Format {
    /// The `Content-Type` of its bodies.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Batch | Self::OtlpJson | Self::Loki => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::OtlpProtobuf => "application/x-protobuf",
        }
    }

    /// Whether the collector speaks OTLP/HTTP (its retry rules and partial success apply).
    #[must_use]
    pub const fn is_otlp(self) -> bool {
        matches!(self, Self::OtlpProtobuf | Self::OtlpJson)
    }

    /// The `OUTPUT_FORMAT` name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Ndjson => "ndjson",
            Self::OtlpProtobuf | Self::OtlpJson => "otlp",
            Self::Loki => "loki",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OtlpProtobuf => f.write_str("otlp (protobuf)"),
            Self::OtlpJson => f.write_str("otlp (json)"),
            other => f.write_str(other.name()),
        }
    }
}

/// An `OUTPUT_FORMAT` value that names no format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not one of batch, ndjson, otlp, loki")]
pub struct UnknownFormat;

impl FromStr for Format {
    type Err = UnknownFormat;

    /// `otlp` parses as protobuf; [`Format::OtlpJson`] is chosen by `OTLP_ENCODING=json`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "batch" => Ok(Self::Batch),
            "ndjson" => Ok(Self::Ndjson),
            "otlp" => Ok(Self::OtlpProtobuf),
            "loki" => Ok(Self::Loki),
            _ => Err(UnknownFormat),
        }
    }
}

/// Appends `value` as a JSON string, or `null`.
pub(crate) fn json_string_or_null(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        // Serializing a string into memory cannot fail.
        Some(value) => {
            let _ = serde_json::to_writer(&mut *out, value);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A request body: `bytes[start..]` (a protobuf body is written after room left for its header,
/// whose lengths are known only once the records are written).
#[derive(Debug)]
pub struct Body {
    bytes: Vec<u8>,
    start: usize,
}

impl Body {
    /// The bytes to send.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// What every body of one agent and format shares, computed once.
#[derive(Debug)]
enum Fixed {
    /// The agent as JSON.
    Batch(Vec<u8>),
    /// What closes every line.
    Ndjson(Vec<u8>),
    /// The encoded resource and scope fields.
    OtlpProtobuf((Vec<u8>, Vec<u8>)),
    /// The text before the first log record.
    OtlpJson(Vec<u8>),
    /// The text before the first value.
    Loki(Vec<u8>),
}

/// One record on its way out, of either kind: what a batch holds and a body carries. Packet
/// and connection records share batches, in the order they were taken; every format writes
/// both (a connection record's `type` tells it apart, or its OTLP `eventName`).
#[derive(Clone, Debug)]
pub enum Item {
    /// A packet record.
    Packet(Record),
    /// A connection record (boxed: few, and several times a packet record's size).
    Connection(Box<ConnectionRecord>),
}

impl From<Record> for Item {
    fn from(record: Record) -> Self {
        Self::Packet(record)
    }
}

impl From<ConnectionRecord> for Item {
    fn from(record: ConnectionRecord) -> Self {
        Self::Connection(Box::new(record))
    }
}

/// About how many bytes a record takes in a body, to size buffers.
const RECORD_BYTES: usize = 320;

/// The largest body memory an encoder keeps for the next body.
const MAX_SPARE_BYTES: usize = 8 << 20;

/// Turns batches of records into request bodies.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sniffer::encode::{AgentInfo, Encoder, Format};
///
/// let agent = AgentInfo {
///     pod: Some("web-7d9c".into()), namespace: Some("shop".into()), node: None,
///     interface: "eth0".into(), version: "0.1.0", instance: "6f1c2b9e".into(),
/// };
/// let mut encoder = Encoder::new(Format::Batch, Arc::new(agent), false);
/// let body = encoder.body(17, 2, &[]).unwrap();
/// let json: serde_json::Value = serde_json::from_slice(body.as_slice()).unwrap();
/// assert_eq!(json["seq"], 17);
/// assert_eq!(json["dropped"], 2);
/// assert_eq!(json["agent"]["pod"], "web-7d9c");
/// ```
#[derive(Debug)]
#[must_use]
pub struct Encoder {
    format: Format,
    fixed: Fixed,
    gzip: bool,
    /// The text of the last second written, reused by the next records.
    times: Rfc3339Writer,
    scratch: Vec<u8>,
    /// The memory of a body sent before (see [`Encoder::recycle`]).
    spare: Vec<u8>,
}

impl Encoder {
    /// Bodies in `format` from `agent`, gzip-compressed when `gzip`.
    pub fn new(format: Format, agent: Arc<AgentInfo>, gzip: bool) -> Self {
        let fixed = match format {
            Format::Batch => Fixed::Batch(serde_json::to_vec(&*agent).expect("strings serialize")),
            Format::Ndjson => Fixed::Ndjson(ndjson::line_end(&agent)),
            Format::OtlpProtobuf => Fixed::OtlpProtobuf(otlp::proto_fixed(&agent)),
            Format::OtlpJson => Fixed::OtlpJson(otlp::json_start(&agent)),
            Format::Loki => Fixed::Loki(loki::body_start(&agent)),
        };
        Self {
            format,
            fixed,
            gzip,
            times: Rfc3339Writer::default(),
            scratch: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Gives back the memory of a body that is no longer needed, for the next body: writing
    /// into memory still in the cache, rather than a fresh allocation of a few hundred
    /// kilobytes, made encoding a batch a fifth cheaper under a flood.
    pub fn recycle(&mut self, body: Body) {
        // A body made larger by an unusual batch is not kept.
        if body.bytes.capacity() <= MAX_SPARE_BYTES {
            self.spare = body.bytes;
        }
    }

    /// The format of the bodies.
    #[must_use]
    pub const fn format(&self) -> Format {
        self.format
    }

    /// The body of batch `seq`, which carries `records` and, in the `batch` format, reports
    /// `dropped` losses.
    ///
    /// # Errors
    ///
    /// Only if compression fails, which in-memory compression does not.
    pub fn body(&mut self, seq: u64, dropped: u64, records: &[Item]) -> io::Result<Body> {
        let mut bytes = std::mem::take(&mut self.spare);
        bytes.clear();
        bytes.reserve(512 + records.len() * RECORD_BYTES);
        let mut start = 0;
        match &self.fixed {
            Fixed::Batch(agent) => {
                batch::start(&mut bytes, agent, seq, dropped);
                batch::write(&mut bytes, records, &mut self.times);
                bytes.extend_from_slice(batch::END);
            }
            Fixed::Ndjson(line_end) => {
                ndjson::write(&mut bytes, records, line_end, &mut self.times);
            }
            Fixed::OtlpProtobuf(fixed) => {
                // Room for the header, written once the records' length is known.
                let room = fixed.0.len() + fixed.1.len() + otlp::PROTO_PREFIX_HEADERS;
                bytes.resize(room, 0);
                otlp::write_proto(&mut bytes, records, &mut self.scratch, &mut self.times);
                self.scratch.clear();
                otlp::proto_prefix(&mut self.scratch, fixed, bytes.len() - room);
                start = room - self.scratch.len();
                bytes[start..room].copy_from_slice(&self.scratch);
            }
            Fixed::OtlpJson(body_start) => {
                bytes.extend_from_slice(body_start);
                otlp::write_json(&mut bytes, records, &mut self.scratch, &mut self.times);
                bytes.extend_from_slice(otlp::JSON_END);
            }
            Fixed::Loki(body_start) => {
                bytes.extend_from_slice(body_start);
                loki::write(&mut bytes, records, &mut self.times);
                bytes.extend_from_slice(loki::BODY_END);
            }
        }
        if !self.gzip {
            return Ok(Body { bytes, start });
        }
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity((bytes.len() - start) / 8),
            flate2::Compression::fast(),
        );
        encoder.write_all(&bytes[start..])?;
        self.spare = bytes;
        Ok(Body {
            bytes: encoder.finish()?,
            start: 0,
        })
    }
}

/// An agent with a pod and a namespace but no node: what unit tests encode bodies for.
#[cfg(test)]
pub(crate) fn test_agent() -> AgentInfo {
    AgentInfo {
        pod: Some("web-7d9c".into()),
        namespace: Some("shop".into()),
        node: None,
        interface: "eth0".into(),
        version: "0.1.0",
        instance: "6f1c".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use sidecar_contract::OUTPUT_FORMATS;

    use super::*;
    use crate::{connections::record::test_connection, encode::packet::test_record};

    /// A packet record, a connection record and a packet record, in that order.
    fn mixed() -> Vec<Item> {
        vec![
            test_record(80).into(),
            test_connection(40_000).into(),
            test_record(443).into(),
        ]
    }

    fn body(format: Format) -> Vec<u8> {
        let mut encoder = Encoder::new(format, Arc::new(test_agent()), false);
        encoder.body(1, 0, &mixed()).unwrap().as_slice().to_vec()
    }

    /// What each record of a decoded body is: `80`/`443` for packet records (their destination
    /// port), `connection` for connection records.
    fn kinds(records: impl Iterator<Item = Value>) -> Vec<String> {
        records
            .map(|record| match record["type"].as_str() {
                Some(kind) => kind.to_owned(),
                None => record["dst_port"].to_string(),
            })
            .collect()
    }

    #[test]
    fn one_body_carries_both_kinds_in_order_in_every_json_format() {
        let order = ["80", "connection", "443"];
        let batch: Value = serde_json::from_slice(&body(Format::Batch)).unwrap();
        let records = batch["records"].as_array().unwrap().iter().cloned();
        assert_eq!(kinds(records), order);

        let ndjson = body(Format::Ndjson);
        let lines = ndjson.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let lines: Vec<Value> = lines.map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert!(lines.iter().all(|l| l["pod"] == "web-7d9c"), "{lines:?}");
        assert_eq!(kinds(lines.into_iter()), order);

        let loki: Value = serde_json::from_slice(&body(Format::Loki)).unwrap();
        let values = loki["streams"][0]["values"].as_array().unwrap();
        let lines = values
            .iter()
            .map(|v| serde_json::from_str(v[1].as_str().unwrap()).unwrap());
        assert_eq!(kinds(lines), order);

        let otlp: Value = serde_json::from_slice(&body(Format::OtlpJson)).unwrap();
        let events: Vec<&str> = otlp["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["eventName"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["tcp.packet", "tcp.connection", "tcp.packet"]);
    }

    #[test]
    fn a_protobuf_body_carries_both_kinds_in_order() {
        let bytes = body(Format::OtlpProtobuf);
        let at = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        // `eventName` (field 12, length-delimited) and its length, then the name.
        let (packets, connections) = (at(b"\x62\x0atcp.packet"), at(b"\x62\x0etcp.connection"));
        assert_eq!((packets.len(), connections.len()), (2, 1));
        assert!(packets[0] < connections[0] && connections[0] < packets[1]);
    }

    #[test]
    fn every_documented_format_parses_and_names_itself() {
        for name in OUTPUT_FORMATS {
            assert_eq!(name.parse::<Format>().unwrap().name(), name);
        }
        assert_eq!("otlp-json".parse::<Format>(), Err(UnknownFormat));
    }
}
