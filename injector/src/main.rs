//! `injector`: the tcp-sniffer mutating admission webhook (docs/specs/INJECTOR.md).
//!
//! Exit codes: 0 clean stop, 1 bad options or unusable certificate at start, 2 runtime error.

use std::{
    io::Read as _, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use cli_support::exit::{self, Failure};
use injector::{
    certs,
    limits::{DEFAULT_MAX_CONNECTIONS, Limits},
    options::OptionSources,
    preview,
    profile::{self, Installed, ProfileError},
    server::{self, App},
    tls::{CertPaths, CertStore},
};
use log::{error, info, warn};
use sidecar_contract::echo::Echo;

#[derive(Parser)]
#[command(
    name = "injector",
    version,
    about = "tcp-sniffer mutating admission webhook",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook over HTTPS (the default).
    Serve(ServeArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    GenCerts(GenCertsArgs),
    /// Print a pod as the webhook would mutate it.
    Inject(InjectArgs),
    /// Keep a seccomp profile installed in this node's kubelet seccomp directory (the
    /// seccomp-localhost DaemonSet); checks it again every interval until SIGTERM.
    InstallSeccompProfile(InstallProfileArgs),
}

#[derive(Args)]
struct InstallProfileArgs {
    /// The profile to install (the DaemonSet mounts it from a ConfigMap).
    #[arg(long)]
    from: PathBuf,
    /// Where the kubelet reads it: `<kubelet root>/seccomp/<localhostProfile>`.
    #[arg(long)]
    to: PathBuf,
    /// Seconds between checks that the installed file is still the profile (1-86400).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    interval_secs: u64,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain.
    #[arg(
        long,
        env = "TLS_CERT_FILE",
        default_value = "/etc/tcp-sniffer/tls/tls.crt"
    )]
    tls_cert: PathBuf,
    /// PEM private key.
    #[arg(
        long,
        env = "TLS_KEY_FILE",
        default_value = "/etc/tcp-sniffer/tls/tls.key"
    )]
    tls_key: PathBuf,
    /// How often the certificate files are checked for changes (seconds).
    #[arg(long, env = "TLS_RELOAD_INTERVAL_SECS", default_value_t = 2)]
    tls_reload_interval_secs: u64,
    /// Plain-HTTP address for `/metrics`, `/healthz` and `/readyz` (the kubelet's probes and
    /// Prometheus), so the webhook port can be opened to the API server alone; `off` disables it.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_listen: String,
    /// Webhook connections open at once (1-4096); more are closed at accept.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    max_connections: u16,
    #[command(flatten)]
    options: OptionSources,
}

#[derive(Args)]
struct GenCertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "tcp-sniffer-injector")]
    service: String,
    /// Namespace of the Service.
    #[arg(long, default_value = "tcp-sniffer")]
    namespace: String,
    /// Name of the Secret to print.
    #[arg(long, default_value = "tcp-sniffer-injector-tls")]
    secret: String,
    /// Days the certificates are valid (1-36500).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(certs::DAYS))]
    days: i64,
    /// Also write ca.crt, tls.crt and tls.key here.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(Args)]
struct InjectArgs {
    /// Pod manifest, YAML or JSON; `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Namespace the pod would be created in, when its manifest names none.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Print `yaml` or `json`.
    #[arg(short, long, default_value = "yaml", value_parser = ["yaml", "json"])]
    output: String,
    #[command(flatten)]
    options: OptionSources,
}

fn main() -> ExitCode {
    let cli = match exit::parse_args::<Cli>(|| cli_support::log::init(&[]), exit::first_line) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli_support::log::init(&[]);
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::GenCerts(args)) => gen_certs(&args).map_err(Failure::Runtime),
        Some(Command::Inject(args)) => inject(&args),
        Some(Command::InstallSeccompProfile(args)) => install_profile(&args),
    };
    exit::code(result, "injector")
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    info!(listen = args.listen.to_string().as_str(), version = env!("CARGO_PKG_VERSION"); "injector starting");
    let options = args.options.load().map_err(|e| Failure::Config(e.into()))?;
    let store = CertStore::load(CertPaths {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    })
    .map_err(|e| {
        Failure::Config(anyhow::Error::new(e).context("cannot load the TLS certificate"))
    })?;
    let tls = store
        .server_config()
        .map_err(|e| Failure::Config(e.into()))?;
    info!(options:serde = options; "options");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)?;
    let metrics_addr = match args.metrics_listen.as_str() {
        "off" => None,
        addr => Some(addr.parse::<SocketAddr>().map_err(|_| {
            Failure::Config(anyhow::anyhow!(
                "METRICS_ADDR {:?} is not an address like 0.0.0.0:9090 (or off)",
                Echo(addr)
            ))
        })?),
    };
    let limits = Limits {
        max_connections: usize::from(args.max_connections),
        ..Limits::default()
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))
            .map_err(Failure::Runtime)?;
        let app = App::new(options, limits);
        let _ = app.certificate.set(Arc::clone(&store));
        if let Some(addr) = metrics_addr {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))
                .map_err(Failure::Runtime)?;
            tokio::spawn(server::serve_metrics(metrics, Arc::clone(&app)));
            info!(address = addr.to_string().as_str(); "metrics endpoint listening");
        }
        tokio::spawn(store.watch(Duration::from_secs(args.tls_reload_interval_secs.max(1))));
        info!(listen = args.listen.to_string().as_str(), max_connections = limits.max_connections; "serving HTTPS");
        server::serve(listener, tls, app, shutdown_signal()).await;
        info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot watch SIGTERM/SIGINT; stop with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name; "stopping");
}

fn install_profile(args: &InstallProfileArgs) -> Result<(), Failure> {
    let to = args.to.display().to_string();
    // The first install must succeed, so that a node where it cannot shows a crash-looping pod.
    let first = profile::install(&args.from, &args.to).map_err(|e| match e {
        ProfileError::Write { .. } => Failure::Runtime(e.into()),
        ProfileError::Read { .. } | ProfileError::Invalid { .. } => Failure::Config(e.into()),
    })?;
    let msg = match first {
        Installed::Written => "seccomp profile installed",
        Installed::Unchanged => "seccomp profile already installed",
    };
    info!(path = to.as_str(), interval_secs = args.interval_secs; "{msg}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)?;
    runtime.block_on(async {
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(Duration::from_secs(args.interval_secs)) => {}
            }
            match profile::install(&args.from, &args.to) {
                Ok(Installed::Unchanged) => {}
                Ok(Installed::Written) => {
                    warn!(path = to.as_str(); "seccomp profile was missing or different: reinstalled");
                }
                Err(e) => {
                    let error = format!("{:#}", anyhow::Error::new(e));
                    error!(path = to.as_str(), error = error.as_str(); "cannot reinstall the seccomp profile");
                }
            }
        }
    });
    // The file stays: running sniffers do not need it, but pods created during a rollout do.
    info!(path = to.as_str(); "stopped; the profile stays installed");
    Ok(())
}

fn gen_certs(args: &GenCertsArgs) -> Result<()> {
    let generated = certs::generate(
        certs::service_names(&args.service, &args.namespace),
        args.days,
    )?;
    if let Some(dir) = &args.out_dir {
        generated.write(dir)?;
        info!(dir = dir.display().to_string().as_str(); "wrote ca.crt, tls.crt, tls.key");
    }
    println!(
        "{}---\n# caBundle for the MutatingWebhookConfiguration:\n# {}",
        generated.secret_yaml(&args.secret, &args.namespace),
        generated.ca_bundle()
    );
    Ok(())
}

fn inject(args: &InjectArgs) -> Result<(), Failure> {
    let options = args.options.load().map_err(|e| Failure::Config(e.into()))?;
    // Read at most one byte more than the limit, so that a huge file or stream is refused (by
    // the preview) without being read whole.
    let limit = preview::MAX_INPUT_BYTES as u64 + 1;
    let mut text = String::new();
    let read = if args.file == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(&args.file).and_then(|file| file.take(limit).read_to_string(&mut text))
    };
    read.with_context(|| format!("cannot read {}", Echo(&args.file)))
        .map_err(Failure::Config)?;
    let input = text;
    let preview = preview::preview(&input, &args.namespace, &options)
        .map_err(|e| Failure::Config(e.into()))?;
    info!(summary = preview.summary.as_str(); "preview");
    let text = if args.output == "json" {
        serde_json::to_string_pretty(&preview.pod).expect("JSON serializes")
    } else {
        serde_yaml::to_string(&preview.pod)
            .context("cannot print YAML")
            .map_err(Failure::Runtime)?
    };
    println!("{}", text.trim_end());
    Ok(())
}
