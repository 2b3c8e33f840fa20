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
use clap::error::ErrorKind;
use cli_support::exit::{self, Failure};
use log::{error, info, warn};
use sidecar_contract::echo::Echo;
use sniffer::{
    capture::{Capture, CaptureOptions, KernelCounters, MAX_BATCH, ProgramStats, clock::WallClock},
    config::{Args, Config, Placement},
    connections::TrackerConfig,
    deliver::{http::HttpOutput, stdout::Lines},
    encode::AgentInfo,
    endpoint,
    metrics::{self, Stats, add, get},
    pcap::{
        Captures,
        config::CaptureConfig,
        pcapng::LinkType,
        run_tap,
        server::{Interface, Server},
    },
    pipeline::{Sink, tracking::Tracking},
    ports::{
        podinfo::PortsChange,
        watch::{PortsWatch, Seen},
    },
};
use sniffer_common::{DEFAULT_PACKETS_RING_BYTES, LinkLayer};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
};

/// How often the housekeeping runs: the kernel's counters are read (and new ring losses
/// reported), the interface checked and `PORTS_FILE` read (the kubelet itself updates it within
/// about a minute). One timer for all, so that an idle sniffer wakes once a second.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = match exit::parse_args::<Args>(
        || cli_support::log::init(&Placement::from_env().log_fields()),
        usage_error,
    ) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let placement = args.placement();
    cli_support::log::init(&placement.log_fields());
    info!(
        interface = Echo(&args.interface).to_string().as_str(),
        ports = Echo(&args.ports).to_string().as_str(),
        version = env!("CARGO_PKG_VERSION");
        "Sniffer entrypoint starting"
    );
    let result = args
        .validate()
        .map_err(|err| Failure::Config(err.into()))
        .and_then(|config| {
            for warning in &config.delivery.warnings {
                warn!("{}", warning.message());
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run(&config, placement))
        });
    exit::code(result, "sniffer")
}

/// The first line of clap's message, with the variable name a container user sets.
fn usage_error(err: &clap::Error) -> String {
    match err.kind() {
        ErrorKind::MissingRequiredArgument => {
            "PORTS is required: the TCP ports to capture, e.g. PORTS=8080,8443".to_owned()
        }
        _ => exit::first_line(err),
    }
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

/// Where records go: stdout, or batches to `OUTPUT_URL`. Set up before the kernel is touched, so
/// that a bad CA file is a configuration error.
fn sink(
    config: &Config,
    placement: Placement,
    stats: &Arc<Stats>,
) -> Result<Box<dyn Sink>, Failure> {
    let Some(delivery) = &config.delivery.output else {
        let lines = Lines::new(
            io::stdout(),
            config.delivery.stdout_buffer_records,
            Arc::clone(stats),
        )
        .context("cannot start the stdout writer")?;
        return Ok(Box::new(lines));
    };
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
    // Header names only: their values may be secrets.
    let headers: Vec<&str> = delivery
        .headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    info!(instance = agent.instance.as_str(), format = delivery.format.to_string().as_str(),
          headers:serde = headers, batch_max_records = delivery.batch_max_records,
          batch_max_wait_ms = delivery.batch_max_wait.as_millis() as u64,
          buffer_max_records = delivery.buffer_max_records, gzip = delivery.gzip;
          "delivering batches to OUTPUT_URL");
    let output = HttpOutput::start(delivery, agent, Arc::clone(stats))
        .map_err(|err| Failure::Config(anyhow!(err)))?;
    Ok(Box::new(output))
}

/// The output, behind the connection tracker when connection records are wanted.
fn pipeline(output: Box<dyn Sink>, config: &Config, stats: &Arc<Stats>) -> Box<dyn Sink> {
    if !config.records.connections() {
        return output;
    }
    let TrackerConfig {
        max_connections,
        idle_timeout,
        report_interval,
    } = config.tracker;
    info!(packets = config.records.packets(), max_connections,
          idle_timeout_ms = idle_timeout.as_millis() as u64,
          report_interval_ms = report_interval.map_or(0, |i| i.as_millis() as u64);
          "tracking connections");
    Box::new(Tracking::new(
        output,
        config.tracker,
        config.records.packets(),
        Arc::clone(stats),
    ))
}

async fn run(config: &Config, placement: Placement) -> Result<(), Failure> {
    let mut signals = Signals {
        terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
    };
    let stats = Arc::new(Stats::default());
    stats
        .start_time_seconds
        .store(cli_support::clock::unix_seconds(), Relaxed);
    stats
        .ring_buffer_bytes
        .store(u64::from(config.ring.bytes), Relaxed);
    let description = placement.describe();
    let mut sink = pipeline(sink(config, placement, &stats)?, config, &stats);
    if let Some(addr) = config.metrics_addr {
        // Bound here, so that a scrape right after "capture attached" finds it listening.
        let listener = endpoint::bind(addr).await;
        if listener.is_ok() {
            info!(address = addr.to_string().as_str(); "metrics endpoint listening");
        }
        tokio::spawn(metrics::listen_and_serve(
            addr,
            listener,
            Arc::clone(&stats),
        ));
    }

    let mut capture = Capture::start(&CaptureOptions {
        interface: &config.interface,
        ifindex: config.ifindex,
        ports: &config.ports,
        ring_buffer_bytes: config.ring.bytes,
        wakeup_bytes: config.ring.wakeup_bytes,
        poll_interval: config.ring.poll_interval,
        packets_ring_bytes: config.capture.map(|_| DEFAULT_PACKETS_RING_BYTES),
    })
    .with_context(|| format!("cannot start capture on {}", config.interface))?;
    let (ports_tx, ports_rx) = watch::channel(config.ports.clone());
    if let Some(capture_config) = config.capture {
        let interface = Interface {
            name: config.interface.clone(),
            description,
            link: match capture.link_layer() {
                LinkLayer::Ethernet => LinkType::Ethernet,
                LinkLayer::RawIp => LinkType::RawIp,
            },
        };
        serve_captures(&mut capture, capture_config, interface, ports_rx, &stats).await;
    }
    info!(
        interface = config.interface.as_str(),
        ports:serde = config.ports,
        ring_buffer_bytes = config.ring.bytes,
        ring_wakeup_bytes = config.ring.wakeup_bytes;
        "capture attached"
    );
    stats
        .ports_captured
        .store(config.ports.len() as u64, Relaxed);

    let failure = match pump(
        &mut capture,
        sink.as_mut(),
        &stats,
        &mut signals,
        config,
        &ports_tx,
    )
    .await
    {
        Ok(signal) => {
            info!(signal; "stopping");
            None
        }
        // Stopped like on a signal, so nothing read is lost unaccounted; the exit code says why.
        Err(err) => {
            error!(error = format!("{err:#}").as_str(); "stopping: {err:#}");
            Some(err)
        }
    };
    // The grace period runs from the decision to stop, requests in flight included.
    let deadline = Instant::now() + config.shutdown_grace;
    capture.stop();
    let mut records = Vec::new();
    capture.drain_remaining(&mut records);
    hand_over(sink.as_mut(), &mut records, &stats)?;
    read_kernel_counters(&capture, &stats)?;
    sink.finish(deadline)
        .context("cannot write the last records")?;

    let ProgramStats {
        run_time_ns,
        run_count,
    } = capture
        .program_stats()
        .context("cannot read the program statistics")?;
    info!(
        records = get(&stats.records_read),
        connection_records = get(&stats.connection_records),
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

/// Starts the packet capture endpoint and the reader of the packets' ring that feeds it.
async fn serve_captures(
    capture: &mut Capture,
    config: CaptureConfig,
    interface: Interface,
    ports: watch::Receiver<Vec<u16>>,
    stats: &Arc<Stats>,
) {
    let Some(source) = capture.take_packet_source() else {
        return;
    };
    let captures = Captures::new(&config, Arc::clone(stats));
    tokio::spawn({
        let captures = Arc::clone(&captures);
        async move {
            if let Err(err) = run_tap(source, captures).await {
                error!(error = err.to_string().as_str(); "packet captures stopped: {err}");
            }
        }
    });
    // Bound here, so that a capture asked for right after "capture attached" finds it listening.
    let listener = endpoint::bind(config.listen).await;
    if listener.is_ok() {
        info!(address = config.listen.to_string().as_str(),
              max_snaplen = config.max_snaplen, recorder_bytes = config.recorder_bytes;
              "packet capture endpoint listening");
    }
    let server = Server {
        captures,
        config,
        ports,
        interface,
        stats: Arc::clone(stats),
    };
    tokio::spawn(server.listen_and_serve(config.listen, listener));
}

/// Moves records from the ring to `sink` until a signal arrives (its name is returned) or
/// capture or delivery cannot go on.
///
/// The branches are polled in order: signals, then the timed work (the housekeeping: losses,
/// health, the interface, `PORTS_FILE`; the `stats` line; batches that reached their age), and
/// only then the ring. Timers are ready only when due, so they cost nothing in between; under a flood that
/// keeps the ring from ever emptying, they still run on time.
async fn pump(
    capture: &mut Capture,
    sink: &mut dyn Sink,
    stats: &Stats,
    signals: &mut Signals,
    config: &Config,
    ports_tx: &watch::Sender<Vec<u16>>,
) -> anyhow::Result<&'static str> {
    let mut records = Vec::with_capacity(MAX_BATCH);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let mut stats_log = config
        .stats_interval
        .map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period));
    let mut ports = config.ports.clone();
    let mut watch = config
        .ports_file
        .clone()
        .map(|path| PortsWatch::new(path, config.ports.clone()));
    loop {
        let due = sink.due();
        tokio::select! {
            biased;
            _ = signals.terminate.recv() => return Ok("SIGTERM"),
            _ = signals.interrupt.recv() => return Ok("SIGINT"),
            _ = housekeeping.tick() => {
                read_kernel_counters(capture, stats)?;
                if let Some(failure) = stats.failure() {
                    anyhow::bail!(failure);
                }
                check_interface(capture, config)?;
                if let Some(watch) = watch.as_mut()
                    && let Some(seen) = watch.poll(&ports)
                {
                    follow_ports(capture, stats, &mut ports, seen, watch.path())?;
                    ports_tx.send_if_modified(|shared| {
                        let changed = *shared != ports;
                        shared.clone_from(&ports);
                        changed
                    });
                }
            }
            _ = async { stats_log.as_mut().expect("guarded").tick().await }, if stats_log.is_some() => {
                log_stats(stats);
            }
            () = at(due) => sink.tick(Instant::now()),
            ready = capture.next_batch(&mut records) => {
                ready?;
                hand_over(sink, &mut records, stats)?;
            }
        }
    }
}

/// Stops capture when its interface is gone: deleted, or replaced by another of the same name.
/// Only the kernel's "no such device" means gone; any other failure to ask (out of descriptors,
/// say) is logged, and capture goes on.
fn check_interface(capture: &Capture, config: &Config) -> anyhow::Result<()> {
    match capture.interface_index(&config.interface) {
        Ok(Some(index)) if index == config.ifindex => Ok(()),
        Ok(current) => anyhow::bail!(
            "interface {:?} (index {}) is gone{}; capture cannot continue",
            config.interface,
            config.ifindex,
            current.map_or_else(String::new, |index| format!(
                " (the name is now index {index})"
            ))
        ),
        Err(err) => {
            warn!(interface = config.interface.as_str(), error = err.to_string().as_str();
                  "cannot check the interface; capture goes on");
            Ok(())
        }
    }
}

/// Acts on what `PORTS_FILE` says: changes the kernel's ports, or says why not.
fn follow_ports(
    capture: &mut Capture,
    stats: &Stats,
    ports: &mut Vec<u16>,
    seen: Seen,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    match seen {
        Seen::Change(PortsChange::Unchanged) => {}
        Seen::Change(PortsChange::Apply(new)) => {
            capture
                .set_ports(ports, &new)
                .context("cannot change the captured ports")?;
            info!(ports:serde = new, previous:serde = *ports; "ports changed");
            stats.ports_captured.store(new.len() as u64, Relaxed);
            add(&stats.ports_changes_applied, 1);
            *ports = new;
        }
        Seen::Change(PortsChange::Refuse(reason)) => {
            add(&stats.ports_changes_refused, 1);
            warn!(error = reason.to_string().as_str(), ports:serde = *ports;
                  "ports not changed: {reason}");
        }
        Seen::Unreadable(err) => {
            warn!(path = path.display().to_string().as_str(), error = err.to_string().as_str(),
                  ports:serde = *ports; "cannot read PORTS_FILE; ports not changed");
        }
    }
    Ok(())
}

/// Resolves at `deadline`, or never.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => pending().await,
    }
}

/// Gives the records of one ring read to the sink, with the wall clock of this moment.
fn hand_over(
    sink: &mut dyn Sink,
    records: &mut Vec<sniffer_common::PacketRecord>,
    stats: &Stats,
) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    add(&stats.records_read, records.len() as u64);
    let result = sink.take(records, &WallClock::now());
    records.clear();
    result.context("cannot hand records to the output")
}

/// Copies the kernel's counters into `stats` and reports new ring losses.
fn read_kernel_counters(capture: &Capture, stats: &Stats) -> anyhow::Result<()> {
    let KernelCounters {
        matched,
        ring_full,
        captured,
        capture_ring_full,
    } = capture.counters()?;
    stats.capture.copied.store(captured, Relaxed);
    stats
        .capture
        .dropped_ring_full
        .store(capture_ring_full, Relaxed);
    let previous = stats.dropped_ring_full.swap(ring_full, Relaxed);
    stats.packets_matched.store(matched, Relaxed);
    stats
        .ring_used_bytes
        .store(capture.ring_unread_bytes(), Relaxed);
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
        connection_records = get(&stats.connection_records),
        delivered = get(&stats.records_delivered),
        dropped = stats.dropped_total(),
        queued = get(&stats.records_queued),
        batches = get(&stats.batches_delivered),
        retries = get(&stats.batch_retries),
        last_status = get(&stats.last_status);
        "stats"
    );
}
