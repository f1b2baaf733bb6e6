//! What a channel needs, by kind, checked once when it is connected or
//! changed.

use crate::ParseError;
use crate::ingest::ChannelKind;

pub const MIN_POLL_SECS: i32 = 60;
pub const MAX_POLL_SECS: i32 = 86_400;
pub const DEFAULT_POLL_SECS: i32 = 300;

/// An http or https address of bounded length (a feed, a callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        let u = raw.trim();
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"))
            .ok_or_else(|| ParseError::new(field, "must start with http:// or https://"))?;
        if rest.is_empty()
            || rest.starts_with('/')
            || u.len() > 2048
            || u.contains(char::is_whitespace)
            || u.contains(char::is_control)
        {
            return Err(ParseError::new(field, "is not a usable URL"));
        }
        Ok(HttpUrl(u.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A feed address.
pub struct FeedUrl;

impl FeedUrl {
    pub fn parse(raw: &str) -> Result<HttpUrl, ParseError> {
        HttpUrl::parse("feedUrl", raw)
    }
}

/// Whether replies on this kind can be published, and what that needs:
/// platform channels an access token, GENERIC a callback URL; feeds have
/// no reply path.
pub fn publishes(kind: ChannelKind) -> bool {
    !matches!(kind, ChannelKind::Feed)
}

pub fn poll_interval(raw: Option<i32>) -> Result<i32, ParseError> {
    match raw {
        None => Ok(DEFAULT_POLL_SECS),
        Some(n) if (MIN_POLL_SECS..=MAX_POLL_SECS).contains(&n) => Ok(n),
        Some(_) => Err(ParseError::new(
            "pollIntervalSeconds",
            format!("must be between {MIN_POLL_SECS} and {MAX_POLL_SECS}"),
        )),
    }
}

/// A signing secret or verify token as the platform issued it.
pub fn secret(field: &'static str, raw: &str) -> Result<String, ParseError> {
    let s = raw.trim();
    if s.len() < 8 || s.len() > 512 {
        return Err(ParseError::new(field, "must be 8 to 512 characters"));
    }
    Ok(s.to_string())
}

/// Which secrets a kind requires: (signing secret, verify token, feed URL).
pub fn requirements(kind: ChannelKind) -> (bool, bool, bool) {
    match kind {
        ChannelKind::X | ChannelKind::Generic => (true, false, false),
        ChannelKind::Facebook | ChannelKind::Instagram => (true, true, false),
        ChannelKind::Feed => (false, false, true),
    }
}

pub fn account_id(raw: Option<&str>, kind: ChannelKind) -> Result<String, ParseError> {
    match raw.map(str::trim) {
        Some(a) if !a.is_empty() && a.len() <= 200 && !a.contains(char::is_control) => {
            Ok(a.to_string())
        }
        Some(_) => Err(ParseError::new(
            "externalAccountId",
            "must be 1 to 200 characters, none of them control characters",
        )),
        None if matches!(kind, ChannelKind::Feed | ChannelKind::Generic) => Ok(String::new()),
        None => Err(ParseError::new(
            "externalAccountId",
            "is required: the brand's own account id on the platform",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_urls_and_intervals() {
        assert!(FeedUrl::parse("https://alerts.example/brew.rss").is_ok());
        assert!(FeedUrl::parse("ftp://x").is_err());
        assert!(FeedUrl::parse("http://").is_err());
        assert!(FeedUrl::parse("https://alerts.example/a\u{0}b").is_err());
        assert!(account_id(Some("page\u{0}1"), ChannelKind::Facebook).is_err());
        assert_eq!(poll_interval(None).unwrap(), 300);
        assert!(poll_interval(Some(10)).is_err());
    }

    #[test]
    fn kinds_need_their_secrets() {
        assert_eq!(requirements(ChannelKind::Facebook), (true, true, false));
        assert!(secret("secret", "short").is_err());
        assert!(account_id(None, ChannelKind::X).is_err());
        assert_eq!(account_id(None, ChannelKind::Feed).unwrap(), "");
    }
}
