//! Publishing a reply on its platform, as data: which request each platform
//! takes (the formats of their public APIs) and what its answer means. The
//! worker does the HTTP; everything decided here is unit-tested.
//!
//! - X (API v2): a public reply is `POST /2/tweets` with
//!   `{"text", "reply": {"in_reply_to_tweet_id"}}`; a private one is
//!   `POST /2/dm_conversations/with/{user id}/messages` with `{"text"}`.
//!   Success: `{"data": {"id"}}` or `{"data": {"dm_event_id"}}`; errors carry
//!   `detail`/`title` or `errors[].message`.
//! - Facebook (Graph API): `POST /v21.0/{comment id}/comments` with
//!   `{"message"}`; private: `POST /v21.0/{page id}/messages` with
//!   `{"recipient": {"id"}, "messaging_type": "RESPONSE", "message": {"text"}}`.
//! - Instagram (Graph API): `POST /v21.0/{comment id}/replies` with
//!   `{"message"}`; private as Facebook, from the Instagram account.
//!   Meta answers `{"id"}` or `{"message_id"}`; errors `{"error": {"message", "code"}}`.
//! - GENERIC: `POST <callback URL>` with the reply as JSON (see the README),
//!   signed like the GENERIC webhooks; an optional `{"id"}` in the answer.
//!
//! Neither X nor Meta honours `Idempotency-Key`, and a timeout or a server
//! error can come after the platform published. So before another attempt
//! at a reply, [`lookup`] asks the platform for the brand's replies to the
//! same message or person and [`published_in`] finds ours among them: the
//! brand's timeline on X (`GET /2/users/{id}/tweets` with
//! `referenced_tweets`), the comment's comments on Facebook (`fields=id,
//! message,from`) and its replies on Instagram (`fields=id,text,from`); for
//! private messages the conversation with the customer (X:
//! `GET /2/dm_conversations/with/{user id}/dm_events`, `sender_id`; Meta's
//! Conversations API: `GET /{account id}/conversations?platform=…&user_id=…`
//! with `messages{id,message,from,created_time}`).

use crate::ingest::{ChannelKind, Visibility};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub const GRAPH_VERSION: &str = "v21.0";

/// The reply and where it goes.
pub struct Outgoing<'a> {
    pub kind: ChannelKind,
    pub visibility: Visibility,
    pub text: &'a str,
    /// Public replies: the platform id of the customer's message answered.
    pub in_reply_to: Option<&'a str>,
    /// Private replies: the customer's platform user id.
    pub recipient_id: &'a str,
    pub recipient_handle: &'a str,
    /// The brand's own account id on the platform.
    pub account_id: &'a str,
    /// Rapport's ids, sent to GENERIC receivers.
    pub reply_id: &'a str,
    pub conversation_id: &'a str,
}

/// A request to make, relative to the platform's base URL (GENERIC: the
/// callback URL itself, so `path` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformRequest {
    pub path: String,
    pub body: Value,
}

/// Why a reply cannot be published at all (no retry helps).
pub fn request(o: &Outgoing<'_>) -> Result<PlatformRequest, String> {
    let public_target = || {
        o.in_reply_to
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "no public message of the customer to reply to".to_string())
    };
    let segment = |s: &str| -> Result<String, String> {
        // Ids go into the path: keep them to what platforms issue.
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            Ok(s.to_string())
        } else {
            Err(format!("{s:?} is not a platform id"))
        }
    };
    let meta_private = |from: &str| -> Result<PlatformRequest, String> {
        Ok(PlatformRequest {
            path: format!("/{GRAPH_VERSION}/{}/messages", segment(from)?),
            body: json!({
                "recipient": { "id": o.recipient_id },
                "messaging_type": "RESPONSE",
                "message": { "text": o.text },
            }),
        })
    };
    match (o.kind, o.visibility) {
        (ChannelKind::X, Visibility::Public) => Ok(PlatformRequest {
            path: "/2/tweets".into(),
            body: json!({ "text": o.text, "reply": { "in_reply_to_tweet_id": public_target()? } }),
        }),
        (ChannelKind::X, Visibility::Private) => Ok(PlatformRequest {
            path: format!(
                "/2/dm_conversations/with/{}/messages",
                segment(o.recipient_id)?
            ),
            body: json!({ "text": o.text }),
        }),
        (ChannelKind::Facebook, Visibility::Public) => Ok(PlatformRequest {
            path: format!("/{GRAPH_VERSION}/{}/comments", segment(public_target()?)?),
            body: json!({ "message": o.text }),
        }),
        (ChannelKind::Instagram, Visibility::Public) => Ok(PlatformRequest {
            path: format!("/{GRAPH_VERSION}/{}/replies", segment(public_target()?)?),
            body: json!({ "message": o.text }),
        }),
        (ChannelKind::Facebook | ChannelKind::Instagram, Visibility::Private) => {
            meta_private(o.account_id)
        }
        (ChannelKind::Generic, vis) => Ok(PlatformRequest {
            path: String::new(),
            body: json!({
                "type": "reply",
                "replyId": o.reply_id,
                "conversationId": o.conversation_id,
                "visibility": vis.as_str(),
                "inReplyTo": o.in_reply_to,
                "recipient": { "id": o.recipient_id, "handle": o.recipient_handle },
                "text": o.text,
            }),
        }),
        (ChannelKind::Feed, _) => Err("feeds have no reply path".into()),
    }
}

/// What the platform's answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Published; the platform's id for it when it gave one.
    Sent(Option<String>),
    /// Worth another attempt later (rate limits, server errors, timeouts).
    Retry(String),
    /// The platform refused it; retrying the same request cannot help.
    Refused(String),
}

/// Reads an HTTP answer (`status`, raw `body`).
pub fn outcome(kind: ChannelKind, status: u16, body: &[u8]) -> Outcome {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let id = match kind {
            ChannelKind::X => json["data"]["id"]
                .as_str()
                .or_else(|| json["data"]["dm_event_id"].as_str()),
            _ => json["id"].as_str().or_else(|| json["message_id"].as_str()),
        };
        // An id too long to index is dropped, not stored: a failed record
        // would leave the reply to be posted again.
        return Outcome::Sent(
            id.map(storable)
                .filter(|id| !id.is_empty() && id.len() <= MAX_PLATFORM_ID_BYTES),
        );
    }
    let detail =
        match kind {
            ChannelKind::X => json["detail"]
                .as_str()
                .or_else(|| json["errors"][0]["message"].as_str())
                .or_else(|| json["title"].as_str())
                .map(str::to_string),
            ChannelKind::Facebook | ChannelKind::Instagram => json["error"]["message"]
                .as_str()
                .map(|m| match json["error"]["code"].as_i64() {
                    Some(c) => format!("{m} (code {c})"),
                    None => m.to_string(),
                }),
            _ => None,
        }
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string()
        });
    let detail = storable(&detail);
    let message = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    // Meta throttles (and has passing outages) with a 4xx and a code its
    // error-handling guide says to wait out: 1, 2 (temporary), 4, 17, 32,
    // 613 (rate limits), or any error it marks `is_transient`.
    let meta_transient = matches!(kind, ChannelKind::Facebook | ChannelKind::Instagram)
        && (json["error"]["is_transient"].as_bool() == Some(true)
            || matches!(
                json["error"]["code"].as_i64(),
                Some(1 | 2 | 4 | 17 | 32 | 613)
            ));
    if status == 408 || status == 425 || status == 429 || status >= 500 || meta_transient {
        Outcome::Retry(message)
    } else {
        Outcome::Refused(message)
    }
}

/// The longest platform id a reply keeps (ids are indexed; platforms' own
/// are short).
pub const MAX_PLATFORM_ID_BYTES: usize = 256;

/// Whether X refused a post as a copy of one the account published: after
/// an attempt that may have published, that copy is this reply.
pub fn refused_as_duplicate(kind: ChannelKind, refusal: &str) -> bool {
    kind == ChannelKind::X
        && refusal.starts_with("HTTP 403")
        && refusal.to_lowercase().contains("duplicate content")
}

/// Text from a platform (or a tenant's callback) as it can be stored: a NUL
/// is refused by PostgreSQL, and an answer that cannot be recorded would
/// leave the reply to be sent again and again.
fn storable(s: &str) -> String {
    s.chars().filter(|c| *c != '\0').collect()
}

/// Whether an earlier attempt that ended with `last_error` may have been
/// published all the same: a timeout or a server error may come after the
/// platform published; a rate limit (429) or a request timeout (408, 425)
/// means it was not processed. None: no answer was recorded (the attempt
/// was cut off), so it may have been.
pub fn may_have_published(last_error: Option<&str>) -> bool {
    !last_error.is_some_and(|e| {
        ["HTTP 429", "HTTP 408", "HTTP 425"]
            .iter()
            .any(|code| e.starts_with(code))
    })
}

/// Where to look for a reply that an earlier attempt may have published (a
/// GET path with its query, relative to the platform's base URL), listing
/// what was published since `since` (X's timeline) or with its time; None
/// where there is no such read (GENERIC).
pub fn lookup(o: &Outgoing<'_>, since: DateTime<Utc>) -> Option<String> {
    if !is_id(o.account_id) {
        return None;
    }
    let target = || o.in_reply_to.filter(|t| is_id(t));
    let recipient = || Some(o.recipient_id).filter(|r| is_id(r));
    match (o.kind, o.visibility) {
        (ChannelKind::X, Visibility::Public) => target().map(|_| {
            format!(
                "/2/users/{}/tweets?max_results=100&tweet.fields=referenced_tweets,created_at&start_time={}",
                o.account_id,
                (since - SKEW).format("%Y-%m-%dT%H:%M:%SZ")
            )
        }),
        (ChannelKind::X, Visibility::Private) => recipient().map(|r| {
            format!(
                "/2/dm_conversations/with/{r}/dm_events?max_results=50&event_types=MessageCreate&dm_event.fields=id,text,sender_id,created_at"
            )
        }),
        (ChannelKind::Facebook, Visibility::Public) => target().map(|t| {
            format!(
                "/{GRAPH_VERSION}/{t}/comments?fields=id,message,from,created_time&order=reverse_chronological&limit=100"
            )
        }),
        (ChannelKind::Instagram, Visibility::Public) => target()
            .map(|t| format!("/{GRAPH_VERSION}/{t}/replies?fields=id,text,from,timestamp")),
        // Meta's Conversations API: the thread with this person, its
        // latest messages.
        (ChannelKind::Facebook | ChannelKind::Instagram, Visibility::Private) => {
            recipient().map(|r| {
                let platform = if o.kind == ChannelKind::Facebook {
                    "messenger"
                } else {
                    "instagram"
                };
                format!(
                    "/{GRAPH_VERSION}/{}/conversations?platform={platform}&user_id={r}&fields=messages{{id,message,from,created_time}}",
                    o.account_id
                )
            })
        }
        _ => None,
    }
}

/// Clocks differ: a platform's time for our post may read a little before
/// our record of the reply.
const SKEW: chrono::Duration = chrono::Duration::seconds(5);

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Whether a word is a link as X would shorten it: a URL, or a bare
/// domain ("brew.example/refunds").
fn is_link(word: &str) -> bool {
    let w = word.trim_matches(|c: char| "()[]<>{}\"'.,!?;:".contains(c));
    if w.starts_with("http://") || w.starts_with("https://") {
        return true;
    }
    let host = w.split('/').next().unwrap_or_default();
    let Some((name, tld)) = host.rsplit_once('.') else {
        return false;
    };
    !name.is_empty()
        && !host.contains('@')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && (2..=24).contains(&tld.len())
        && tld.chars().all(|c| c.is_ascii_alphabetic())
}

/// Text as a platform may hand it back: entities decoded (X escapes `&`,
/// `<`, `>`), the leading @mentions of a reply dropped (X adds them),
/// links replaced (X shortens them), spacing collapsed.
fn comparable(text: &str) -> String {
    let decoded = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded
        .split_whitespace()
        .skip_while(|w| w.starts_with('@'))
        .map(|w| if is_link(w) { "<link>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a platform says about an earlier attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Earlier {
    /// Published: the platform's id for it.
    Published(String),
    /// Not there: send it.
    NotPublished,
    /// No answer either way now (a server error, an unreadable answer):
    /// try again later rather than post blind.
    Unknown(String),
    /// The platform will not let this token read it (no permission, say):
    /// it cannot be checked, only sent.
    Unverifiable(String),
}

/// Reads the answer to [`lookup`]: the brand account's reply to this
/// message with these words, published since `since`.
pub fn published_in(o: &Outgoing<'_>, status: u16, body: &[u8], since: DateTime<Utc>) -> Earlier {
    if !(200..300).contains(&status) {
        return match outcome(o.kind, status, body) {
            Outcome::Retry(m) => Earlier::Unknown(m),
            Outcome::Refused(m) => Earlier::Unverifiable(m),
            Outcome::Sent(_) => Earlier::Unknown(format!("HTTP {status}")),
        };
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Earlier::Unknown("unreadable answer".into());
    };
    let Some(data) = json["data"].as_array() else {
        // X leaves `data` out of an empty timeline.
        return if o.kind == ChannelKind::X && json.get("errors").is_none() {
            Earlier::NotPublished
        } else {
            Earlier::Unknown("the answer has no list".into())
        };
    };
    let meta_private = o.kind != ChannelKind::X && o.visibility == Visibility::Private;
    // Meta lists conversations, each with its messages.
    let items: Vec<&Value> = if meta_private {
        data.iter()
            .flat_map(|c| c["messages"]["data"].as_array().into_iter().flatten())
            .collect()
    } else {
        data.iter().collect()
    };
    let want = comparable(o.text);
    let target = o.in_reply_to.unwrap_or_default();
    // An identical reply from before this one is another reply.
    let recent = |item: &Value| posted_at(item).is_none_or(|t| t >= since - SKEW);
    let ours = |item: &Value| match (o.kind, o.visibility) {
        (ChannelKind::X, Visibility::Private) => {
            item["sender_id"].as_str() == Some(o.account_id)
                && item["text"].as_str().map(comparable).as_deref() == Some(want.as_str())
        }
        (ChannelKind::X, Visibility::Public) => {
            item["referenced_tweets"].as_array().is_some_and(|refs| {
                refs.iter()
                    .any(|r| r["type"] == "replied_to" && r["id"].as_str() == Some(target))
            }) && item["text"].as_str().map(comparable).as_deref() == Some(want.as_str())
        }
        _ => {
            let text = item["message"].as_str().or_else(|| item["text"].as_str());
            item["from"]["id"].as_str() == Some(o.account_id)
                && text.map(comparable).as_deref() == Some(want.as_str())
        }
    };
    match items
        .into_iter()
        .find(|i| recent(i) && ours(i))
        .and_then(|i| i["id"].as_str())
        .map(storable)
        .filter(|id| !id.is_empty())
    {
        Some(id) => Earlier::Published(id),
        None => Earlier::NotPublished,
    }
}

/// When a listed item was posted, in whichever field its platform uses.
fn posted_at(item: &Value) -> Option<DateTime<Utc>> {
    ["created_at", "created_time", "timestamp"]
        .iter()
        .find_map(|k| item[*k].as_str())
        .and_then(|t| {
            DateTime::parse_from_rfc3339(t)
                .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%z"))
                .ok()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// Pages of the brand's replies read at most before a retry: beyond them
/// the lookup cannot say, and the attempt is put off rather than made blind.
pub const LOOKUP_PAGES: usize = 5;

/// The next page of a [`lookup`] whose answer (`body`, of the request to
/// `path`) did not hold our reply: X's `meta.next_token`, Graph's
/// `paging.cursors.after` (when `paging.next` says there is more); None at
/// the end of the list, once a page of a newest-first list (X's, Facebook's
/// comments) reaches items older than the reply (`since`): the rest are
/// older still; and for Meta's conversations, whose latest messages are on
/// the first page.
pub fn next_page(
    o: &Outgoing<'_>,
    path: &str,
    body: &[u8],
    since: DateTime<Utc>,
) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let newest_first = matches!(o.kind, ChannelKind::X | ChannelKind::Facebook);
    let older = json["data"]
        .as_array()
        .is_some_and(|items| items.iter().filter_map(posted_at).any(|t| t < since - SKEW));
    if newest_first && older {
        return None;
    }
    let (param, token) = match o.kind {
        ChannelKind::X => ("pagination_token", json["meta"]["next_token"].as_str()?),
        ChannelKind::Facebook | ChannelKind::Instagram if o.visibility == Visibility::Public => {
            json["paging"]["next"].as_str()?;
            ("after", json["paging"]["cursors"]["after"].as_str()?)
        }
        _ => return None,
    };
    // Tokens go into the query: keep them to what platforms issue.
    if token.is_empty()
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '.'))
    {
        return None;
    }
    let first = path
        .split_once(&format!("&{param}="))
        .map_or(path, |(first, _)| first);
    Some(format!("{first}&{param}={token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(kind: ChannelKind, visibility: Visibility) -> Outgoing<'static> {
        Outgoing {
            kind,
            visibility,
            text: "Hi Ana, so sorry",
            in_reply_to: Some("1850000000000000001"),
            recipient_id: "2244994945",
            recipient_handle: "ana",
            account_id: "17841400000000",
            reply_id: "r1",
            conversation_id: "c1",
        }
    }

    #[test]
    fn requests_follow_each_platform() {
        let r = request(&out(ChannelKind::X, Visibility::Public)).unwrap();
        assert_eq!(r.path, "/2/tweets");
        assert_eq!(
            r.body["reply"]["in_reply_to_tweet_id"],
            "1850000000000000001"
        );
        let r = request(&out(ChannelKind::X, Visibility::Private)).unwrap();
        assert_eq!(r.path, "/2/dm_conversations/with/2244994945/messages");
        let r = request(&out(ChannelKind::Facebook, Visibility::Public)).unwrap();
        assert_eq!(r.path, "/v21.0/1850000000000000001/comments");
        assert_eq!(r.body["message"], "Hi Ana, so sorry");
        let r = request(&out(ChannelKind::Instagram, Visibility::Public)).unwrap();
        assert_eq!(r.path, "/v21.0/1850000000000000001/replies");
        let r = request(&out(ChannelKind::Instagram, Visibility::Private)).unwrap();
        assert_eq!(r.path, "/v21.0/17841400000000/messages");
        assert_eq!(r.body["recipient"]["id"], "2244994945");
        assert_eq!(r.body["messaging_type"], "RESPONSE");
        let r = request(&out(ChannelKind::Generic, Visibility::Public)).unwrap();
        assert_eq!(r.path, "");
        assert_eq!(r.body["recipient"]["handle"], "ana");
        assert!(request(&out(ChannelKind::Feed, Visibility::Public)).is_err());
    }

    #[test]
    fn public_replies_need_a_target_and_ids_stay_ids() {
        let mut o = out(ChannelKind::X, Visibility::Public);
        o.in_reply_to = None;
        assert!(request(&o).is_err());
        let mut o = out(ChannelKind::Facebook, Visibility::Public);
        o.in_reply_to = Some("../me/feed");
        assert!(request(&o).is_err());
    }

    #[test]
    fn an_earlier_attempt_is_found_where_each_platform_lists_replies() {
        let since = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let x = out(ChannelKind::X, Visibility::Public);
        assert_eq!(
            lookup(&x, since).unwrap(),
            "/2/users/17841400000000/tweets?max_results=100&tweet.fields=referenced_tweets,created_at&start_time=2026-12-06T09:59:55Z"
        );
        assert_eq!(
            lookup(&out(ChannelKind::X, Visibility::Private), since).unwrap(),
            "/2/dm_conversations/with/2244994945/dm_events?max_results=50&event_types=MessageCreate&dm_event.fields=id,text,sender_id,created_at"
        );
        assert_eq!(
            lookup(&out(ChannelKind::Instagram, Visibility::Private), since).unwrap(),
            "/v21.0/17841400000000/conversations?platform=instagram&user_id=2244994945&fields=messages{id,message,from,created_time}"
        );
        assert!(lookup(&out(ChannelKind::Generic, Visibility::Public), since).is_none());
        let fb = out(ChannelKind::Facebook, Visibility::Public);
        assert!(lookup(&fb, since).unwrap().starts_with(
            "/v21.0/1850000000000000001/comments?fields=id,message,from,created_time"
        ));
        let ig = out(ChannelKind::Instagram, Visibility::Public);
        assert!(
            lookup(&ig, since)
                .unwrap()
                .starts_with("/v21.0/1850000000000000001/replies?")
        );

        // X: our reply to that tweet, its text as X returns it (the
        // mention X adds, `&` escaped, links shortened, bare ones too).
        let mut x = out(ChannelKind::X, Visibility::Public);
        x.text = "Sorry & see https://help.example/refunds  or (brew.example/faq) for the refund";
        let timeline = json!({ "data": [
            { "id": "1", "text": "@ana Sorry &amp; see https://t.co/abc or (https://t.co/def) for the refund",
              "created_at": "2026-12-06T10:00:02.000Z",
              "referenced_tweets": [{ "type": "replied_to", "id": "777" }] },
            { "id": "2", "text": "@ana Sorry &amp; see https://t.co/abc or (https://t.co/def) for the refund",
              "created_at": "2026-12-06T10:00:02.000Z",
              "referenced_tweets": [{ "type": "replied_to", "id": "1850000000000000001" }] },
        ]});
        let body = serde_json::to_vec(&timeline).unwrap();
        assert_eq!(
            published_in(&x, 200, &body, since),
            Earlier::Published("2".into())
        );
        // The same words a day earlier are another reply.
        let later = since + chrono::Duration::days(1);
        assert_eq!(published_in(&x, 200, &body, later), Earlier::NotPublished);
        x.text = "Another reply entirely";
        assert_eq!(published_in(&x, 200, &body, since), Earlier::NotPublished);
        assert_eq!(
            published_in(&x, 200, br#"{"meta":{"result_count":0}}"#, since),
            Earlier::NotPublished
        );
        assert!(matches!(
            published_in(&x, 503, b"busy", since),
            Earlier::Unknown(_)
        ));
        assert!(matches!(
            published_in(&x, 200, b"<html>", since),
            Earlier::Unknown(_)
        ));
        assert!(matches!(
            published_in(&x, 403, br#"{"title":"Client Forbidden"}"#, since),
            Earlier::Unverifiable(_)
        ));

        // Facebook and Instagram: from the brand's account, same words.
        let comments = json!({ "data": [
            { "id": "c1", "message": "Hi Ana, so sorry", "from": { "id": "someone-else" } },
            { "id": "c0", "message": "Hi Ana, so sorry", "from": { "id": "17841400000000" },
              "created_time": "2026-12-05T10:00:00+0000" },
            { "id": "c2", "message": "Hi Ana,  so sorry", "from": { "id": "17841400000000" },
              "created_time": "2026-12-06T10:00:01+0000" },
        ]});
        let body = serde_json::to_vec(&comments).unwrap();
        assert_eq!(
            published_in(&fb, 200, &body, since),
            Earlier::Published("c2".into())
        );
        let replies = json!({ "data": [
            { "id": "r9", "text": "Hi Ana, so sorry", "from": { "id": "17841400000000", "username": "brew" } },
        ]});
        let body = serde_json::to_vec(&replies).unwrap();
        assert_eq!(
            published_in(&ig, 200, &body, since),
            Earlier::Published("r9".into())
        );
        assert!(matches!(
            published_in(
                &ig,
                400,
                br#"{"error":{"message":"bad","code":100}}"#,
                since
            ),
            Earlier::Unverifiable(_)
        ));
        assert!(matches!(
            published_in(&ig, 200, br#"{"error":{}}"#, since),
            Earlier::Unknown(_)
        ));
    }

    #[test]
    fn an_earlier_private_message_is_found_in_the_conversation() {
        let since = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // X: the brand's message (not the customer's same words), since.
        let x = out(ChannelKind::X, Visibility::Private);
        let events = json!({ "data": [
            { "id": "e1", "text": "Hi Ana, so sorry", "sender_id": "2244994945",
              "created_at": "2026-12-06T10:00:03.000Z" },
            { "id": "e0", "text": "Hi Ana, so sorry", "sender_id": "17841400000000",
              "created_at": "2026-12-05T10:00:03.000Z" },
            { "id": "e2", "text": "Hi Ana, so sorry", "sender_id": "17841400000000",
              "created_at": "2026-12-06T10:00:03.000Z" },
        ]});
        let body = serde_json::to_vec(&events).unwrap();
        assert_eq!(
            published_in(&x, 200, &body, since),
            Earlier::Published("e2".into())
        );
        assert_eq!(
            published_in(&x, 200, br#"{"meta":{"result_count":0}}"#, since),
            Earlier::NotPublished
        );
        // Meta: the conversations' messages, from the page.
        let fb = out(ChannelKind::Facebook, Visibility::Private);
        let threads = json!({ "data": [{ "id": "t_1", "messages": { "data": [
            { "id": "m_2", "message": "Hi Ana, so sorry", "from": { "id": "2244994945" },
              "created_time": "2026-12-06T10:00:02+0000" },
            { "id": "m_3", "message": "Hi Ana, so sorry", "from": { "id": "17841400000000" },
              "created_time": "2026-12-06T10:00:02+0000" },
        ]}}]});
        let body = serde_json::to_vec(&threads).unwrap();
        assert_eq!(
            published_in(&fb, 200, &body, since),
            Earlier::Published("m_3".into())
        );
        assert_eq!(
            published_in(&fb, 200, br#"{"data":[]}"#, since),
            Earlier::NotPublished
        );
        let mut other = out(ChannelKind::Facebook, Visibility::Private);
        other.text = "Something else";
        assert_eq!(
            published_in(&other, 200, &body, since),
            Earlier::NotPublished
        );
    }

    #[test]
    fn lookups_page_through_long_lists() {
        let since = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let x = out(ChannelKind::X, Visibility::Public);
        let first = "/2/users/1/tweets?max_results=20";
        let more = br#"{"data":[{"id":"1","text":"other","created_at":"2026-12-06T10:30:00.000Z"}],"meta":{"next_token":"7140dibdnow9c7btw3w29"}}"#;
        let second = next_page(&x, first, more, since).unwrap();
        assert_eq!(
            second,
            format!("{first}&pagination_token=7140dibdnow9c7btw3w29")
        );
        let third = next_page(&x, &second, br#"{"meta":{"next_token":"abc"}}"#, since).unwrap();
        assert_eq!(
            third,
            format!("{first}&pagination_token=abc"),
            "replaces, not appends"
        );
        assert_eq!(
            next_page(&x, first, br#"{"data":[],"meta":{}}"#, since),
            None
        );
        assert_eq!(
            next_page(&x, first, br#"{"meta":{"next_token":"a&b=c"}}"#, since),
            None
        );
        // Newest first: a page that reaches back before the reply was
        // written ends the search (the rest is older still).
        let dm = out(ChannelKind::X, Visibility::Private);
        let old = br#"{"data":[{"id":"9","text":"hi","created_at":"2026-12-05T08:00:00.000Z"}],"meta":{"next_token":"abc"}}"#;
        assert_eq!(
            next_page(&dm, "/2/dm_conversations/with/1/dm_events?x=1", old, since),
            None
        );
        let fb = out(ChannelKind::Facebook, Visibility::Public);
        let page = br#"{"data":[],"paging":{"cursors":{"after":"QVFIUk"},"next":"https://graph.facebook.com/..."}}"#;
        assert_eq!(
            next_page(&fb, "/v21.0/1/comments?limit=100", page, since).unwrap(),
            "/v21.0/1/comments?limit=100&after=QVFIUk"
        );
        let last = br#"{"data":[],"paging":{"cursors":{"after":"QVFIUk"}}}"#;
        assert_eq!(
            next_page(&fb, "/v21.0/1/comments?limit=100", last, since),
            None
        );
        let old_comments = br#"{"data":[{"id":"c","message":"m","created_time":"2026-12-01T10:00:00+0000"}],"paging":{"cursors":{"after":"QVFIUk"},"next":"n"}}"#;
        assert_eq!(
            next_page(&fb, "/v21.0/1/comments?limit=100", old_comments, since),
            None
        );
        let meta_dm = out(ChannelKind::Facebook, Visibility::Private);
        assert_eq!(next_page(&meta_dm, "/x", page, since), None);
    }

    #[test]
    fn only_some_failures_may_have_published() {
        assert!(may_have_published(None), "cut off: no answer recorded");
        assert!(may_have_published(Some("HTTP 503: busy")));
        assert!(may_have_published(Some("request failed: timed out")));
        assert!(!may_have_published(Some("HTTP 429: Too Many Requests")));
        assert!(!may_have_published(Some("HTTP 408")));
    }

    #[test]
    fn links_are_told_from_words() {
        for w in [
            "https://x.example",
            "brew.example/faq",
            "(brew.co.uk)",
            "a-b.io,",
        ] {
            assert!(is_link(w), "{w}");
        }
        for w in ["e.g.", "ana@brew.example", "3.5", "end.", "v1.2.3"] {
            assert!(!is_link(w), "{w}");
        }
    }

    #[test]
    fn answers_are_read_per_platform() {
        assert_eq!(
            outcome(ChannelKind::X, 201, br#"{"data":{"id":"99","text":"x"}}"#),
            Outcome::Sent(Some("99".into()))
        );
        assert_eq!(
            outcome(
                ChannelKind::Facebook,
                200,
                br#"{"recipient_id":"1","message_id":"m_7"}"#
            ),
            Outcome::Sent(Some("m_7".into()))
        );
        assert_eq!(outcome(ChannelKind::Generic, 204, b""), Outcome::Sent(None));
        // A NUL (which PostgreSQL cannot store) is dropped from what a
        // callback answers.
        assert_eq!(
            outcome(ChannelKind::Generic, 200, br#"{"id":"a\u0000b"}"#),
            Outcome::Sent(Some("ab".into()))
        );
        assert_eq!(
            outcome(ChannelKind::Generic, 200, br#"{"id":"\u0000"}"#),
            Outcome::Sent(None)
        );
        assert_eq!(
            outcome(ChannelKind::Generic, 500, b"bro\0ken"),
            Outcome::Retry("HTTP 500: broken".into())
        );
        assert_eq!(
            outcome(ChannelKind::X, 503, b"busy"),
            Outcome::Retry("HTTP 503: busy".into())
        );
        assert_eq!(
            outcome(ChannelKind::X, 429, br#"{"title":"Too Many Requests"}"#),
            Outcome::Retry("HTTP 429: Too Many Requests".into())
        );
        assert_eq!(
            outcome(
                ChannelKind::X,
                403,
                br#"{"detail":"You are not allowed to create a Tweet with duplicate content.","status":403}"#
            ),
            Outcome::Refused(
                "HTTP 403: You are not allowed to create a Tweet with duplicate content.".into()
            )
        );
        assert_eq!(
            outcome(
                ChannelKind::Instagram,
                400,
                br#"{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190}}"#
            ),
            Outcome::Refused("HTTP 400: Invalid OAuth access token. (code 190)".into())
        );
        // Meta's throttling comes with a 4xx and a code to wait out.
        assert_eq!(
            outcome(
                ChannelKind::Facebook,
                400,
                br#"{"error":{"message":"Application request limit reached","code":4}}"#
            ),
            Outcome::Retry("HTTP 400: Application request limit reached (code 4)".into())
        );
        assert_eq!(
            outcome(
                ChannelKind::Instagram,
                403,
                br#"{"error":{"message":"Please retry","code":100,"is_transient":true}}"#
            ),
            Outcome::Retry("HTTP 403: Please retry (code 100)".into())
        );
        // An id too long to index is not kept.
        let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(MAX_PLATFORM_ID_BYTES + 1));
        assert_eq!(
            outcome(ChannelKind::Generic, 200, long.as_bytes()),
            Outcome::Sent(None)
        );
        let fits = format!(r#"{{"id":"{}"}}"#, "a".repeat(MAX_PLATFORM_ID_BYTES));
        assert_eq!(
            outcome(ChannelKind::Generic, 200, fits.as_bytes()),
            Outcome::Sent(Some("a".repeat(MAX_PLATFORM_ID_BYTES)))
        );
    }

    #[test]
    fn x_refuses_a_copy_of_a_published_post() {
        let refusal = "HTTP 403: You are not allowed to create a Tweet with duplicate content.";
        assert!(refused_as_duplicate(ChannelKind::X, refusal));
        assert!(!refused_as_duplicate(ChannelKind::Facebook, refusal));
        assert!(!refused_as_duplicate(ChannelKind::X, "HTTP 403: Forbidden"));
    }
}
