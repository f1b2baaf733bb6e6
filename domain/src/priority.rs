//! Priority: who gets answered first. A complaint read by many people comes
//! before a quiet question. The score is a weighted sum of four parts, each
//! kept in the breakdown so the API can explain a ranking.

use crate::ingest::Visibility;
use serde::{Deserialize, Serialize};

pub const W_SENTIMENT: f64 = 0.40;
pub const W_REACH: f64 = 0.30;
pub const W_VISIBILITY: f64 = 0.10;
pub const W_URGENCY: f64 = 0.20;

/// Used when a workspace has not set its own urgency keywords.
pub const DEFAULT_URGENCY_KEYWORDS: &[&str] = &[
    "urgent",
    "asap",
    "emergency",
    "refund",
    "lawyer",
    "cancel",
    "unsafe",
    "scam",
    "charged twice",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PriorityLevel {
    Low,
    Normal,
    High,
    Urgent,
}

impl PriorityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityLevel::Low => "LOW",
            PriorityLevel::Normal => "NORMAL",
            PriorityLevel::High => "HIGH",
            PriorityLevel::Urgent => "URGENT",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Low, Self::Normal, Self::High, Self::Urgent]
            .into_iter()
            .find(|l| l.as_str() == raw)
    }

    pub fn from_score(score: f64) -> Self {
        if score >= 0.6 {
            PriorityLevel::Urgent
        } else if score >= 0.4 {
            PriorityLevel::High
        } else if score >= 0.2 {
            PriorityLevel::Normal
        } else {
            PriorityLevel::Low
        }
    }
}

pub struct PriorityInput<'a> {
    /// VADER compound score, -1 (very negative) to 1 (very positive).
    pub sentiment: f64,
    pub followers: u64,
    pub verified: bool,
    pub visibility: Visibility,
    pub text: &'a str,
    /// The workspace's urgency keywords (lower-cased match); empty: defaults.
    pub urgency_keywords: &'a [String],
}

/// Each part is already weighted; `score` is their sum, in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub sentiment: f64,
    pub reach: f64,
    pub visibility: f64,
    pub urgency: f64,
    pub urgency_matches: Vec<String>,
    pub score: f64,
    pub level: PriorityLevel,
}

pub fn score(input: &PriorityInput<'_>) -> Breakdown {
    let negativity = (-input.sentiment).clamp(0.0, 1.0);
    // log scale: 10 followers ≈ 0.17, 10k ≈ 0.67, 1M and up = 1.
    let mut reach = ((input.followers as f64 + 1.0).log10() / 6.0).min(1.0);
    if input.verified {
        reach = (reach + 0.1).min(1.0);
    }
    let visibility = match input.visibility {
        Visibility::Public => 1.0,
        Visibility::Private => 0.0,
    };
    let text = input.text.to_lowercase();
    let defaults: Vec<String>;
    let keywords = if input.urgency_keywords.is_empty() {
        defaults = DEFAULT_URGENCY_KEYWORDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        &defaults[..]
    } else {
        input.urgency_keywords
    };
    let urgency_matches: Vec<String> = keywords
        .iter()
        .filter(|k| urgent_word(&text, &k.to_lowercase()))
        .cloned()
        .collect();
    let urgency = if urgency_matches.is_empty() { 0.0 } else { 1.0 };
    let parts = [
        W_SENTIMENT * negativity,
        W_REACH * reach,
        W_VISIBILITY * visibility,
        W_URGENCY * urgency,
    ];
    let total = parts.iter().sum::<f64>().clamp(0.0, 1.0);
    Breakdown {
        sentiment: round(parts[0]),
        reach: round(parts[1]),
        visibility: round(parts[2]),
        urgency: round(parts[3]),
        urgency_matches,
        score: round(total),
        level: PriorityLevel::from_score(total),
    }
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Endings an urgency keyword may take and still be itself ("refunded",
/// "cancelled", "scammed", "lawyers", "urgently").
const ENDINGS: &[&str] = &[
    "s", "es", "d", "ed", "ing", "er", "ers", "ly", "ion", "ions", "ation", "led", "ling",
    "lation", "med", "ming", "ned", "ning", "ted", "ting",
];

/// Whether `text` (lower case) says `keyword` as a word of its own, or
/// with one of [`ENDINGS`]: "scampi" and "insurgent" do not say "scam" and
/// "urgent". Urgency keywords and SLA policy conditions match this way.
pub fn urgent_word(text: &str, keyword: &str) -> bool {
    if keyword.is_empty() {
        return false;
    }
    // Letters of a script that spaces its words: only there is a letter
    // next to the keyword part of the same word.
    let joined = |c: char| c.is_alphanumeric() && !unspaced(c);
    text.match_indices(keyword).any(|(i, _)| {
        let starts_word = !text[..i].chars().next_back().is_some_and(joined)
            || keyword.chars().next().is_some_and(unspaced);
        let rest = &text[i + keyword.len()..];
        let tail = if keyword.chars().next_back().is_some_and(unspaced) {
            ""
        } else {
            &rest[..rest.find(|c: char| !joined(c)).unwrap_or(rest.len())]
        };
        starts_word && (tail.is_empty() || ENDINGS.contains(&tail))
    })
}

/// Scripts written without spaces between words (Chinese, Japanese, Thai,
/// Lao, Khmer, Myanmar): a keyword in them is matched anywhere.
pub fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF // Thai, Lao
        | 0x1000..=0x109F // Myanmar
        | 0x1780..=0x17FF // Khmer
        | 0x3040..=0x30FF // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // half-width Katakana
        | 0x20000..=0x2FA1F // CJK extensions B and later
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(sentiment: f64, followers: u64, vis: Visibility, text: &str) -> Breakdown {
        score(&PriorityInput {
            sentiment,
            followers,
            verified: false,
            visibility: vis,
            text,
            urgency_keywords: &[],
        })
    }

    #[test]
    fn an_angry_public_complaint_with_reach_outranks_a_quiet_question() {
        let loud = input(
            -0.8,
            50_000,
            Visibility::Public,
            "charged twice, worst service",
        );
        let quiet = input(0.1, 12, Visibility::Private, "is the shop open sunday?");
        assert!(loud.score > quiet.score);
        assert_eq!(loud.level, PriorityLevel::Urgent);
        assert_eq!(quiet.level, PriorityLevel::Low);
        assert_eq!(loud.urgency_matches, ["charged twice"]);
    }

    #[test]
    fn urgency_keywords_are_words_not_parts_of_words() {
        let matched = |text: &str| input(0.0, 0, Visibility::Public, text).urgency_matches;
        assert!(matched("loved the scampi").is_empty());
        assert!(matched("an insurgent brand").is_empty());
        assert!(matched("refundable? no, cancellable").is_empty());
        assert_eq!(matched("I was SCAMMED"), ["scam"]);
        assert_eq!(matched("still not refunded"), ["refund"]);
        assert_eq!(matched("the cancellation failed"), ["cancel"]);
        assert_eq!(matched("need help urgently"), ["urgent"]);
        assert_eq!(matched("my lawyers will call"), ["lawyer"]);
        assert_eq!(matched("refund, now."), ["refund"]);
        // Scripts without spaces between words: anywhere.
        let custom = |text: &str, kw: &str| {
            score(&PriorityInput {
                sentiment: 0.0,
                followers: 0,
                verified: false,
                visibility: Visibility::Public,
                text,
                urgency_keywords: &[kw.to_string()],
            })
            .urgency_matches
        };
        assert_eq!(custom("我要退款了", "退款"), ["退款"]);
        assert_eq!(custom("返金してください", "返金"), ["返金"]);
        assert_eq!(custom("오늘 환불 요청", "환불"), ["환불"]);
        assert!(
            custom("환불금", "환불").is_empty(),
            "Korean spaces its words"
        );
    }

    proptest! {
        #[test]
        fn score_is_bounded_and_monotonic(
            s in -1.0f64..1.0, ds in 0.0f64..1.0,
            f in 0u64..10_000_000, df in 0u64..10_000_000,
        ) {
            let base = input(s, f, Visibility::Private, "hello");
            prop_assert!((0.0..=1.0).contains(&base.score));
            // More negative never ranks lower; more followers never ranks lower;
            // public never ranks below private.
            let angrier = input((s - ds).max(-1.0), f, Visibility::Private, "hello");
            prop_assert!(angrier.score >= base.score);
            let wider = input(s, f.saturating_add(df), Visibility::Private, "hello");
            prop_assert!(wider.score >= base.score);
            let public = input(s, f, Visibility::Public, "hello");
            prop_assert!(public.score >= base.score);
            prop_assert!(public.level >= base.level);
        }
    }
}
