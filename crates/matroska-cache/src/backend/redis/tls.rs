//! `rediss://` connections (feature `tls`): rustls with ring, chosen for these connections
//! only.
//!
//! rustls otherwise uses one process-wide crypto provider, and installs it by itself the
//! first time a configuration is built. A library that did so would make an application's
//! own `CryptoProvider::install_default()` fail afterwards, and one compiled with two
//! providers panic. So the backend builds its rustls configuration with an explicit provider
//! and opens the TLS stream itself; redis-rs only speaks the protocol over it.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisConnectionInfo, RedisError, RedisResult};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

/// How to open TLS streams: the trusted roots and the provider, once per backend (clones
/// share them: one per server of a cluster).
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
}

impl Tls {
    /// Trusts `root_pem` (one or more PEM certificates) if given, else the platform's roots.
    pub(crate) fn new(root_pem: Option<&[u8]>) -> Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        match root_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|_| {
                        Error::InvalidConfig("the TLS root certificate is not valid PEM".into())
                    })?;
                    roots.add(cert).map_err(|_| {
                        Error::InvalidConfig(
                            "the TLS root certificate is not a valid certificate".into(),
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err(Error::InvalidConfig(
                        "the TLS root certificate holds no certificate".into(),
                    ));
                }
            }
            None => {
                // Certificates the platform store holds but rustls cannot parse are skipped,
                // as browsers do.
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| Error::InvalidConfig("rustls supports no TLS version with ring".into()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// A multiplexed connection to `host:port` over TLS, set up (authentication, database)
    /// by redis-rs as for a plain one.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        redis: &RedisConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            RedisError::from((ErrorKind::InvalidClientConfig, "invalid TLS server name"))
        })?;
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        super::connection::tune(&tcp)?;
        let stream = self.connector.connect(name, tcp).await?;
        let (conn, driver) = MultiplexedConnection::new_with_config(redis, stream, config).await?;
        tokio::spawn(driver);
        Ok(conn)
    }
}
