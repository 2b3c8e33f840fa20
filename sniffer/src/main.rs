//! `sniffer`: capture TCP packet metadata on an interface (see README.md and docs/specs).
//!
//! Exit codes: 0 clean stop, 1 configuration error, 2 runtime error.

use std::{io, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser as _, error::ErrorKind};
use log::{error, info, warn};
use sniffer::{
    capture::{Capture, CaptureOptions, KernelCounters, ProgramStats},
    clock::WallClock,
    config::{Args, Config, Placement},
    logging,
    output::{Ndjson, Sink},
    record::Record,
};
use tokio::signal::unix::{SignalKind, signal};

const EXIT_CONFIG: u8 = 1;
const EXIT_RUNTIME: u8 = 2;
/// How often the kernel's drop counter is checked for new losses.
const DROP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
            logging::init(&Placement::from_env());
            error!(error = usage_error(&err).as_str(); "invalid configuration");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let placement = args.placement();
    logging::init(&placement);
    info!(
        interface = args.interface.as_str(),
        ports = args.ports.as_str(),
        version = env!("CARGO_PKG_VERSION");
        "Sniffer entrypoint starting"
    );
    let config = match args.validate() {
        Ok(config) => config,
        Err(err) => {
            error!(error = err.to_string().as_str(); "invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = err.to_string().as_str(); "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = format!("{err:#}").as_str(); "sniffer failed: {err:#}");
            ExitCode::from(EXIT_RUNTIME)
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

async fn run(config: &Config) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
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

    let mut sink = Ndjson::new(io::stdout().lock());
    let mut batch = Vec::with_capacity(sniffer::capture::MAX_BATCH);
    let mut drop_check = tokio::time::interval(DROP_CHECK_INTERVAL);
    let mut reported = KernelCounters::default();
    let signal_name = loop {
        tokio::select! {
            biased;
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            ready = capture.next_batch(&mut batch) => {
                ready?;
                emit(&mut sink, &mut batch).context("cannot write records to stdout")?;
            }
            _ = drop_check.tick() => {
                let counters = capture.counters()?;
                if counters.ring_full > reported.ring_full {
                    warn!(
                        lost = counters.ring_full - reported.ring_full,
                        ring_full_total = counters.ring_full;
                        "kernel ring buffer full: records lost"
                    );
                }
                reported = counters;
            }
        }
    };

    info!(signal = signal_name; "stopping");
    capture.stop();
    capture.drain_remaining(&mut batch);
    emit(&mut sink, &mut batch).context("cannot write records to stdout")?;
    let KernelCounters { matched, ring_full } = capture.counters()?;
    let ProgramStats {
        run_time_ns,
        run_count,
    } = capture.program_stats()?;
    info!(
        records = sink.written(),
        matched,
        dropped_ring_full = ring_full,
        malformed = capture.malformed(),
        bpf_run_time_ns = run_time_ns,
        bpf_run_count = run_count;
        "stopped"
    );
    Ok(())
}

fn emit(sink: &mut impl Sink, batch: &mut Vec<sniffer_common::PacketRecord>) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let clock = WallClock::now();
    for raw in batch.drain(..) {
        sink.accept(&Record::from_kernel(&raw, &clock))?;
    }
    sink.flush()
}
