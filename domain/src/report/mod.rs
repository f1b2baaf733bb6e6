//! Client reporting, the pure part: a reporting period cut into buckets in
//! the client's time zone, summary statistics, and the SVG charts of the
//! printable report.

pub mod charts;

use crate::ParseError;
use crate::timezone::TimeZone;
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone as _, Timelike,
    Utc,
};

/// Most buckets one report may have (a year by day, a month by hour).
pub const MAX_BUCKETS: usize = 800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Week,
}

/// A reporting period, `[from, to)`, cut into buckets at local boundaries
/// of its time zone (a DST day has 23 or 25 hours; weeks start on Monday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
    pub timezone: TimeZone,
    pub buckets: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The first instant at or after local `t` that exists (skips DST gaps).
fn earliest(tz: &TimeZone, t: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = t;
    for _ in 0..4 {
        match tz.tz().from_local_datetime(&probe) {
            LocalResult::Single(d) => return d.with_timezone(&Utc),
            LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
            LocalResult::None => probe += Duration::minutes(30),
        }
    }
    Utc.from_utc_datetime(&t)
}

impl Period {
    pub fn parse(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
        timezone: TimeZone,
    ) -> Result<Self, ParseError> {
        if to <= from {
            return Err(ParseError::new("to", "must be after from"));
        }
        if to - from > Duration::days(400) {
            return Err(ParseError::new("to", "a report covers at most 400 days"));
        }
        let tz = timezone.tz();
        let local = from.with_timezone(&tz).naive_local();
        // The local boundary at or before `from`.
        let mut start: NaiveDateTime = match granularity {
            Granularity::Hour => local
                .date()
                .and_hms_opt(local.hour(), 0, 0)
                .unwrap_or(local),
            Granularity::Day => local.date().and_hms_opt(0, 0, 0).unwrap_or(local),
            Granularity::Week => {
                let d = local.date()
                    - Duration::days(local.date().weekday().num_days_from_monday() as i64);
                d.and_hms_opt(0, 0, 0).unwrap_or(local)
            }
        };
        let step = |t: NaiveDateTime| match granularity {
            Granularity::Hour => t + Duration::hours(1),
            Granularity::Day => t + Duration::days(1),
            Granularity::Week => t + Duration::weeks(1),
        };
        let mut buckets = Vec::new();
        let mut lo = from;
        loop {
            let next_local = step(start);
            let mut hi = earliest(&timezone, next_local);
            // An hour repeated by a DST fall-back: its UTC hour still counts once.
            if hi <= lo {
                hi = lo + Duration::hours(1);
            }
            let hi = hi.min(to);
            buckets.push((lo, hi));
            if hi >= to {
                break;
            }
            if buckets.len() >= MAX_BUCKETS {
                return Err(ParseError::new(
                    "granularity",
                    format!("more than {MAX_BUCKETS} buckets; choose a coarser granularity"),
                ));
            }
            lo = hi;
            start = next_local;
        }
        Ok(Self {
            from,
            to,
            granularity,
            timezone,
            buckets,
        })
    }

    /// The bucket holding `t`, if it falls in the period.
    pub fn bucket_of(&self, t: DateTime<Utc>) -> Option<usize> {
        if t < self.from || t >= self.to {
            return None;
        }
        let i = self.buckets.partition_point(|(_, hi)| *hi <= t);
        (i < self.buckets.len()).then_some(i)
    }
}

/// A day boundary helper for tests and display.
pub fn local_date(t: DateTime<Utc>, tz: &TimeZone) -> NaiveDate {
    t.with_timezone(&tz.tz()).date_naive()
}

/// p50, p90 and mean of durations in seconds; None when there are none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub mean: Option<f64>,
}

/// Nearest-rank percentiles (the value at rank ceil(p·n)), so every figure
/// is a real observation, identical whatever the database.
pub fn summarize(values: &mut [f64]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Summary {
        count: n,
        p50: Some(rank(0.5)),
        p90: Some(rank(0.9)),
        mean: Some(values.iter().sum::<f64>() / n as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn days_follow_the_local_calendar_across_dst() {
        let ny = TimeZone::parse("America/New_York").unwrap();
        // Spring forward on 2026-03-08: that local day has 23 hours.
        let p = Period::parse(
            at("2026-03-07T05:00:00Z"),
            at("2026-03-10T04:00:00Z"),
            Granularity::Day,
            ny,
        )
        .unwrap();
        let hours: Vec<i64> = p
            .buckets
            .iter()
            .map(|(a, b)| (*b - *a).num_hours())
            .collect();
        assert_eq!(hours, vec![24, 23, 24]);
        assert_eq!(p.buckets[1].0, at("2026-03-08T05:00:00Z"));
        assert_eq!(p.bucket_of(at("2026-03-08T06:59:59Z")), Some(1));
        assert_eq!(p.bucket_of(at("2026-03-09T04:00:00Z")), Some(2));
        assert_eq!(p.bucket_of(at("2026-03-10T04:00:00Z")), None);
    }

    #[test]
    fn partial_edges_weeks_and_limits() {
        let utc = TimeZone::parse("UTC").unwrap();
        let p = Period::parse(
            at("2026-11-04T12:00:00Z"),
            at("2026-11-20T00:00:00Z"),
            Granularity::Week,
            utc,
        )
        .unwrap();
        // Wednesday noon to the next Monday, two full weeks, then a stub.
        assert_eq!(
            p.buckets[0],
            (at("2026-11-04T12:00:00Z"), at("2026-11-09T00:00:00Z"))
        );
        assert_eq!(p.buckets.len(), 3);
        assert_eq!(p.buckets[2].1, at("2026-11-20T00:00:00Z"));
        let kolkata = TimeZone::parse("Asia/Kolkata").unwrap();
        let h = Period::parse(
            at("2026-11-01T00:00:00Z"),
            at("2026-11-01T03:00:00Z"),
            Granularity::Hour,
            kolkata,
        )
        .unwrap();
        // Local hours start at :30 UTC in +05:30.
        assert_eq!(h.buckets[0].1, at("2026-11-01T00:30:00Z"));
        assert_eq!(h.buckets.len(), 4);
        assert!(
            Period::parse(
                at("2026-11-02T00:00:00Z"),
                at("2026-11-01T00:00:00Z"),
                Granularity::Day,
                utc
            )
            .is_err()
        );
        assert!(
            Period::parse(
                at("2026-01-01T00:00:00Z"),
                at("2026-12-01T00:00:00Z"),
                Granularity::Hour,
                utc
            )
            .is_err()
        );
    }

    #[test]
    fn summaries_use_nearest_rank() {
        let mut v = vec![30.0, 10.0, 20.0, 40.0, 100.0];
        let s = summarize(&mut v);
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Some(30.0));
        assert_eq!(s.p90, Some(100.0));
        assert_eq!(s.mean, Some(40.0));
        assert_eq!(summarize(&mut []), Summary::default());
    }
}
