//! Relay pagination input: page size bounds and opaque keyset cursors.
//! Rows use time-ordered UUIDv7 keys, so "after this id" is an index range scan.

use crate::ParseError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub Uuid);

impl Cursor {
    pub fn encode(id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(format!("cursor:{id}"))
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("after", "is not a cursor returned by this API");
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let id = text.strip_prefix("cursor:").ok_or_else(bad)?;
        Uuid::parse_str(id).map(Cursor).map_err(|_| bad())
    }
}

/// A cursor for lists ordered by a score, then id: `cursor:<score>:<id>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreCursor {
    pub score: f64,
    pub id: Uuid,
}

impl ScoreCursor {
    pub fn encode(score: f64, id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(format!("cursor:{score}:{id}"))
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("after", "is not a cursor returned by this list");
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let rest = text.strip_prefix("cursor:").ok_or_else(bad)?;
        let (score, id) = rest.split_once(':').ok_or_else(bad)?;
        let score: f64 = score.parse().map_err(|_| bad())?;
        if !score.is_finite() {
            return Err(bad());
        }
        Ok(ScoreCursor {
            score,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

/// A cursor for lists ordered by an optional time, then id (nulls last):
/// the time is kept exactly as stored, so equality holds on the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCursor {
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub id: Uuid,
}

impl TimeCursor {
    pub fn encode(at: Option<chrono::DateTime<chrono::Utc>>, id: Uuid) -> String {
        let at = at.map_or("none".to_string(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        });
        URL_SAFE_NO_PAD.encode(format!("time:{at}:{id}"))
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("after", "is not a cursor returned by this list");
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let rest = text.strip_prefix("time:").ok_or_else(bad)?;
        let (at, id) = rest.rsplit_once(':').ok_or_else(bad)?;
        let at = match at {
            "none" => None,
            t => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| bad())?
                    .with_timezone(&chrono::Utc),
            ),
        };
        Ok(TimeCursor {
            at,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub first: u64,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn parse(first: Option<i32>, after: Option<&str>) -> Result<Self, ParseError> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if n < 1 => return Err(ParseError::new("first", "must be at least 1")),
            Some(n) if n as u64 > MAX_PAGE_SIZE => {
                return Err(ParseError::new(
                    "first",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            Some(n) => n as u64,
        };
        let after = after.map(Cursor::parse).transpose()?;
        Ok(Self { first, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_page_size() {
        assert_eq!(PageRequest::parse(None, None).unwrap().first, 20);
        assert_eq!(PageRequest::parse(Some(100), None).unwrap().first, 100);
        assert!(PageRequest::parse(Some(101), None).is_err());
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(-5), None).is_err());
    }

    #[test]
    fn time_cursors_round_trip_exactly() {
        let id = Uuid::now_v7();
        let at = chrono::Utc::now();
        assert_eq!(
            TimeCursor::parse(&TimeCursor::encode(Some(at), id)).unwrap(),
            TimeCursor { at: Some(at), id }
        );
        assert_eq!(
            TimeCursor::parse(&TimeCursor::encode(None, id)).unwrap(),
            TimeCursor { at: None, id }
        );
        assert!(TimeCursor::parse("bogus").is_err());
    }

    #[test]
    fn score_cursors_round_trip() {
        let id = Uuid::now_v7();
        let c = ScoreCursor::encode(0.4312, id);
        assert_eq!(
            ScoreCursor::parse(&c).unwrap(),
            ScoreCursor { score: 0.4312, id }
        );
        assert!(ScoreCursor::parse(&Cursor::encode(id)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7();
        let c = Cursor::encode(id);
        assert_eq!(
            PageRequest::parse(Some(5), Some(&c)).unwrap().after,
            Some(Cursor(id))
        );
        assert!(PageRequest::parse(Some(5), Some("nope")).is_err());
    }
}
