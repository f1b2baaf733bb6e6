//! A workspace's tuning of the canned-reply guard, in range once parsed.

use crate::ParseError;

/// Estimated similarity at or above which a reply counts as a repeat.
/// Below 0.6 the LSH bands (16 × 4 rows) would miss too many candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimilarityThreshold(f64);

impl SimilarityThreshold {
    pub const DEFAULT: SimilarityThreshold = SimilarityThreshold(0.8);
    pub const MIN: f64 = 0.6;

    pub fn parse(raw: f64) -> Result<Self, ParseError> {
        if raw.is_finite() && (Self::MIN..=1.0).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(ParseError::new(
                "similarityThreshold",
                format!("must be between {} and 1.0", Self::MIN),
            ))
        }
    }

    /// A stored value, or the default when none (or a bad one) is stored.
    pub fn stored(raw: Option<f64>) -> Self {
        raw.and_then(|r| Self::parse(r).ok())
            .unwrap_or(Self::DEFAULT)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// How many days of the workspace's earlier replies a reply is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DuplicateWindow(u16);

impl DuplicateWindow {
    pub const DEFAULT: DuplicateWindow = DuplicateWindow(30);
    pub const MAX_DAYS: i32 = 365;

    pub fn parse(days: i32) -> Result<Self, ParseError> {
        if (1..=Self::MAX_DAYS).contains(&days) {
            Ok(Self(days as u16))
        } else {
            Err(ParseError::new(
                "duplicateWindowDays",
                format!("must be between 1 and {}", Self::MAX_DAYS),
            ))
        }
    }

    pub fn stored(raw: Option<i32>) -> Self {
        raw.and_then(|r| Self::parse(r).ok())
            .unwrap_or(Self::DEFAULT)
    }

    pub fn days(self) -> i64 {
        i64::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(SimilarityThreshold::parse(0.59).is_err());
        assert!(SimilarityThreshold::parse(1.01).is_err());
        assert!(SimilarityThreshold::parse(f64::NAN).is_err());
        assert_eq!(SimilarityThreshold::parse(0.9).unwrap().get(), 0.9);
        assert_eq!(SimilarityThreshold::stored(None).get(), 0.8);
        assert!(DuplicateWindow::parse(0).is_err());
        assert!(DuplicateWindow::parse(366).is_err());
        assert_eq!(DuplicateWindow::parse(7).unwrap().days(), 7);
        assert_eq!(DuplicateWindow::stored(Some(0)).days(), 30);
    }
}
