//! Redis restarts that reload older data (an RDB snapshot, an AOF that lost its last second,
//! a promoted replica) must never bring back an entry whose invalidation had returned.

use std::time::Duration;

use matroska_cache::{dep, MatroskaCache};
use matroska_test_support::RedisServer;
use redis::Commands;

const MINUTE: Duration = Duration::from_secs(60);

/// Retries `op` (which fails while the connection is being re-established) for a bounded time.
async fn once_reconnected<T, E: std::fmt::Debug, Fut>(mut op: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = None;
    for _ in 0..100 {
        match op().await {
            Ok(value) => return value,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no answer after the restart: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_snapshot_never_undoes_an_invalidation() {
    let mut server = RedisServer::start();
    let cache = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    cache
        .put("page", "v1", [dep::id("article", 1)], MINUTE)
        .await
        .unwrap();
    cache
        .put("other", "kept", [dep::tag("x")], MINUTE)
        .await
        .unwrap();
    // Taken before the crash, by a computation that reads v1.
    let ticket = cache.ticket().await.unwrap();

    let mut admin = server.connection();
    let _: () = redis::cmd("SAVE").query(&mut admin).unwrap();
    assert_eq!(cache.invalidate([dep::id("article", 1)]).await.unwrap(), 1);
    assert!(!cache.has("page").await.unwrap());

    server.restart(); // kill -9, then start on the same directory: the snapshot is reloaded
    let mut admin = server.connection();
    let raw: bool = admin.exists("{p}:d:page").unwrap();
    assert!(raw, "the snapshot should have brought the entry's key back");

    // Through the old client: a miss, never the invalidated value.
    let got = once_reconnected(|| cache.get::<String>("page")).await;
    assert_eq!(
        got, None,
        "an invalidated entry came back after the restart"
    );
    assert!(!cache.has("page").await.unwrap());
    assert_eq!(cache.deps("page").await.unwrap(), None);
    let many: Vec<Option<String>> = cache.get_many(["page", "other"]).await.unwrap();
    assert_eq!(many, [None, None]);
    // Entries that were not invalidated are lost too: when it cannot know, the cache misses.
    assert_eq!(cache.get::<String>("other").await.unwrap(), None);

    // Through a new client.
    let fresh = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    assert_eq!(fresh.get::<String>("page").await.unwrap(), None);
    assert!(!fresh.has("page").await.unwrap());

    // A ticket from before the crash cannot store: its invalidation marks may be lost.
    let stored = cache
        .put_fenced("page", "v1", [dep::id("article", 1)], MINUTE, &ticket)
        .await
        .unwrap();
    assert!(!stored, "a ticket from before the restart passed the fence");

    // Read-through recomputes instead of serving the resurrected entry.
    let v: String = cache
        .get_or_compute("page", MINUTE, || async {
            Ok::<_, std::io::Error>(("v2".to_owned(), [dep::id("article", 1)]))
        })
        .await
        .unwrap();
    assert_eq!(v, "v2");
    assert_eq!(
        fresh.get::<String>("page").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(fresh.invalidate([dep::id("article", 1)]).await.unwrap(), 1);
    assert_eq!(cache.get::<String>("page").await.unwrap(), None);
}

/// A flush under a live connection resets the generation counter; the cache must keep
/// working (new entries readable by every client, fences still in force).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_under_live_connections_starts_a_new_epoch() {
    let server = RedisServer::start();
    let writer = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    let reader = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    writer
        .put("k", "before", [dep::tag("t")], MINUTE)
        .await
        .unwrap();
    let ticket = writer.ticket().await.unwrap();
    assert_eq!(
        reader.get::<String>("k").await.unwrap().as_deref(),
        Some("before")
    );

    let mut admin = server.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();

    writer
        .put("k", "after", [dep::tag("t")], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        reader.get::<String>("k").await.unwrap().as_deref(),
        Some("after")
    );
    assert_eq!(
        writer.get::<String>("k").await.unwrap().as_deref(),
        Some("after")
    );
    // The flush lost the invalidation marks: an older ticket is refused.
    assert!(!writer
        .put_fenced("f", "x", [dep::tag("t")], MINUTE, &ticket)
        .await
        .unwrap());
    assert_eq!(reader.invalidate([dep::tag("t")]).await.unwrap(), 1);
    assert_eq!(writer.get::<String>("k").await.unwrap(), None);
}

/// Waits until `check` holds on `conn` (replication is asynchronous), for at most 10 s.
fn eventually(
    conn: &mut redis::Connection,
    what: &str,
    check: impl Fn(&mut redis::Connection) -> bool,
) {
    for _ in 0..200 {
        if check(conn) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within 10 s");
}

fn replicate(conn: &mut redis::Connection, master: Option<u16>) {
    let mut cmd = redis::cmd("REPLICAOF");
    match master {
        Some(port) => cmd.arg("127.0.0.1").arg(port),
        None => cmd.arg("NO").arg("ONE"),
    };
    cmd.exec(conn).unwrap();
}

fn synced(conn: &mut redis::Connection) -> bool {
    redis::cmd("INFO")
        .arg("replication")
        .query::<String>(conn)
        .is_ok_and(|info| info.contains("master_link_status:up"))
}

/// Issue 19, item 5: a failover to a replica that missed an invalidation, then a failback to
/// the first master, which resynced from that replica and so lost the invalidation too. It
/// keeps its run id (and the client connections it had); only its replication id changed.
/// Neither a process connected all along nor a new one may read the invalidated entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failback_to_a_master_that_resynced_never_undoes_an_invalidation() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let (mut on_a, mut on_b) = (a.connection(), b.connection());
    let prefix = "failback";
    let entry = format!("{{{prefix}}}:d:k");
    replicate(&mut on_b, Some(a.port()));
    eventually(&mut on_b, "B's first sync", synced);
    let build = || {
        matroska_cache::RedisBackend::builder(&a.url(), prefix)
            .auto_prune(None)
            .build()
    };
    let old = MatroskaCache::new(build().await.unwrap());
    old.put("k", &1, [dep::tag("x")], MINUTE).await.unwrap();
    eventually(&mut on_b, "the entry's replication", |c| {
        c.exists::<_, bool>(&entry).unwrap()
    });
    // B is cut off (promoted, as a failover would) before it sees the invalidation.
    replicate(&mut on_b, None);
    assert_eq!(old.invalidate([dep::tag("x")]).await.unwrap(), 1);
    // A fails back: it becomes B's replica (a full resync brings the entry back), then
    // master again, with its run id.
    replicate(&mut on_a, Some(b.port()));
    eventually(&mut on_a, "A's resync from B", |c| {
        synced(c) && c.exists::<_, bool>(&entry).unwrap()
    });
    replicate(&mut on_a, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        old.get::<i32>("k").await.unwrap(),
        None,
        "the process connected all along"
    );
    let new = MatroskaCache::new(build().await.unwrap());
    assert_eq!(new.get::<i32>("k").await.unwrap(), None, "a new process");
}

/// Issue 19, item 7: an invalidation that waits for a replica (`require_replicas`) while the
/// replica hangs (`SIGSTOP`) must not hold up the process's other commands to that master.
/// The `WAIT` blocks the connection it is sent on: the invalidation sends it on a connection
/// of its own. Checked as an order of events, not a duration: reads and writes complete while
/// the `WAIT` is still blocked on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_never_holds_up_reads() {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    let (mut on_master, mut on_replica) = (master.connection(), replica.connection());
    replicate(&mut on_replica, Some(master.port()));
    eventually(&mut on_replica, "the replica's first sync", synced);
    let backend = matroska_cache::RedisBackend::builder(&master.url(), "waits")
        .timeout(Duration::from_secs(1))
        .require_replicas(1, Duration::from_millis(900))
        .auto_prune(None)
        .build()
        .await
        .unwrap();
    let cache = MatroskaCache::new(backend);
    cache.put("k", &1, [dep::tag("x")], MINUTE).await.unwrap();
    cache
        .put("other", &2, [dep::tag("y")], MINUTE)
        .await
        .unwrap();
    let pid = replica.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .arg(name)
            .arg(&pid)
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let blocked_waits = |conn: &mut redis::Connection| {
        redis::cmd("CLIENT")
            .arg("LIST")
            .query::<String>(conn)
            .unwrap()
            .lines()
            .filter(|l| l.contains("cmd=wait") && l.contains("flags=b"))
            .count()
    };
    let mut overlapped = 0;
    for round in 0..5 {
        let invalidation = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.invalidate([dep::tag("x")]).await })
        };
        eventually(&mut on_master, "a blocked WAIT", |c| blocked_waits(c) == 1);
        // The WAIT is blocked on the master: the same process reads and writes meanwhile.
        assert_eq!(cache.get::<i32>("other").await.unwrap(), Some(2), "{round}");
        cache
            .put("p", &round, [dep::tag("z")], MINUTE)
            .await
            .unwrap();
        if blocked_waits(&mut on_master) == 1 {
            overlapped += 1;
        }
        let outcome = invalidation.await.unwrap();
        // Too few replicas acknowledged; on a loaded machine the WAIT's reply can also come
        // after the invalidation's whole budget (timeout + replica wait): a timeout. Both
        // are typed, transient errors the caller retries.
        assert!(
            matches!(
                outcome,
                Err(matroska_cache::Error::Replication {
                    wanted: 1,
                    acknowledged: 0
                } | matroska_cache::Error::Timeout(_))
            ),
            "{outcome:?}"
        );
    }
    signal("-CONT");
    // Rounds in which the read and the write came back before the WAIT did.
    assert!(overlapped > 0, "no read completed while a WAIT was blocked");
    eventually(&mut on_replica, "the replica's catching up", synced);
    cache.invalidate([dep::tag("x")]).await.unwrap();
}
