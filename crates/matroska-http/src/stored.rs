//! A response as the cache stores it: status, headers (minus hop-by-hop ones), body, its
//! strong ETag, the `Vary` it was built under and the dependencies it was built from.

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

/// Headers that describe one connection, not the response: never stored (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The header this crate adds to every response it handled: `HIT`, `MISS`, `BYPASS` or
/// `STALE`.
pub const X_CACHE: &str = "x-cache";

/// Bytes as text: UTF-8 as it is (readable with `redis-cli`), anything else base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Payload {
    #[serde(rename = "t")]
    Text(String),
    #[serde(rename = "b")]
    Base64(String),
}

impl Payload {
    pub(crate) fn new(bytes: &[u8]) -> Payload {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Text(text.to_owned()),
            Err(_) => Payload::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The bytes; `None` if the base64 is damaged.
    pub(crate) fn bytes(&self) -> Option<Bytes> {
        match self {
            Payload::Text(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
            Payload::Base64(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .map(Bytes::from),
        }
    }
}

/// A cached response.
///
/// Stored as one string (the cache keeps strings as they are): a line of JSON with
/// everything but the body, then the body's text (or its base64). A body is most of an
/// entry, and every hit decodes it: as a JSON string, an HTML page would be escaped and
/// unescaped (its quotes, its newlines) every time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) status: u16,
    /// In order, repeated names kept.
    pub(crate) headers: Vec<(String, Payload)>,
    /// The body as text: as it is when it is UTF-8, else its base64. Shared, not copied,
    /// by every response made from this entry.
    pub(crate) body: Bytes,
    /// Whether `body` is base64.
    pub(crate) base64: bool,
    /// The strong ETag, quotes included: the handler's own if it set a strong one, else a
    /// hash of the response.
    pub(crate) etag: String,
    /// The request headers the response's `Vary` names (lowercase), and digests of their
    /// values in the request it was computed for (never the values: they may be secrets).
    pub(crate) vary: Vec<(String, Option<String>)>,
    /// The dependencies' texts (for surrogate-key headers).
    pub(crate) deps: Vec<String>,
    /// The URL (with scheme, host and keyed headers) when the key holds only its digest:
    /// a hit must be for the same one.
    pub(crate) locator: Option<String>,
}

/// The first line of a stored response: everything but the body.
#[derive(Serialize, Deserialize)]
struct Head<H, V, D, L> {
    status: u16,
    headers: H,
    etag: String,
    vary: V,
    deps: D,
    /// Whether the body after the line is base64.
    base64: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locator: Option<L>,
}

impl Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = std::str::from_utf8(&self.body)
            .map_err(|_| serde::ser::Error::custom("a stored body that is not text"))?;
        let head = Head {
            status: self.status,
            headers: &self.headers,
            etag: self.etag.clone(),
            vary: &self.vary,
            deps: &self.deps,
            base64: self.base64,
            locator: self.locator.as_deref(),
        };
        // JSON escapes every newline inside its strings: the first newline ends the head.
        let mut text = serde_json::to_string(&head).map_err(serde::ser::Error::custom)?;
        text.reserve(1 + body.len());
        text.push('\n');
        text.push_str(body);
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        type Owned =
            Head<Vec<(String, Payload)>, Vec<(String, Option<String>)>, Vec<String>, String>;
        let text = String::deserialize(deserializer)?;
        let Some(end) = text.find('\n') else {
            return Err(serde::de::Error::custom(
                "a stored response without its head line",
            ));
        };
        let head: Owned = serde_json::from_str(&text[..end]).map_err(serde::de::Error::custom)?;
        // The body stays where it is: the entry's text, past its head line.
        let body = Bytes::from(text).slice(end + 1..);
        Ok(Stored {
            status: head.status,
            headers: head.headers,
            body,
            base64: head.base64,
            etag: head.etag,
            vary: head.vary,
            deps: head.deps,
            locator: head.locator,
        })
    }
}

impl Stored {
    /// Stores `headers` and `body` of a response to a request whose values of the `Vary`
    /// headers are `vary`.
    pub(crate) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        vary: Vec<(String, Option<String>)>,
        deps: Vec<String>,
    ) -> Stored {
        // The ETag is kept apart: the one served is always `etag`, which conditional
        // requests are matched against.
        // Headers a `Connection` header names are hop-by-hop too (RFC 9110, 7.6.1).
        let connection: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        let kept: Vec<(String, Payload)> = headers
            .iter()
            .filter(|(name, _)| {
                !HOP_BY_HOP.contains(&name.as_str())
                    && !connection.iter().any(|c| c == name.as_str())
                    && *name != header::ETAG
                    && name.as_str() != X_CACHE
            })
            .map(|(name, value)| (name.as_str().to_owned(), Payload::new(value.as_bytes())))
            .collect();
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with('"'))
            .map(str::to_owned)
            .unwrap_or_else(|| etag_of(status, headers, body));
        let (text, base64) = match std::str::from_utf8(body) {
            Ok(_) => (Bytes::copy_from_slice(body), false),
            Err(_) => (
                Bytes::from(base64::engine::general_purpose::STANDARD.encode(body)),
                true,
            ),
        };
        Stored {
            status: status.as_u16(),
            headers: kept,
            body: text,
            base64,
            etag,
            vary,
            deps,
            locator: None,
        }
    }

    /// The response; `None` if the stored form is damaged (the caller recomputes).
    pub(crate) fn response(&self, with_body: bool) -> Option<Response<Body>> {
        let status = StatusCode::from_u16(self.status).ok()?;
        let body = if self.base64 {
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(&self.body)
                    .ok()?,
            )
        } else {
            self.body.clone()
        };
        let length = body.len();
        let mut response = Response::new(if with_body {
            Body::from(body)
        } else {
            Body::empty()
        });
        *response.status_mut() = status;
        *response.headers_mut() = self.header_map(|_| true)?;
        let headers = response.headers_mut();
        if !with_body && !headers.contains_key(header::CONTENT_LENGTH) {
            // A HEAD says how long the GET's body is.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Some(response)
    }

    /// The 304 answer to a conditional request that matched: the headers a 304 keeps
    /// (RFC 9110, 15.4.5), no body.
    pub(crate) fn not_modified(&self) -> Option<Response<Body>> {
        const KEPT: [HeaderName; 5] = [
            header::CACHE_CONTROL,
            header::VARY,
            header::EXPIRES,
            header::CONTENT_LOCATION,
            header::DATE,
        ];
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = self.header_map(|name| KEPT.contains(name))?;
        Some(response)
    }

    /// The stored headers that `keep` accepts, and the ETag; `None` if one is damaged.
    fn header_map(&self, keep: impl Fn(&HeaderName) -> bool) -> Option<HeaderMap> {
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if keep(&name) {
                let value = HeaderValue::from_maybe_shared(value.bytes()?).ok()?;
                headers.append(name, value);
            }
        }
        headers.insert(header::ETAG, HeaderValue::from_str(&self.etag).ok()?);
        Some(headers)
    }
}

/// A strong ETag for a response without one: a 128-bit hash of its status, content headers
/// and body. The same response always gets the same tag.
fn etag_of(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&status.as_u16().to_be_bytes());
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
    ] {
        for value in headers.get_all(&name) {
            hasher.update(name.as_str().as_bytes());
            hasher.update(b":");
            hasher.update(value.as_bytes());
            hasher.update(b"\n");
        }
    }
    hasher.update(body);
    format!("\"{:032x}\"", hasher.digest128())
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, as RFC 9110
/// 13.1.2 asks for `If-None-Match`).
pub(crate) fn matches(if_none_match: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    list.split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn payloads_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let payload = Payload::new(&bytes);
            let json = serde_json_round_trip(&payload);
            let back = json.bytes().unwrap();
            prop_assert_eq!(back.as_ref(), &bytes[..]);
        }

        #[test]
        fn stored_responses_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            value in "[ -~]{0,40}",
            status in 200u16..600,
        ) {
            let mut headers = HeaderMap::new();
            headers.insert("x-thing", HeaderValue::from_str(&value).unwrap());
            headers.append("x-thing", HeaderValue::from_static("second"));
            headers.insert("connection", HeaderValue::from_static("close"));
            let status = StatusCode::from_u16(status).unwrap();
            let stored = Stored::new(status, &headers, &body, Vec::new(), Vec::new());
            let back = serde_json_round_trip(&stored);
            prop_assert_eq!(&back, &stored);
            let response = back.response(true).unwrap();
            prop_assert_eq!(response.status(), status);
            let things: Vec<_> = response.headers().get_all("x-thing").iter().collect();
            prop_assert_eq!(things.len(), 2);
            prop_assert!(response.headers().get("connection").is_none());
            prop_assert_eq!(response.headers().get("etag").unwrap().to_str().unwrap(), stored.etag.as_str());
        }
    }

    fn serde_json_round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        let cache_form = matroska_cache::codec::Encoded::encode("k", value).unwrap();
        cache_form.decode("k").unwrap()
    }

    #[test]
    fn the_stored_form_is_a_head_line_then_the_body_as_it_is() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        let page = "<p class=\"x\">two\nlines</p>";
        let stored = Stored::new(
            StatusCode::OK,
            &headers,
            page.as_bytes(),
            Vec::new(),
            vec!["id:post:1".into()],
        );
        let encoded = matroska_cache::codec::Encoded::encode("k", &stored).unwrap();
        assert_eq!(encoded.format, matroska_cache::codec::Format::Str);
        let text = std::str::from_utf8(&encoded.bytes).unwrap();
        let (head, body) = text.split_once('\n').unwrap();
        assert!(head.starts_with("{\"status\":200,"), "{head}");
        assert!(head.contains("id:post:1"), "{head}");
        assert_eq!(body, page);
        assert_eq!(serde_json_round_trip(&stored), stored);
    }

    #[test]
    fn headers_a_connection_header_names_are_not_stored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("close, X-Session-Hop"),
        );
        headers.insert("x-session-hop", HeaderValue::from_static("secret"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        let stored = Stored::new(StatusCode::OK, &headers, b"", Vec::new(), Vec::new());
        let names: Vec<&str> = stored.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn etags_are_stable_and_tell_bodies_apart() {
        let headers = HeaderMap::new();
        let a = etag_of(StatusCode::OK, &headers, b"hello");
        assert_eq!(a, etag_of(StatusCode::OK, &headers, b"hello"));
        assert_ne!(a, etag_of(StatusCode::OK, &headers, b"hellO"));
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 34);
        let tag = HeaderValue::from_str(&a).unwrap();
        assert!(matches(&tag, &a));
        assert!(matches(
            &HeaderValue::from_str(&format!("\"x\", W/{a}")).unwrap(),
            &a
        ));
        assert!(matches(&HeaderValue::from_static("*"), &a));
        assert!(!matches(&HeaderValue::from_static("\"other\""), &a));
    }
}
