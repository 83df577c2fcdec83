//! The real `matroska` binary against a real, password-protected redis-server.

use assert_cmd::Command;
use matroska_test_support::RedisServer;

const PASSWORD: &str = "pa55:w/rd";

struct Fixture {
    server: RedisServer,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            server: RedisServer::builder().password(PASSWORD).start(),
        }
    }

    /// `matroska` with the server's URL and a prefix in the environment.
    fn matroska(&self) -> Command {
        let mut cmd = Command::cargo_bin("matroska").unwrap();
        cmd.env("MATROSKA_REDIS_URL", self.server.url())
            .env("MATROSKA_PREFIX", "app");
        cmd
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.matroska().args(args).output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }
}

#[test]
fn put_get_has_deps_dependents_invalidate() {
    let f = Fixture::new();
    let (code, out, _) = f.run(&[
        "put",
        "list",
        r#"[1,2]"#,
        "--dep",
        "id:article:1",
        "--dep",
        r"tag:a\:b",
        "--ttl",
        "5m",
    ]);
    assert_eq!((code, out.as_str()), (0, "stored list\n"));
    f.run(&[
        "put",
        "page",
        "<h1>Hi</h1>",
        "--string",
        "--dep",
        "id:article:1",
        "--ttl",
        "90s",
    ]);

    assert_eq!(
        f.run(&["get", "list"]),
        (0, "[1,2]\n".into(), String::new())
    );
    assert_eq!(f.run(&["get", "page"]).1, "<h1>Hi</h1>\n");
    assert_eq!(f.run(&["has", "list"]).0, 0);
    assert_eq!(f.run(&["deps", "list"]).1, "id:article:1\ntag:a\\:b\n");
    assert_eq!(f.run(&["dependents", "id:article:1"]).1, "list\npage\n");
    assert_eq!(f.run(&["invalidate", "id:article:1"]).1, "2\n");

    let (code, out, err) = f.run(&["get", "list"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "not in cache\n")
    );
    assert_eq!(f.run(&["has", "list"]).0, 1);
    assert_eq!(f.run(&["deps", "list"]).0, 1);
}

#[test]
fn what_the_cli_writes_the_library_reads() {
    let f = Fixture::new();
    f.run(&["put", "n", "42", "--dep", "tag:t", "--ttl", "1h"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cache = matroska_cache::MatroskaCache::redis(&f.server.url(), "app")
            .await
            .unwrap();
        assert_eq!(cache.get::<u32>("n").await.unwrap(), Some(42));
        cache
            .put(
                "from-lib",
                "text",
                [matroska_cache::dep::tag("t")],
                std::time::Duration::from_secs(60),
            )
            .await
            .unwrap();
    });
    assert_eq!(f.run(&["get", "from-lib"]).1, "text\n");
    assert_eq!(f.run(&["invalidate", "tag:t"]).1, "2\n");
}

/// A `#[cached]` function's `_key` companion names its entry for the CLI.
#[test]
fn cached_functions_are_operable_by_key() {
    use matroska_cache::{cached, dep, depends_on, MatroskaCache};

    struct Titles {
        cache: MatroskaCache,
    }
    impl Titles {
        #[cached(cache = self.cache, ttl = "1h", version = 2)]
        async fn title(&self, id: u64, lang: String) -> String {
            depends_on([dep::id("article", id)]);
            format!("Article {id} ({lang})")
        }
    }

    let f = Fixture::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let titles = runtime.block_on(async {
        let cache = MatroskaCache::redis(&f.server.url(), "app").await.unwrap();
        let titles = Titles { cache };
        titles.title(3, "en".into()).await;
        titles
    });
    let key = titles.title_key(3, "en".into());
    // The type path of a type declared in a function includes the function.
    assert_eq!(
        key,
        r#"cli::cached_functions_are_operable_by_key::Titles::title@v2(3,"en")"#
    );
    assert_eq!(f.run(&["get", &key]).1, "Article 3 (en)\n");
    assert_eq!(f.run(&["deps", &key]).1, "id:article:3\n");
    assert_eq!(f.run(&["delete", &key]).0, 0);
    assert_eq!(f.run(&["has", &key]).0, 1);
}

#[test]
fn json_output_for_every_command() {
    let f = Fixture::new();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (_, out, _) = f.run(&all);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
    };
    assert_eq!(
        json(&["put", "k", r#"{"a":1}"#, "--dep", "tag:t", "--ttl", "1m"])["stored"],
        true
    );
    assert_eq!(json(&["get", "k"])["value"]["a"], 1);
    assert_eq!(json(&["get", "nope"])["found"], false);
    assert_eq!(json(&["has", "k"])["present"], true);
    assert_eq!(json(&["deps", "k"])["deps"][0], "tag:t");
    assert_eq!(json(&["dependents", "tag:t"])["keys"][0], "k");
    let stats = json(&["stats"]);
    assert_eq!(
        (stats["entries"].as_u64(), stats["index_keys"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(json(&["invalidate", "tag:t"])["dropped"], 1);
    assert_eq!(json(&["delete", "k"])["deleted"], false);
    assert_eq!(json(&["prune"])["removed"], 0);
}

#[test]
fn stats_and_prune_see_garbage() {
    let f = Fixture::new();
    for i in 0..5 {
        f.run(&[
            "put",
            &format!("k{i}"),
            "1",
            "--dep",
            "tag:all",
            "--ttl",
            "1m",
        ]);
    }
    f.run(&["delete", "k0"]);
    f.run(&["delete", "k1"]);
    let (_, out, _) = f.run(&["stats"]);
    assert!(out.contains("entries        3"), "{out}");
    assert!(out.contains("garbage        2"), "{out}");
    let (code, out, _) = f.run(&["prune"]);
    assert_eq!(code, 0);
    assert!(out.contains("2 removed"), "{out}");
    assert!(f.run(&["stats"]).1.contains("garbage        0"));
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit_and_no_password() {
    let f = Fixture::new();
    let unreachable = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://:{}@127.0.0.1:{port}/", "hunter2")
    };
    let wrong_password = format!("redis://:hunter2@127.0.0.1:{}/", f.server.port());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--redis", &unreachable, "get", "k"],
            "cannot use Redis",
        ),
        (
            vec!["--redis", &wrong_password, "get", "k"],
            "cannot use Redis",
        ),
        (
            vec!["--redis", "not a url", "get", "k"],
            "invalid Redis URL",
        ),
        (vec!["invalidate", "nokind"], "invalid dependency"),
        (
            vec!["put", "k", "1", "--dep", r"tag:a\x", "--ttl", "1m"],
            "invalid dependency",
        ),
        (vec!["put", "k", "1", "--ttl", "soon"], "--ttl"),
        (vec!["put", "k", "1", "--ttl", "0s"], "above zero"),
        (vec!["put", "k", "not json", "--ttl", "1m"], "--string"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let (code, out, err) = f.run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
        assert!(
            err.contains(expected),
            "{args:?}: {err:?} lacks {expected:?}"
        );
        assert!(
            !err.contains("hunter2") && !err.contains(PASSWORD),
            "{args:?}: password printed: {err}"
        );
    }
}

/// Managed Redis often denies `CONFIG GET` (and a cache's user should not have it: it reads
/// `requirepass`): the CLI reads the eviction policy from `INFO memory` and works without it;
/// `--assume-safe-eviction-policy` is still accepted.
#[test]
fn a_user_without_config_rights_needs_no_flag() {
    let server = RedisServer::builder().acl_user("ops", "pw").start();
    server.acl_setuser("ops", "-config");
    let matroska = || {
        let mut cmd = Command::cargo_bin("matroska").unwrap();
        cmd.env("MATROSKA_REDIS_URL", server.url())
            .env("MATROSKA_PREFIX", "app");
        cmd
    };
    let plain = matroska().args(["has", "k"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(1), "{plain:?}"); // not in cache

    let put = matroska()
        .args([
            "--assume-safe-eviction-policy",
            "put",
            "k",
            "v",
            "--string",
            "--ttl",
            "1m",
        ])
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let has = matroska()
        .env("MATROSKA_ASSUME_SAFE_EVICTION_POLICY", "true")
        .args(["has", "k"])
        .output()
        .unwrap();
    assert_eq!(has.status.code(), Some(0));
}

/// The CLI on a Redis Cluster: given a comma-separated list of nodes, it detects cluster
/// mode; `stats`, `dependents` and `prune` cover every shard on every master.
#[test]
fn against_a_cluster() {
    use matroska_test_support::RedisCluster;

    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let nodes = urls[..2].join(",");
    let run_with = |shards: Option<&str>, args: &[&str]| {
        let mut command = Command::cargo_bin("matroska").unwrap();
        command
            .env("MATROSKA_REDIS_URL", &nodes)
            .env("MATROSKA_PREFIX", "app");
        if let Some(shards) = shards {
            command.env("MATROSKA_SHARDS", shards);
        }
        let output = command.args(args).output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    // Entries written by the library, spread over every master.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let backend = matroska_cache::RedisBackend::cluster_builder(&urls, "app")
            .shards(16)
            .build()
            .await
            .unwrap();
        let cache = matroska_cache::MatroskaCache::new(backend);
        for i in 0..200 {
            cache
                .put(
                    &format!("article:{i}"),
                    &format!("<p>{i}</p>"),
                    [matroska_cache::dep::tag("articles")],
                    std::time::Duration::from_secs(600),
                )
                .await
                .unwrap();
        }
    });
    let run = |args: &[&str]| run_with(Some("16"), args);
    // Another shard count than the application's is refused, naming both; none takes the
    // prefix's.
    let (code, _, err) = run_with(Some("128"), &["stats"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("128") && err.contains("16"), "{err}");
    assert_eq!(run_with(None, &["get", "article:3"]).1, "<p>3</p>\n");
    let (code, out, err) = run(&["put", "n", "42", "--dep", "tag:t", "--ttl", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "stored n\n");
    assert_eq!(run(&["get", "article:7"]).1, "<p>7</p>\n");
    assert_eq!(run(&["dependents", "tag:t"]).1, "n\n");
    assert_eq!(run(&["dependents", "tag:articles"]).1.lines().count(), 200);

    let (code, out, err) = run(&["--json", "stats"]);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["entries"], 201);
    let servers = stats["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{stats}");
    for server in servers {
        assert!(server["keys"].as_u64().unwrap() > 30, "{stats}");
    }
    let (_, table, _) = run(&["stats"]);
    assert!(table.contains("shards"), "{table}");

    assert_eq!(run(&["invalidate", "tag:articles"]).1, "200\n");
    // Members of entries deleted behind the index's back are garbage a prune removes.
    assert_eq!(run(&["delete", "n"]).0, 0);
    let (code, out, err) = run(&["--json", "prune"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["removed"], 1, "{report}");
}

/// With `--json`, a failure is a JSON document too (on stdout), and nothing on stderr.
#[test]
fn json_errors_are_json() {
    let f = Fixture::new();
    for args in [
        vec!["--json", "invalidate", "nokind"],
        vec!["--json", "put", "k", "1", "--ttl", "soon"],
        vec!["--json", "frobnicate"],
        vec![
            "--json",
            "--redis",
            "redis+unix:///nope.sock?pass=s3cret",
            "get",
            "k",
        ],
    ] {
        let (code, out, err) = f.run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err, "", "{args:?}");
        let document: serde_json::Value = serde_json::from_str(&out).unwrap();
        let message = document["error"].as_str().unwrap();
        assert!(
            !message.is_empty() && !message.contains("s3cret"),
            "{message}"
        );
    }
}

/// Values, keys and dependency texts can come from end users: a terminal escape in them
/// reaches the terminal only with `--raw`.
#[test]
fn control_characters_are_escaped_unless_raw() {
    let f = Fixture::new();
    let value = "hello\x1b]0;PWNED\x07\x1b[2J\nline two";
    let (code, _, err) = f.run(&[
        "put",
        "k\x1b[31m",
        value,
        "--string",
        "--dep",
        "tag:x\x1b[31mred",
        "--ttl",
        "1m",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = f.run(&["get", "k\x1b[31m"]);
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert!(out.contains("hello\\u{1b}]0;PWNED\\u{7}"), "{out:?}");
    assert!(out.contains("\nline two"), "newlines stay: {out:?}");
    let (_, out, _) = f.run(&["deps", "k\x1b[31m"]);
    assert_eq!(out, "tag:x\\u{1b}[31mred\n");
    let (_, out, _) = f.run(&["dependents", "tag:x\x1b[31mred"]);
    assert_eq!(out, "k\\u{1b}[31m\n");
    let (_, out, _) = f.run(&["--raw", "get", "k\x1b[31m"]);
    assert_eq!(out, format!("{value}\n"));
}

/// `rediss://` with a private certificate authority.
#[test]
fn rediss_with_a_private_root() {
    let made = matroska_test_support::tls_certificates();
    let server = RedisServer::builder().tls(&made.cert, &made.key).start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ca.pem");
    std::fs::write(&root, &made.ca).unwrap();
    let matroska = |args: &[&str]| {
        let output = Command::cargo_bin("matroska")
            .unwrap()
            .env("MATROSKA_REDIS_URL", server.tls_url().unwrap())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let root = root.to_str().unwrap();
    let (code, _, err) = matroska(&["--tls-root-cert", root, "put", "k", "1", "--ttl", "1m"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = matroska(&["--tls-root-cert", root, "get", "k"]);
    assert_eq!((code, out.as_str()), (0, "1\n"));
    // Without the root, the server is not trusted: a clear error, no plaintext fallback.
    let (code, _, err) = matroska(&["get", "k"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot use Redis"), "{err}");
}

/// After `--`, an argument that looks like an option is a dependency (a script's
/// `matroska invalidate -- "$DEP"` cannot be turned into another prefix).
#[test]
fn arguments_after_a_double_dash_are_never_options() {
    let f = Fixture::new();
    let (code, _, err) = f.run(&["put", "k", "1", "--dep", "tag:x", "--ttl", "1m"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = f.run(&["invalidate", "--", "--prefix=other", "tag:x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid dependency"), "{err}");
    let (code, out, _) = f.run(&["has", "k"]);
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "nothing was invalidated elsewhere"
    );
}
