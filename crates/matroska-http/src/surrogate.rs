//! CDN surrogate keys: a header that carries a cached response's dependencies, so that the
//! CDN in front of the service can purge the pages an invalidation drops.
//!
//! Every CDN has its own header, separator and limits, and past those limits most of them
//! ignore the header without a word. [`SurrogateKeys`] keeps within them:
//!
//! | CDN | header | separator | limits kept |
//! |---|---|---|---|
//! | Fastly | `Surrogate-Key` | space | a key <= 1,024 bytes, the header <= 16,384 bytes, visible ASCII |
//! | Cloudflare | `Cache-Tag` | comma | <= 1,000 tags, the header <= 16,384 bytes, visible ASCII without commas |
//! | Akamai | `Edge-Cache-Tag` | comma | <= 128 tags of <= 128 characters, letters, digits and ``!#$%'+./:;=?@[]^_`\|~-`` |
//!
//! - A dependency whose text (`id:article:1`) fits is its own key. One that does not (too
//!   long, or a character the CDN refuses) becomes `mh-` and a 64-bit hash of its text: the
//!   same for the same dependency, so a purge computes it again ([`SurrogateKeys::purge_keys`]).
//! - When a response has more keys than fit, its header carries the **fallback key** first
//!   (`matroska-all` unless set) and then as many of its keys as fit. A purge always purges
//!   the fallback key too, so an overflowing response is dropped by any invalidation: more
//!   purges than needed, never a page left stale at the edge.
//! - Akamai does not update tags on a 304: the layer sends the same tags on a 304 as on the
//!   200 it revalidates, which is all it can do.

use http::header::{HeaderName, HeaderValue};
use matroska_cache::Dep;

/// A CDN whose surrogate-key header the layer can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cdn {
    /// Fastly's `Surrogate-Key`.
    Fastly,
    /// Cloudflare's `Cache-Tag`.
    Cloudflare,
    /// Akamai's `Edge-Cache-Tag`.
    Akamai,
}

impl Cdn {
    /// The response header that carries the keys.
    pub fn header_name(self) -> HeaderName {
        HeaderName::from_static(match self {
            Cdn::Fastly => "surrogate-key",
            Cdn::Cloudflare => "cache-tag",
            Cdn::Akamai => "edge-cache-tag",
        })
    }

    fn separator(self) -> &'static str {
        match self {
            Cdn::Fastly => " ",
            Cdn::Cloudflare | Cdn::Akamai => ",",
        }
    }

    /// At most this many keys in one header.
    pub fn max_keys(self) -> usize {
        match self {
            Cdn::Fastly => usize::MAX,
            Cdn::Cloudflare => 1_000,
            Cdn::Akamai => 128,
        }
    }

    /// At most this many bytes in one key.
    pub fn max_key_len(self) -> usize {
        match self {
            Cdn::Fastly | Cdn::Cloudflare => 1_024,
            Cdn::Akamai => 128,
        }
    }

    /// At most this many bytes in the header's value.
    pub fn max_header_len(self) -> usize {
        match self {
            Cdn::Fastly | Cdn::Cloudflare => 16_384,
            Cdn::Akamai => 128 * 129,
        }
    }

    /// Whether a key may contain `c`.
    pub fn allows(self, c: char) -> bool {
        match self {
            Cdn::Fastly => c.is_ascii_graphic(),
            Cdn::Cloudflare => c.is_ascii_graphic() && c != ',',
            Cdn::Akamai => c.is_ascii_alphanumeric() || "!#$%'+./:;=?@[]^_`|~-".contains(c),
        }
    }
}

/// Surrogate keys for one CDN: which key each dependency gets, and the header of a response.
///
/// ```
/// use matroska_cache::dep;
/// use matroska_http::{Cdn, SurrogateKeys};
///
/// let keys = SurrogateKeys::new(Cdn::Fastly);
/// let (name, value) = keys.header(&[dep::id("article", 1), dep::tag("home page")]).unwrap();
/// assert_eq!(name, "surrogate-key");
/// // The tag has a space, which Fastly keys cannot: it gets its hashed key.
/// assert_eq!(value.to_str().unwrap(), format!("id:article:1 {}", keys.key_for(&dep::tag("home page"))));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurrogateKeys {
    cdn: Cdn,
    fallback: String,
}

/// The fallback key unless [`SurrogateKeys::fallback`] sets another.
pub const DEFAULT_FALLBACK: &str = "matroska-all";

impl SurrogateKeys {
    /// Keys for `cdn`, with the fallback key `matroska-all`.
    pub fn new(cdn: Cdn) -> SurrogateKeys {
        SurrogateKeys {
            cdn,
            fallback: DEFAULT_FALLBACK.to_owned(),
        }
    }

    /// The key an overflowing response carries (several services behind one CDN account
    /// want one each). A key the CDN would refuse is replaced by its hashed form.
    pub fn fallback(mut self, key: &str) -> SurrogateKeys {
        self.fallback = self.fit(key);
        self
    }

    /// The CDN.
    pub fn cdn(&self) -> Cdn {
        self.cdn
    }

    /// The key of `dep`: its text if the CDN takes it, else `mh-` and a hash of the text.
    pub fn key_for(&self, dep: &Dep) -> String {
        self.fit(dep.as_str())
    }

    fn fit(&self, text: &str) -> String {
        if !text.is_empty()
            && text.len() <= self.cdn.max_key_len()
            && text.chars().all(|c| self.cdn.allows(c))
        {
            text.to_owned()
        } else {
            format!("mh-{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
        }
    }

    /// The header for a response built from `deps`; `None` without dependencies.
    pub fn header(&self, deps: &[Dep]) -> Option<(HeaderName, HeaderValue)> {
        self.header_of_texts(deps.iter().map(Dep::as_str))
    }

    pub(crate) fn header_of_texts<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Option<(HeaderName, HeaderValue)> {
        let mut keys: Vec<String> = texts.into_iter().map(|t| self.fit(t)).collect();
        // Keep the first occurrence of each key (two texts may hash alike).
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.clone()));
        if keys.is_empty() {
            return None;
        }
        let separator = self.cdn.separator();
        let joined_len =
            keys.iter().map(String::len).sum::<usize>() + separator.len() * (keys.len() - 1);
        let value = if keys.len() <= self.cdn.max_keys() && joined_len <= self.cdn.max_header_len()
        {
            keys.join(separator)
        } else {
            // The fallback first, then as many keys as fit.
            let mut value = self.fallback.clone();
            let others = keys.iter().filter(|k| **k != self.fallback);
            for (count, key) in (1..).zip(others) {
                if count == self.cdn.max_keys()
                    || value.len() + separator.len() + key.len() > self.cdn.max_header_len()
                {
                    break;
                }
                value.push_str(separator);
                value.push_str(key);
            }
            value
        };
        // Every key is visible ASCII: always a valid header value.
        let value = HeaderValue::from_str(&value).ok()?;
        Some((self.cdn.header_name(), value))
    }

    /// The keys to purge at the CDN after `deps` were invalidated: each one's key, and the
    /// fallback key (an overflowing response may depend on any of them).
    pub fn purge_keys(&self, deps: &[Dep]) -> Vec<String> {
        let mut keys: Vec<String> = deps.iter().map(|d| self.key_for(d)).collect();
        keys.push(self.fallback.clone());
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matroska_cache::dep;
    use proptest::prelude::*;

    fn any_cdn() -> impl Strategy<Value = Cdn> {
        prop_oneof![Just(Cdn::Fastly), Just(Cdn::Cloudflare), Just(Cdn::Akamai)]
    }

    /// Dependencies with any text: short and long, ASCII and not, with separators in them.
    fn any_deps() -> impl Strategy<Value = Vec<Dep>> {
        let text = prop_oneof![
            8 => "[a-z0-9:_-]{1,20}",
            2 => "\\PC{1,40}",
            2 => "[ ,*\"a-z]{1,10}",
            1 => "[a-z]{100,1200}",
        ];
        proptest::collection::vec(text, 0..1_500)
            .prop_map(|texts| texts.iter().map(|t| dep::tag(t)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn headers_keep_each_cdns_limits_and_cover_every_dependency(
            cdn in any_cdn(),
            deps in any_deps(),
        ) {
            let keys = SurrogateKeys::new(cdn);
            let Some((name, value)) = keys.header(&deps) else {
                prop_assert!(deps.is_empty());
                return Ok(());
            };
            prop_assert_eq!(name, cdn.header_name());
            let value = value.to_str().unwrap();
            prop_assert!(value.len() <= cdn.max_header_len());
            let sent: Vec<&str> = value.split(cdn.separator()).collect();
            prop_assert!(sent.len() <= cdn.max_keys());
            for key in &sent {
                prop_assert!(!key.is_empty());
                prop_assert!(key.len() <= cdn.max_key_len());
                prop_assert!(key.chars().all(|c| cdn.allows(c)), "{key:?}");
            }
            // Purging any dependency reaches this response: its own key is in the header,
            // or the header has the fallback key, which every purge includes.
            for dep in &deps {
                let purged = keys.purge_keys(std::slice::from_ref(dep));
                prop_assert!(purged.iter().any(|k| sent.contains(&k.as_str())), "{dep:?}");
            }
        }

        #[test]
        fn the_key_of_a_dependency_is_stable(cdn in any_cdn(), text in "\\PC{1,300}") {
            let keys = SurrogateKeys::new(cdn);
            prop_assert_eq!(keys.key_for(&dep::tag(&text)), keys.key_for(&dep::tag(&text)));
        }
    }

    #[test]
    fn overflow_sends_the_fallback_first() {
        let keys = SurrogateKeys::new(Cdn::Akamai).fallback("blog-all");
        let deps: Vec<Dep> = (0..200).map(|i| dep::id("article", i)).collect();
        let (_, value) = keys.header(&deps).unwrap();
        let sent: Vec<&str> = value.to_str().unwrap().split(',').collect();
        assert_eq!(sent.len(), 128);
        assert_eq!(sent[0], "blog-all");
        assert_eq!(sent[1], "id:article:0");
        // Without overflow, no fallback.
        let (_, value) = keys.header(&deps[..3]).unwrap();
        assert_eq!(value, "id:article:0,id:article:1,id:article:2");
    }
}
