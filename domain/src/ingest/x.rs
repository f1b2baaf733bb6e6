//! X (Twitter) Account Activity API payloads: `tweet_create_events` (mentions
//! and replies) and `direct_message_events` with the `users` map.

use super::{Inbound, InboundAuthor, PayloadError, Visibility, clip};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

pub fn parse(json: &Value, account_id: &str) -> Result<Vec<Inbound>, PayloadError> {
    let obj = json
        .as_object()
        .ok_or_else(|| PayloadError::new("X payload must be a JSON object"))?;
    let own = obj
        .get("for_user_id")
        .and_then(Value::as_str)
        .unwrap_or(account_id);
    let mut out = Vec::new();
    for t in array(obj.get("tweet_create_events")) {
        let user = t
            .get("user")
            .ok_or_else(|| PayloadError::new("tweet without user"))?;
        let author_id = str_field(user, "id_str")?;
        if author_id == own || t.get("retweeted_status").is_some() {
            continue; // the brand's own tweets and plain retweets are not customer messages
        }
        let text = t
            .pointer("/extended_tweet/full_text")
            .and_then(Value::as_str)
            .or_else(|| t.get("text").and_then(Value::as_str))
            .ok_or_else(|| PayloadError::new("tweet without text"))?;
        let handle = str_field(user, "screen_name")?;
        let id = str_field(t, "id_str")?;
        out.push(Inbound {
            account: Some(own.to_string()),
            alias: None,
            external_id: id.to_string(),
            in_reply_to: t
                .get("in_reply_to_status_id_str")
                .and_then(Value::as_str)
                .map(String::from),
            visibility: Visibility::Public,
            text: clip(text),
            published_at: tweet_time(t.get("created_at").and_then(Value::as_str))?,
            author: InboundAuthor {
                external_id: author_id.to_string(),
                handle: handle.to_string(),
                name: user.get("name").and_then(Value::as_str).map(String::from),
                followers: user
                    .get("followers_count")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                verified: user
                    .get("verified")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            url: Some(format!("https://x.com/{handle}/status/{id}")),
        });
    }
    let users = obj.get("users");
    for dm in array(obj.get("direct_message_events")) {
        if dm.get("type").and_then(Value::as_str) != Some("message_create") {
            continue;
        }
        let mc = dm
            .get("message_create")
            .ok_or_else(|| PayloadError::new("direct message without message_create"))?;
        let sender = str_field(mc, "sender_id")?;
        if sender == own {
            continue;
        }
        let user = users.and_then(|u| u.get(sender));
        let text = mc
            .pointer("/message_data/text")
            .and_then(Value::as_str)
            .ok_or_else(|| PayloadError::new("direct message without text"))?;
        let millis = dm
            .get("created_timestamp")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| PayloadError::new("direct message without created_timestamp"))?;
        out.push(Inbound {
            account: Some(own.to_string()),
            alias: None,
            external_id: format!("dm:{}", str_field(dm, "id")?),
            in_reply_to: None,
            visibility: Visibility::Private,
            text: clip(text),
            published_at: Utc
                .timestamp_millis_opt(millis)
                .single()
                .ok_or_else(|| PayloadError::new("created_timestamp out of range"))?,
            author: InboundAuthor {
                external_id: sender.to_string(),
                handle: user
                    .and_then(|u| u.get("screen_name"))
                    .and_then(Value::as_str)
                    .unwrap_or(sender)
                    .to_string(),
                name: user
                    .and_then(|u| u.get("name"))
                    .and_then(Value::as_str)
                    .map(String::from),
                followers: user
                    .and_then(|u| u.get("followers_count"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                verified: user
                    .and_then(|u| u.get("verified"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            url: None,
        });
    }
    Ok(out)
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, PayloadError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| PayloadError::new(format!("missing string field {key:?}")))
}

/// X's `created_at`: `Wed Oct 10 20:19:24 +0000 2018`.
fn tweet_time(raw: Option<&str>) -> Result<DateTime<Utc>, PayloadError> {
    let raw = raw.ok_or_else(|| PayloadError::new("tweet without created_at"))?;
    DateTime::parse_from_str(raw, "%a %b %d %H:%M:%S %z %Y")
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| PayloadError::new(format!("unreadable created_at {raw:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{ChannelKind, parse as parse_body};

    const FIXTURE: &str = include_str!("../../../tests/fixtures/x_account_activity.json");

    #[test]
    fn parses_mentions_replies_and_dms_and_skips_own() {
        let msgs = parse_body(
            ChannelKind::X,
            FIXTURE.as_bytes(),
            "2244994945",
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        let mention = &msgs[0];
        assert_eq!(mention.external_id, "1050118621198921728");
        assert_eq!(mention.author.handle, "angry_customer");
        assert_eq!(mention.author.followers, 48_210);
        assert!(mention.text.contains("cold"), "extended text preferred");
        assert_eq!(
            mention.published_at.to_rfc3339(),
            "2018-10-10T20:19:24+00:00"
        );
        let reply = &msgs[1];
        assert_eq!(reply.in_reply_to.as_deref(), Some("1050118621198921728"));
        let dm = &msgs[2];
        assert_eq!(dm.visibility, Visibility::Private);
        assert_eq!(dm.external_id, "dm:954491830116155396");
        assert_eq!(dm.author.handle, "furiouscamper");
    }

    #[test]
    fn refuses_shapes_it_cannot_read() {
        assert!(parse_body(ChannelKind::X, b"[1,2]", "1", chrono::Utc::now()).is_err());
        assert!(parse_body(ChannelKind::X, b"{not json", "1", chrono::Utc::now()).is_err());
        assert!(
            parse_body(
                ChannelKind::X,
                br#"{"tweet_create_events":[{"id_str":"1","text":"x","user":{"id_str":"2"}}]}"#,
                "1",
                chrono::Utc::now(),
            )
            .is_err()
        );
    }
}
