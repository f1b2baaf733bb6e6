//! The GENERIC webhook schema, for the agency's own systems and platforms
//! without an adapter (reviews, e-mail-to-webhook). The body is one event
//! or `{"events": [...]}`; each event:
//!
//! ```json
//! { "id": "review-9001",                 // required, unique per channel
//!   "text": "…",                          // required
//!   "visibility": "public" | "private",   // default public
//!   "published_at": "2026-11-20T09:15:00Z", // RFC 3339, required
//!   "in_reply_to": "review-9000",         // optional: threads the event
//!   "url": "https://…",                   // optional
//!   "author": { "id": "…", "handle": "…", "name": "…", "followers": 0, "verified": false } }
//! ```

use super::{Inbound, InboundAuthor, PayloadError, Visibility, clip};
use chrono::{DateTime, Utc};
use serde_json::Value;

pub const MAX_EVENTS: usize = 1_000;

pub fn parse(json: &Value) -> Result<Vec<Inbound>, PayloadError> {
    let events: Vec<&Value> = match json.get("events") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(_) => return Err(PayloadError::new("events must be an array")),
        None if json.is_object() => vec![json],
        None => {
            return Err(PayloadError::new(
                "body must be an event object or {\"events\": [...]}",
            ));
        }
    };
    if events.len() > MAX_EVENTS {
        return Err(PayloadError::new(format!(
            "at most {MAX_EVENTS} events per request"
        )));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event(e).map_err(|err| PayloadError::new(format!("events[{i}]: {}", err.0))))
        .collect()
}

fn event(e: &Value) -> Result<Inbound, PayloadError> {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    let id = s("id")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PayloadError::new("id is required"))?;
    let text = s("text").ok_or_else(|| PayloadError::new("text is required"))?;
    let published =
        s("published_at").ok_or_else(|| PayloadError::new("published_at is required"))?;
    let published_at = DateTime::parse_from_rfc3339(published)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| PayloadError::new(format!("published_at {published:?} is not RFC 3339")))?;
    let visibility = match s("visibility") {
        None => Visibility::Public,
        Some(v) => Visibility::parse(v).map_err(|err| PayloadError::new(err.reason))?,
    };
    let a = e
        .get("author")
        .ok_or_else(|| PayloadError::new("author is required"))?;
    let author_id = a
        .get("id")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PayloadError::new("author.id is required"))?;
    Ok(Inbound {
        account: None,
        alias: None,
        external_id: id.to_string(),
        in_reply_to: s("in_reply_to").map(String::from),
        visibility,
        text: clip(text),
        published_at,
        author: InboundAuthor {
            external_id: author_id.to_string(),
            handle: a
                .get("handle")
                .and_then(Value::as_str)
                .unwrap_or(author_id)
                .to_string(),
            name: a.get("name").and_then(Value::as_str).map(String::from),
            followers: a.get("followers").and_then(Value::as_u64).unwrap_or(0),
            verified: a.get("verified").and_then(Value::as_bool).unwrap_or(false),
        },
        url: s("url").map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use crate::ingest::{ChannelKind, Visibility, parse};

    #[test]
    fn documented_events_parse() {
        let body = include_bytes!("../../../tests/fixtures/generic_events.json");
        let msgs = parse(ChannelKind::Generic, body, "", chrono::Utc::now()).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].author.followers, 1500);
        assert_eq!(msgs[1].visibility, Visibility::Private);
        assert_eq!(
            msgs[1].published_at.to_rfc3339(),
            "2026-11-20T09:00:00+00:00"
        );
    }

    #[test]
    fn errors_name_the_event_and_field() {
        let err = parse(
            ChannelKind::Generic,
            br#"{"events":[{"id":"a","text":"t","published_at":"yesterday","author":{"id":"x"}}]}"#,
            "",
            chrono::Utc::now(),
        )
        .unwrap_err();
        assert!(err.0.starts_with("events[0]: published_at"), "{err}");
        assert!(
            parse(
                ChannelKind::Generic,
                br#"{"events":5}"#,
                "",
                chrono::Utc::now()
            )
            .is_err()
        );
    }
}
