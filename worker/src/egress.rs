//! Requests to addresses an agency chose (feed URLs, webhook subscription
//! URLs, GENERIC callback URLs) reach public addresses only: every name is
//! resolved through a resolver that drops private, loopback, link-local and
//! reserved addresses, and every redirect to an address written as an IP
//! is checked too. Otherwise any tenant could make the worker fetch the
//! cloud metadata service or an internal host, and read the answer back as
//! a dead letter. `RAPPORT_ALLOW_PRIVATE_URLS=1` lifts this for on-premises
//! set-ups and for the tests' local servers.

use rapport_domain::net::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{ClientBuilder, Url, redirect};
use std::net::IpAddr;
use std::sync::Arc;

/// Redirects followed at most (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// `builder` with the public-only resolver and redirect check, unless
/// private addresses are allowed.
pub fn guarded(builder: ClientBuilder, allow_private: bool) -> ClientBuilder {
    if allow_private {
        return builder;
    }
    // A proxy from the environment (HTTPS_PROXY, ALL_PROXY) would resolve
    // the names itself, past the public-only resolver.
    builder
        .no_proxy()
        .dns_resolver(Arc::new(PublicOnly))
        .redirect(redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            match refused(attempt.url(), false) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            }
        }))
}

/// `raw` as a URL the client may request: parsed, and refused when its
/// host is an IP address that is not public. The error names the URL.
pub fn target(raw: &str, allow_private: bool) -> Result<Url, String> {
    checked(raw, allow_private).map_err(|why| format!("{raw}: {why}"))
}

/// As [`target`], with an error that does not repeat the URL (a GENERIC
/// callback URL may carry a key, and a reply's error is read by everyone
/// who sees the conversation).
pub fn checked(raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| e.to_string())?;
    match refused(&url, allow_private) {
        Some(why) => Err(why),
        None => Ok(url),
    }
}

/// An answer's body, read up to `max` bytes: the rest is not read (a
/// tenant's server could send without end). Whether it was cut is said.
pub async fn body_at_most(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Why `url` may not be requested, if it may not: its host is an IP
/// address that is not public (names are checked when they are resolved).
fn refused(url: &Url, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    // The URL parser has normalised IP hosts already (`2130706433`,
    // `0x7f.1` and the like are written out as dotted quads).
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    (!is_public(ip)).then(|| format!("{ip} is not a public address"))
}

/// Resolves with the system resolver, then keeps public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<_> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<_> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// A request error with its causes (reqwest's own message names only the
/// URL: "error sending request"), as kept for the agency to read.
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, allow_private: bool) -> Option<String> {
        refused(&Url::parse(url).unwrap(), allow_private)
    }

    #[test]
    fn ip_hosts_are_checked_in_every_spelling() {
        for url in [
            "http://127.0.0.1/feed",
            "http://2130706433/feed",
            "http://0x7f.0.0.1/feed",
            "http://[::1]:8080/feed",
            "http://[::ffff:169.254.169.254]/latest/meta-data",
            "https://10.0.0.5/hook",
        ] {
            assert!(check(url, false).is_some(), "{url}");
            assert_eq!(check(url, true), None, "{url} when allowed");
        }
        assert_eq!(check("https://8.8.8.8/x", false), None);
        // Names are left to the resolver.
        assert_eq!(check("http://localhost/x", false), None);
    }
}
