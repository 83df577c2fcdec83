//! `rediss://` against a real redis-server with a TLS port and a private certificate authority.
#![cfg(feature = "tls")]

use std::time::Duration;

use matroska_cache::{dep, Error, MatroskaCache, RedisBackend};
use matroska_test_support::RedisServer;

/// A CA certificate (PEM) and a server certificate and key for 127.0.0.1 signed by it.
fn certificates() -> (String, String, String) {
    let made = matroska_test_support::tls_certificates();
    (made.ca, made.cert, made.key)
}

#[tokio::test]
async fn rediss_urls_work_with_a_trusted_root() {
    let (ca, cert, key) = certificates();
    let server = RedisServer::builder().tls(&cert, &key).start();
    let url = server.tls_url().unwrap();

    let backend = RedisBackend::builder(&url, "p")
        .tls_root_certificate(ca)
        .build()
        .await
        .unwrap();
    let cache = MatroskaCache::new(backend);
    cache
        .put("k", "over TLS", [dep::tag("t")], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("over TLS")
    );
    assert_eq!(cache.invalidate([dep::tag("t")]).await.unwrap(), 1);

    // Without the private root the server's certificate is not trusted: a clear error.
    let err = MatroskaCache::redis(&url, "p").await.unwrap_err();
    assert!(matches!(err, Error::Redis(_) | Error::Timeout(_)), "{err}");
}

/// The backend chooses its crypto provider per connection: it neither reads nor installs
/// rustls's process-wide default, so the application's own `install_default()` still works
/// after the cache connected (and one compiled with two providers does not panic).
#[tokio::test]
async fn the_process_wide_crypto_provider_stays_the_applications() {
    let (ca, cert, key) = certificates();
    let server = RedisServer::builder().tls(&cert, &key).start();
    let url = server.tls_url().unwrap();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&url, "p")
            .tls_root_certificate(ca)
            .build()
            .await
            .unwrap(),
    );
    cache
        .put("k", "over TLS", [], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "the library installed a process-wide provider"
    );
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("the application's own provider installs");
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("over TLS")
    );
    // A root certificate that is not PEM is a clear configuration error.
    let err = RedisBackend::builder(&url, "p")
        .tls_root_certificate("not a certificate")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

/// TLS is what the parsed URL says, not a spelling: `valkeys://` and upper-case schemes use
/// the given root and refuse `#insecure` like `rediss://`, and a seed list mixing TLS and
/// plaintext is refused (discovered nodes connect as the first seed does).
#[tokio::test]
async fn every_spelling_of_tls_is_tls() {
    let (ca, cert, key) = certificates();
    let server = RedisServer::builder().tls(&cert, &key).start();
    let url = server.tls_url().unwrap();
    let rest = url.strip_prefix("rediss://").unwrap();
    for scheme in ["valkeys", "REDISS", "Valkeys"] {
        let spelled = format!("{scheme}://{rest}");
        let backend = RedisBackend::builder(&spelled, "p")
            .tls_root_certificate(ca.clone())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{spelled}: {e}"));
        let cache = MatroskaCache::new(backend);
        cache
            .put("k", "over TLS", [], Duration::from_secs(60))
            .await
            .unwrap();
        let insecure = format!("{spelled}#insecure");
        let err = RedisBackend::builder(&insecure, "p")
            .tls_root_certificate(ca.clone())
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("insecure"), "{insecure}: {err}");
    }
    let mixed = vec![url.clone(), "redis://127.0.0.1:1/".to_owned()];
    let err = RedisBackend::detecting_builder(&mixed, "p")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}
