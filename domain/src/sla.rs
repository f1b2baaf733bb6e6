//! Response-time promises: which policy applies to a conversation, and the
//! deadlines it sets. Targets are minutes per priority, counted on a
//! [`Clock`] (every minute, or a business calendar's open minutes).

use crate::ParseError;
use crate::calendar::Clock;
use crate::ingest::{ChannelKind, Visibility};
use crate::priority::PriorityLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Target {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::FirstResponse => "FIRST_RESPONSE",
            Target::NextResponse => "NEXT_RESPONSE",
            Target::Resolution => "RESOLUTION",
        }
    }
}

/// Minutes allowed per target for one priority; None: no promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetMinutes {
    pub first_response: Option<u32>,
    pub next_response: Option<u32>,
    pub resolution: Option<u32>,
}

impl TargetMinutes {
    pub fn get(&self, t: Target) -> Option<u32> {
        match t {
            Target::FirstResponse => self.first_response,
            Target::NextResponse => self.next_response,
            Target::Resolution => self.resolution,
        }
    }

    pub fn parse(self) -> Result<Self, ParseError> {
        for (name, v) in [
            ("firstResponseMinutes", self.first_response),
            ("nextResponseMinutes", self.next_response),
            ("resolutionMinutes", self.resolution),
        ] {
            if v.is_some_and(|m| m == 0 || m > 525_600) {
                return Err(ParseError::new(name, "must be 1 to 525600 minutes"));
            }
        }
        Ok(self)
    }
}

/// Targets for each priority, as stored on a policy and copied onto each
/// conversation when it opens (so later policy edits do not rewrite history).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    pub urgent: TargetMinutes,
    pub high: TargetMinutes,
    pub normal: TargetMinutes,
    pub low: TargetMinutes,
}

impl Targets {
    pub fn for_priority(&self, p: PriorityLevel) -> TargetMinutes {
        match p {
            PriorityLevel::Urgent => self.urgent,
            PriorityLevel::High => self.high,
            PriorityLevel::Normal => self.normal,
            PriorityLevel::Low => self.low,
        }
    }
}

/// When a policy applies; every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    #[serde(default)]
    pub channel_kinds: Vec<String>,
    pub visibility: Option<String>,
    pub min_priority: Option<PriorityLevel>,
    /// NEGATIVE, NEUTRAL or POSITIVE.
    pub sentiment: Option<String>,
    pub author_min_followers: Option<u64>,
    /// Any of these words in the opening message.
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// What a policy's conditions look at.
pub struct Facts<'a> {
    pub channel_kind: ChannelKind,
    pub visibility: Visibility,
    pub priority: PriorityLevel,
    pub sentiment: f64,
    pub author_followers: u64,
    pub text: &'a str,
}

impl Conditions {
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        (self.channel_kinds.is_empty()
            || self
                .channel_kinds
                .iter()
                .any(|k| k == f.channel_kind.as_str()))
            && self
                .visibility
                .as_deref()
                .is_none_or(|v| v == f.visibility.as_str())
            && self.min_priority.is_none_or(|p| f.priority >= p)
            && self
                .sentiment
                .as_deref()
                .is_none_or(|s| s == crate::sentiment::label(f.sentiment))
            && self
                .author_min_followers
                .is_none_or(|n| f.author_followers >= n)
            && (self.keywords.is_empty() || {
                let text = f.text.to_lowercase();
                self.keywords
                    .iter()
                    .any(|k| crate::priority::urgent_word(&text, &k.to_lowercase()))
            })
    }
}

/// A policy as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy<T> {
    pub id: T,
    pub position: i32,
    pub is_default: bool,
    pub conditions: Conditions,
    pub targets: Targets,
    pub warn_at_percent: u8,
}

/// The first matching policy by position; the default one otherwise.
pub fn choose<'a, T>(policies: &'a [Policy<T>], f: &Facts<'_>) -> Option<&'a Policy<T>> {
    let mut ordered: Vec<&Policy<T>> = policies.iter().filter(|p| !p.is_default).collect();
    ordered.sort_by_key(|p| p.position);
    ordered
        .into_iter()
        .find(|p| p.conditions.matches(f))
        .or_else(|| policies.iter().find(|p| p.is_default))
}

/// A running deadline and when to warn before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub target: Target,
    pub due: DateTime<Utc>,
    pub warn: DateTime<Utc>,
}

/// Deadline for `target` starting at `from`, warning at `warn_at_percent`
/// of the allowed time. None when the priority has no such target or the
/// clock never reaches it (a calendar without hours).
pub fn deadline(
    clock: &Clock,
    targets: &TargetMinutes,
    target: Target,
    from: DateTime<Utc>,
    warn_at_percent: u8,
) -> Option<Deadline> {
    let minutes = targets.get(target)?;
    let due = clock.add_minutes(from, minutes)?;
    // To the second: 75 % of a 1-minute target is 45 s, not 0.
    let warn_seconds = minutes as i64 * 60 * warn_at_percent.min(100) as i64 / 100;
    let warn = clock.add(from, chrono::Duration::seconds(warn_seconds))?;
    Some(Deadline { target, due, warn })
}

/// The state of a promise for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlaStatus {
    OnTrack,
    AtRisk,
    Breached,
    Met,
    Paused,
}

pub fn status(now: DateTime<Utc>, d: &Deadline) -> SlaStatus {
    if now >= d.due {
        SlaStatus::Breached
    } else if now >= d.warn {
        SlaStatus::AtRisk
    } else {
        SlaStatus::OnTrack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: u8, pos: i32, default: bool, cond: Conditions, minutes: u32) -> Policy<u8> {
        let t = TargetMinutes {
            first_response: Some(minutes),
            next_response: Some(minutes * 2),
            resolution: Some(minutes * 10),
        };
        Policy {
            id,
            position: pos,
            is_default: default,
            conditions: cond,
            targets: Targets {
                urgent: t,
                high: t,
                normal: t,
                low: TargetMinutes::default(),
            },
            warn_at_percent: 75,
        }
    }

    fn facts(kind: ChannelKind, followers: u64, text: &str) -> Facts<'_> {
        Facts {
            channel_kind: kind,
            visibility: Visibility::Public,
            priority: PriorityLevel::High,
            sentiment: -0.6,
            author_followers: followers,
            text,
        }
    }

    #[test]
    fn first_matching_policy_wins_then_the_default() {
        let vip = Conditions {
            author_min_followers: Some(10_000),
            ..Default::default()
        };
        let x = Conditions {
            channel_kinds: vec!["X".into()],
            ..Default::default()
        };
        let ps = vec![
            policy(3, 0, true, Conditions::default(), 240),
            policy(2, 2, false, x, 60),
            policy(1, 1, false, vip, 15),
        ];
        assert_eq!(
            choose(&ps, &facts(ChannelKind::X, 50_000, "hi"))
                .unwrap()
                .id,
            1
        );
        assert_eq!(choose(&ps, &facts(ChannelKind::X, 10, "hi")).unwrap().id, 2);
        assert_eq!(
            choose(&ps, &facts(ChannelKind::Facebook, 10, "hi"))
                .unwrap()
                .id,
            3
        );
        let kw = Conditions {
            keywords: vec!["Refund".into()],
            sentiment: Some("NEGATIVE".into()),
            ..Default::default()
        };
        assert!(kw.matches(&facts(ChannelKind::X, 0, "I want a refund")));
        assert!(kw.matches(&facts(ChannelKind::X, 0, "still not refunded")));
        assert!(!kw.matches(&facts(ChannelKind::X, 0, "hello")));
        let law = Conditions {
            keywords: vec!["law".into()],
            ..Default::default()
        };
        assert!(!law.matches(&facts(ChannelKind::X, 0, "a flaw in my lawn chair")));
        assert!(law.matches(&facts(ChannelKind::X, 0, "this breaks consumer law")));
    }

    #[test]
    fn deadlines_and_warnings() {
        let t = TargetMinutes {
            first_response: Some(60),
            next_response: None,
            resolution: Some(480),
        };
        let from = DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = deadline(&Clock::Calendar24x7, &t, Target::FirstResponse, from, 75).unwrap();
        assert_eq!(d.due, from + chrono::Duration::minutes(60));
        assert_eq!(d.warn, from + chrono::Duration::minutes(45));
        assert!(deadline(&Clock::Calendar24x7, &t, Target::NextResponse, from, 75).is_none());
        assert_eq!(status(from, &d), SlaStatus::OnTrack);
        assert_eq!(status(d.warn, &d), SlaStatus::AtRisk);
        assert_eq!(status(d.due, &d), SlaStatus::Breached);
        assert!(
            TargetMinutes {
                first_response: Some(0),
                ..Default::default()
            }
            .parse()
            .is_err()
        );
    }
}
