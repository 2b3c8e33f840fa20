//! Batch the records: close a batch at `BATCH_MAX_RECORDS` or when its oldest record is
//! `BATCH_MAX_WAIT_MS` old, and encode the batch body (docs/specs/OUTPUT_FORMAT.md).
//!
//! Pure logic: time is passed in, nothing here does I/O.

use std::{
    io::{self, Write as _},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::record::Record;

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

/// Encodes a batch body as JSON, optionally gzip-compressed.
///
/// # Examples
///
/// ```
/// use sniffer::batch::{encode, AgentInfo};
///
/// let agent = AgentInfo {
///     pod: Some("web-7d9c".into()), namespace: Some("shop".into()), node: None,
///     interface: "eth0".into(), version: "0.1.0", instance: "6f1c2b9e".into(),
/// };
/// let body = encode(&agent, 17, 2, &[], false).unwrap();
/// let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(json["seq"], 17);
/// assert_eq!(json["dropped"], 2);
/// assert_eq!(json["agent"]["pod"], "web-7d9c");
/// ```
///
/// # Errors
///
/// Only if compression fails, which in-memory compression does not.
pub fn encode(
    agent: &AgentInfo,
    seq: u64,
    dropped: u64,
    records: &[Record],
    gzip: bool,
) -> io::Result<Vec<u8>> {
    // About 250 bytes of JSON per record.
    let mut json = Vec::with_capacity(512 + records.len() * 256);
    json.extend_from_slice(b"{\"agent\":");
    serde_json::to_writer(&mut json, agent)?;
    let mut number = itoa::Buffer::new();
    json.extend_from_slice(b",\"seq\":");
    json.extend_from_slice(number.format(seq).as_bytes());
    json.extend_from_slice(b",\"dropped\":");
    json.extend_from_slice(number.format(dropped).as_bytes());
    json.extend_from_slice(b",\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        record.write_json(&mut json);
    }
    json.extend_from_slice(b"]}");
    if !gzip {
        return Ok(json);
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(&json)?;
    encoder.finish()
}

/// Collects records into batches.
#[derive(Debug)]
#[must_use]
pub struct Batcher {
    max_records: usize,
    max_wait: Duration,
    current: Vec<Record>,
    /// When the oldest record of `current` arrived.
    opened: Option<Instant>,
}

impl Batcher {
    /// A batcher closing batches at `max_records` records or `max_wait` after their first record.
    pub fn new(max_records: usize, max_wait: Duration) -> Self {
        Self {
            max_records: max_records.max(1),
            max_wait,
            current: Vec::new(),
            opened: None,
        }
    }

    /// Adds a record; returns the batch it completed, if it did. `now` is called only when the
    /// record opens a batch (reading the clock for every record was 5 % of the sniffer's CPU).
    pub fn push(&mut self, record: Record, now: impl FnOnce() -> Instant) -> Option<Vec<Record>> {
        if self.current.is_empty() {
            self.opened = Some(now());
            self.current.reserve(self.max_records);
        }
        self.current.push(record);
        (self.current.len() >= self.max_records).then(|| self.take_current())
    }

    /// When the open batch must be closed, if one is open.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|opened| opened + self.max_wait)
    }

    /// Closes the open batch if its deadline has passed.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Record>> {
        let due = self.deadline().is_some_and(|deadline| now >= deadline);
        due.then(|| self.take_current())
    }

    /// Closes the open batch now, if it holds anything (at shutdown).
    pub fn flush(&mut self) -> Option<Vec<Record>> {
        (!self.current.is_empty()).then(|| self.take_current())
    }

    /// Records in the open batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no batch is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    fn take_current(&mut self) -> Vec<Record> {
        self.opened = None;
        std::mem::take(&mut self.current)
    }
}

#[cfg(test)]
mod tests {
    use sniffer_common::PacketRecord;

    use super::*;
    use crate::clock::WallClock;

    fn record(port: u16) -> Record {
        let raw = PacketRecord {
            ip_version: 4,
            dst_port: port,
            ..PacketRecord::default()
        };
        Record::from_kernel(&raw, &WallClock::from_offset(0))
    }

    #[test]
    fn closes_at_max_records() {
        let now = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_secs(1));
        assert!(batcher.push(record(1), || now).is_none());
        let not_called = || -> Instant { panic!("the clock is read only when a batch opens") };
        assert!(batcher.push(record(2), not_called).is_none());
        let batch = batcher.push(record(3), not_called).expect("full");
        assert_eq!(
            batch.iter().map(|r| r.dst_port).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(batcher.is_empty());
        assert_eq!(batcher.deadline(), None);
    }

    #[test]
    fn closes_when_the_oldest_record_is_max_wait_old() {
        let start = Instant::now();
        let wait = Duration::from_millis(500);
        let mut batcher = Batcher::new(100, wait);
        assert_eq!(batcher.poll(start), None);
        batcher.push(record(1), || start);
        batcher.push(record(2), || start + Duration::from_millis(400));
        assert_eq!(batcher.deadline(), Some(start + wait));
        assert!(batcher.poll(start + Duration::from_millis(499)).is_none());
        assert_eq!(batcher.poll(start + wait).map(|b| b.len()), Some(2));
        assert_eq!(batcher.deadline(), None);
        // The next batch's clock starts at its own first record.
        batcher.push(record(3), || start + Duration::from_secs(2));
        assert_eq!(
            batcher.deadline(),
            Some(start + Duration::from_secs(2) + wait)
        );
    }

    #[test]
    fn flush_closes_a_partial_batch_only() {
        let mut batcher = Batcher::new(10, Duration::from_secs(1));
        assert_eq!(batcher.flush(), None);
        batcher.push(record(1), Instant::now);
        assert_eq!(batcher.len(), 1);
        assert_eq!(batcher.flush().map(|b| b.len()), Some(1));
        assert_eq!(batcher.flush(), None);
    }

    fn agent() -> AgentInfo {
        AgentInfo {
            pod: Some("web-7d9c".into()),
            namespace: Some("shop".into()),
            node: Some("node-3".into()),
            interface: "eth0".into(),
            version: "0.1.0",
            instance: "6f1c2b9e-3d4a-4f8e-9b2a-0c7d5e1f3a90".into(),
        }
    }

    #[test]
    fn body_matches_the_contract() {
        let body = encode(&agent(), 17, 4, &[record(8080)], false).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["agent"],
            serde_json::json!({"pod":"web-7d9c","namespace":"shop","node":"node-3","interface":"eth0",
                               "version":"0.1.0","instance":"6f1c2b9e-3d4a-4f8e-9b2a-0c7d5e1f3a90"})
        );
        assert_eq!(json["seq"], 17);
        assert_eq!(json["dropped"], 4);
        assert_eq!(json["records"][0]["dst_port"], 8080);
        assert_eq!(json["records"][0]["ts"], "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn gzip_body_round_trips() {
        let records: Vec<Record> = (1..=500).map(record).collect();
        let plain = encode(&agent(), 0, 0, &records, false).unwrap();
        let packed = encode(&agent(), 0, 0, &records, true).unwrap();
        assert!(
            packed.len() * 4 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed[..]),
            &mut unpacked,
        )
        .unwrap();
        assert_eq!(unpacked, plain);
    }

    #[test]
    fn instances_are_random_uuids() {
        let a = AgentInfo::new_instance().unwrap();
        let b = AgentInfo::new_instance().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "version 4: {a}");
    }
}
