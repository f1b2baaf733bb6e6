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
    /// The platform message this one answers, if any: threads it.
    pub in_reply_to: Option<String>,
    pub visibility: Visibility,
    pub text: String,
    pub published_at: DateTime<Utc>,
    pub author: InboundAuthor,
    pub url: Option<String>,
}

impl Inbound {
    /// Without NUL characters: JSON may carry `\u0000`, PostgreSQL's text
    /// refuses it, and one such event would fail its whole payload on every
    /// retry. Every parser's output goes through here.
    pub fn without_nul(mut self) -> Self {
        fn strip(s: &mut String) {
            if s.contains('\0') {
                s.retain(|c| c != '\0');
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
    Ok(parsed.into_iter().map(Inbound::without_nul).collect())
}
