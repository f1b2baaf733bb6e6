//! Ingestion, the pure part: what a platform's payload means. Signature
//! checks on raw bytes, payload parsers into one normalized shape, and the
//! channel kinds they belong to. No HTTP, SQL or Redis.

pub mod feed;
pub mod generic;
pub mod meta;
pub mod signature;
pub mod x;

use crate::ParseError;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    X,
    Facebook,
    Instagram,
    Feed,
    Generic,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 5] = [
        ChannelKind::X,
        ChannelKind::Facebook,
        ChannelKind::Instagram,
        ChannelKind::Feed,
        ChannelKind::Generic,
    ];

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| ParseError::new("kind", format!("unknown channel kind {raw:?}")))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::X => "X",
            ChannelKind::Facebook => "FACEBOOK",
            ChannelKind::Instagram => "INSTAGRAM",
            ChannelKind::Feed => "FEED",
            ChannelKind::Generic => "GENERIC",
        }
    }

    /// Whether the platform pushes to a webhook (the others are polled).
    pub fn is_webhook(self) -> bool {
        self != ChannelKind::Feed
    }

    /// Whether a message from this source lands in every workspace whose
    /// brand keywords it mentions, rather than in its channel's workspace.
    pub fn routes_by_keywords(self) -> bool {
        matches!(self, ChannelKind::Feed | ChannelKind::Generic)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "PUBLIC",
            Visibility::Private => "PRIVATE",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw.to_ascii_uppercase().as_str() {
            "PUBLIC" => Ok(Visibility::Public),
            "PRIVATE" => Ok(Visibility::Private),
            _ => Err(ParseError::new(
                "visibility",
                format!("{raw:?} is neither public nor private"),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundAuthor {
    pub external_id: String,
    pub handle: String,
    pub name: Option<String>,
    pub followers: u64,
    pub verified: bool,
}

/// One customer message as every platform's payload becomes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The brand account the platform delivered it for (X's `for_user_id`,
    /// a Graph entry's `id`); None for GENERIC and FEED. One app serves
    /// several accounts through one callback URL, so it may differ from
    /// the channel's own.
    pub account: Option<String>,
    /// Unique within the channel; the deduplication key.
    pub external_id: String,
    /// The id an earlier version of Rapport stored the same message under
    /// (a feed entry's hash of link and title, a long id before it was
    /// digested): looked for too, so the message is not stored again.
    pub alias: Option<String>,
    /// The platform message this one answers, if any: threads it.
    pub in_reply_to: Option<String>,
    pub visibility: Visibility,
    pub text: String,
    pub published_at: DateTime<Utc>,
    pub author: InboundAuthor,
    pub url: Option<String>,
}

/// Longest key kept as it is (an id, a parent's id, an author's id): they
/// are unique-indexed, and PostgreSQL refuses an index entry over about
/// 2.7 KB, which would fail every event stored with it.
pub const MAX_KEY_BYTES: usize = 512;

/// How far ahead of its receipt a message may say it was published: a
/// source's clock or time-zone error would otherwise pin its conversation's
/// "latest message" in the future.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

impl Inbound {
    /// Made fit to store, whatever the source sent. Every parser's output
    /// goes through here.
    /// - NUL characters dropped: JSON may carry `\u0000`, PostgreSQL's text
    ///   refuses it, and one such event would fail its whole payload on
    ///   every retry.
    /// - A key over [`MAX_KEY_BYTES`] replaced by its SHA-256
    ///   (`sha256:<hex>`): the same key always gives the same digest, so
    ///   deduplication and threading work as before.
    /// - A publish time more than [`MAX_CLOCK_SKEW`] after `received_at`
    ///   read as `received_at`.
    pub fn storable(mut self, received_at: DateTime<Utc>) -> Self {
        fn strip(s: &mut String) {
            if s.contains('\0') {
                s.retain(|c| c != '\0');
            }
        }
        fn key(s: &mut String) {
            if s.len() > MAX_KEY_BYTES {
                *s = format!("sha256:{}", crate::crypto::sha256_hex(s.as_bytes()));
            }
        }
        strip(&mut self.external_id);
        strip(&mut self.text);
        strip(&mut self.author.external_id);
        strip(&mut self.author.handle);
        for s in [&mut self.in_reply_to, &mut self.url, &mut self.author.name]
            .into_iter()
            .flatten()
        {
            strip(s);
        }
        if self.external_id.len() > MAX_KEY_BYTES && self.alias.is_none() {
            self.alias = Some(self.external_id.clone());
        }
        key(&mut self.external_id);
        key(&mut self.author.external_id);
        if let Some(p) = &mut self.in_reply_to {
            key(p);
        }
        if self.published_at > received_at + MAX_CLOCK_SKEW {
            self.published_at = received_at;
        }
        self
    }
}

/// Why a payload could not be understood. Stored with the raw event so
/// the agency sees it in its dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl PayloadError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Longest text kept for one message; longer bodies are cut at a char boundary.
pub const MAX_TEXT_CHARS: usize = 10_000;

pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// Parses a body of `kind` (a webhook delivery or a fetched feed).
/// `account_id` is the channel's own account on the platform: its own posts
/// are not customer messages. `received_at` dates undated feed entries.
pub fn parse(
    kind: ChannelKind,
    body: &[u8],
    account_id: &str,
    received_at: DateTime<Utc>,
) -> Result<Vec<Inbound>, PayloadError> {
    let parsed = if kind == ChannelKind::Feed {
        feed::parse(body, received_at)?
    } else {
        let json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| PayloadError::new(format!("body is not JSON: {e}")))?;
        match kind {
            ChannelKind::X => x::parse(&json, account_id)?,
            ChannelKind::Facebook | ChannelKind::Instagram => meta::parse(&json, account_id)?,
            ChannelKind::Generic => generic::parse(&json)?,
            ChannelKind::Feed => unreachable!("feeds are handled above"),
        }
    };
    Ok(parsed
        .into_iter()
        .map(|m| m.storable(received_at))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, published_at: DateTime<Utc>) -> Inbound {
        Inbound {
            account: None,
            alias: None,
            external_id: id.into(),
            in_reply_to: Some(id.into()),
            visibility: Visibility::Public,
            text: "hi\0 there".into(),
            published_at,
            author: InboundAuthor {
                external_id: id.into(),
                handle: "ana".into(),
                name: None,
                followers: 0,
                verified: false,
            },
            url: None,
        }
    }

    #[test]
    fn long_keys_become_their_digest_and_future_times_the_receipt() {
        let now = Utc::now();
        let long = "x".repeat(3000);
        let m = message(&long, now + chrono::TimeDelta::days(3000)).storable(now);
        assert_eq!(m.text, "hi there");
        assert!(m.external_id.starts_with("sha256:") && m.external_id.len() == 71);
        assert_eq!(m.alias.as_deref(), Some(long.as_str()), "stored so before");
        // The same key gives the same digest: a parent and its reply still meet.
        assert_eq!(m.in_reply_to.as_deref(), Some(m.external_id.as_str()));
        assert_eq!(m.author.external_id, m.external_id);
        assert_eq!(m.published_at, now);

        let short = "y".repeat(MAX_KEY_BYTES);
        let soon = now + MAX_CLOCK_SKEW;
        let m = message(&short, soon).storable(now);
        assert_eq!((m.external_id, m.published_at), (short, soon));
    }
}
