//! Deliver: where records go. Both outputs implement the pipeline's
//! [`Sink`](crate::pipeline::Sink): [`stdout`] writes NDJSON lines, [`http`] groups records into
//! batches ([`batcher`]) and POSTs them to `OUTPUT_URL` from sender threads, with the configured
//! headers ([`sidecar_contract::headers`]), retrying as [`retry`] decides, resolving the
//! collector's name through [`resolve`]; [`answer`] reads what an OTLP collector says it rejected.

pub mod answer;
pub mod batcher;
pub mod config;
pub mod http;
pub mod resolve;
pub mod retry;
pub mod stdout;
