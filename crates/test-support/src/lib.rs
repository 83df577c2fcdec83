//! Test support for matroska-cache: a throwaway `redis-server` on a free port, a local
//! [`RedisCluster`], and a [`GetProbe`] that measures how long Redis stalls.
//!
//! ```no_run
//! let server = matroska_test_support::RedisServer::start();
//! let url = server.url(); // redis://127.0.0.1:<port>/
//! // the server and its directory go away when `server` is dropped
//! ```

mod cluster;
mod probe;

pub use cluster::{NodeInfo, RedisCluster, NODE_TIMEOUT};
pub use probe::GetProbe;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The one-line fix printed when `redis-server` is missing.
pub const MISSING_REDIS: &str =
    "redis-server not found on PATH: run ./scripts/test (it installs it) or `apt-get install redis-server`";

/// Settings of a [`RedisServer`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RedisServerBuilder {
    password: Option<String>,
    user: Option<(String, String)>,
    args: Vec<String>,
    tls: Option<Tls>,
}

/// PEM files for a TLS port.
#[derive(Clone, Debug)]
struct Tls {
    cert: String,
    key: String,
    port: u16,
}

impl RedisServerBuilder {
    /// Also listen for TLS on another port, with this server certificate and key (PEM).
    /// Clients are not asked for certificates.
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some(Tls {
            cert: cert_pem.to_owned(),
            key: key_pem.to_owned(),
            port: 0,
        });
        self
    }

    /// Require this password (`requirepass`) for the default user.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Add an ACL user with full access and this password, and disable the default user.
    pub fn acl_user(mut self, user: &str, password: &str) -> Self {
        self.user = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Pass `--name value` to the server.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_owned());
        self
    }

    /// Starts the server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` is missing (with [`MISSING_REDIS`]) or does not come up.
    pub fn start(self) -> RedisServer {
        let dir = tempfile::tempdir().expect("create a temp dir for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            settings: self,
        };
        for _ in 0..5 {
            server.port = free_port();
            if let Some(tls) = &mut server.settings.tls {
                tls.port = free_port();
            }
            if server.spawn() {
                return server;
            }
        }
        let log = std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        panic!("redis-server did not start; the end of its log: {tail:#?}");
    }
}

/// A `redis-server` child process; killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    settings: RedisServerBuilder,
}

/// Percent-encodes everything but ASCII letters and digits, for the user-info part of a URL.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

impl RedisServer {
    /// A server with default settings.
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    /// A builder for a server with a password, ACL users or other settings.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis://[user:password@]127.0.0.1:<port>/`, with the configured credentials
    /// (percent-encoded).
    pub fn url(&self) -> String {
        match (&self.settings.user, &self.settings.password) {
            (Some((user, pass)), _) => {
                format!(
                    "redis://{}:{}@127.0.0.1:{}/",
                    encode(user),
                    encode(pass),
                    self.port
                )
            }
            (None, Some(pass)) => format!("redis://:{}@127.0.0.1:{}/", encode(pass), self.port),
            (None, None) => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// `rediss://127.0.0.1:<tls port>/`, if the server was built with [`RedisServerBuilder::tls`].
    pub fn tls_url(&self) -> Option<String> {
        let tls = self.settings.tls.as_ref()?;
        Some(format!("rediss://127.0.0.1:{}/", tls.port))
    }

    /// A blocking connection for test assertions.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    /// `ACL SETUSER user <rules>` (space-separated, as in `redis-cli`), on the
    /// [`connection`](Self::connection).
    pub fn acl_setuser(&self, user: &str, rules: &str) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(rules.split_whitespace().collect::<Vec<_>>())
            .exec(&mut self.connection())
            .expect("ACL SETUSER");
    }

    /// Stops the server with `SIGSTOP`: connections stay open and nothing answers, the way
    /// a hung VM or a dropped network path behaves. [`resume`](Self::resume) continues it.
    pub fn pause(&self) {
        signal(self, "-STOP");
    }

    /// Continues a server [`pause`](Self::pause)d.
    pub fn resume(&self) {
        signal(self, "-CONT");
    }

    /// Kills the server (as a crash would: no shutdown, no save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Spawns the server on `self.port`; returns whether it came up.
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if let Some(pass) = &self.settings.password {
            command.args(["--requirepass", pass]);
        }
        if let Some((user, pass)) = &self.settings.user {
            // Each word its own argument: redis-server joins them into one config line.
            let secret = format!(">{pass}");
            command.args(["--user", user, "on", &secret, "~*", "&*", "+@all"]);
            command.args(["--user", "default", "off"]);
        }
        if let Some(tls) = &self.settings.tls {
            let (cert, key) = (
                self.dir.path().join("cert.pem"),
                self.dir.path().join("key.pem"),
            );
            std::fs::write(&cert, &tls.cert).expect("write the TLS certificate");
            std::fs::write(&key, &tls.key).expect("write the TLS key");
            command.arg("--tls-port").arg(tls.port.to_string());
            command
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
            command.args(["--tls-auth-clients", "no"]);
        }
        command.args(&self.settings.args);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING_REDIS}"),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false; // exited: the port was taken, most likely
            }
            let up = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if up.is_ok() {
                return true;
            }
            sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private certificate authority's certificate, and a server certificate and key for
/// `127.0.0.1` and `localhost` signed by it, all PEM: for
/// [`RedisServerBuilder::tls`] and a client that trusts `ca`.
pub fn tls_certificates() -> TlsCertificates {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a key pair");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("a key pair");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server parameters");
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .expect("a server certificate");
    TlsCertificates {
        ca: ca_cert.pem(),
        cert: server_cert.pem(),
        key: server_key.serialize_pem(),
    }
}

/// What [`tls_certificates`] makes.
#[derive(Clone, Debug)]
pub struct TlsCertificates {
    /// The authority's certificate: the root a client trusts.
    pub ca: String,
    /// The server's certificate.
    pub cert: String,
    /// The server's private key.
    pub key: String,
}

/// Sends `signal` (`-STOP`, `-CONT`) to a running server.
pub(crate) fn signal(node: &RedisServer, signal: &str) {
    let pid = node.pid().expect("the node is running");
    let status = std::process::Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}
