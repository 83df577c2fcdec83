//! The local cluster forms, spreads slots over 3 masters, and fails over.

use std::time::Duration;

use matroska_test_support::RedisCluster;

#[test]
fn forms_and_fails_over() {
    let mut cluster = RedisCluster::start();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:#?}");
    assert_eq!(cluster.topology().len(), 6);

    let victim = masters[1].port;
    let took = cluster.fail_over(victim, Duration::from_secs(30));
    assert!(
        took > Duration::from_millis(500),
        "{took:?}: too fast to be a failover"
    );
    let after = cluster.masters();
    assert_eq!(after.len(), 3, "{after:#?}");
    assert!(after.iter().all(|m| m.port != victim));
    assert_eq!(
        after[1].slots, masters[1].slots,
        "the replica took the same slots"
    );
}

#[test]
fn reshards_and_pauses() {
    let cluster = RedisCluster::start();
    let masters = cluster.masters();
    cluster.reshard(masters[0].port, masters[2].port, 100);
    let after = cluster.masters();
    let count = |n: &matroska_test_support::NodeInfo| -> u32 {
        n.slots.iter().map(|s| u32::from(s.1 - s.0) + 1).sum()
    };
    let moved: Vec<u32> = after.iter().map(count).collect();
    assert_eq!(moved.iter().sum::<u32>(), 16384);
    assert!(moved.contains(&(count(&masters[2]) + 100)), "{after:#?}");

    // A paused replica does not stop the cluster.
    let replica = cluster.replica();
    cluster.pause(replica);
    cluster.resume(replica);
    assert!(cluster.kill_clients() < 100);
}
