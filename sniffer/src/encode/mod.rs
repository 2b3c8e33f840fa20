//! Encode: records become bytes. [`record`] writes one record's JSON (a line on stdout, an
//! element of every JSON body); [`batch`] frames records in the batch envelope. An [`Encoder`]
//! turns a batch of records into a request body; each sender thread has its own.

pub mod batch;
pub mod record;

use std::{
    io::{self, Write as _},
    sync::Arc,
};

use serde::Serialize;
use sniffer_common::time::Rfc3339Writer;

use self::record::Record;

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

/// Turns batches of records into request bodies.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sniffer::encode::{AgentInfo, Encoder};
///
/// let agent = AgentInfo {
///     pod: Some("web-7d9c".into()), namespace: Some("shop".into()), node: None,
///     interface: "eth0".into(), version: "0.1.0", instance: "6f1c2b9e".into(),
/// };
/// let mut encoder = Encoder::new(Arc::new(agent), false);
/// let body = encoder.body(17, 2, &[]).unwrap();
/// let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(json["seq"], 17);
/// assert_eq!(json["dropped"], 2);
/// assert_eq!(json["agent"]["pod"], "web-7d9c");
/// ```
#[derive(Debug)]
#[must_use]
pub struct Encoder {
    agent: Arc<AgentInfo>,
    gzip: bool,
    /// The text of the last second written, reused by the next records.
    times: Rfc3339Writer,
}

impl Encoder {
    /// Bodies from `agent`, gzip-compressed when `gzip`.
    pub fn new(agent: Arc<AgentInfo>, gzip: bool) -> Self {
        Self {
            agent,
            gzip,
            times: Rfc3339Writer::default(),
        }
    }

    /// The `Content-Type` of the bodies.
    #[must_use]
    pub const fn content_type(&self) -> &'static str {
        "application/json"
    }

    /// Whether bodies are gzip-compressed (`Content-Encoding: gzip`).
    #[must_use]
    pub const fn gzip(&self) -> bool {
        self.gzip
    }

    /// The body of batch `seq`, which reports `dropped` losses and carries `records`.
    ///
    /// # Errors
    ///
    /// Only if compression fails, which in-memory compression does not.
    pub fn body(&mut self, seq: u64, dropped: u64, records: &[Record]) -> io::Result<Vec<u8>> {
        let json = batch::body(&self.agent, seq, dropped, records, &mut self.times)?;
        if !self.gzip {
            return Ok(json);
        }
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 8),
            flate2::Compression::fast(),
        );
        encoder.write_all(&json)?;
        encoder.finish()
    }
}
