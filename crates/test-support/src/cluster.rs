//! A throwaway local Redis Cluster: 3 masters and 3 replicas on free loopback ports, with a
//! short node timeout, and the faults the cluster tests inject (a master killed, a node
//! paused, slots resharded, client connections killed).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{free_port, signal, RedisServer};

/// How long a node may be unreachable before the cluster fails it over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A running cluster; every node is killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The ports of the nodes paused now ([`pause`](Self::pause)): nothing asks them.
    paused: Mutex<BTreeSet<u16>>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master (else a replica).
    pub master: bool,
    /// Whether the cluster considers it failed.
    pub failed: bool,
    /// The slot ranges it serves (masters).
    pub slots: Vec<(u16, u16)>,
    /// The id of its master (replicas).
    pub master_id: Option<String>,
}

impl RedisCluster {
    /// Starts 3 masters and 3 replicas and waits until every node reports `cluster_state:ok`
    /// and agrees on the slot map.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing, or the cluster does not form in 60 s.
    pub fn start() -> RedisCluster {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with more `redis-server` settings on every node (`maxmemory`,
    /// say).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(config: &[(&str, &str)]) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let mut builder = RedisServer::builder();
                for (name, value) in config {
                    builder = builder.config(name, value);
                }
                builder
                    .config("cluster-enabled", "yes")
                    .config(
                        "cluster-node-timeout",
                        &NODE_TIMEOUT.as_millis().to_string(),
                    )
                    .config("cluster-port", &free_port().to_string())
                    // A cache keeps serving the slots it has while others are down.
                    .config("cluster-require-full-coverage", "no")
                    .start()
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (is redis-cli installed?)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster {
            nodes,
            paused: Mutex::default(),
        };
        cluster.wait_until_stable(Duration::from_secs(60));
        cluster
    }

    /// `redis://127.0.0.1:<port>/` of every node, masters and replicas.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// The nodes that run and are not paused.
    fn answering(&self) -> impl Iterator<Item = &RedisServer> {
        let paused = self
            .paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.nodes
            .iter()
            .filter(move |n| n.is_running() && !paused.contains(&n.port()))
    }

    /// The cluster's view of its nodes, as a live node reports it.
    pub fn topology(&self) -> Vec<NodeInfo> {
        for node in self.answering() {
            let Ok(mut conn) = connect(node) else {
                continue;
            };
            if let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut conn)
            {
                return parse_nodes(&text);
            }
        }
        panic!("no node of the cluster answers CLUSTER NODES");
    }

    /// The port of the master that serves `slot` (slot 0 holds shard 0 of a sharded cache,
    /// with its ticket counter).
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.masters()
            .into_iter()
            .find(|m| {
                m.slots
                    .iter()
                    .any(|&(first, last)| (first..=last).contains(&slot))
            })
            .expect("a master serves every slot")
            .port
    }

    /// The masters, in slot order.
    pub fn masters(&self) -> Vec<NodeInfo> {
        let mut masters: Vec<NodeInfo> = self
            .topology()
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| n.slots[0].0);
        masters
    }

    /// The port of a replica that is up.
    pub fn replica(&self) -> u16 {
        self.topology()
            .into_iter()
            .find(|n| !n.master && !n.failed)
            .expect("a replica")
            .port
    }

    /// Kills a node as a crash would (`kill -9`).
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Kills the master on `port` (`kill -9`) and waits until a replica serves its slots and
    /// every live node agrees; returns how long that took.
    pub fn fail_over(&mut self, port: u16, limit: Duration) -> Duration {
        let slots = self.slots_of(port);
        let killed = Instant::now();
        self.kill(port);
        self.wait_for_master_of(&slots, |m| m != port, killed, limit);
        killed.elapsed()
    }

    /// Pauses a node (`SIGSTOP`): it holds its connections but answers nothing.
    pub fn pause(&self, port: u16) {
        signal(self.node(port), "-STOP");
        self.paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port);
    }

    /// Resumes a node paused with [`pause`](Self::pause).
    pub fn resume(&self, port: u16) {
        signal(self.node(port), "-CONT");
        self.paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port);
    }

    /// Pauses the master on `port` (`SIGSTOP`: no connection is reset, nothing answers) and
    /// waits, with it still paused, until a replica serves its slots and every other node
    /// agrees; returns how long that took. [`resume`](Self::resume) it later: it rejoins as a
    /// replica of the promoted node.
    pub fn pause_until_failed_over(&self, port: u16, limit: Duration) -> Duration {
        let slots = self.slots_of(port);
        let paused = Instant::now();
        self.pause(port);
        self.wait_for_master_of(&slots, |m| m != port, paused, limit);
        paused.elapsed()
    }

    /// Makes the replica on `port`, once it has synced with its master, take over from it
    /// (`CLUSTER FAILOVER`, as an operator restoring the topology after a failover would),
    /// and waits until it serves its master's slots and every node agrees; returns how long
    /// that took.
    pub fn fail_back(&self, port: u16, limit: Duration) -> Duration {
        let began = Instant::now();
        loop {
            let synced = connect(self.node(port))
                .and_then(|mut conn| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut conn)
                })
                .is_ok_and(|info| {
                    info.contains("role:slave") && info.contains("master_link_status:up")
                });
            if synced && self.is_stable() {
                break;
            }
            assert!(
                began.elapsed() < limit,
                "the replica on {port} did not sync within {limit:?}"
            );
            sleep(Duration::from_millis(100));
        }
        let master = self.master_of(port).expect("the replica's master");
        let _: () = connect(self.node(port))
            .and_then(|mut conn| redis::cmd("CLUSTER").arg("FAILOVER").query(&mut conn))
            .expect("CLUSTER FAILOVER");
        self.wait_for_master_of(&master.slots, |m| m == port, began, limit);
        began.elapsed()
    }

    /// The master of the replica on `port`.
    fn master_of(&self, port: u16) -> Option<NodeInfo> {
        let topology = self.topology();
        let master_id = topology
            .iter()
            .find(|n| n.port == port)?
            .master_id
            .clone()?;
        topology.into_iter().find(|n| n.id == master_id)
    }

    /// The slot ranges the master on `port` serves.
    fn slots_of(&self, port: u16) -> Vec<(u16, u16)> {
        self.topology()
            .into_iter()
            .find(|n| n.port == port)
            .map(|n| n.slots)
            .expect("a node of this cluster")
    }

    /// Waits until a master whose port passes `wanted` serves `slots` and every answering
    /// node agrees.
    fn wait_for_master_of(
        &self,
        slots: &[(u16, u16)],
        wanted: impl Fn(u16) -> bool,
        since: Instant,
        limit: Duration,
    ) {
        loop {
            let taken_over = self
                .masters()
                .iter()
                .any(|m| wanted(m.port) && m.slots == slots);
            if taken_over && self.is_stable() {
                return;
            }
            assert!(
                since.elapsed() < limit,
                "no master took over within {limit:?}: {:#?}",
                self.topology()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a replica has taken over every slot range and all live nodes agree.
    pub fn wait_until_stable(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.is_stable() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become stable within {limit:?}: {:#?}",
                self.topology()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn is_stable(&self) -> bool {
        let mut views = Vec::new();
        for node in self.answering() {
            let Ok(mut conn) = connect(node) else {
                return false;
            };
            let Ok(info) = redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn) else {
                return false;
            };
            if !info.contains("cluster_state:ok") {
                return false;
            }
            // A replica that has not synced would not take over: wait for its link.
            let Ok(replication) = redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut conn)
            else {
                return false;
            };
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return false;
            }
            let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut conn)
            else {
                return false;
            };
            let mut slots: Vec<(u16, u16, String)> = parse_nodes(&text)
                .into_iter()
                .filter(|n| n.master && !n.failed)
                .flat_map(|n| {
                    n.slots
                        .iter()
                        .map(move |s| (s.0, s.1, n.id.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            slots.sort();
            let covered: u32 = slots.iter().map(|s| u32::from(s.1 - s.0) + 1).sum();
            if covered != 16384 {
                return false;
            }
            views.push(slots);
        }
        views.windows(2).all(|w| w[0] == w[1])
    }

    /// Moves `count` slots from the master on port `from` to the master on port `to` with
    /// `redis-cli --cluster reshard` (keys included), and waits until the move is complete.
    pub fn reshard(&self, from: u16, to: u16, count: u16) {
        let topology = self.topology();
        let id = |port: u16| {
            topology
                .iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .expect("a node of this cluster")
        };
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("reshard")
            .arg(format!("127.0.0.1:{from}"))
            .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .args(["--cluster-pipeline", "100"])
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.wait_until_stable(Duration::from_secs(30));
    }

    /// Kills every normal client connection on the node at `port` (`CLIENT KILL TYPE
    /// normal`), as an idle timeout or a network blip would; returns how many were killed.
    pub fn kill_clients_on(&self, port: u16) -> u64 {
        connect(self.node(port))
            .and_then(|mut conn| {
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .query::<u64>(&mut conn)
            })
            .unwrap_or(0)
    }

    /// Kills every normal client connection on every live node (`CLIENT KILL TYPE normal`);
    /// returns how many were killed.
    pub fn kill_clients(&self) -> u64 {
        let mut killed = 0;
        for node in self.answering() {
            if let Ok(mut conn) = connect(node) {
                // Our own connection is killed last (SKIPME yes is the default).
                killed += redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .query::<u64>(&mut conn)
                    .unwrap_or(0);
            }
        }
        killed
    }
}

/// A blocking connection to `node`, failing fast if it does not answer.
/// A connection to `node` whose requests fail after 2 s rather than wait for a node that
/// hangs.
fn connect(node: &RedisServer) -> redis::RedisResult<redis::Connection> {
    let conn = redis::Client::open(node.url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(conn)
}

/// Parses `CLUSTER NODES`.
fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeInfo {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected\n\
                    67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922\n\
                    e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]\n\
                    aaaa 127.0.0.1:30003@31003 master,fail - 0 0 3 connected 10923 10924-16383\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert!(!nodes[0].master);
        assert_eq!(nodes[0].master_id.as_deref(), Some("e7d1"));
        assert_eq!(nodes[1].master_id, None);
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert_eq!(nodes[2].slots, vec![(0, 5460)]);
        assert!(nodes[3].failed);
        assert_eq!(nodes[3].slots, vec![(10923, 10923), (10924, 16383)]);
    }
}
