//! `sniffer`: capture TCP packet metadata on an interface (see README.md and docs/specs).
//!
//! Exit codes: 0 clean stop, 1 configuration error, 2 runtime error.

use std::{
    future::pending,
    io,
    process::ExitCode,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use clap::{Parser as _, error::ErrorKind};
use log::{error, info, warn};
use sniffer::{
    batch::AgentInfo,
    capture::{Capture, CaptureOptions, KernelCounters, MAX_BATCH, ProgramStats},
    clock::WallClock,
    config::{Args, Config, Placement},
    deliver::HttpOutput,
    metrics::{self, Stats, add, get},
    output::{Ndjson, Sink},
    record::Record,
};
use sniffer_common::{PacketRecord, echo::Echo};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the kernel's counters are read (and new ring losses reported).
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);

/// Why the sniffer stops with an error, which decides the exit code.
enum Failure {
    /// Exit 1: the configuration cannot work (found only once the runtime runs).
    Config(anyhow::Error),
    /// Exit 2: something failed at run time.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Runtime(err)
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            // Help and version are what the user asked for, not a failure.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            json_log::init(&Placement::from_env().log_fields());
            error!(error = usage_error(&err).as_str(); "invalid configuration");
            return ExitCode::from(1);
        }
    };
    let placement = args.placement();
    json_log::init(&placement.log_fields());
    info!(
        interface = Echo(&args.interface).to_string().as_str(),
        ports = Echo(&args.ports).to_string().as_str(),
        version = env!("CARGO_PKG_VERSION");
        "Sniffer entrypoint starting"
    );
    let config = match args.validate() {
        Ok(config) => config,
        Err(err) => {
            error!(error = err.to_string().as_str(); "invalid configuration: {err}");
            return ExitCode::from(1);
        }
    };
    for warning in &config.warnings {
        warn!("{}", warning.message());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = err.to_string().as_str(); "cannot start the async runtime");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&config, placement)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(err)) => {
            error!(error = format!("{err:#}").as_str(); "invalid configuration: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Runtime(err)) => {
            error!(error = format!("{err:#}").as_str(); "sniffer failed: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The first line of clap's message, with the variable name a container user sets.
fn usage_error(err: &clap::Error) -> String {
    match err.kind() {
        ErrorKind::MissingRequiredArgument => {
            "PORTS is required: the TCP ports to capture, e.g. PORTS=8080,8443".to_owned()
        }
        _ => err
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ")
            .to_owned(),
    }
}

/// Where records go.
enum Output {
    Stdout(Ndjson<io::Stdout>),
    Http(HttpOutput),
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

async fn run(config: &Config, placement: Placement) -> Result<(), Failure> {
    let mut signals = Signals {
        terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
    };
    let stats = Arc::new(Stats::default());

    // The sender is set up before the kernel is touched: a bad CA file is a configuration error.
    let mut output = match &config.output {
        None => Output::Stdout(Ndjson::new(io::stdout())),
        Some(delivery) => {
            let Placement {
                pod,
                namespace,
                node,
            } = placement;
            let agent = AgentInfo {
                pod,
                namespace,
                node,
                interface: config.interface.clone(),
                version: env!("CARGO_PKG_VERSION"),
                instance: AgentInfo::new_instance().context("cannot choose an instance id")?,
            };
            info!(instance = agent.instance.as_str(), batch_max_records = delivery.batch_max_records,
                  batch_max_wait_ms = delivery.batch_max_wait.as_millis() as u64,
                  buffer_max_records = delivery.buffer_max_records, gzip = delivery.gzip;
                  "delivering batches to OUTPUT_URL");
            let output = HttpOutput::start(delivery, agent, Arc::clone(&stats))
                .map_err(|err| Failure::Config(anyhow!(err)))?;
            Output::Http(output)
        }
    };
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?;
        tokio::spawn(metrics::serve(listener, Arc::clone(&stats)));
        info!(address = addr.to_string().as_str(); "metrics endpoint listening");
    }

    let mut capture = Capture::start(&CaptureOptions {
        interface: &config.interface,
        ifindex: config.ifindex,
        ports: &config.ports,
        ring_buffer_bytes: config.ring_buffer_bytes,
        wakeup_bytes: config.ring_wakeup_bytes,
        poll_interval: config.ring_poll_interval,
    })
    .with_context(|| format!("cannot start capture on {}", config.interface))?;
    info!(
        interface = config.interface.as_str(),
        ports:serde = config.ports,
        ring_buffer_bytes = config.ring_buffer_bytes,
        ring_wakeup_bytes = config.ring_wakeup_bytes;
        "capture attached"
    );

    let stop = match &mut output {
        Output::Stdout(sink) => pump(&mut capture, sink, &stats, &mut signals, config).await,
        Output::Http(sink) => pump(&mut capture, sink, &stats, &mut signals, config).await,
    };
    let failure = match stop {
        Stop::Signal(name) => {
            info!(signal = name; "stopping");
            None
        }
        // Stopped like on a signal, so nothing read is lost unaccounted; the exit code says why.
        Stop::Failed(err) => {
            error!(error = format!("{err:#}").as_str(); "stopping: {err:#}");
            Some(err)
        }
    };
    // The grace period runs from the decision to stop, requests in flight included.
    let deadline = Instant::now() + config.shutdown_grace;
    capture.stop();
    let mut batch = Vec::new();
    capture.drain_remaining(&mut batch);
    match &mut output {
        Output::Stdout(sink) => emit(sink, &mut batch, &stats, true)?,
        Output::Http(sink) => emit(sink, &mut batch, &stats, false)?,
    }
    read_kernel_counters(&capture, &stats)?;
    match output {
        Output::Stdout(_) => {}
        Output::Http(sink) => sink.finish(deadline),
    }

    let ProgramStats {
        run_time_ns,
        run_count,
    } = capture
        .program_stats()
        .context("cannot read the program statistics")?;
    info!(
        records = get(&stats.records_read),
        delivered = get(&stats.records_delivered),
        dropped = stats.dropped_total(),
        matched = get(&stats.packets_matched),
        dropped_ring_full = get(&stats.dropped_ring_full),
        dropped_buffer_full = get(&stats.dropped_buffer_full),
        dropped_rejected = get(&stats.dropped_rejected),
        dropped_undeliverable = get(&stats.dropped_undeliverable),
        batches = get(&stats.batches_delivered),
        malformed = capture.malformed(),
        bpf_run_time_ns = run_time_ns,
        bpf_run_count = run_count;
        "stopped"
    );
    failure.map_or(Ok(()), |err| Err(Failure::Runtime(err)))
}

/// Why the pump stopped.
enum Stop {
    /// SIGTERM or SIGINT.
    Signal(&'static str),
    /// Capture or delivery cannot go on.
    Failed(anyhow::Error),
}

/// Moves records from the ring to `sink` until a signal arrives or something fails.
async fn pump<S: Sink>(
    capture: &mut Capture,
    sink: &mut S,
    stats: &Stats,
    signals: &mut Signals,
    config: &Config,
) -> Stop {
    match pump_until_signal(capture, sink, stats, signals, config).await {
        Ok(signal) => Stop::Signal(signal),
        Err(err) => Stop::Failed(err),
    }
}

async fn pump_until_signal<S: Sink>(
    capture: &mut Capture,
    sink: &mut S,
    stats: &Stats,
    signals: &mut Signals,
    config: &Config,
) -> anyhow::Result<&'static str> {
    let to_stdout = config.output.is_none();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut counters = tokio::time::interval(COUNTER_INTERVAL);
    let mut stats_log = config
        .stats_interval
        .map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period));
    loop {
        let deadline = sink.deadline();
        tokio::select! {
            biased;
            _ = signals.terminate.recv() => return Ok("SIGTERM"),
            _ = signals.interrupt.recv() => return Ok("SIGINT"),
            ready = capture.next_batch(&mut batch) => {
                ready?;
                emit(sink, &mut batch, stats, to_stdout)?;
            }
            () = at(deadline) => sink.tick(Instant::now()),
            _ = counters.tick() => {
                read_kernel_counters(capture, stats)?;
                anyhow::ensure!(stats.healthy(), "a sender thread failed; delivery cannot continue");
                // A deleted (or replaced) interface delivers nothing more: say so and stop.
                let current = sniffer::config::interface_index(&config.interface);
                anyhow::ensure!(
                    current == Some(config.ifindex),
                    "interface {:?} (index {}) is gone; capture cannot continue",
                    config.interface,
                    config.ifindex
                );
            }
            _ = async { stats_log.as_mut().expect("guarded").tick().await }, if stats_log.is_some() => {
                log_stats(stats);
            }
        }
    }
}

/// Resolves at `deadline`, or never.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => pending().await,
    }
}

/// Converts and hands over a batch of kernel records; for stdout, writing is delivering.
fn emit(
    sink: &mut impl Sink,
    batch: &mut Vec<PacketRecord>,
    stats: &Stats,
    to_stdout: bool,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let count = batch.len() as u64;
    add(&stats.records_read, count);
    let clock = WallClock::now();
    for raw in batch.drain(..) {
        sink.accept(Record::from_kernel(&raw, &clock))
            .context("cannot write records to stdout")?;
    }
    sink.flush().context("cannot write records to stdout")?;
    if to_stdout {
        add(&stats.records_delivered, count);
    }
    Ok(())
}

/// Copies the kernel's counters into `stats` and reports new ring losses.
fn read_kernel_counters(capture: &Capture, stats: &Stats) -> anyhow::Result<()> {
    let KernelCounters { matched, ring_full } = capture.counters()?;
    let previous = stats.dropped_ring_full.swap(ring_full, Relaxed);
    stats.packets_matched.store(matched, Relaxed);
    if ring_full > previous {
        warn!(
            lost = ring_full - previous,
            ring_full_total = ring_full;
            "kernel ring buffer full: records lost"
        );
    }
    Ok(())
}

fn log_stats(stats: &Stats) {
    info!(
        matched = get(&stats.packets_matched),
        records = get(&stats.records_read),
        delivered = get(&stats.records_delivered),
        dropped = stats.dropped_total(),
        queued = get(&stats.records_queued),
        batches = get(&stats.batches_delivered),
        retries = get(&stats.batch_retries),
        last_status = get(&stats.last_status);
        "stats"
    );
}
