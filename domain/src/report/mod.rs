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
        // chrono accepts years up to 262143; stepping past its last day
        // would panic, and no report spans centuries.
        for (field, t) in [("from", from), ("to", to)] {
            if !(1970..=9999).contains(&t.year()) {
                return Err(ParseError::new(
                    field,
                    "must be between the years 1970 and 9999",
                ));
            }
        }
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
        // Hours are real hours: the local hour boundary at or before
        // `from`, then every hour after it (across a DST change the local
        // clock repeats or skips an hour; a bucket never spans two).
        // (The boundary as an instant: `from` less its minutes past the
        // local hour, in the offset in force at `from`; the local time
        // would be ambiguous in the hour the clock repeats.)
        let mut hour = match granularity {
            Granularity::Hour => {
                from - Duration::minutes(i64::from(local.minute()))
                    - Duration::seconds(i64::from(local.second()))
                    - Duration::nanoseconds(i64::from(local.nanosecond()))
            }
            _ => earliest(&timezone, start),
        };
        loop {
            let next_local = step(start);
            let mut hi = match granularity {
                Granularity::Hour => {
                    hour += Duration::hours(1);
                    hour
                }
                _ => earliest(&timezone, next_local),
            };
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

/// Summary of durations given in whole milliseconds, reported in seconds.
/// Nearest-rank percentiles (the value at rank ceil(p·n)), so every figure
/// is a real observation; integer sums, so the mean does not depend on the
/// order rows arrive in: identical whatever the database. Selection, not
/// sorting: linear in the number of values (the values are reordered).
pub fn summarize_ms(values: &mut [i64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary::default();
    }
    let rank = |p: f64| ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    let (r50, r90) = (rank(0.5), rank(0.9));
    // Everything before r90 is at most values[r90] after this call; the
    // median is then selected among those.
    let (below, p90, _) = values.select_nth_unstable(r90);
    let p90 = *p90;
    let p50 = if r50 == r90 {
        p90
    } else {
        *below.select_nth_unstable(r50).1
    };
    let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
    Summary {
        count: n,
        p50: Some(p50 as f64 / 1000.0),
        p90: Some(p90 as f64 / 1000.0),
        mean: Some((sum as f64 / n as f64).round() / 1000.0),
    }
}

/// Length of a rollup slot: 15 minutes divide every hour and day boundary
/// of the time zones in use.
pub const SLOT_SECONDS: i64 = 900;

/// How a report reads one bucket: whole rollup slots (UTC epoch seconds,
/// `[lo, hi)`, multiples of [`SLOT_SECONDS`]) and the rows of the bucket's
/// edges that fill no whole slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// `(bucket, lo, hi)`: rows in `[lo, hi)` read one by one.
    pub rows: Vec<(usize, DateTime<Utc>, DateTime<Utc>)>,
    /// `(bucket, lo, hi)`: slots starting in `[lo, hi)` read from rollups.
    pub slots: Vec<(usize, i64, i64)>,
}

/// Row ranges from dirty slots, at most: beyond this, each bucket with a
/// dirty slot is read whole from rows, so a report stays one bounded query
/// (well under the databases' bind-parameter limits) however far behind
/// the worker that recounts slots is.
pub const MAX_DIRTY_RANGES: usize = 1_000;

/// Slot ranges with the `dirty` slots (sorted) taken out, and those as
/// time ranges of rows, each with its bucket (adjacent dirty slots as one
/// range; see [`MAX_DIRTY_RANGES`]).
#[allow(clippy::type_complexity)]
pub fn without_slots(
    slots: &[(usize, i64, i64)],
    dirty: &[i64],
) -> (
    Vec<(usize, i64, i64)>,
    Vec<(usize, DateTime<Utc>, DateTime<Utc>)>,
) {
    let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
    let (mut clean, mut rows) = (Vec::new(), Vec::new());
    for &(i, lo, hi) in slots {
        let mut from = lo;
        let inside = dirty.partition_point(|d| *d < lo)..dirty.partition_point(|d| *d < hi);
        for &d in &dirty[inside] {
            if from < d {
                clean.push((i, from, d));
            }
            match rows.last_mut() {
                Some((b, _, end)) if *b == i && *end == at(d) => *end = at(d + SLOT_SECONDS),
                _ => rows.push((i, at(d), at(d + SLOT_SECONDS))),
            }
            from = d + SLOT_SECONDS;
        }
        if from < hi {
            clean.push((i, from, hi));
        }
    }
    if rows.len() > MAX_DIRTY_RANGES {
        let whole: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.0).collect();
        clean.retain(|(i, _, _)| !whole.contains(i));
        rows = slots
            .iter()
            .filter(|(i, _, _)| whole.contains(i))
            .map(|&(i, lo, hi)| (i, at(lo), at(hi)))
            .collect();
    }
    (clean, rows)
}

/// Cuts each bucket into its whole slots and the partial edges around them.
pub fn split(buckets: &[(DateTime<Utc>, DateTime<Utc>)]) -> Split {
    let mut out = Split::default();
    let at = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0);
    for (i, (lo, hi)) in buckets.iter().enumerate() {
        // The first slot starting at or after `lo`, the last boundary at or
        // before `hi`.
        let floor = |s: i64| s.div_euclid(SLOT_SECONDS) * SLOT_SECONDS;
        let aligned = lo.timestamp_subsec_nanos() == 0 && floor(lo.timestamp()) == lo.timestamp();
        let first = if aligned {
            lo.timestamp()
        } else {
            floor(lo.timestamp()) + SLOT_SECONDS
        };
        let last = floor(hi.timestamp());
        match (at(first), at(last)) {
            (Some(a), Some(b)) if first < last => {
                if *lo < a {
                    out.rows.push((i, *lo, a));
                }
                out.slots.push((i, first, last));
                if b < *hi {
                    out.rows.push((i, b, *hi));
                }
            }
            _ => out.rows.push((i, *lo, *hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn dates_outside_the_calendar_range_are_refused_not_a_panic() {
        let utc = TimeZone::parse("UTC").unwrap();
        let far = Utc.with_ymd_and_hms(262142, 12, 31, 0, 0, 0).unwrap();
        for g in [Granularity::Hour, Granularity::Day, Granularity::Week] {
            let e = Period::parse(far, far + Duration::hours(1), g, utc).unwrap_err();
            assert_eq!(e.field, "from");
        }
        let e = Period::parse(
            at("1969-12-31T00:00:00Z"),
            at("1970-01-02T00:00:00Z"),
            Granularity::Day,
            utc,
        )
        .unwrap_err();
        assert_eq!(e.field, "from");
        let e = Period::parse(
            at("9999-12-31T00:00:00Z"),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Granularity::Day,
            utc,
        )
        .unwrap_err();
        assert_eq!(e.field, "to");
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
    fn hours_are_real_hours_across_dst() {
        let ny = TimeZone::parse("America/New_York").unwrap();
        // Fall back on 2026-11-01: local 01:00 happens twice.
        let p = Period::parse(
            at("2026-11-01T04:00:00Z"),
            at("2026-11-01T08:00:00Z"),
            Granularity::Hour,
            ny,
        )
        .unwrap();
        let hours: Vec<i64> = p
            .buckets
            .iter()
            .map(|(a, b)| (*b - *a).num_hours())
            .collect();
        assert_eq!(hours, vec![1, 1, 1, 1]);
        // Spring forward on 2026-03-08: local 02:00 never happens.
        let p = Period::parse(
            at("2026-03-08T05:00:00Z"),
            at("2026-03-08T09:00:00Z"),
            Granularity::Hour,
            ny,
        )
        .unwrap();
        assert_eq!(p.buckets.len(), 4);
        assert!(p.buckets.iter().all(|(a, b)| *b - *a == Duration::hours(1)));
        // Starting inside the repeated hour (01:30 EST, the second 01:30):
        // buckets still end on the hour.
        let p = Period::parse(
            at("2026-11-01T06:30:00Z"),
            at("2026-11-01T09:00:00Z"),
            Granularity::Hour,
            ny,
        )
        .unwrap();
        assert_eq!(
            p.buckets,
            vec![
                (at("2026-11-01T06:30:00Z"), at("2026-11-01T07:00:00Z")),
                (at("2026-11-01T07:00:00Z"), at("2026-11-01T08:00:00Z")),
                (at("2026-11-01T08:00:00Z"), at("2026-11-01T09:00:00Z")),
            ]
        );
        // A half-hour zone: local hours fall on the half hour in UTC.
        let delhi = TimeZone::parse("Asia/Kolkata").unwrap();
        let p = Period::parse(
            at("2026-11-01T06:45:00Z"),
            at("2026-11-01T08:30:00Z"),
            Granularity::Hour,
            delhi,
        )
        .unwrap();
        assert_eq!(
            p.buckets[0],
            (at("2026-11-01T06:45:00Z"), at("2026-11-01T07:30:00Z"))
        );
        assert_eq!(p.buckets.len(), 2);
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
        let mut v = vec![30_000, 10_000, 20_000, 40_000, 100_000];
        let s = summarize_ms(&mut v);
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Some(30.0));
        assert_eq!(s.p90, Some(100.0));
        assert_eq!(s.mean, Some(40.0));
        assert_eq!(summarize_ms(&mut []), Summary::default());
        let s = summarize_ms(&mut [1_500]);
        assert_eq!((s.p50, s.p90, s.mean), (Some(1.5), Some(1.5), Some(1.5)));
    }

    proptest::proptest! {
        /// Selection finds what sorting finds.
        #[test]
        fn selection_agrees_with_sorting(mut v in proptest::collection::vec(-5_000i64..5_000_000, 1..300)) {
            let mut sorted = v.clone();
            sorted.sort();
            let n = sorted.len();
            let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
            let s = summarize_ms(&mut v);
            proptest::prop_assert_eq!(s.p50, Some(rank(0.5)));
            proptest::prop_assert_eq!(s.p90, Some(rank(0.9)));
        }

        /// The split covers each bucket exactly: rows and slots tile it.
        #[test]
        fn split_tiles_every_bucket(start in 1_700_000_000i64..1_800_000_000, frac in 0u32..1_000_000_000, lens in proptest::collection::vec(1i64..200_000, 1..20)) {
            let mut lo = DateTime::<Utc>::from_timestamp(start, frac).unwrap();
            let mut buckets = Vec::new();
            for l in lens {
                let hi = lo + Duration::seconds(l);
                buckets.push((lo, hi));
                lo = hi;
            }
            let s = split(&buckets);
            for (i, (lo, hi)) in buckets.iter().enumerate() {
                let mut parts: Vec<(DateTime<Utc>, DateTime<Utc>)> = s.rows.iter().filter(|r| r.0 == i).map(|r| (r.1, r.2)).collect();
                for (_, a, b) in s.slots.iter().filter(|r| r.0 == i) {
                    proptest::prop_assert_eq!(a % SLOT_SECONDS, 0);
                    proptest::prop_assert_eq!(b % SLOT_SECONDS, 0);
                    parts.push((DateTime::<Utc>::from_timestamp(*a, 0).unwrap(), DateTime::<Utc>::from_timestamp(*b, 0).unwrap()));
                }
                parts.sort();
                proptest::prop_assert_eq!(parts.first().unwrap().0, *lo);
                proptest::prop_assert_eq!(parts.last().unwrap().1, *hi);
                for w in parts.windows(2) {
                    proptest::prop_assert_eq!(w[0].1, w[1].0);
                }
            }
        }
    }

    #[test]
    fn dirty_slots_become_rows() {
        let day = 1_795_824_000; // a midnight, UTC
        let (clean, rows) = without_slots(
            &[(0, day, day + 86_400), (1, day + 86_400, day + 2 * 86_400)],
            &[day, day + 900 * 4, day + 86_400 + 900],
        );
        assert_eq!(
            clean,
            vec![
                (0, day + 900, day + 3_600),
                (0, day + 4_500, day + 86_400),
                (1, day + 86_400, day + 87_300),
                (1, day + 88_200, day + 2 * 86_400),
            ]
        );
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        assert_eq!(
            rows,
            vec![
                (0, t(day), t(day + 900)),
                (0, t(day + 3_600), t(day + 4_500)),
                (1, t(day + 87_300), t(day + 88_200)),
            ]
        );
    }

    #[test]
    fn adjacent_dirty_slots_are_one_range_and_many_read_their_bucket_whole() {
        let day = 1_795_824_000;
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let (clean, rows) = without_slots(
            &[(0, day, day + 86_400)],
            &[day + 900, day + 1_800, day + 2_700],
        );
        assert_eq!(rows, vec![(0, t(day + 900), t(day + 3_600))]);
        assert_eq!(
            clean,
            vec![(0, day, day + 900), (0, day + 3_600, day + 86_400)]
        );

        // 400 days with every other slot dirty (the worker far behind):
        // 19,200 ranges would be 76,800 bound values; the dirty buckets are
        // read whole instead.
        let days = 400;
        let slots: Vec<(usize, i64, i64)> = (0..days)
            .map(|i| (i as usize, day + i * 86_400, day + (i + 1) * 86_400))
            .collect();
        let dirty: Vec<i64> = (0..days * 96).step_by(2).map(|k| day + k * 900).collect();
        let (clean, rows) = without_slots(&slots, &dirty);
        assert!(clean.is_empty());
        assert_eq!(rows.len(), days as usize);
        assert_eq!(rows[7], (7, t(day + 7 * 86_400), t(day + 8 * 86_400)));
        // A bucket with no dirty slot keeps its rollups.
        let mut fewer = slots.clone();
        fewer.push((
            days as usize,
            day + days * 86_400,
            day + (days + 1) * 86_400,
        ));
        let (clean, rows) = without_slots(&fewer, &dirty);
        assert_eq!(
            clean,
            vec![(
                days as usize,
                day + days * 86_400,
                day + (days + 1) * 86_400
            )]
        );
        assert_eq!(rows.len(), days as usize);
    }

    #[test]
    fn aligned_days_read_only_slots() {
        let s = split(&[(at("2026-11-01T00:00:00Z"), at("2026-11-02T00:00:00Z"))]);
        assert!(s.rows.is_empty());
        assert_eq!(s.slots.len(), 1);
        let s = split(&[(at("2026-11-01T00:00:01Z"), at("2026-11-01T00:10:00Z"))]);
        assert_eq!(
            s.rows,
            vec![(0, at("2026-11-01T00:00:01Z"), at("2026-11-01T00:10:00Z"))]
        );
        assert!(s.slots.is_empty());
    }
}
