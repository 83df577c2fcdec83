//! Which server serves a shard, and how a request gets there.
//!
//! A standalone server serves every shard. On a Redis Cluster the router keeps the slot map
//! (`CLUSTER SLOTS`) and one [`Node`] per master, and every request goes through
//! [`RedisBackend::send`]:
//!
//! - Before a connection serves a shard, `epoch.lua` runs for that shard on it (the epoch
//!   handshake: see [`super::connection`]).
//! - `MOVED`: the slot map is read again and the request retried; shards whose master
//!   changed handshake again on their new connection.
//! - `ASK`, `TRYAGAIN`, `CLUSTERDOWN`: a slot is being migrated (its keys are split between
//!   two nodes) or the cluster is failing over: the request is retried with backoff until it
//!   is served or the operation's timeout runs out. `ASK` is not followed to the importing
//!   node: a script sent there could create keys that still exist on the migrating node,
//!   which would stop `redis-cli --cluster reshard` with `BUSYKEY`.
//! - `NOSCRIPT` (a new or restarted master): the script is loaded on that node and the
//!   request sent again.
//! - A script's `EPOCH` refusal (the shard was flushed under this connection): the shard
//!   handshakes again and the request is sent once more.
//! - A broken connection fails the request (it may have run: the caller decides), retires
//!   the connection, and on a cluster makes the router read the slot map again.
//! - A timeout fails the request too. A hung server (`SIGSTOP`, a VM pause, a partition that
//!   drops packets) sends no reset and no `MOVED`: so a connection that received nothing at
//!   all while the request waited is retired, and on a cluster the slot map is read again in
//!   the background (from every known node at once), so that requests go to the replica
//!   promoted meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::{ConnectionAddr, ConnectionInfo, FromRedisValue, Pipeline, Script, ToRedisArgs};
use tracing::{debug, info, warn};

use super::connection::{Node, Session};
use super::keys::{Layout, SLOTS};
use super::registrations::Registrations;
use super::scripts::{EPOCH, MARK, TICKET_FLOOR};
use super::RedisBackend;
use crate::error::{Error, Result};

/// The error code of a script's refusal to run on a connection that handshook another epoch
/// of its shard (see `put.lua` and `begin.lua`).
pub(crate) const EPOCH_CHANGE: &str = "EPOCH";

/// A script call: the script, its keys and its arguments, sent by SHA.
pub(crate) struct Invocation {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    pub(crate) fn new(script: &'static Script) -> Self {
        Invocation {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds `KEYS[n]`.
    pub(crate) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds `ARGV[n]` (a list adds one argument per item).
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn evalsha(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// One request to one shard's server.
pub(crate) enum Request {
    Cmd(redis::Cmd),
    Pipe(Pipeline),
    Script(Invocation),
}

impl From<redis::Cmd> for Request {
    fn from(cmd: redis::Cmd) -> Self {
        Request::Cmd(cmd)
    }
}

impl From<Pipeline> for Request {
    fn from(pipe: Pipeline) -> Self {
        Request::Pipe(pipe)
    }
}

impl From<Invocation> for Request {
    fn from(invocation: Invocation) -> Self {
        Request::Script(invocation)
    }
}

impl Request {
    /// Sends the request on `conn`; a script the server does not know is loaded and sent
    /// again.
    async fn query<T: FromRedisValue>(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<T> {
        match self {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Pipe(pipe) => pipe.query_async(conn).await,
            Request::Script(invocation) => {
                let cmd = invocation.evalsha();
                match cmd.query_async(conn).await {
                    Err(error)
                        if error.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        invocation.script.load_async(conn).await?;
                        cmd.query_async(conn).await
                    }
                    other => other,
                }
            }
        }
    }
}

/// A connection that serves one shard, and the shard's epoch floor on it.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) session: Arc<Session>,
    pub(crate) floor: u64,
}

/// Where each shard is served.
pub(crate) struct Router {
    layout: Layout,
    /// The servers given by the application (on a cluster: where to read the slot map).
    seeds: Vec<ConnectionInfo>,
    cluster: bool,
    /// Every node used so far, by `host:port`.
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    /// A standalone server's node, once created (it serves every request: no lookup).
    standalone: OnceLock<Arc<Node>>,
    /// The master of each slot (`host:port`); empty for a standalone server.
    slots: RwLock<Arc<Vec<Arc<str>>>>,
    /// Held while the slot map is read, so that a burst of `MOVED`s reads it once.
    refreshing: tokio::sync::Mutex<Instant>,
    /// Woken when a shard began a new epoch: its directories need a repair.
    pub(crate) repair_wanted: tokio::sync::Notify,
    /// The directory bits this process set, and each shard's directory version.
    pub(crate) registrations: Registrations,
    connect_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<super::tls::Tls>,
}

/// How the router reaches its servers.
pub(crate) struct RouterSettings {
    pub(crate) seeds: Vec<ConnectionInfo>,
    pub(crate) cluster: bool,
    pub(crate) connect_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::tls::Tls>,
}

impl Router {
    pub(crate) fn new(layout: Layout, settings: RouterSettings) -> Self {
        Router {
            registrations: Registrations::new(layout.len()),
            layout,
            seeds: settings.seeds,
            cluster: settings.cluster,
            nodes: Mutex::default(),
            standalone: OnceLock::new(),
            slots: RwLock::new(Arc::new(Vec::new())),
            refreshing: tokio::sync::Mutex::new(Instant::now() - Duration::from_secs(60)),
            repair_wanted: tokio::sync::Notify::new(),
            connect_timeout: settings.connect_timeout,
            #[cfg(feature = "tls")]
            tls: settings.tls,
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The node named `name`; `info` (built only for a node not seen before) says how to
    /// reach it.
    fn node(&self, name: &str, info: impl FnOnce() -> ConnectionInfo) -> Result<Arc<Node>> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(node) = nodes.get(name) {
            return Ok(Arc::clone(node));
        }
        let info = info();
        let client = redis::Client::open(info).map_err(|e| Error::InvalidUrl(e.into()))?;
        let node = Node::new(name, client, self.connect_timeout, self.layout.len());
        #[cfg(feature = "tls")]
        let node = node.with_tls(self.tls.clone());
        let node = Arc::new(node);
        nodes.insert(name.to_owned(), Arc::clone(&node));
        Ok(node)
    }

    /// The node of a standalone server.
    fn standalone(&self) -> Result<Arc<Node>> {
        if let Some(node) = self.standalone.get() {
            return Ok(Arc::clone(node));
        }
        let node = self.node("standalone", || self.seeds[0].clone())?;
        Ok(Arc::clone(self.standalone.get_or_init(|| node)))
    }

    /// The connection settings of the node at `host:port`: the first seed's, with that
    /// address.
    fn info_for(&self, host: &str, port: u16) -> ConnectionInfo {
        let seed = &self.seeds[0];
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        seed.clone().set_addr(addr)
    }

    /// The node that serves `shard` now.
    pub(crate) async fn node_of(&self, shard: usize) -> Result<Arc<Node>> {
        self.node_of_slot(self.layout.slot_of(shard)).await
    }

    /// The node that serves `slot` now (a standalone server serves every slot).
    async fn node_of_slot(&self, slot: u16) -> Result<Arc<Node>> {
        if !self.cluster {
            return self.standalone();
        }
        let slot = usize::from(slot);
        let owner = self.owner(slot);
        let owner = match owner {
            Some(owner) => owner,
            None => {
                self.refresh().await?;
                self.owner(slot).ok_or_else(|| {
                    Error::Redis(crate::error::ServerError::cluster(
                        "CLUSTERDOWN",
                        "no master serves the slot",
                    ))
                })?
            }
        };
        let (host, port) = split_addr(&owner)?;
        self.node(&owner, || self.info_for(host, port))
    }

    /// The node that serves `shard` by the slot map, if it is known, without I/O.
    fn known_node_of(&self, shard: usize) -> Option<Arc<Node>> {
        if !self.cluster {
            return self.standalone.get().cloned();
        }
        let owner = self.owner(usize::from(self.layout.slot_of(shard)))?;
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&*owner)
            .cloned()
    }

    fn owner(&self, slot: usize) -> Option<Arc<str>> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(slot)
            .cloned()
    }

    /// A connection that serves `shard`, with the shard's epoch handshaken on it.
    pub(crate) async fn route(&self, shard: usize) -> Result<Route> {
        let node = self.node_of(shard).await?;
        let mut session = node.session().await?;
        if !session.still_trusted(self.connect_timeout).await? {
            session = node.session().await?;
        }
        if let Some(floor) = session.floor(shard) {
            return Ok(Route { session, floor });
        }
        let keys = self.layout.shard(shard);
        let role = match (self.layout.len(), shard) {
            (1, _) => "",
            (_, 0) => "T",
            _ => "S",
        };
        let mut handshake = Invocation::new(&EPOCH);
        handshake
            .key(keys.epoch())
            .key(keys.sequence())
            .key(keys.ticket_floor())
            .key(keys.incomplete())
            .key(keys.directory_version())
            .arg(&session.identity)
            .arg(role);
        let (floor, ticket_floor_set, began, version): (u64, u8, u8, String) =
            self.on(&session, handshake.into()).await?;
        self.registrations.learn(shard, &version);
        if began == 1 && self.layout.len() > 1 {
            // Its directories may have lost bits: see repair.rs.
            self.repair_wanted.notify_one();
        }
        if ticket_floor_set == 0 {
            // A new epoch of a shard without the ticket counter: its ticket floor is a
            // value of the counter read now, after the epoch began.
            let counter = self.layout.shard(0).sequence();
            let zero = Box::pin(self.route(0)).await?;
            let mut mark = Invocation::new(&MARK);
            mark.key(&counter);
            let value: u64 = self.on(&zero.session, mark.into()).await?;
            let mut set = Invocation::new(&TICKET_FLOOR);
            set.key(keys.epoch())
                .key(keys.ticket_floor())
                .arg(floor)
                .arg(value);
            let _: u8 = self.on(&session, set.into()).await?;
        }
        debug!(shard, floor, identity = %session.identity, "shard epoch handshaken");
        session.set_floor(shard, floor);
        Ok(Route { session, floor })
    }

    /// One request on `session` under the connect timeout (for the handshake).
    async fn on<T: FromRedisValue>(&self, session: &Session, request: Request) -> Result<T> {
        let mut conn = session.conn.clone();
        tokio::time::timeout(self.connect_timeout, request.query(&mut conn))
            .await
            .map_err(|_| Error::Timeout(self.connect_timeout))?
            .inspect_err(|e| session.check(e))
            .map_err(Error::from)
    }

    /// Starts reading the slot map again in a background task, unless it was read in the
    /// last 100 ms or is being read: after a timeout, or a call failed fast at a server whose
    /// breaker is open (its shards may have moved to a promoted replica).
    pub(crate) fn refresh_soon(self: &Arc<Self>) {
        if !self.cluster {
            return;
        }
        match self.refreshing.try_lock() {
            Ok(last) if last.elapsed() >= Duration::from_millis(100) => {}
            _ => return,
        }
        let router = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = router.refresh().await {
                debug!(%error, "cannot read the slot map");
            }
        });
    }

    /// Reads the slot map again (at most every 100 ms, however many requests ask), and
    /// makes shards whose master changed handshake again.
    pub(crate) async fn refresh(&self) -> Result<()> {
        if !self.cluster {
            return Ok(());
        }
        let mut last = self.refreshing.lock().await;
        if last.elapsed() < Duration::from_millis(100) {
            return Ok(());
        }
        let result = self.read_slot_map().await;
        *last = Instant::now();
        let map = result?;
        let old = std::mem::replace(
            &mut *self.slots.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(map),
        );
        let new = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let nodes: Vec<Arc<Node>> = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for shard in 0..self.layout.len() {
            let slot = usize::from(self.layout.slot_of(shard));
            if old.get(slot) != new.get(slot) {
                if !old.is_empty() {
                    info!(
                        shard,
                        from = old.get(slot).map(|s| &**s),
                        to = new.get(slot).map(|s| &**s),
                        "a shard moved to another master; it handshakes again"
                    );
                }
                for node in &nodes {
                    if let Some(session) = node.live() {
                        session.forget(shard);
                    }
                }
            }
        }
        Ok(())
    }

    /// `CLUSTER SLOTS` from the first node that answers, asking the known masters and the
    /// seeds at once (one of them may hang: a paused master never answers).
    async fn read_slot_map(&self) -> Result<Vec<Arc<str>>> {
        let mut candidates: Vec<(String, ConnectionInfo)> = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|a| a.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|addr| {
                let (host, port) = split_addr(&addr).ok()?;
                let info = self.info_for(host, port);
                Some((addr, info))
            })
            .collect();
        for seed in &self.seeds {
            let name = addr_of(seed);
            if !candidates.iter().any(|(known, _)| *known == name) {
                candidates.push((name, seed.clone()));
            }
        }
        if candidates.is_empty() {
            return Err(Error::InvalidConfig("no cluster node given".into()));
        }
        let attempts = candidates.into_iter().map(|(name, info)| {
            Box::pin(async move {
                let node = self.node(&name, || info)?;
                let session = node.session().await?;
                let mut conn = session.conn.clone();
                let reply: redis::Value = tokio::time::timeout(
                    self.connect_timeout,
                    redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn),
                )
                .await
                .map_err(|_| Error::Timeout(self.connect_timeout))?
                .inspect_err(|e| session.check(e))?;
                parse_slots(&reply, &name)
            })
        });
        match futures_util::future::select_ok(attempts).await {
            Ok((map, _)) => Ok(map),
            Err(error) => {
                warn!(%error, "no node of the cluster answered CLUSTER SLOTS");
                Err(error)
            }
        }
    }

    /// Sends one request about `key`, a key of the prefix as a whole rather than of a shard
    /// (no epoch handshake: see [`Layout::shard_count_key`]), to the server of its slot,
    /// within `timeout`; `MOVED` reads the slot map again and retries.
    pub(crate) async fn send_unsharded<T: FromRedisValue>(
        &self,
        key: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<T> {
        let slot = super::keys::slot(key.as_bytes());
        let attempt = async {
            loop {
                let session = self.node_of_slot(slot).await?.session().await?;
                let mut conn = session.conn.clone();
                match request.query::<T>(&mut conn).await {
                    Err(error) if error.code() == Some("MOVED") => {
                        self.refresh().await?;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    reply => return reply.inspect_err(|e| session.check(e)).map_err(Error::from),
                }
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// The distinct masters, with the shards each serves (for walking every shard).
    pub(crate) async fn masters(&self) -> Result<Vec<(Arc<Node>, Vec<usize>)>> {
        if !self.cluster {
            return Ok(vec![(self.standalone()?, (0..self.layout.len()).collect())]);
        }
        if self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            self.refresh().await?;
        }
        let mut by_owner: std::collections::BTreeMap<Arc<str>, Vec<usize>> = Default::default();
        for shard in 0..self.layout.len() {
            let slot = usize::from(self.layout.slot_of(shard));
            if let Some(owner) = self.owner(slot) {
                by_owner.entry(owner).or_default().push(shard);
            }
        }
        by_owner
            .into_iter()
            .map(|(owner, shards)| {
                let (host, port) = split_addr(&owner)?;
                Ok((self.node(&owner, || self.info_for(host, port))?, shards))
            })
            .collect()
    }
}

/// `host:port` of a connection's address.
pub(crate) fn addr_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

fn split_addr(addr: &str) -> Result<(&str, u16)> {
    addr.rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        .ok_or_else(|| {
            Error::Redis(crate::error::ServerError::cluster(
                "CLUSTERDOWN",
                "the cluster named a node without a port",
            ))
        })
}

/// Parses `CLUSTER SLOTS` into the master of each slot. A master announced without a host
/// is the node that answered (`asked`).
fn parse_slots(reply: &redis::Value, asked: &str) -> Result<Vec<Arc<str>>> {
    let malformed = || {
        Error::Redis(crate::error::ServerError::cluster(
            "CLUSTERDOWN",
            "malformed CLUSTER SLOTS reply",
        ))
    };
    let redis::Value::Array(ranges) = reply else {
        return Err(malformed());
    };
    let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
    let mut map: Vec<Option<Arc<str>>> = vec![None; usize::from(SLOTS)];
    for range in ranges {
        let redis::Value::Array(fields) = range else {
            return Err(malformed());
        };
        let (Some(start), Some(end), Some(redis::Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(malformed());
        };
        let start: usize = FromRedisValue::from_redis_value_ref(start).map_err(|_| malformed())?;
        let end: usize = FromRedisValue::from_redis_value_ref(end).map_err(|_| malformed())?;
        let host: String = master
            .first()
            .and_then(|v| FromRedisValue::from_redis_value_ref(v).ok())
            .unwrap_or_default();
        let port: u16 = master
            .get(1)
            .and_then(|v| FromRedisValue::from_redis_value_ref(v).ok())
            .ok_or_else(malformed)?;
        let host = if host.is_empty() || host == "?" {
            asked_host.to_owned()
        } else {
            host
        };
        let owner: Arc<str> = Arc::from(format!("{host}:{port}"));
        for slot in map
            .iter_mut()
            .take(end.min(usize::from(SLOTS) - 1) + 1)
            .skip(start)
        {
            *slot = Some(Arc::clone(&owner));
        }
    }
    if map.iter().any(Option::is_none) {
        // Slots without a master (a failover in progress): requests for them retry.
        debug!("some slots have no master in the cluster's map");
    }
    // Unserved slots point at a name no node has; requests for them fail and refresh.
    let nowhere: Arc<str> = Arc::from("unserved:0");
    Ok(map
        .into_iter()
        .map(|owner| owner.unwrap_or_else(|| Arc::clone(&nowhere)))
        .collect())
}

impl RedisBackend {
    /// Sends one request to the server of `shard`, built with the shard's epoch floor on the
    /// connection it goes out on; returns the reply and that floor. Follows the rules in the
    /// [module documentation](self), within the backend's timeout.
    pub(crate) async fn send<T: FromRedisValue>(
        &self,
        shard: usize,
        build: impl Fn(u64) -> Request,
    ) -> Result<(T, u64)> {
        // The breaker of the server last known to serve the shard (none before the first
        // request, or without breakers).
        let node = self
            .breaker
            .as_ref()
            .and_then(|_| self.router.known_node_of(shard));
        let admission = match &node {
            Some(node) => match node.breaker.admit(node.address()) {
                Ok(admission) => Some(admission),
                Err(unavailable) => {
                    // The shard may have a new master by now (a hung one failed over).
                    self.router.refresh_soon();
                    return Err(unavailable);
                }
            },
            None => None,
        };
        let outcome = self.send_routed(shard, build).await;
        if let (Some(settings), Some(node), Some(admission)) = (&self.breaker, &node, admission) {
            let answered = match &outcome {
                Err(Error::Timeout(_)) => false,
                Err(error) => !error.is_connection_loss(),
                Ok(_) => true,
            };
            node.breaker
                .record(admission, answered, settings, node.address());
        }
        outcome
    }

    /// [`send`](Self::send) past the circuit breaker.
    async fn send_routed<T: FromRedisValue>(
        &self,
        shard: usize,
        build: impl Fn(u64) -> Request,
    ) -> Result<(T, u64)> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        let mut rehandshaken = false;
        let mut moved = false;
        loop {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            let attempt = async {
                let route = self.router.route(shard).await?;
                let request = build(route.floor);
                let mut conn = route.session.conn.clone();
                let reply = request.query::<T>(&mut conn).await;
                match &reply {
                    Ok(_) => route.session.touch(),
                    Err(error) if error.code().is_some() => route.session.heard(),
                    Err(error) => route.session.check(error),
                }
                Ok::<_, Error>((reply?, route))
            };
            let error = match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok((reply, route))) => return Ok((reply, route.floor)),
                Ok(Err(error @ Error::Timeout(_))) => {
                    // A handshake or an idle check that timed out.
                    self.timed_out(shard, started);
                    return Err(error);
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    self.timed_out(shard, started);
                    return Err(Error::Timeout(self.timeout));
                }
            };
            let code = match &error {
                Error::Redis(server) => server.code().map(str::to_owned),
                _ => None,
            };
            match code.as_deref() {
                Some("MOVED") => {
                    if moved {
                        // The map read for the first one was already stale (refreshes are
                        // at most every 100 ms): wait rather than spin.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(100));
                    }
                    moved = true;
                    self.router.refresh().await?;
                }
                Some("ASK" | "TRYAGAIN" | "CLUSTERDOWN") => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                    if started.elapsed() >= self.timeout {
                        return Err(error);
                    }
                    if code.as_deref() == Some("CLUSTERDOWN") {
                        let _ = self.router.refresh().await;
                    }
                }
                Some(EPOCH_CHANGE) if !rehandshaken => {
                    rehandshaken = true;
                    if let Ok(node) = self.router.node_of(shard).await {
                        if let Some(session) = node.live() {
                            session.forget(shard);
                        }
                    }
                }
                _ => {
                    if self.router.is_cluster() && error.is_connection_loss() {
                        // Most likely a failover: the next request should find the new master.
                        let _ = self.router.refresh().await;
                    }
                    return Err(error);
                }
            }
            if started.elapsed() >= self.timeout {
                return Err(error);
            }
        }
    }

    /// A request for `shard` sent at `since` got no reply in time: see the [module
    /// documentation](self).
    fn timed_out(&self, shard: usize, since: Instant) {
        if let Some(session) = self
            .router
            .known_node_of(shard)
            .and_then(|node| node.live())
        {
            if session.silent_since(since) {
                warn!(
                    shard,
                    "no reply on a connection for a whole timeout: reconnecting"
                );
                session.retire();
            }
        }
        self.router.refresh_soon();
    }

    /// Sends one request to each of several shards at once (concurrently; requests to one
    /// server share its connection's pipeline); the replies in the same order.
    pub(crate) async fn send_all<T: FromRedisValue>(
        &self,
        requests: Vec<(usize, Request)>,
    ) -> Result<Vec<(T, u64)>> {
        try_join_all(
            requests
                .into_iter()
                .map(|(shard, request)| self.send::<T>(shard, move |_| request.duplicate())),
        )
        .await
    }
}

impl Request {
    fn duplicate(&self) -> Request {
        match self {
            Request::Cmd(cmd) => Request::Cmd(cmd.clone()),
            Request::Pipe(pipe) => Request::Pipe(pipe.clone()),
            Request::Script(invocation) => Request::Script(Invocation {
                script: invocation.script,
                keys: invocation.keys.clone(),
                args: invocation.args.clone(),
            }),
        }
    }
}
