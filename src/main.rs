//! The `metrics-relay` binary: command line, logging, signals.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use metrics_relay::RunOptions;
use metrics_relay::Sharding;
use metrics_relay::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "metrics-relay",
    version,
    about = "Scrape Prometheus metrics over mutual TLS and remote-write them to a Prometheus-compatible receiver."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Logging, for the commands that log.
#[derive(clap::Args)]
struct LogArgs {
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter: a level (error, warn, info, debug) or RUST_LOG syntax
    /// such as warn,metrics_relay=debug; RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: scrape the targets and remote-write the samples.
    /// SIGHUP or `POST /-/reload` reloads the config file.
    Run {
        /// Configuration file (Prometheus-shaped YAML).
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// Directory for the agent's state, the durable queue (created if
        /// missing); without it the queue is in memory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Admin server address (HOST:PORT; port 0 picks one, logged at
        /// start); overrides server.listen_address.
        #[arg(long)]
        listen_address: Option<String>,
        /// How long shutdown may spend sending what is queued (e.g. 10s);
        /// it ends sooner when everything is sent.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        shutdown_grace: Duration,
        /// How often TLS files and kubeconfigs are re-read for rotation.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        tls_reload_interval: Duration,
        /// Re-read the config file this often and reload when it changed
        /// (as Prometheus 3's flag); 0 (the default) turns it off. A mounted
        /// ConfigMap that changes then takes effect without a restart.
        #[arg(long = "config.auto-reload-interval", default_value = "0s", value_parser = parse_duration)]
        config_auto_reload_interval: Duration,
        /// Async runtime threads. One is plenty for a sidecar (scraping and
        /// sending wait on the network); more only help with many large
        /// targets on a machine with idle cores.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        worker_threads: u16,
        /// Serve `POST /-/reload` on the admin server (as Prometheus's flag
        /// of the same name). Off by default: SIGHUP always reloads.
        #[arg(long = "web.enable-lifecycle")]
        web_enable_lifecycle: bool,
        /// Replicas that split the targets: how many agents share them
        /// (1 to 1024).
        #[arg(long, default_value_t = 1)]
        shard_count: u32,
        /// This agent's shard, 0 to --shard-count minus 1.
        #[arg(long, conflicts_with = "shard_index_from_hostname")]
        shard_index: Option<u32>,
        /// Take the shard index from the hostname's trailing -<ordinal>, as a
        /// StatefulSet pod is named ($HOSTNAME, else the kernel's hostname).
        #[arg(long)]
        shard_index_from_hostname: bool,
        /// How many shards scrape each target (1 to --shard-count).
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// NAME=VALUE added to global.external_labels (repeatable), e.g.
        /// `--external-label=__replica__=$(POD_NAME)` for an HA tracker.
        #[arg(long = "external-label", value_parser = external_label)]
        external_labels: Vec<(String, String)>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Validate a configuration as `run` would at start (every TLS file, the
    /// admin server's TLS, discovery files, credentials files), without
    /// running it. Exit 1 with the reason.
    Check {
        /// Configuration file (Prometheus-shaped YAML).
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Scrape each target once and send one test sample to each remote_write
    /// URL; print TLS, certificate, HTTP and parse results. Exit 1 on failure.
    Probe {
        /// Configuration file (Prometheus-shaped YAML).
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Show, step by step, what relabeling makes of a job's targets (each
    /// relabel_configs rule: labels before and after, kept or dropped) and,
    /// with --series, of one series (metric relabeling, the profile first,
    /// external labels, each destination's write_relabel_configs).
    Explain {
        /// Configuration file (Prometheus-shaped YAML).
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// A job name, a target address (host:port) or a scrape URL.
        #[arg(long)]
        target: String,
        /// A series as the target exposes it: 'name{label="value",...}'.
        #[arg(long)]
        series: Option<String>,
    },
    /// Print Kubernetes manifests from a kubeconfig (kubectl apply -f -).
    Render {
        /// The cluster's kubeconfig (client certificate auth).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Context to use (default: current-context).
        #[arg(long)]
        context: Option<String>,
        /// The API server SLB's IP (default: the host of the kubeconfig's
        /// server address); --mode direct needs an IP.
        #[arg(long)]
        slb_ip: Option<String>,
        /// The namespace of every manifest (a DNS label: lowercase letters,
        /// digits and '-').
        #[arg(long, default_value = "monitoring")]
        namespace: String,
        /// direct: the vendor's Endpoints + Service + ServiceMonitor recipe
        /// (Prometheus scrapes the aggregator itself); agent: metrics-relay
        /// remote-writing to your Prometheus (deploy/); pull: metrics-relay
        /// serving /relay/metrics to a Prometheus-Operator ServiceMonitor, no
        /// remote write (deploy/overlays/pull).
        #[arg(long, default_value = "direct", value_parser = ["direct", "agent", "pull"])]
        mode: String,
        /// For --mode agent: the remote-write URL.
        #[arg(long)]
        remote_write_url: Option<String>,
        /// For --mode agent and pull: the container image.
        #[arg(long)]
        image: Option<String>,
        /// For --mode pull: a file holding the pull path's token, to keep
        /// the token of an earlier render (default: a new random token).
        #[arg(long)]
        pull_token_file: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

fn parse_duration(s: &str) -> Result<Duration, metrics_relay::UnitError> {
    metrics_relay::parse_duration(s)
}

/// Sets up logging; an invalid `--log-level` (or `RUST_LOG`) is an error,
/// not silently replaced.
fn init_logging(format: &str, level: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => tracing_subscriber::EnvFilter::try_new(&env)
            .with_context(|| format!("RUST_LOG={env:?} is not a valid log filter"))?,
        _ => check_levels(level).and_then(|()| tracing_subscriber::EnvFilter::try_new(level).map_err(Into::into)).with_context(|| {
            format!("--log-level {level:?} is not a valid log filter (e.g. info, debug, warn,metrics_relay=debug)")
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or
        // a container log.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// A bare word in a filter is a target for `EnvFilter` (so a mistyped level
/// would turn logging off without a word); here it must be a level.
fn check_levels(filter: &str) -> anyhow::Result<()> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            anyhow::bail!("{d:?} is not a level (one of {})", LEVELS.join(", "));
        }
    }
    Ok(())
}

/// An error and its causes, each said once: the library's messages already
/// carry their cause, so a link of the chain that the text so far contains
/// is left out.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

async fn shutdown_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "received signal"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "received signal"),
    }
    cancel.cancel();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("metrics-relay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match check(&config) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", describe(&e));
                ExitCode::FAILURE
            }
        },
        Command::Probe { config } => {
            if let Err(e) = init_logging("text", "warn") {
                eprintln!("error: {}", describe(&e));
                return ExitCode::FAILURE;
            }
            match probe(&config) {
                Ok((report, ok)) => {
                    print!("{report}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {}", describe(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            config,
            target,
            series,
        } => match explain(&config, &target, series.as_deref()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", describe(&e));
                ExitCode::FAILURE
            }
        },
        Command::Render {
            kubeconfig,
            context,
            slb_ip,
            namespace,
            mode,
            remote_write_url,
            image,
            pull_token_file,
        } => {
            let mode = match mode.as_str() {
                "agent" => metrics_relay::Mode::Agent,
                "pull" => metrics_relay::Mode::Pull,
                _ => metrics_relay::Mode::Direct,
            };
            let opts = metrics_relay::RenderOptions {
                kubeconfig,
                context,
                slb_ip,
                namespace,
                mode,
                remote_write_url,
                image,
                pull_token_file,
            };
            match metrics_relay::render(&opts) {
                Ok(y) => {
                    print!("{y}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            data_dir,
            listen_address,
            shutdown_grace,
            tls_reload_interval,
            worker_threads,
            web_enable_lifecycle,
            shard_count,
            shard_index,
            shard_index_from_hostname,
            replication_factor,
            external_labels,
            config_auto_reload_interval,
            log,
        } => {
            if let Err(e) = init_logging(&log.log_format, &log.log_level) {
                eprintln!("error: {}", describe(&e));
                return ExitCode::FAILURE;
            }
            let index = match (shard_index, shard_index_from_hostname) {
                (Some(i), _) => Ok(i),
                (None, true) => Sharding::index_from_hostname(&hostname()),
                (None, false) => Ok(0),
            };
            let sharding =
                match index.and_then(|i| Sharding::new(shard_count, i, replication_factor)) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
            match metrics_relay::raise_open_file_limit() {
                Ok((before, after)) if before != after => {
                    tracing::info!(before = ?before, after = ?after, "raised the soft open-file limit to the hard limit")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot raise the soft open-file limit"),
            }
            match run(
                config,
                worker_threads.into(),
                RunOptions {
                    listen_address,
                    data_dir,
                    shutdown_grace,
                    tls_reload_interval,
                    enable_lifecycle: web_enable_lifecycle,
                    sharding,
                    external_labels,
                    config_reload_every: (!config_auto_reload_interval.is_zero())
                        .then_some(config_auto_reload_interval),
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Once, through the log (stderr, in the chosen format).
                    let msg = describe(&e);
                    tracing::error!(error = %msg, "metrics-relay stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<String> {
    let cfg = Config::load(path)?;
    let n = metrics_relay::check(&cfg)?.targets;
    Ok(format!(
        "{}: OK ({} scrape config(s), {} target(s), {} remote_write destination(s))",
        path.display(),
        cfg.scrape_configs.len(),
        n,
        cfg.remote_write.len()
    ))
}

fn explain(path: &std::path::Path, target: &str, series: Option<&str>) -> anyhow::Result<String> {
    let cfg = metrics_relay::config::Config::load(path)?;
    Ok(metrics_relay::explain_config(&cfg, target, series)?)
}

fn probe(path: &std::path::Path) -> anyhow::Result<(String, bool)> {
    let cfg = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(metrics_relay::probe(&cfg)))
}

fn run(config: PathBuf, workers: usize, opts: RunOptions) -> anyhow::Result<()> {
    let rt = if workers == 1 {
        // Everything on this thread: no hand-offs between threads, one
        // allocator arena.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    rt.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_signal(cancel.clone()));
        metrics_relay::run(config, opts, cancel).await?;
        Ok(())
    })
}

/// `$HOSTNAME` (a pod's name), else the kernel's hostname.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `NAME=VALUE`, NAME a valid label name.
fn external_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if !metrics_relay::is_valid_label_name(k) {
        return Err(format!("{k:?} is not a valid label name"));
    }
    Ok((k.to_string(), v.to_string()))
}
