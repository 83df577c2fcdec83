//! `matroska`: inspect and invalidate a live matroska-cache in Redis, from a shell.
//!
//! It uses the library's own Redis backend, so it reads and writes exactly the layout and
//! encoding the library does. Every command that walks keys does so in bounded batches.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use matroska_cache::backend::redis::redact_url as redact;
use matroska_cache::codec::{Encoded, Format};
use matroska_cache::{Backend, Dep, RedisBackend};
use serde_json::json;

/// Inspect and invalidate a live matroska-cache in Redis.
#[derive(Debug, Parser)]
#[command(name = "matroska", version)]
struct Cli {
    /// Redis URL, or a comma-separated list of a cluster's nodes; cluster mode is detected
    /// from the server (a password in a URL is never printed).
    #[arg(
        long,
        env = "MATROSKA_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        hide_env_values = true,
        global = true
    )]
    redis: String,

    /// The cache's key prefix.
    #[arg(long, env = "MATROSKA_PREFIX", default_value = "cache", global = true)]
    prefix: String,

    /// The cache's number of shards (default: the number the prefix's processes recorded,
    /// else the library's default, 1 on one server and 128 on a cluster). Another number than
    /// the recorded one is refused.
    #[arg(long, env = "MATROSKA_SHARDS", global = true)]
    shards: Option<u16>,

    /// Machine-readable output (one JSON document, errors too).
    #[arg(long, global = true)]
    json: bool,

    /// Print values, keys and dependencies as they are. Without it, control characters in
    /// them (a terminal escape in a cached page) are printed escaped (`\u{1b}`).
    #[arg(long, global = true)]
    raw: bool,

    /// A PEM file with the root certificate of a `rediss://` server with a private
    /// certificate authority (default: the platform's roots).
    #[arg(long, env = "MATROSKA_TLS_ROOT_CERT", global = true)]
    tls_root_cert: Option<std::path::PathBuf>,

    /// Skip the check of Redis's maxmemory-policy (read from INFO memory), for a proxy that does not report it.
    /// Only if you know it is noeviction or volatile-*: allkeys-* loses invalidations.
    #[arg(long, env = "MATROSKA_ASSUME_SAFE_EVICTION_POLICY", global = true)]
    assume_safe_eviction_policy: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value under KEY; exit 1 with "not in cache" when missing.
    Get { key: String },
    /// Store VALUE (JSON, or a raw string with --string) under KEY with dependencies.
    Put {
        key: String,
        value: String,
        /// A dependency in text form (id:article:1, tag:homepage); repeatable.
        #[arg(long = "dep")]
        deps: Vec<Dep>,
        /// Time to live: 90s, 5m, 1h...
        #[arg(long, value_parser = parse_ttl)]
        ttl: Duration,
        /// Store VALUE as a raw string instead of parsing it as JSON.
        #[arg(long)]
        string: bool,
    },
    /// Exit 0 if KEY is present, 1 if not.
    Has { key: String },
    /// Delete the entry under KEY.
    Delete { key: String },
    /// Drop every entry depending on any DEP; print how many were dropped.
    Invalidate {
        #[arg(required = true)]
        deps: Vec<Dep>,
    },
    /// The dependencies of the entry under KEY, one a line.
    Deps { key: String },
    /// The keys of the live entries that depend on DEP, one a line.
    Dependents { dep: Dep },
    /// Entries, index keys, index members, garbage, and memory used by the prefix.
    Stats,
    /// Reclaim index garbage, in bounded batches.
    Prune,
}

/// A duration like `90s`, `5m`, `1h`; zero is refused.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 90s, 5m, 1h)"))?;
    if ttl.is_zero() {
        return Err("the TTL must be above zero".to_owned());
    }
    Ok(ttl)
}

/// `text` with its control characters (but newlines and tabs) escaped, `\u{1b}` for ESC.
fn escape_controls(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// A failure: one line on stderr and exit code 2.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

/// What a command ends with.
enum Outcome {
    Success,
    /// Missing or absent: exit code 1.
    NotFound,
}

fn print_json(value: serde_json::Value) {
    println!("{value}");
}

/// Reports a missing key: `"not in cache"` on stderr, or `found: false` in JSON.
fn not_in_cache(json: bool, key: &str) -> Outcome {
    if json {
        print_json(json!({ "key": key, "found": false }));
    } else {
        eprintln!("not in cache");
    }
    Outcome::NotFound
}

fn progress_bar(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn run(cli: Cli) -> Result<Outcome, Failure> {
    let nodes: Vec<&str> = cli
        .redis
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let mut builder = RedisBackend::detecting_builder(&nodes, &cli.prefix)
        .auto_prune(None)
        .timeout(Duration::from_secs(10));
    builder = match cli.shards {
        Some(shards) => builder.shards(shards),
        None => builder.shards_of_prefix(),
    };
    if cli.assume_safe_eviction_policy {
        builder = builder.assume_safe_eviction_policy();
    }
    if let Some(path) = &cli.tls_root_cert {
        let pem = std::fs::read(path).map_err(|e| {
            Failure(format!(
                "cannot read the root certificate {}: {e}",
                path.display()
            ))
        })?;
        builder = builder.tls_root_certificate(pem);
    }
    let backend = builder.build().await.map_err(|e| {
        let hint = match e {
            matroska_cache::Error::EvictionPolicyUnknown(_) => {
                " (if you know the policy is safe, pass --assume-safe-eviction-policy)"
            }
            _ => "",
        };
        Failure(format!(
            "cannot use Redis at {}: {e}{hint}",
            redact(&cli.redis)
        ))
    })?;
    let json = cli.json;
    let raw = cli.raw;
    // Values, keys and dependency texts can come from end users: a terminal escape in a
    // cached page must not reach the operator's terminal.
    let shown = |text: &str| -> String {
        if raw {
            text.to_owned()
        } else {
            escape_controls(text)
        }
    };
    match cli.command {
        Command::Get { key } => match backend.get(&key).await? {
            None => return Ok(not_in_cache(json, &key)),
            Some(encoded) => {
                let text = String::from_utf8_lossy(&encoded.bytes).into_owned();
                if json {
                    let value = match encoded.format {
                        Format::Json => serde_json::from_str(&text)?,
                        _ => serde_json::Value::String(text),
                    };
                    print_json(json!({ "key": key, "found": true, "value": value }));
                } else {
                    println!("{}", shown(&text));
                }
            }
        },
        Command::Put {
            key,
            value,
            mut deps,
            ttl,
            string,
        } => {
            let encoded = if string {
                Encoded::encode(&key, &value)?
            } else {
                let parsed: serde_json::Value = serde_json::from_str(&value).map_err(|e| {
                    Failure(format!(
                        "VALUE is not JSON ({e}); pass --string to store it as text"
                    ))
                })?;
                Encoded::encode(&key, &parsed)?
            };
            deps.sort();
            deps.dedup();
            backend.put(&key, encoded, &deps, ttl).await?;
            if json {
                print_json(
                    json!({ "key": key, "stored": true, "deps": deps, "ttl_ms": ttl.as_millis() as u64 }),
                );
            } else {
                println!("stored {}", shown(&key));
            }
        }
        Command::Has { key } => {
            let present = backend.has(&key).await?;
            if json {
                print_json(json!({ "key": key, "present": present }));
            }
            if !present {
                return Ok(Outcome::NotFound);
            }
        }
        Command::Delete { key } => {
            let existed = backend.delete(&key).await?;
            if json {
                print_json(json!({ "key": key, "deleted": existed }));
            } else if existed {
                println!("deleted {}", shown(&key));
            } else {
                println!("{} was not in cache", shown(&key));
            }
        }
        Command::Invalidate { mut deps } => {
            deps.sort();
            deps.dedup();
            let dropped = backend.invalidate(&deps).await?;
            if json {
                print_json(json!({ "deps": deps, "dropped": dropped }));
            } else {
                println!("{dropped}");
            }
        }
        Command::Deps { key } => match backend.deps(&key).await? {
            None => return Ok(not_in_cache(json, &key)),
            Some(deps) => {
                if json {
                    print_json(json!({ "key": key, "found": true, "deps": deps }));
                } else {
                    for dep in deps {
                        println!("{}", shown(dep.as_str()));
                    }
                }
            }
        },
        Command::Dependents { dep } => {
            let keys = backend.dependents(&dep).await?;
            if json {
                print_json(json!({ "dep": dep, "keys": keys }));
            } else {
                for key in keys {
                    println!("{}", shown(&key));
                }
            }
        }
        Command::Stats => {
            let bar = progress_bar("counting");
            let stats = backend
                .prefix_stats(|s| bar.set_message(format!("counting: {} keys", s.keys_visited)))
                .await?;
            bar.finish_and_clear();
            if json {
                print_json(serde_json::to_value(stats)?);
            } else {
                println!("entries        {}", stats.entries);
                println!("index keys     {}", stats.index_keys);
                println!("index members  {}", stats.index_members);
                println!("garbage        {}", stats.garbage);
                println!("memory bytes   {}", stats.memory_bytes);
                if stats.servers.len() > 1 {
                    println!();
                    println!(
                        "{:<24} {:>6} {:>10} {:>14}",
                        "server", "shards", "keys", "memory bytes"
                    );
                    for server in &stats.servers {
                        println!(
                            "{:<24} {:>6} {:>10} {:>14}",
                            server.server, server.shards, server.keys, server.memory_bytes
                        );
                    }
                }
            }
        }
        Command::Prune => {
            let bar = progress_bar("pruning");
            let report = backend
                .prune_with_progress(|r| {
                    bar.set_message(format!(
                        "pruning: {} indexes, {} members, {} removed",
                        r.indexes, r.members, r.removed
                    ))
                })
                .await?;
            bar.finish_and_clear();
            if json {
                print_json(json!({
                    "indexes": report.indexes,
                    "members": report.members,
                    "removed": report.removed,
                    "directories": report.directories,
                    "unreadable": report.unreadable,
                }));
            } else {
                println!(
                    "pruned {} indexes: {} members visited, {} removed, {} directories deleted",
                    report.indexes, report.members, report.removed, report.directories
                );
                if report.unreadable > 0 {
                    println!(
                        "skipped {} keys named as indexes that are not (another type)",
                        report.unreadable
                    );
                }
            }
        }
    }
    Ok(Outcome::Success)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line names the argument and the problem.
            let rendered = error.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            let json = std::env::args().any(|arg| arg == "--json");
            fail(json, line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let json = cli.json;
    match run(cli).await {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::NotFound) => ExitCode::from(1),
        Err(Failure(message)) => {
            fail(json, message.lines().next().unwrap_or("failed"));
            ExitCode::from(2)
        }
    }
}

/// Reports a failure: `{"error": ..}` on stdout with `--json`, else one line on stderr.
fn fail(json: bool, line: &str) {
    if json {
        print_json(json!({ "error": line }));
    } else {
        eprintln!("error: {line}");
    }
}
