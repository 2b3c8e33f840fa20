//! Encode: records become bytes. [`packet`] writes one packet record's JSON (a line on stdout,
//! an element of every JSON body). An [`Encoder`] turns a batch of records ([`BodyRecords`]: what
//! the batcher closed) into a request body in
//! the configured [`Format`] — [`batch`], [`ndjson`], [`otlp`] (protobuf or JSON, with
//! [`proto`]) or [`loki`]; [`connection`] writes connection records in each; each sender thread
//! has its own encoder.

pub mod batch;
pub mod connection;
pub mod loki;
pub mod ndjson;
pub mod otlp;
pub mod packet;
pub mod proto;
mod text;

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

/// What a body carries.
#[derive(Clone, Copy)]
enum Items<'a> {
    Packets(&'a [Record]),
    Connections(&'a [ConnectionRecord]),
}

impl Items<'_> {
    const fn len(self) -> usize {
        match self {
            Self::Packets(records) => records.len(),
            Self::Connections(records) => records.len(),
        }
    }
}

/// The records of a closed batch, on their way to a sender thread to become one body.
#[derive(Debug)]
pub enum BodyRecords {
    /// Packet records.
    Packets(Vec<Record>),
    /// Connection records.
    Connections(Vec<ConnectionRecord>),
}

impl BodyRecords {
    /// Records in it.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Packets(records) => records.len(),
            Self::Connections(records) => records.len(),
        }
    }

    /// Whether it holds no record (the last batch reporting losses only).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Whether bodies are gzip-compressed (`Content-Encoding: gzip`).
    #[must_use]
    pub const fn gzip(&self) -> bool {
        self.gzip
    }

    /// The body of batch `seq`, which carries `records` and, in the `batch` format, reports
    /// `dropped` losses.
    ///
    /// # Errors
    ///
    /// Only if compression fails, which in-memory compression does not.
    pub fn body(&mut self, seq: u64, dropped: u64, records: &[Record]) -> io::Result<Body> {
        self.encode(seq, dropped, Items::Packets(records))
    }

    /// Like [`Encoder::body`], for a batch of connection records.
    ///
    /// # Errors
    ///
    /// As [`Encoder::body`].
    pub fn connection_body(
        &mut self,
        seq: u64,
        dropped: u64,
        records: &[ConnectionRecord],
    ) -> io::Result<Body> {
        self.encode(seq, dropped, Items::Connections(records))
    }

    fn encode(&mut self, seq: u64, dropped: u64, items: Items<'_>) -> io::Result<Body> {
        let mut bytes = std::mem::take(&mut self.spare);
        bytes.clear();
        bytes.reserve(512 + items.len() * RECORD_BYTES);
        let mut start = 0;
        match &self.fixed {
            Fixed::Batch(agent) => {
                batch::start(&mut bytes, agent, seq, dropped);
                match items {
                    Items::Packets(records) => batch::write(&mut bytes, records, &mut self.times),
                    Items::Connections(records) => connection::batch(&mut bytes, records),
                }
                bytes.extend_from_slice(batch::END);
            }
            Fixed::Ndjson(line_end) => match items {
                Items::Packets(records) => {
                    ndjson::write(&mut bytes, records, line_end, &mut self.times);
                }
                Items::Connections(records) => connection::ndjson(&mut bytes, records, line_end),
            },
            Fixed::OtlpProtobuf(fixed) => {
                // Room for the header, written once the records' length is known.
                let room = fixed.0.len() + fixed.1.len() + otlp::PROTO_PREFIX_HEADERS;
                bytes.resize(room, 0);
                match items {
                    Items::Packets(records) => {
                        otlp::write_proto(&mut bytes, records, &mut self.scratch);
                    }
                    Items::Connections(records) => connection::otlp_proto(&mut bytes, records),
                }
                self.scratch.clear();
                otlp::proto_prefix(&mut self.scratch, fixed, bytes.len() - room);
                start = room - self.scratch.len();
                bytes[start..room].copy_from_slice(&self.scratch);
            }
            Fixed::OtlpJson(body_start) => {
                bytes.extend_from_slice(body_start);
                match items {
                    Items::Packets(records) => otlp::write_json(&mut bytes, records),
                    Items::Connections(records) => connection::otlp_json(&mut bytes, records),
                }
                bytes.extend_from_slice(otlp::JSON_END);
            }
            Fixed::Loki(body_start) => {
                bytes.extend_from_slice(body_start);
                match items {
                    Items::Packets(records) => loki::write(&mut bytes, records, &mut self.times),
                    Items::Connections(records) => connection::loki(&mut bytes, records),
                }
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

#[cfg(test)]
mod tests {
    use sidecar_contract::OUTPUT_FORMATS;

    use super::*;

    #[test]
    fn every_documented_format_parses_and_names_itself() {
        for name in OUTPUT_FORMATS {
            assert_eq!(name.parse::<Format>().unwrap().name(), name);
        }
        assert_eq!("otlp-json".parse::<Format>(), Err(UnknownFormat));
    }
}
