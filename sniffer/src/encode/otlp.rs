//! The `otlp` body: an OpenTelemetry `ExportLogsServiceRequest` (OTLP/HTTP `POST /v1/logs`), as
//! protobuf (`application/x-protobuf`) or as JSON (`application/json`, the OTLP JSON mapping:
//! lowerCamelCase names, 64-bit integers as decimal strings).
//!
//! One `ResourceLogs` per body, whose resource is the agent (`service.name`, `service.version`,
//! `service.instance.id`, `k8s.pod.name`, `k8s.namespace.name`, `k8s.node.name`,
//! `network.interface.name`), one `ScopeLogs` (`tcp-sniffer` and its version), and one
//! `LogRecord` per record: for a packet record `timeUnixNano` (capture time), `eventName`
//! `tcp.packet`, and the record as attributes named after the semantic conventions where one
//! exists ([`ATTRIBUTES`]); for a connection record its time, `eventName` `tcp.connection` and
//! its fields as attributes ([`connection_attribute`]); no body.

use std::{borrow::Cow, net::IpAddr, sync::LazyLock};

use cli_support::time::Rfc3339Writer;

use super::{
    AgentInfo, Item, json_string_or_null,
    packet::{Direction, Flags, Record},
    proto::{self, len_field_size, len_header},
    text::{Line, in_place},
};
use crate::connections::record::{ConnectionRecord, FIELD_COUNT, FIELD_NAMES, Field};

/// The attributes of a record's `LogRecord`, in order, with the record field each carries.
pub const ATTRIBUTES: [(&str, &str); 13] = [
    ("network.transport", "always \"tcp\""),
    ("network.type", "\"ipv4\" or \"ipv6\" (ip_version)"),
    (
        "network.io.direction",
        "\"receive\" (ingress) or \"transmit\" (egress)",
    ),
    ("source.address", "src_ip"),
    ("source.port", "src_port"),
    ("destination.address", "dst_ip"),
    ("destination.port", "dst_port"),
    ("tcp.flags", "flags, an array of strings"),
    ("tcp.seq", "seq"),
    ("tcp.ack", "ack"),
    ("tcp.window", "window"),
    ("tcp.payload_len", "payload_len"),
    ("tcp.len", "len"),
];

/// The `eventName` of a packet record.
pub const PACKET_EVENT: &str = "tcp.packet";

/// The resource attributes of `agent` that are known.
fn resource(agent: &AgentInfo) -> Vec<(&'static str, &str)> {
    let mut attributes = vec![
        ("service.name", "tcp-sniffer"),
        ("service.version", agent.version),
        ("service.instance.id", agent.instance.as_str()),
    ];
    for (key, value) in [
        ("k8s.pod.name", &agent.pod),
        ("k8s.namespace.name", &agent.namespace),
        ("k8s.node.name", &agent.node),
    ] {
        if let Some(value) = value.as_deref() {
            attributes.push((key, value));
        }
    }
    attributes.push(("network.interface.name", agent.interface.as_str()));
    attributes
}

/// JSON: the body's text before the first log record.
#[must_use]
pub fn json_start(agent: &AgentInfo) -> Vec<u8> {
    let mut start = b"{\"resourceLogs\":[{\"resource\":{\"attributes\":[".to_vec();
    for (i, (key, value)) in resource(agent).into_iter().enumerate() {
        if i > 0 {
            start.push(b',');
        }
        start.extend_from_slice(b"{\"key\":");
        json_string_or_null(&mut start, Some(key));
        start.extend_from_slice(b",\"value\":{\"stringValue\":");
        json_string_or_null(&mut start, Some(value));
        start.extend_from_slice(b"}}");
    }
    start.extend_from_slice(b"]},\"scopeLogs\":[{\"scope\":{\"name\":\"tcp-sniffer\",\"version\":");
    json_string_or_null(&mut start, Some(agent.version));
    start.extend_from_slice(b"},\"logRecords\":[");
    start
}

/// JSON: the body's text after the last log record.
pub const JSON_END: &[u8] = b"]}]}]}";

/// Longest JSON log record [`write_json`] writes (every flag, 10-digit numbers, two full-length
/// IPv6 addresses, a 19-digit time).
pub const MAX_JSON_RECORD_LEN: usize = 1_048;

fn direction(direction: Direction) -> &'static [u8] {
    match direction {
        Direction::Ingress => b"receive",
        Direction::Egress => b"transmit",
    }
}

fn network_type(ip: &IpAddr) -> &'static [u8] {
    match ip {
        IpAddr::V4(_) => b"ipv4",
        IpAddr::V6(_) => b"ipv6",
    }
}

/// The capture time as OTLP's unsigned nanoseconds (a time before 1970 cannot be captured).
fn time(record: &Record) -> u64 {
    u64::try_from(record.ts.unix_nanos()).unwrap_or(0)
}

/// JSON: appends the log records of `records`, comma-separated: a packet record's as
/// [`ATTRIBUTES`] say, a connection record's as [`connection_attribute`] says.
/// `text` is scratch space; `times` keeps the text of the last second written.
pub fn write_json(
    out: &mut Vec<u8>,
    records: &[Item],
    text: &mut Vec<u8>,
    times: &mut Rfc3339Writer,
) {
    for (i, item) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match item {
            Item::Packet(record) => packet_json(out, record),
            Item::Connection(record) => connection_json(out, record, text, times),
        }
    }
}

fn packet_json(out: &mut Vec<u8>, record: &Record) {
    let Record {
        ts: _,
        direction: dir,
        ip_version: _,
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        flags,
        seq,
        ack,
        window,
        payload_len,
        len,
    } = record;
    in_place(out, MAX_JSON_RECORD_LEN, |line| {
        line.put(b"{\"timeUnixNano\":\"");
        line.number64(time(record));
        line.put(b"\",\"eventName\":\"tcp.packet\",\"attributes\":[");
        line.put(b"{\"key\":\"network.transport\",\"value\":{\"stringValue\":\"tcp\"}},");
        line.put(b"{\"key\":\"network.type\",\"value\":{\"stringValue\":\"");
        line.put(network_type(src_ip));
        line.put(b"\"}},{\"key\":\"network.io.direction\",\"value\":{\"stringValue\":\"");
        line.put(direction(*dir));
        line.put(b"\"}},{\"key\":\"source.address\",\"value\":{\"stringValue\":\"");
        line.ip(src_ip);
        line.put(b"\"}},{\"key\":\"source.port\",\"value\":{\"intValue\":\"");
        line.number(u32::from(*src_port));
        line.put(b"\"}},{\"key\":\"destination.address\",\"value\":{\"stringValue\":\"");
        line.ip(dst_ip);
        line.put(b"\"}},{\"key\":\"destination.port\",\"value\":{\"intValue\":\"");
        line.number(u32::from(*dst_port));
        line.put(b"\"}},{\"key\":\"tcp.flags\",\"value\":{\"arrayValue\":{\"values\":[");
        for (i, name) in flags.names().enumerate() {
            if i > 0 {
                line.put(b",");
            }
            line.put(b"{\"stringValue\":\"");
            line.put(name.as_bytes());
            line.put(b"\"}");
        }
        line.put(b"]}}},{\"key\":\"tcp.seq\",\"value\":{\"intValue\":\"");
        line.number(*seq);
        line.put(b"\"}},{\"key\":\"tcp.ack\",\"value\":{\"intValue\":\"");
        line.number(*ack);
        line.put(b"\"}},{\"key\":\"tcp.window\",\"value\":{\"intValue\":\"");
        line.number(u32::from(*window));
        line.put(b"\"}},{\"key\":\"tcp.payload_len\",\"value\":{\"intValue\":\"");
        line.number(*payload_len);
        line.put(b"\"}},{\"key\":\"tcp.len\",\"value\":{\"intValue\":\"");
        line.number(*len);
        line.put(b"\"}}]}");
    });
}

/// Protobuf field numbers (opentelemetry-proto).
pub(super) mod field {
    pub const REQUEST_RESOURCE_LOGS: u32 = 1;
    pub const RESOURCE_LOGS_RESOURCE: u32 = 1;
    pub const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_LOGS_SCOPE: u32 = 1;
    pub const SCOPE_LOGS_LOG_RECORDS: u32 = 2;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    pub const LOG_TIME_UNIX_NANO: u32 = 1;
    pub const LOG_ATTRIBUTES: u32 = 6;
    pub const LOG_EVENT_NAME: u32 = 12;
    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
    pub const ANY_ARRAY: u32 = 5;
    pub const ARRAY_VALUES: u32 = 1;
}

pub(super) fn key_value(
    out: &mut Vec<u8>,
    field: u32,
    key: &str,
    value: impl FnOnce(&mut Vec<u8>),
) {
    proto::message(out, field, |out| {
        proto::string(out, field::KEY_VALUE_KEY, key);
        proto::message(out, field::KEY_VALUE_VALUE, value);
    });
}

/// A log record's attribute, written with lengths computed up front: every piece of one is
/// shorter than 128 bytes, so each length is one byte.
struct Attribute {
    key: &'static [u8],
}

impl Attribute {
    const fn new(key: &'static str) -> Self {
        Self {
            key: key.as_bytes(),
        }
    }

    /// Bytes of `attributes` field with an `AnyValue` of `any_len` bytes.
    const fn size(&self, any_len: usize) -> usize {
        2 + self.content(any_len)
    }

    /// Bytes of the `KeyValue` itself.
    const fn content(&self, any_len: usize) -> usize {
        2 + self.key.len() + 2 + any_len
    }

    /// Writes the `attributes` field up to the start of the value's content.
    #[inline(always)]
    fn head(&self, line: &mut Line<'_>, any_len: usize) {
        let key_value_len = self.content(any_len);
        debug_assert!(key_value_len < 128);
        line.put(&[
            (field::LOG_ATTRIBUTES << 3) as u8 | 2,
            key_value_len as u8,
            (field::KEY_VALUE_KEY << 3) as u8 | 2,
            self.key.len() as u8,
        ]);
        line.put(self.key);
        line.put(&[(field::KEY_VALUE_VALUE << 3) as u8 | 2, any_len as u8]);
    }

    /// A string attribute.
    #[inline(always)]
    fn string(&self, line: &mut Line<'_>, value: &[u8]) {
        self.head(line, 2 + value.len());
        line.put(&[(field::ANY_STRING << 3) as u8 | 2, value.len() as u8]);
        line.put(value);
    }

    const fn string_size(&self, value_len: usize) -> usize {
        self.size(2 + value_len)
    }

    /// An integer attribute.
    #[inline(always)]
    fn int(&self, line: &mut Line<'_>, value: u32) {
        self.head(line, 1 + proto::varint_len(u64::from(value)));
        line.byte((field::ANY_INT << 3) as u8);
        line.varint(u64::from(value));
    }

    const fn int_size(&self, value: u32) -> usize {
        self.size(1 + proto::varint_len(value as u64))
    }
}

const NETWORK_TRANSPORT: Attribute = Attribute::new("network.transport");
const NETWORK_TYPE: Attribute = Attribute::new("network.type");
const NETWORK_IO_DIRECTION: Attribute = Attribute::new("network.io.direction");
const SOURCE_ADDRESS: Attribute = Attribute::new("source.address");
const SOURCE_PORT: Attribute = Attribute::new("source.port");
const DESTINATION_ADDRESS: Attribute = Attribute::new("destination.address");
const DESTINATION_PORT: Attribute = Attribute::new("destination.port");
const TCP_FLAGS: Attribute = Attribute::new("tcp.flags");
const TCP_SEQ: Attribute = Attribute::new("tcp.seq");
const TCP_ACK: Attribute = Attribute::new("tcp.ack");
const TCP_WINDOW: Attribute = Attribute::new("tcp.window");
const TCP_PAYLOAD_LEN: Attribute = Attribute::new("tcp.payload_len");
const TCP_LEN: Attribute = Attribute::new("tcp.len");

/// `AnyValue { array_value: ArrayValue { values: [AnyValue { string_value: name }, …] } }` of
/// `flags`, and its length.
fn flags_array_len(flags: Flags) -> usize {
    let values: usize = flags.names().map(|name| 2 + 2 + name.len()).sum();
    2 + values
}

/// Protobuf: the encoded `Resource` and `InstrumentationScope` fields of a body (they do not
/// change between bodies).
#[must_use]
pub fn proto_fixed(agent: &AgentInfo) -> (Vec<u8>, Vec<u8>) {
    let mut resource_field = Vec::new();
    proto::message(&mut resource_field, field::RESOURCE_LOGS_RESOURCE, |out| {
        for (key, value) in resource(agent) {
            key_value(out, field::RESOURCE_ATTRIBUTES, key, |out| {
                proto::string(out, field::ANY_STRING, value);
            });
        }
    });
    let mut scope_field = Vec::new();
    proto::message(&mut scope_field, field::SCOPE_LOGS_SCOPE, |out| {
        proto::string(out, field::SCOPE_NAME, "tcp-sniffer");
        proto::string(out, field::SCOPE_VERSION, agent.version);
    });
    (resource_field, scope_field)
}

/// Protobuf: the longest prefix [`proto_prefix`] writes beyond the two fixed fields.
pub const PROTO_PREFIX_HEADERS: usize = 2 * (1 + 10);

/// Protobuf: writes the body's bytes before the log records — the request's `ResourceLogs`
/// header, the resource, the `ScopeLogs` header and the scope — for `records_len` bytes of log
/// record fields.
pub fn proto_prefix(out: &mut Vec<u8>, fixed: &(Vec<u8>, Vec<u8>), records_len: usize) {
    let (resource_field, scope_field) = fixed;
    let scope_logs_len = scope_field.len() + records_len;
    let resource_logs_len =
        resource_field.len() + len_field_size(field::RESOURCE_LOGS_SCOPE_LOGS, scope_logs_len);
    len_header(out, field::REQUEST_RESOURCE_LOGS, resource_logs_len);
    out.extend_from_slice(resource_field);
    len_header(out, field::RESOURCE_LOGS_SCOPE_LOGS, scope_logs_len);
    out.extend_from_slice(scope_field);
}

/// Protobuf: appends the `log_records` fields of `records` (of both kinds, as [`write_json`]);
/// `text` is scratch space; `times` keeps the text of the last second written.
///
/// Lengths are computed before each piece is written rather than patched in afterwards: moving
/// bytes to make room for a length cost as much as writing the record.
pub fn write_proto(
    out: &mut Vec<u8>,
    records: &[Item],
    text: &mut Vec<u8>,
    times: &mut Rfc3339Writer,
) {
    for item in records {
        match item {
            Item::Packet(record) => packet_proto(out, record, text),
            Item::Connection(record) => connection_proto(out, record, text, times),
        }
    }
}

fn packet_proto(out: &mut Vec<u8>, record: &Record, text: &mut Vec<u8>) {
    let Record {
        ts: _,
        direction: dir,
        ip_version: _,
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        flags,
        seq,
        ack,
        window,
        payload_len,
        len,
    } = record;
    text.clear();
    in_place(text, 39, |line| line.ip(src_ip));
    let source_len = text.len();
    in_place(text, 39, |line| line.ip(dst_ip));
    let (source, destination) = text.split_at(source_len);
    let network_type = network_type(src_ip);
    let direction = direction(*dir);
    let flags_len = flags_array_len(*flags);
    let record_len = 9
        + 2
        + PACKET_EVENT.len()
        + NETWORK_TRANSPORT.string_size(3)
        + NETWORK_TYPE.string_size(network_type.len())
        + NETWORK_IO_DIRECTION.string_size(direction.len())
        + SOURCE_ADDRESS.string_size(source.len())
        + SOURCE_PORT.int_size(u32::from(*src_port))
        + DESTINATION_ADDRESS.string_size(destination.len())
        + DESTINATION_PORT.int_size(u32::from(*dst_port))
        + TCP_FLAGS.size(flags_len)
        + TCP_SEQ.int_size(*seq)
        + TCP_ACK.int_size(*ack)
        + TCP_WINDOW.int_size(u32::from(*window))
        + TCP_PAYLOAD_LEN.int_size(*payload_len)
        + TCP_LEN.int_size(*len);
    len_header(out, field::SCOPE_LOGS_LOG_RECORDS, record_len);
    let start = out.len();
    in_place(out, record_len, |line| {
        line.byte((field::LOG_TIME_UNIX_NANO << 3) as u8 | 1);
        line.put(&time(record).to_le_bytes());
        line.put(&[
            (field::LOG_EVENT_NAME << 3) as u8 | 2,
            PACKET_EVENT.len() as u8,
        ]);
        line.put(PACKET_EVENT.as_bytes());
        NETWORK_TRANSPORT.string(line, b"tcp");
        NETWORK_TYPE.string(line, network_type);
        NETWORK_IO_DIRECTION.string(line, direction);
        SOURCE_ADDRESS.string(line, source);
        SOURCE_PORT.int(line, u32::from(*src_port));
        DESTINATION_ADDRESS.string(line, destination);
        DESTINATION_PORT.int(line, u32::from(*dst_port));
        TCP_FLAGS.head(line, flags_len);
        line.put(&[(field::ANY_ARRAY << 3) as u8 | 2, (flags_len - 2) as u8]);
        for name in flags.names() {
            line.put(&[
                (field::ARRAY_VALUES << 3) as u8 | 2,
                (2 + name.len()) as u8,
                (field::ANY_STRING << 3) as u8 | 2,
                name.len() as u8,
            ]);
            line.put(name.as_bytes());
        }
        TCP_SEQ.int(line, *seq);
        TCP_ACK.int(line, *ack);
        TCP_WINDOW.int(line, u32::from(*window));
        TCP_PAYLOAD_LEN.int(line, *payload_len);
        TCP_LEN.int(line, *len);
    });
    debug_assert_eq!(out.len() - start, record_len);
}

/// The `eventName` of a connection record's `LogRecord`.
pub const CONNECTION_EVENT: &str = "tcp.connection";

/// A connection record's time as OTLP's unsigned nanoseconds.
fn connection_time(record: &ConnectionRecord) -> u64 {
    u64::try_from(record.ts.unix_nanos()).unwrap_or(0)
}

/// The OTLP attribute name of a connection record field, or `None` for the fields the
/// `LogRecord` carries otherwise (`type` is the event name, `ts` the time): the semantic
/// conventions' `client.*`, `server.*` and `network.type` where they apply, `tcp.connection.*`
/// for the rest: Zeek's verdict as `tcp.connection.state` and `tcp.connection.history`, the
/// round trips per side as `tcp.connection.<side>.ack_rtt.{samples,min,mean,max}` (nanoseconds),
/// every other field under its own name.
///
/// # Examples
///
/// ```
/// use sniffer::encode::otlp::connection_attribute;
///
/// assert_eq!(connection_attribute("client_ip").as_deref(), Some("client.address"));
/// assert_eq!(connection_attribute("server_retransmits").as_deref(),
///            Some("tcp.connection.server_retransmits"));
/// assert_eq!(connection_attribute("client_ack_rtt_mean_ns").as_deref(),
///            Some("tcp.connection.client.ack_rtt.mean"));
/// assert_eq!(connection_attribute("conn_state").as_deref(), Some("tcp.connection.state"));
/// assert_eq!(connection_attribute("ts"), None);
/// ```
#[must_use]
pub fn connection_attribute(name: &str) -> Option<Cow<'static, str>> {
    Some(match name {
        "type" | "ts" => return None,
        "client_ip" => Cow::Borrowed("client.address"),
        "client_port" => Cow::Borrowed("client.port"),
        "server_ip" => Cow::Borrowed("server.address"),
        "server_port" => Cow::Borrowed("server.port"),
        "ip_version" => Cow::Borrowed("network.type"),
        "conn_state" => Cow::Borrowed("tcp.connection.state"),
        other => Cow::Owned(match rtt_attribute(other) {
            Some((side, statistic)) => format!("tcp.connection.{side}.ack_rtt.{statistic}"),
            None => format!("tcp.connection.{other}"),
        }),
    })
}

/// `("client", "mean")` for `client_ack_rtt_mean_ns`, and so on; `None` for other fields.
fn rtt_attribute(name: &str) -> Option<(&str, &str)> {
    let (side, rest) = name.split_once("_ack_rtt_")?;
    let statistic = rest.strip_suffix("_ns").unwrap_or(rest);
    matches!(side, "client" | "server").then_some((side, statistic))
}

/// A connection record field's attribute value.
#[derive(Clone, Copy)]
enum AnyValue<'a> {
    Bool(bool),
    /// At most `i64::MAX`: OTLP's integers are `int64`.
    Int(u64),
    Text(&'a [u8]),
}

/// The attribute names of a connection record's fields, in [`FIELD_NAMES`]' order (`None` for
/// the fields the `LogRecord` carries otherwise).
static CONNECTION_ATTRIBUTES: LazyLock<[Option<Cow<'static, str>>; FIELD_COUNT]> =
    LazyLock::new(|| FIELD_NAMES.map(connection_attribute));

/// Calls `attribute` with each attribute of a connection record, in order: `network.transport`
/// `tcp` first, then its fields as [`connection_attribute`] names them, `null`s left out,
/// `ip_version` as `ipv4`/`ipv6`. `text` is scratch space for the values written as text.
fn connection_attributes(
    record: &ConnectionRecord,
    text: &mut Vec<u8>,
    times: &mut Rfc3339Writer,
    mut attribute: impl FnMut(&'static str, AnyValue<'_>),
) {
    attribute("network.transport", AnyValue::Text(b"tcp"));
    let fields = FIELD_NAMES.iter().zip(record.fields());
    for ((name, value), key) in fields.zip(CONNECTION_ATTRIBUTES.iter()) {
        let Some(key) = key else {
            continue;
        };
        text.clear();
        let value = match value {
            Field::Null => continue,
            Field::Number(version) if *name == "ip_version" => {
                AnyValue::Text(if version == 6 { b"ipv6" } else { b"ipv4" })
            }
            Field::Bool(b) => AnyValue::Bool(b),
            Field::Number(n) => AnyValue::Int(n.min(i64::MAX as u64)),
            Field::Word(word) => AnyValue::Text(word.as_bytes()),
            Field::History(history) => {
                text.extend_from_slice(history.as_str().as_bytes());
                AnyValue::Text(text)
            }
            Field::Time(ts) => {
                text.extend_from_slice(&times.write(ts));
                AnyValue::Text(text)
            }
            Field::Ip(ip) => {
                // Room for the longest address and the byte `Line::ip` may write past it.
                in_place(text, 46, |line| line.ip(&ip));
                AnyValue::Text(text)
            }
        };
        attribute(key, value);
    }
}

/// JSON: one connection record's log record. Attribute names and values hold nothing JSON
/// escapes (fixed names, numbers, addresses, times, Zeek's letters).
fn connection_json(
    out: &mut Vec<u8>,
    record: &ConnectionRecord,
    text: &mut Vec<u8>,
    times: &mut Rfc3339Writer,
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"{\"timeUnixNano\":\"");
    out.extend_from_slice(number.format(connection_time(record)).as_bytes());
    out.extend_from_slice(b"\",\"eventName\":\"");
    out.extend_from_slice(CONNECTION_EVENT.as_bytes());
    out.extend_from_slice(b"\",\"attributes\":[");
    let mut first = true;
    connection_attributes(record, text, times, |key, value| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"key\":\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\",\"value\":{");
        match value {
            AnyValue::Bool(b) => {
                out.extend_from_slice(if b {
                    b"\"boolValue\":true"
                } else {
                    b"\"boolValue\":false"
                });
            }
            // The OTLP JSON mapping writes 64-bit integers as strings.
            AnyValue::Int(n) => {
                out.extend_from_slice(b"\"intValue\":\"");
                out.extend_from_slice(number.format(n).as_bytes());
                out.push(b'"');
            }
            AnyValue::Text(text) => {
                out.extend_from_slice(b"\"stringValue\":\"");
                out.extend_from_slice(text);
                out.push(b'"');
            }
        }
        out.extend_from_slice(b"}}");
    });
    out.extend_from_slice(b"]}");
}

/// Protobuf: one connection record's `log_records` field, each attribute written with its
/// lengths computed up front, as a packet record's are.
fn connection_proto(
    out: &mut Vec<u8>,
    record: &ConnectionRecord,
    text: &mut Vec<u8>,
    times: &mut Rfc3339Writer,
) {
    proto::message(out, field::SCOPE_LOGS_LOG_RECORDS, |out| {
        proto::fixed64(out, field::LOG_TIME_UNIX_NANO, connection_time(record));
        connection_attributes(record, text, times, |key, value| {
            let attribute = Attribute::new(key);
            // Room for the longest: a key of a few dozen bytes, an address of 45.
            in_place(out, 160, |line| match value {
                AnyValue::Bool(b) => {
                    attribute.head(line, 2);
                    line.byte((field::ANY_BOOL << 3) as u8);
                    line.byte(u8::from(b));
                }
                AnyValue::Int(n) => {
                    attribute.head(line, 1 + proto::varint_len(n));
                    line.byte((field::ANY_INT << 3) as u8);
                    line.varint(n);
                }
                AnyValue::Text(text) => attribute.string(line, text),
            });
        });
        proto::string(out, field::LOG_EVENT_NAME, CONNECTION_EVENT);
    });
}

/// `partialSuccess.rejectedLogRecords` of a JSON `ExportLogsServiceResponse` (0 when absent; the
/// count may be a string, as the JSON mapping writes 64-bit integers, or a number), and its
/// `errorMessage`. `None` when the body is not such JSON.
#[must_use]
pub fn json_partial_success(response: &[u8]) -> Option<(u64, String)> {
    if response.iter().all(u8::is_ascii_whitespace) {
        return Some((0, String::new()));
    }
    let value: serde_json::Value = serde_json::from_slice(response).ok()?;
    let partial = value.as_object()?.get("partialSuccess");
    let Some(partial) = partial.filter(|p| !p.is_null()) else {
        return Some((0, String::new()));
    };
    let rejected = match &partial["rejectedLogRecords"] {
        serde_json::Value::String(text) => text.parse::<i64>().ok()?,
        serde_json::Value::Number(number) => number.as_i64()?,
        serde_json::Value::Null => 0,
        _ => return None,
    };
    let message = partial["errorMessage"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Some((rejected.max(0) as u64, message))
}

#[cfg(test)]
mod tests {
    use sniffer_common::{PacketRecord, addr_words};

    use super::*;
    use crate::capture::clock::WallClock;

    fn longest() -> Record {
        let raw = PacketRecord {
            ts_ns: u64::MAX,
            src_addr: addr_words([0xab; 16]),
            dst_addr: addr_words([0xcd; 16]),
            seq: u32::MAX,
            ack: u32::MAX,
            len: u32::MAX,
            payload_len: u32::MAX,
            src_port: 65_535,
            dst_port: 65_535,
            window: 65_535,
            tcp_flags: 0xff,
            ip_version: 6,
            pkt_type: 4,
            headers_len: 0,
        };
        Record::from_kernel(&raw, &WallClock::from_offset(0))
    }

    #[test]
    fn proto_lengths_computed_up_front_match_the_bytes() {
        // The longest record, and short ones (a length of one byte somewhere would shift
        // everything after it).
        let raw = PacketRecord {
            ip_version: 4,
            ..PacketRecord::default()
        };
        let short = Record::from_kernel(&raw, &WallClock::from_offset(0));
        for record in [longest(), short] {
            let mut by_hand = Vec::new();
            write_proto(
                &mut by_hand,
                &[record.into()],
                &mut Vec::new(),
                &mut Rfc3339Writer::default(),
            );
            let fields = super::super::proto::tests_support::fields(&by_hand);
            assert_eq!(fields.len(), 1, "one log_records field");
            assert_eq!(fields[0], (field::SCOPE_LOGS_LOG_RECORDS, by_hand.len()));
        }
    }

    #[test]
    fn longest_json_record_is_max_json_record_len() {
        let mut out = Vec::new();
        write_json(
            &mut out,
            &[longest().into()],
            &mut Vec::new(),
            &mut Rfc3339Writer::default(),
        );
        assert_eq!(out.len(), MAX_JSON_RECORD_LEN);
        serde_json::from_slice::<serde_json::Value>(&out).unwrap();
    }

    #[test]
    fn json_partial_success_in_both_number_forms() {
        assert_eq!(
            json_partial_success(
                br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"x"}}"#
            ),
            Some((3, "x".to_owned()))
        );
        assert_eq!(
            json_partial_success(br#"{"partialSuccess":{"rejectedLogRecords":7}}"#),
            Some((7, String::new()))
        );
        assert_eq!(
            json_partial_success(br#"{"partialSuccess":{}}"#),
            Some((0, String::new()))
        );
        assert_eq!(json_partial_success(b""), Some((0, String::new())));
        assert_eq!(json_partial_success(b"{}"), Some((0, String::new())));
        assert_eq!(json_partial_success(b"[]"), None);
        assert_eq!(json_partial_success(b"not json"), None);
    }
}
