//! Facebook and Instagram Graph webhook payloads: page `feed` changes
//! (posts and comments), Instagram `comments`, and Messenger / Instagram
//! `messaging` events. Meta sends no follower counts; reach is 0 until
//! enriched.

use super::{Inbound, InboundAuthor, PayloadError, Visibility, clip};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

pub fn parse(json: &Value, account_id: &str) -> Result<Vec<Inbound>, PayloadError> {
    let entries = json
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| PayloadError::new("Graph webhook payload must have an entry array"))?;
    let mut out = Vec::new();
    for entry in entries {
        let own = entry
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(account_id);
        let entry_time = entry.get("time").and_then(Value::as_i64);
        for change in entry
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = change.get("field").and_then(Value::as_str).unwrap_or("");
            let Some(v) = change.get("value") else {
                continue;
            };
            let parsed = match field {
                "feed" => feed_item(v, own, entry_time)?,
                "comments" => instagram_comment(v, own, entry_time)?,
                // Mentions carry only IDs; their text needs an API call.
                _ => None,
            };
            out.extend(parsed);
        }
        for m in entry
            .get("messaging")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(message(m, own)?);
        }
    }
    Ok(out)
}

fn feed_item(v: &Value, own: &str, fallback: Option<i64>) -> Result<Option<Inbound>, PayloadError> {
    let item = v.get("item").and_then(Value::as_str).unwrap_or("");
    if !matches!(item, "comment" | "post" | "status")
        || v.get("verb").and_then(Value::as_str) != Some("add")
    {
        return Ok(None);
    }
    let Some(text) = v.get("message").and_then(Value::as_str) else {
        return Ok(None);
    };
    let from = v
        .get("from")
        .ok_or_else(|| PayloadError::new("feed change without from"))?;
    let author_id =
        string(from.get("id")).ok_or_else(|| PayloadError::new("feed change without from.id"))?;
    if author_id == own {
        return Ok(None);
    }
    let id = string(v.get("comment_id"))
        .or_else(|| string(v.get("post_id")))
        .ok_or_else(|| PayloadError::new("feed change without comment_id or post_id"))?;
    let name = from.get("name").and_then(Value::as_str).map(String::from);
    Ok(Some(Inbound {
        account: Some(own.to_string()),
        alias: None,
        external_id: id.clone(),
        in_reply_to: string(v.get("parent_id")),
        visibility: Visibility::Public,
        text: clip(text),
        published_at: seconds(v.get("created_time"), fallback)?,
        author: InboundAuthor {
            handle: name.clone().unwrap_or_else(|| author_id.clone()),
            external_id: author_id,
            name,
            followers: 0,
            verified: false,
        },
        url: Some(format!("https://www.facebook.com/{id}")),
    }))
}

fn instagram_comment(
    v: &Value,
    own: &str,
    fallback: Option<i64>,
) -> Result<Option<Inbound>, PayloadError> {
    let id = string(v.get("id")).ok_or_else(|| PayloadError::new("comment without id"))?;
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| PayloadError::new("comment without text"))?;
    let from = v
        .get("from")
        .ok_or_else(|| PayloadError::new("comment without from"))?;
    let author_id =
        string(from.get("id")).ok_or_else(|| PayloadError::new("comment without from.id"))?;
    if author_id == own {
        return Ok(None);
    }
    let username = from
        .get("username")
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Some(Inbound {
        account: Some(own.to_string()),
        alias: None,
        external_id: id,
        in_reply_to: string(v.get("parent_id")),
        visibility: Visibility::Public,
        text: clip(text),
        published_at: seconds(v.get("timestamp").or(v.get("created_time")), fallback)?,
        author: InboundAuthor {
            handle: username.clone().unwrap_or_else(|| author_id.clone()),
            external_id: author_id,
            name: username,
            followers: 0,
            verified: false,
        },
        url: None,
    }))
}

fn message(m: &Value, own: &str) -> Result<Option<Inbound>, PayloadError> {
    let Some(msg) = m.get("message") else {
        return Ok(None); // delivery and read receipts, postbacks
    };
    if msg.get("is_echo").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let sender = string(m.pointer("/sender/id"))
        .ok_or_else(|| PayloadError::new("message without sender.id"))?;
    if sender == own {
        return Ok(None);
    }
    let mid = string(msg.get("mid")).ok_or_else(|| PayloadError::new("message without mid"))?;
    let text = msg
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("[attachment]");
    let millis = m
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| PayloadError::new("message without timestamp"))?;
    Ok(Some(Inbound {
        account: Some(own.to_string()),
        alias: None,
        external_id: mid,
        in_reply_to: None,
        visibility: Visibility::Private,
        text: clip(text),
        published_at: Utc
            .timestamp_millis_opt(millis)
            .single()
            .ok_or_else(|| PayloadError::new("timestamp out of range"))?,
        author: InboundAuthor {
            external_id: sender.clone(),
            handle: sender,
            name: None,
            followers: 0,
            verified: false,
        },
        url: None,
    }))
}

/// IDs arrive as strings or numbers.
fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Unix seconds (number or numeric string) or an ISO 8601 string.
fn seconds(v: Option<&Value>, fallback: Option<i64>) -> Result<DateTime<Utc>, PayloadError> {
    let secs = match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return DateTime::parse_from_rfc3339(s)
                    .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z"))
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| PayloadError::new(format!("unreadable time {s:?}")));
            }
        },
        _ => None,
    }
    .or(fallback)
    .ok_or_else(|| PayloadError::new("change without a time"))?;
    Utc.timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| PayloadError::new("time out of range"))
}

#[cfg(test)]
mod tests {
    use crate::ingest::{ChannelKind, Visibility, parse};

    #[test]
    fn page_feed_comments_and_messenger() {
        let body = include_bytes!("../../../tests/fixtures/meta_page_feed.json");
        let msgs = parse(
            ChannelKind::Facebook,
            body,
            "104000000000001",
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(msgs.len(), 2, "{msgs:#?}");
        assert_eq!(msgs[0].external_id, "104000000000001_555_777");
        assert_eq!(msgs[0].author.name.as_deref(), Some("Élodie Martin"));
        assert!(msgs[0].text.starts_with("Très déçue ☹️"));
        assert_eq!(msgs[0].visibility, Visibility::Public);
        assert_eq!(msgs[1].external_id, "m_Ab12Cd34");
        assert_eq!(msgs[1].visibility, Visibility::Private);
    }

    #[test]
    fn instagram_comments() {
        let body = include_bytes!("../../../tests/fixtures/meta_instagram.json");
        let msgs = parse(
            ChannelKind::Instagram,
            body,
            "17841400000000001",
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].author.handle, "happy_sipper");
        assert_eq!(msgs[0].published_at.timestamp(), 1764300100);
    }

    #[test]
    fn refuses_payloads_without_entries() {
        assert!(
            parse(
                ChannelKind::Facebook,
                br#"{"object":"page"}"#,
                "1",
                chrono::Utc::now()
            )
            .is_err()
        );
    }
}
