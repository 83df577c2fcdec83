//! What a request is keyed on, and when it may not share the cache at all.
//!
//! A cached response is served to every request with the same key, so everything a handler
//! may read must be in the key or make the request bypass the cache: the URL (the original
//! one, before a `nest` stripped its prefix), the scheme and host, the headers the
//! application keys, the user for [`per_user`](crate::CacheLayer::per_user), and the values
//! of the `Vary` headers the response names. Requests carrying credentials, headers that
//! proxies and rewrite middleware act on, or a body, bypass unless the application says
//! how they are keyed.
//!
//! Keys hold no secrets and have a bounded length: user identities and `Vary` values are
//! SHA-256 digests, and a long URL is replaced by its digest (the full URL is stored in the
//! entry and compared on every hit).

use std::fmt::Write as _;

use axum::extract::OriginalUri;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::uri::Authority;
use matroska_cache::key::RESERVED;
use sha2::{Digest as _, Sha256};

/// Request headers that carry credentials by default: a request with one of them bypasses
/// the cache unless [`per_user`](crate::CacheLayer::per_user) keys it.
pub const DEFAULT_CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "x-auth-token",
    "x-access-token",
];

/// Request headers that change what a handler (or a middleware inside the layer) does
/// without being in the URL: a request with one of them bypasses the cache unless the
/// application keys it ([`key_headers`](crate::CacheLayer::key_headers)) or says its
/// handlers never read it ([`ignore_headers`](crate::CacheLayer::ignore_headers)). Every
/// `x-forwarded-*` header counts too.
pub const DEFAULT_UNKEYED_HEADERS: [&str; 10] = [
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "x-client-ip",
    "x-original-host",
    "x-host",
];

/// The `Vary` headers a response may name and still be stored, by default: responses that
/// vary on anything else pass through uncached.
pub const DEFAULT_VARY_ALLOWED: [&str; 4] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
];

/// A URL (with scheme, host and keyed headers) longer than this is keyed by its digest.
const MAX_LOCATOR: usize = 512;

/// Which request headers make a request private, bypass it, or key it.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub(crate) credentials: Vec<HeaderName>,
    pub(crate) unkeyed: Vec<HeaderName>,
    /// Sorted, each once: their values are part of the key.
    pub(crate) keyed: Vec<HeaderName>,
    pub(crate) ignored: Vec<HeaderName>,
    pub(crate) vary_allowed: Vec<HeaderName>,
}

fn names(names: &[&'static str]) -> Vec<HeaderName> {
    names.iter().map(|n| HeaderName::from_static(n)).collect()
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            credentials: names(&DEFAULT_CREDENTIAL_HEADERS),
            unkeyed: names(&DEFAULT_UNKEYED_HEADERS),
            keyed: Vec::new(),
            ignored: Vec::new(),
            vary_allowed: names(&DEFAULT_VARY_ALLOWED),
        }
    }
}

impl Rules {
    /// Whether the request carries credentials: its response may be personal.
    pub(crate) fn is_private(&self, headers: &HeaderMap) -> bool {
        self.credentials
            .iter()
            .any(|name| headers.contains_key(name))
    }

    /// Why the request may not share the cache whatever its key, if it may not: a body, or
    /// a header the key does not hold that proxies and middleware act on.
    pub(crate) fn unkeyed_input(&self, headers: &HeaderMap, body_ends: bool) -> Option<String> {
        let has_length = headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
        if !body_ends || has_length || headers.contains_key(header::TRANSFER_ENCODING) {
            return Some("a request body".to_owned());
        }
        headers
            .keys()
            .find(|name| {
                let unkeyed =
                    name.as_str().starts_with("x-forwarded-") || self.unkeyed.contains(name);
                unkeyed && !self.keyed.contains(name) && !self.ignored.contains(name)
            })
            .map(|name| format!("the unkeyed header {name}"))
    }

    /// Whether a response that varies on `name` may be stored.
    pub(crate) fn may_vary_on(&self, name: &str) -> bool {
        self.vary_allowed
            .iter()
            .any(|allowed| allowed.as_str() == name)
    }
}

/// The key of a request's shared (or per-user) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestKey {
    /// The cache key.
    pub(crate) key: String,
    /// Whether the entry is shared (not per user).
    pub(crate) shared: bool,
    /// The full locator when the key holds its digest: the entry must hold the same.
    pub(crate) locator: Option<String>,
}

/// The key of the request: `<RESERVED><namespace length>:<namespace>:<user>:<locator>`,
/// where the user is `-` or a digest of the identity, and the locator is
/// `<scheme>://<host><original path and query>`, then `;<header>=<digest>` for each keyed
/// header and `;key=<length>:<text>` for what [`key_with`](crate::CacheLayer::key_with)
/// returned; a long locator is replaced by `#<its digest>`. Errors name why the request
/// cannot be keyed (a host that is not one).
pub(crate) fn request_key(
    namespace: &str,
    user: Option<&str>,
    parts: &Parts,
    rules: &Rules,
    extra: Option<&str>,
) -> Result<RequestKey, String> {
    let scheme = parts.uri.scheme_str().unwrap_or("-");
    let authority = match (parts.uri.authority(), parts.headers.get(header::HOST)) {
        (Some(authority), _) => authority.as_str().to_ascii_lowercase(),
        (None, Some(host)) => Authority::try_from(host.as_bytes())
            .map_err(|_| "a Host header that is not a host".to_owned())?
            .as_str()
            .to_ascii_lowercase(),
        (None, None) => "-".to_owned(),
    };
    // axum's `nest` strips its prefix before inner layers run; the router keeps the URI it
    // received.
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut locator = format!("{scheme}://{authority}{target}");
    for name in &rules.keyed {
        match header_digest(&parts.headers, name.as_str()) {
            Some(digest) => {
                let _ = write!(locator, ";{name}={digest}");
            }
            None => {
                let _ = write!(locator, ";{name}!");
            }
        }
    }
    if let Some(extra) = extra {
        let _ = write!(locator, ";key={}:{extra}", extra.len());
    }
    let shared = user.is_none();
    let user = match user {
        None => "-".to_owned(),
        Some(identity) => format!("u{}", digest(identity.as_bytes())),
    };
    let mut key = format!("{RESERVED}{}:{namespace}:{user}:", namespace.len());
    if locator.len() <= MAX_LOCATOR {
        key.push_str(&locator);
        return Ok(RequestKey {
            key,
            shared,
            locator: None,
        });
    }
    key.push('#');
    key.push_str(&digest(locator.as_bytes()));
    Ok(RequestKey {
        key,
        shared,
        locator: Some(locator),
    })
}

/// The key of one variant: the base key, then each `Vary` header's digest (`!` if absent).
pub(crate) fn variant_key(base: &str, names: &[String], request_headers: &HeaderMap) -> String {
    let mut key = format!("{base}#vary");
    for name in names {
        match header_digest(request_headers, name) {
            Some(digest) => {
                let _ = write!(key, ";{name}={digest}");
            }
            None => {
                let _ = write!(key, ";{name}!");
            }
        }
    }
    key
}

/// A digest of a request header's values (normalised for the `Accept-*` family, so that
/// `gzip, br` and `br,gzip` are one variant); `None` if absent. Never the value itself: a
/// `Vary: Cookie` must not copy a session into a key or an entry.
pub(crate) fn header_digest(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    if values.is_empty() {
        return None;
    }
    let joined = values.join(&b","[..]);
    if name.starts_with("accept") {
        if let Ok(text) = std::str::from_utf8(&joined) {
            return Some(digest(normalised_list(text).as_bytes()));
        }
    }
    Some(digest(&joined))
}

/// A comma-separated list with its items lowercase, without spaces, sorted, each once.
fn normalised_list(text: &str) -> String {
    let mut items: Vec<String> = text
        .split(',')
        .map(|item| {
            item.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .filter(|item| !item.is_empty())
        .collect();
    items.sort();
    items.dedup();
    items.join(",")
}

/// The first 128 bits of the SHA-256 of `bytes`, in hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut hex = String::with_capacity(32);
    for byte in &hash[..16] {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn key(user: Option<&str>, parts: &Parts) -> String {
        request_key("ns", user, parts, &Rules::default(), None)
            .unwrap()
            .key
    }

    #[test]
    fn keys_tell_users_hosts_paths_and_variants_apart() {
        let shared = key(None, &parts("/a?x=1", &[]));
        assert_eq!(shared, "\u{1}2:ns:-:-://-/a?x=1");
        assert_ne!(shared, key(None, &parts("/a?x=2", &[])));
        let on = |host| key(None, &parts("/a?x=1", &[("host", host)]));
        assert_eq!(on("Example.COM"), "\u{1}2:ns:-:-://example.com/a?x=1");
        assert_ne!(on("example.com"), on("evil.example"));
        assert_ne!(
            key(None, &parts("https://example.com/a", &[])),
            key(None, &parts("http://example.com/a", &[]))
        );
        // A host cannot carry a path.
        assert!(request_key(
            "ns",
            None,
            &parts("/c", &[("host", "a/b")]),
            &Rules::default(),
            None
        )
        .is_err());
        let alice = key(Some("alice"), &parts("/a", &[]));
        assert!(!alice.contains("alice"), "{alice}");
        assert_ne!(alice, key(None, &parts("/a", &[])));
        assert_ne!(alice, key(Some("bob"), &parts("/a", &[])));
        // Namespaces cannot run into each other.
        assert_ne!(
            request_key("a:-:x", None, &parts("/", &[]), &Rules::default(), None),
            request_key("a", None, &parts("/", &[]), &Rules::default(), None)
        );

        let names = vec!["accept-language".to_owned()];
        let en = parts("/a", &[("accept-language", "en")]);
        let fr = parts("/a", &[("accept-language", "fr")]);
        let none = parts("/a", &[]);
        let keys: Vec<String> = [&en, &fr, &none]
            .iter()
            .map(|p| variant_key(&shared, &names, &p.headers))
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_ne!(keys[1], keys[2]);
    }

    #[test]
    fn long_urls_are_keyed_by_their_digest() {
        let long = format!("/?q={}", "x".repeat(60_000));
        let found = request_key("ns", None, &parts(&long, &[]), &Rules::default(), None).unwrap();
        assert!(found.key.len() < 100, "{}", found.key);
        assert_eq!(found.locator.as_deref(), Some(&*format!("-://-{long}")));
        let other = format!("{long}y");
        let other = request_key("ns", None, &parts(&other, &[]), &Rules::default(), None);
        assert_ne!(other.unwrap().key, found.key);
    }

    #[test]
    fn equivalent_accept_lists_are_one_variant() {
        let digest_of = |value| {
            header_digest(
                &parts("/", &[("accept-encoding", value)]).headers,
                "accept-encoding",
            )
        };
        assert_eq!(digest_of("gzip, br"), digest_of("BR,gzip"));
        assert_ne!(digest_of("gzip"), digest_of("br"));
        let cookie = parts("/", &[("cookie", "session=SECRET")]);
        let digest = header_digest(&cookie.headers, "cookie").unwrap();
        assert!(!digest.contains("SECRET"));
    }

    #[test]
    fn what_bypasses() {
        let rules = Rules::default();
        let bypass = |headers: &[(&str, &str)], ends| {
            rules.unkeyed_input(&parts("/", headers).headers, ends)
        };
        assert_eq!(bypass(&[], true), None);
        assert_eq!(bypass(&[("accept", "text/html")], true), None);
        assert!(bypass(&[], false).is_some());
        assert!(bypass(&[("content-length", "3")], true).is_some());
        assert_eq!(bypass(&[("content-length", "0")], true), None);
        for name in [
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-anything",
            "forwarded",
            "x-original-url",
            "x-http-method-override",
        ] {
            assert!(bypass(&[(name, "v")], true).is_some(), "{name}");
        }
        let keyed = Rules {
            keyed: vec![HeaderName::from_static("x-forwarded-proto")],
            ignored: vec![HeaderName::from_static("x-forwarded-for")],
            ..Rules::default()
        };
        let headers = parts(
            "/",
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-for", "1.2.3.4"),
            ],
        );
        assert_eq!(keyed.unkeyed_input(&headers.headers, true), None);
        assert!(rules.is_private(&parts("/", &[("x-api-key", "k")]).headers));
        assert!(!rules.is_private(&parts("/", &[("accept", "k")]).headers));
    }
}
