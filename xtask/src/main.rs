//! Developer and CI entry points: `cargo xtask <command>`.

mod bootstrap;
mod ebpf;
mod fuzz;
mod image;
mod measure;
mod run;
mod seccomp;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "tcp-sniffer developer and CI tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the kernel program, installing rust-src and bpf-linker first when missing.
    BuildEbpf,
    /// Build everything and capture live: arguments after `--` go to the sniffer.
    Run {
        /// Sniffer arguments, e.g. `-- --interface eth0 --ports 8080,8443`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure everything in docs/benchmarks.md (capture vs tcpdump, throughput, encoder,
    /// injector) and rewrite its tables.
    Bench(harness::bench::BenchArgs),
    /// Build the sniffer and injector images with buildah (static binaries built here).
    Image,
    /// Build the images, then run them with least privilege and check their behaviour.
    ImageTest,
    /// Run the injected example pod under `podman kube play` and check the sidecar end to end.
    PodTest,
    /// Write the sniffer's seccomp profile (runtime default plus bpf) into manifests/components.
    SeccompProfile,
    /// Run the sniffer for minutes under traffic with collector restarts; report memory over time.
    Soak(harness::soak::SoakArgs),
    /// Fuzz the parsers (admission review, packets, records, ports and options) for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Render and validate the Kubernetes manifests; send the example pod through the injector.
    CheckManifests,
    /// Set up, build, check formatting and lints, and run every test (what CI runs).
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::BuildEbpf => ebpf::build().map(drop),
        Task::Run { args } => run::run(&args),
        Task::Test { args } => test::run(&args),
        Task::Bench(args) => measure::bench(&args),
        Task::CheckManifests => test::manifests(),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Soak(args) => measure::soak(&args),
        Task::Image => image::build(),
        Task::ImageTest => test::containers("image"),
        Task::PodTest => test::containers("pod"),
        Task::SeccompProfile => seccomp::write(),
    }
}
