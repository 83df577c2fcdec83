//! Runs the real `matroska` binary's walking commands (`dependents`, `stats`, `prune`) on a
//! cache of ENTRIES entries (default 1,000,000) in a throwaway redis-server, while another
//! client loops on `GET` and records its latencies. Prints one table row per command.
//!
//! ```text
//! cargo bench -p matroska-cli --bench ops_latency            # 1,000,000 entries
//! cargo bench -p matroska-cli --bench ops_latency -- 100000  # fewer
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use matroska_cache::{dep, MatroskaCache, RedisBackend};
use matroska_test_support::{GetProbe, RedisServer};

/// Latencies of a GET loop on its own connection while `op` runs.
fn measure(server: &RedisServer, op: impl FnOnce() -> bool) -> (Duration, bool, Vec<Duration>) {
    let probe = GetProbe::start(&server.url(), "{bench}:d:probe", Duration::from_micros(200));
    let start = Instant::now();
    let ok = op();
    let took = start.elapsed();
    (took, ok, probe.finish())
}

fn main() {
    let entries: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let server = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    eprintln!("filling {entries} entries (3 dependencies each), then deleting 10%...");
    let fill_start = Instant::now();
    runtime.block_on(async {
        let backend = RedisBackend::builder(&server.url(), "bench")
            .auto_prune(None)
            .build()
            .await
            .unwrap();
        let cache = MatroskaCache::new(backend);
        cache
            .put("probe", "x", [dep::tag("probe")], Duration::from_secs(3600))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..32u64)
            .map(|t| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let value = "v".repeat(100);
                    let mut i = t;
                    while i < entries {
                        let deps = [
                            dep::tag("all"),
                            dep::tag(&format!("group:{}", i % 1000)),
                            dep::id("item", i),
                        ];
                        cache
                            .put(&format!("k{i}"), &value, deps, Duration::from_secs(3600))
                            .await
                            .unwrap();
                        if i % 10 == 0 {
                            cache.delete(&format!("k{i}")).await.unwrap();
                        }
                        i += 32;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    eprintln!("filled in {:.1?}", fill_start.elapsed());

    let matroska = env!("CARGO_BIN_EXE_matroska");
    let run = |args: &[&str]| {
        Command::new(matroska)
            .args(args)
            .env("MATROSKA_REDIS_URL", server.url())
            .env("MATROSKA_PREFIX", "bench")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    println!("| command ({entries} entries) | time | GETs meanwhile | p50 | p99 | worst |");
    println!("|---|---|---|---|---|---|");
    let idle = measure(&server, || {
        std::thread::sleep(Duration::from_secs(2));
        true
    });
    let row = |name: &str, (took, ok, lat): (Duration, bool, Vec<Duration>)| {
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        println!(
            "| {name}{} | {:.2?} | {} | {:.2?} | {:.2?} | {:.2?} |",
            if ok { "" } else { " (FAILED)" },
            took,
            lat.len(),
            pick(0.5),
            pick(0.99),
            lat.last().copied().unwrap_or_default()
        );
    };
    row("(idle, for reference)", idle);
    row(
        r"dependents tag:group\:7 (1 key in 1000)",
        measure(&server, || run(&["dependents", r"tag:group\:7"])),
    );
    row(
        "dependents tag:all (all keys)",
        measure(&server, || run(&["dependents", "tag:all"])),
    );
    row("stats", measure(&server, || run(&["stats"])));
    row("prune", measure(&server, || run(&["prune"])));
}
