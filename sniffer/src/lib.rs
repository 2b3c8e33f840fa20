//! tcp-sniffer's userspace agent: loads the kernel socket filter, reads its ring buffer and emits
//! one JSON record per matched TCP packet, or per connection.
//!
//! The data path, in the order records travel:
//!
//! | stage | module | role |
//! |---|---|---|
//! | configure | [`config`] | environment/flags, assembled from each stage's own settings ([`capture::config`], [`deliver::config`], [`pipeline::tracking::TrackerArgs`], [`pcap::config`]) |
//! | capture | [`capture`] | load, attach, change the ports in place, read the kernel counters; [`capture::ring`] the ring buffer; [`capture::socket`] the `AF_PACKET` socket; [`capture::clock`] kernel time → wall clock; [`ports`] the ports a pod's annotations ask for ([`ports::podinfo`]) and watching them (`PORTS_FILE`, [`ports::watch`]) |
//! | track | [`connections`] | `RECORDS=connections`/`both`: packets grouped into connections ([`connections::analysis`] the per-connection analysis, [`connections::table`] the hash table the tracker keeps them in, [`connections::record`] the connection record), reported to the output by the [`pipeline::tracking`] stage |
//! | encode | [`encode`] | a kernel record → [`encode::packet::Record`] → JSON; [`encode::batch`] the `batch` body format; [`encode::Encoder`] bodies for the sender threads |
//! | deliver | [`deliver`] | the [`pipeline::Sink`] every stage implements ([`pipeline`], the stage contract); the outputs: [`deliver::stdout`] NDJSON lines, [`deliver::http`] batches ([`deliver::batcher`]) POSTed by sender threads with [`deliver::retry`] and [`deliver::resolve`] |
//! | account | [`metrics`] | every record's fate, Prometheus text, the `METRICS_ADDR` endpoint |
//! | show packets | [`pcap`] | on request, packets' headers as pcapng for Wireshark on `CAPTURE_LISTEN`: [`capture::packets`] the kernel's copies, [`pcap::server`] the endpoint, [`pcap::recorder`] the flight recorder |
//!
//! [`endpoint`] is the small bounded HTTP/1.1 server both endpoints use.

pub mod capture;
pub mod config;
pub mod connections;
pub mod counts;
pub mod deliver;
pub mod encode;
pub mod endpoint;
pub mod metrics;
pub mod pcap;
pub mod pipeline;
pub mod ports;
