//! tcp-sniffer's benchmark harness: what `cargo xtask bench` and `cargo xtask soak` measure.
//!
//! The harness measures built binaries; it neither installs nor builds anything. The tasks do
//! that first (the packages each part needs are listed here, e.g. [`bench::packages`]) and hand
//! over the binaries' paths.
//!
//! | module | role |
//! |---|---|
//! | [`bench`] | docs/benchmarks.md, one section per part (`flood`, `idle`, the iperf3 trials) |
//! | [`soak`] | minutes of traffic with collector restarts: memory over time |
//! | `bench_injector` | the injector under wrk |
//! | `collector` | the counting HTTP collector the sniffer delivers to |
//! | `watch` | a measured process: CPU from schedstat, stop lines |
//! | `perf` | the kernel's share of CPU from `perf` samples |
//! | `doc` | rewriting a generated section of docs/benchmarks.md |

use std::path::PathBuf;

pub mod bench;
mod bench_injector;
mod collector;
mod doc;
mod perf;
pub mod soak;
mod watch;

/// The release binaries a run measures.
#[derive(Clone, Debug)]
pub struct Built {
    /// The sniffer.
    pub sniffer: PathBuf,
    /// The injector.
    pub injector: PathBuf,
}
