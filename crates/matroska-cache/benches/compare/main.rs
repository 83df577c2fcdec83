//! Each operation next to its physical baseline, in one run on this machine: the Redis
//! backend against raw redis-rs on the same kind of connection (one multiplexed connection
//! manager) and the same server, and the memory backend against moka used directly.
//!
//! ```text
//! cargo bench -p matroska-cache --bench compare                              # everything, about 5 minutes
//! cargo bench -p matroska-cache --bench compare -- --max-dependents 100000   # fan-out up to 100k only
//! cargo bench -p matroska-cache --bench compare -- --only many-deps          # one section: ops,
//!                                                  # shards, memory, fanout, many-deps,
//!                                                  # cluster, repair, replica-wait
//!                                                  # or degraded
//! ```
//!
//! Prints Markdown tables (single operations, fan-out invalidation, memory per entry) and
//! writes the fan-out plot to `docs/fanout.svg`.

mod cluster;
mod degraded;
mod fanout;
mod many_deps;
mod memory_use;
mod ops;
mod plot;
mod repair;
mod replica_wait;

use std::path::PathBuf;
use std::time::Duration;

use matroska_cache::{MatroskaCache, RedisBackend};
use matroska_test_support::RedisServer;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const PREFIX: &str = "bench";

/// `--max-dependents N` (default 1,000,000); other arguments (such as the `--bench` cargo
/// passes) are ignored.
fn max_dependents() -> usize {
    number_arg("--max-dependents").unwrap_or(1_000_000)
}

/// `--repair-entries N` (default 1,000,000): the entries of the repair section.
fn repair_entries() -> u64 {
    number_arg("--repair-entries").unwrap_or(1_000_000)
}

/// The number after `flag` on the command line, if it is there.
fn number_arg<N: std::str::FromStr>(flag: &str) -> Option<N> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("{flag} takes a number, not {n:?}"))
        })
}

/// `--only SECTION`: whether to run `section` (all of them without the flag).
fn runs(section: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--only") {
        Some(i) => args.get(i + 1).map(String::as_str) == Some(section),
        None => true,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let sizes: Vec<usize> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max_dependents())
        .collect();
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), PREFIX)
            .auto_prune(None)
            .build()
            .await
            .expect("redis backend"),
    );
    // The same kind of connection as the backend's (which waits 2 s per round trip); more
    // patience for the baseline's bulk steps (filling, flushing a million keys).
    let config = ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let raw: ConnectionManager = redis::Client::open(server.url())
        .expect("url")
        .get_connection_manager_with_config(config)
        .await
        .expect("raw connection");

    if runs("ops") {
        println!("## Single operations\n");
        let mut rows = ops::redis(&cache, &raw).await;
        rows.extend(ops::memory().await);
        ops::print(&rows);
    }

    if runs("shards") {
        println!("\n## One server: 16 shards against 1\n");
        let sharded = MatroskaCache::new(
            RedisBackend::builder(&server.url(), "bench16")
                .shards(16)
                .auto_prune(None)
                .build()
                .await
                .expect("sharded backend"),
        );
        ops::print(&ops::shards_on_one_server(&cache, &sharded).await);
    }

    if runs("memory") {
        println!("\n## Memory per entry\n");
        memory_use::print(&memory_use::redis(&cache, &raw).await);
    }

    if runs("fanout") {
        println!("\n## Fan-out invalidation\n");
        let mut fan = fanout::redis(&server.url(), PREFIX, &cache, &raw, &sizes).await;
        fan.extend(fanout::memory(&sizes, &[1]).await);
        fan.extend(fanout::memory(&[100_000], &[2]).await);
        fanout::print(&fan);

        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/fanout.svg");
        plot::fanout(&fan, &path).expect("plot");
        println!("\nPlot: {}", path.display());
    }

    if runs("cluster") {
        cluster_section().await;
    }

    if runs("repair") {
        println!("\n## Directory repair after a failover (local cluster)\n");
        repair::section(repair_entries()).await;
    }

    if runs("degraded") {
        println!("\n## get_or_compute while Redis hangs (SIGSTOP)\n");
        degraded::section().await;
        println!("\n### One key, many callers, Redis hung\n");
        degraded::one_key().await;
        println!("\n### Hits on an entry due for a refresh\n");
        degraded::refresh_ahead().await;
    }

    if runs("replica-wait") {
        println!("\n## Reads while invalidations wait for a paused replica (local cluster)\n");
        replica_wait::section().await;
    }

    if runs("many-deps") {
        println!("\n## Invalidating many dependencies at once\n");
        let many: Vec<usize> = [50_000, 500_000]
            .into_iter()
            .filter(|&n| n <= max_dependents())
            .collect();
        many_deps::print(&many_deps::redis(&server.url(), PREFIX, &cache, &raw, &many).await);
        println!("\n## Invalidating dependencies without dependents\n");
        many_deps::without_dependents(&cache, &raw, 100_000).await;
    }
}

/// A local cluster of 3 masters and 3 replicas: one cache spread over it (the default 128
/// shards) against redis-rs's cluster connection doing the plain commands.
async fn cluster_section() {
    let cluster = tokio::task::block_in_place(matroska_test_support::RedisCluster::start);
    let urls = cluster.urls();
    let cache = MatroskaCache::new(
        RedisBackend::cluster_builder(&urls, PREFIX)
            .auto_prune(None)
            .build()
            .await
            .expect("cluster backend"),
    );
    let raw = redis::cluster::ClusterClient::new(urls)
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("cluster connection");
    // Let the first directory repair (a fresh cluster's) finish before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("\n## Single operations on a local cluster (3 masters, 3 replicas)\n");
    ops::print(&ops::cluster(&cache, &raw).await);
    if max_dependents() >= 100_000 {
        println!("\n## Fan-out invalidation on the cluster\n");
        fanout::print(&[cluster::fanout(&cluster, &cache, &raw, PREFIX, 100_000).await]);
    }
    println!("\n## Memory per entry on the cluster\n");
    memory_use::print(&cluster::memory(&cluster, &cache, &raw).await);
}
