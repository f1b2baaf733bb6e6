//! Business time: opening hours per weekday (several periods a day,
//! overnight shifts allowed), dated holidays (one-off or yearly), in an IANA
//! time zone. `add_minutes` moves an instant forward by N open minutes,
//! across DST changes, weekends and holidays; it agrees with counting open
//! minutes one by one (property-tested below).

use crate::{ParseError, TimeZone};
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone as _,
    Utc, Weekday,
};
use chrono_tz::Tz;

const DAY_MIN: u32 = 24 * 60;

/// How far ahead a business-time deadline is looked for: a year's target
/// (525,600 minutes) on eight hours a week lies 21 years ahead.
pub const HORIZON_YEARS: i64 = 25;

/// One opening period: minutes from local midnight. `end > DAY_MIN` means
/// it runs past midnight into the next day (an overnight shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holiday {
    On(NaiveDate),
    /// Every year on this month and day (Feb 29 only in leap years).
    Yearly {
        month: u32,
        day: u32,
    },
}

impl Holiday {
    #[cfg(test)]
    fn matches(&self, d: NaiveDate) -> bool {
        match *self {
            Holiday::On(x) => x == d,
            Holiday::Yearly { month, day } => d.month() == month && d.day() == day,
        }
    }
}

/// Holidays as every day walked looks them up: dated ones sorted for a
/// binary search, yearly ones as a bit per day of each month. A calendar
/// may hold a thousand, and a deadline years ahead walks each day up to it.
/// (Boxed: a calendar is moved around inside every clock.)
#[derive(Debug, Clone, PartialEq, Default)]
struct Holidays {
    dates: Box<[NaiveDate]>,
    yearly: Box<[u32; 12]>,
}

impl Holidays {
    fn contains(&self, d: NaiveDate) -> bool {
        self.yearly[d.month0() as usize] & (1 << d.day0()) != 0
            || self.dates.binary_search(&d).is_ok()
    }
}

impl FromIterator<Holiday> for Holidays {
    fn from_iter<I: IntoIterator<Item = Holiday>>(iter: I) -> Self {
        let mut dates = Vec::new();
        let mut yearly = [0u32; 12];
        for h in iter {
            match h {
                Holiday::On(d) => dates.push(d),
                // A month or day no date has matches nothing.
                Holiday::Yearly { month, day } => {
                    if (1..=12).contains(&month) && (1..=31).contains(&day) {
                        yearly[month as usize - 1] |= 1 << (day - 1);
                    }
                }
            }
        }
        dates.sort_unstable();
        dates.dedup();
        Holidays {
            dates: dates.into_boxed_slice(),
            yearly: Box::new(yearly),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusinessCalendar {
    tz: Tz,
    /// Monday first.
    week: [Vec<Period>; 7],
    holidays: Holidays,
}

/// Parses "HH:MM" ("24:00" allowed as a closing time).
pub fn parse_time(field: &'static str, raw: &str) -> Result<u32, ParseError> {
    let bad = || ParseError::new(field, format!("{raw:?} is not a time like 09:30"));
    let (h, m) = raw.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

pub fn parse_weekday(raw: &str) -> Result<Weekday, ParseError> {
    raw.parse::<Weekday>()
        .map_err(|_| ParseError::new("weeklyHours", format!("unknown day {raw:?}")))
}

impl BusinessCalendar {
    /// `periods`: (weekday, opens, closes) with times in minutes; closing
    /// at or before opening means an overnight shift. `holidays` as given.
    pub fn new(
        tz: TimeZone,
        periods: &[(Weekday, u32, u32)],
        holidays: Vec<Holiday>,
    ) -> Result<Self, ParseError> {
        let mut week: [Vec<Period>; 7] = Default::default();
        if periods.len() > 70 {
            return Err(ParseError::new("weeklyHours", "at most 70 periods"));
        }
        for &(day, opens, closes) in periods {
            if opens >= DAY_MIN {
                return Err(ParseError::new(
                    "weeklyHours",
                    "a period cannot open at 24:00",
                ));
            }
            let end = if closes > opens {
                closes
            } else {
                closes + DAY_MIN
            };
            if end == opens {
                return Err(ParseError::new("weeklyHours", "a period must not be empty"));
            }
            week[day.num_days_from_monday() as usize].push(Period { start: opens, end });
        }
        if holidays.len() > 1000 {
            return Err(ParseError::new("holidays", "at most 1000 holidays"));
        }
        for w in &mut week {
            w.sort_by_key(|p| p.start);
        }
        Ok(Self {
            tz: tz.tz(),
            week,
            holidays: holidays.into_iter().collect(),
        })
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    fn is_holiday(&self, d: NaiveDate) -> bool {
        self.holidays.contains(d)
    }

    /// The first instant at or after a local time (skips DST gaps; takes
    /// the earlier of two instants in a repeated hour).
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut t = local;
        for _ in 0..=240 {
            match self.tz.from_local_datetime(&t) {
                LocalResult::Single(x) => return x.with_timezone(&Utc),
                LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
                LocalResult::None => t += Duration::minutes(1),
            }
        }
        Utc.from_utc_datetime(&local)
    }

    /// Open intervals (UTC) of periods starting on local dates
    /// `from ..from+days`, sorted by start. They may overlap.
    fn intervals(&self, from: NaiveDate, days: i64) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out = Vec::new();
        for i in 0..days {
            let d = from + Duration::days(i);
            if self.is_holiday(d) {
                continue;
            }
            let midnight = d.and_time(NaiveTime::MIN);
            for p in &self.week[d.weekday().num_days_from_monday() as usize] {
                let s = self.instant(midnight + Duration::minutes(p.start as i64));
                let e = self.instant(midnight + Duration::minutes(p.end as i64));
                if e > s {
                    out.push((s, e));
                }
            }
        }
        out.sort();
        out
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        let d = self.local_date(t) - Duration::days(2);
        self.intervals(d, 4).iter().any(|(s, e)| *s <= t && t < *e)
    }

    /// `start` plus `minutes` of open time; None when the calendar has no
    /// open time for two years on end, or the deadline is more than
    /// [`HORIZON_YEARS`] away.
    pub fn add_minutes(&self, start: DateTime<Utc>, minutes: u32) -> Option<DateTime<Utc>> {
        self.add(start, Duration::minutes(minutes as i64))
    }

    /// `start` plus `span` of open time (to the second).
    pub fn add(&self, start: DateTime<Utc>, span: Duration) -> Option<DateTime<Utc>> {
        let mut left = span.max(Duration::zero());
        let mut t = start;
        // Overnight periods of the previous day may still be running.
        let mut day = self.local_date(start) - Duration::days(1);
        const WINDOW: i64 = 28;
        // The longest target (a year of minutes) on a thin calendar (a few
        // hours a week) lies years ahead; a calendar closed for two years
        // running (every day a holiday) will never open.
        let mut closed_days = 0;
        for _ in 0..(HORIZON_YEARS * 366 / WINDOW + 2) {
            let open = self.intervals(day, WINDOW);
            closed_days = if open.is_empty() {
                closed_days + WINDOW
            } else {
                0
            };
            if closed_days > 2 * 366 {
                break;
            }
            for (s, e) in open {
                let s = s.max(t);
                if e <= s {
                    continue;
                }
                if left.is_zero() {
                    return Some(t.max(start));
                }
                if e - s >= left {
                    return Some(s + left);
                }
                left -= e - s;
                t = e;
            }
            day += Duration::days(WINDOW);
        }
        if left.is_zero() { Some(start) } else { None }
    }

    /// Open minutes in `[from, to)` (fractions of a minute count).
    pub fn open_minutes_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        if to <= from {
            return 0.0;
        }
        let mut t = from;
        let mut total = Duration::zero();
        let days = (to - from).num_days() + 3;
        for (s, e) in self.intervals(self.local_date(from) - Duration::days(1), days) {
            let (s, e) = (s.max(t), e.min(to));
            if e > s {
                total += e - s;
                t = e;
            }
        }
        total.num_seconds() as f64 / 60.0
    }
}

/// How a deadline counts: every minute, or open minutes of a calendar.
#[derive(Debug, Clone, PartialEq)]
pub enum Clock {
    Calendar24x7,
    Business(BusinessCalendar),
}

impl Clock {
    /// `start` plus `span` of counted time (to the second).
    pub fn add(&self, start: DateTime<Utc>, span: Duration) -> Option<DateTime<Utc>> {
        match self {
            Clock::Calendar24x7 => Some(start + span),
            Clock::Business(c) => c.add(start, span),
        }
    }

    pub fn add_minutes(&self, start: DateTime<Utc>, minutes: u32) -> Option<DateTime<Utc>> {
        match self {
            Clock::Calendar24x7 => Some(start + Duration::minutes(minutes as i64)),
            Clock::Business(c) => c.add_minutes(start, minutes),
        }
    }

    pub fn minutes_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        match self {
            Clock::Calendar24x7 => (to - from).num_seconds().max(0) as f64 / 60.0,
            Clock::Business(c) => c.open_minutes_between(from, to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn nine_to_five(tz: &str) -> BusinessCalendar {
        let days = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ];
        let periods: Vec<_> = days.iter().map(|d| (*d, 9 * 60, 17 * 60)).collect();
        BusinessCalendar::new(TimeZone::parse(tz).unwrap(), &periods, vec![]).unwrap()
    }

    #[test]
    fn the_longest_target_on_office_hours_lies_years_ahead_and_is_found() {
        let c = nine_to_five("Europe/Berlin");
        let start = utc("2026-12-07T08:00:00Z");
        // 525,600 minutes at 2,400 a week: 219 weeks, over four years.
        let due = c.add_minutes(start, 525_600).expect("a deadline");
        assert!(due > start + Duration::days(4 * 365), "{due}");
        assert!((c.open_minutes_between(start, due) - 525_600.0).abs() < 1e-6);
        // Eight hours a week: 21 years, still inside the horizon.
        let thin = BusinessCalendar::new(
            TimeZone::parse("UTC").unwrap(),
            &[(Weekday::Mon, 9 * 60, 17 * 60)],
            vec![],
        )
        .unwrap();
        let due = thin.add_minutes(start, 525_600).expect("a deadline");
        assert_eq!(due.with_timezone(&Utc).date_naive().weekday(), Weekday::Mon);
        // Every day of the year a holiday: it never opens, and the search
        // says so rather than walking the whole horizon.
        let mut never = thin.clone();
        never.holidays = (1..=12)
            .flat_map(|month| (1..=31).map(move |day| Holiday::Yearly { month, day }))
            .collect();
        assert_eq!(never.add_minutes(start, 60), None);
        // Beyond the horizon: no deadline.
        let mut rare = thin;
        rare.holidays = (1..=12)
            .filter(|m| *m != 6)
            .flat_map(|month| (1..=31).map(move |day| Holiday::Yearly { month, day }))
            .collect();
        assert_eq!(rare.add_minutes(start, 525_600), None);
    }

    #[test]
    fn friday_afternoon_rolls_over_the_weekend() {
        let c = nine_to_five("Europe/Berlin");
        // Fri 2026-11-27 16:00 Berlin = 15:00Z; 2 h of business time → Mon 10:00 Berlin.
        assert_eq!(
            c.add_minutes(utc("2026-11-27T15:00:00Z"), 120),
            Some(utc("2026-11-30T09:00:00Z"))
        );
        assert_eq!(
            c.add_minutes(utc("2026-11-28T12:00:00Z"), 0),
            Some(utc("2026-11-28T12:00:00Z"))
        );
    }

    #[test]
    fn dst_spring_forward_and_holidays() {
        let mut c = nine_to_five("America/New_York");
        // Fri 2026-03-06 16:30 EST (21:30Z) + 60 min → Mon 2026-03-09 09:30 EDT (13:30Z).
        assert_eq!(
            c.add_minutes(utc("2026-03-06T21:30:00Z"), 60),
            Some(utc("2026-03-09T13:30:00Z"))
        );
        c.holidays = [
            Holiday::On(NaiveDate::from_ymd_opt(2026, 3, 9).unwrap()),
            Holiday::Yearly { month: 3, day: 10 },
        ]
        .into_iter()
        .collect();
        assert_eq!(
            c.add_minutes(utc("2026-03-06T21:30:00Z"), 60),
            Some(utc("2026-03-11T13:30:00Z"))
        );
    }

    #[test]
    fn dst_fall_back_in_new_york_and_london_counts_the_repeated_hour_once() {
        // A 24/7 calendar in local time: open minutes equal elapsed minutes,
        // even across the repeated hour.
        let all_day: Vec<_> = (0..7)
            .map(|d| (Weekday::try_from(d as u8).unwrap(), 0, 0))
            .collect();
        for (tz, before) in [
            ("America/New_York", "2026-11-01T04:30:00Z"),
            ("Europe/London", "2026-10-25T00:30:00Z"),
        ] {
            let c = BusinessCalendar::new(TimeZone::parse(tz).unwrap(), &all_day, vec![]).unwrap();
            let start = utc(before);
            assert_eq!(
                c.add_minutes(start, 120),
                Some(start + Duration::minutes(120)),
                "{tz}"
            );
            assert!(
                (c.open_minutes_between(start, start + Duration::minutes(120)) - 120.0).abs()
                    < 1e-9
            );
        }
        // Office hours on the fall-back Sunday's Monday in London: 9:00 GMT.
        let c = nine_to_five("Europe/London");
        assert_eq!(
            c.add_minutes(utc("2026-10-23T15:30:00Z"), 60),
            Some(utc("2026-10-26T09:30:00Z"))
        );
    }

    #[test]
    fn spring_forward_in_london_and_a_friday_holiday_before_a_weekend() {
        let mut c = nine_to_five("Europe/London");
        // Fri 2026-03-27 16:30 GMT + 60 → Mon 2026-03-30 09:30 BST = 08:30Z.
        assert_eq!(
            c.add_minutes(utc("2026-03-27T16:30:00Z"), 60),
            Some(utc("2026-03-30T08:30:00Z"))
        );
        // Good Friday 2026-04-03 is a holiday: Thursday 16:30 + 60 → Monday 09:30.
        c.holidays = [Holiday::On(NaiveDate::from_ymd_opt(2026, 4, 3).unwrap())]
            .into_iter()
            .collect();
        assert_eq!(
            c.add_minutes(utc("2026-04-02T15:30:00Z"), 60),
            Some(utc("2026-04-06T08:30:00Z"))
        );
    }

    #[test]
    fn overnight_shifts_cross_midnight() {
        let tz = TimeZone::parse("UTC").unwrap();
        let c = BusinessCalendar::new(tz, &[(Weekday::Mon, 22 * 60, 6 * 60)], vec![]).unwrap();
        assert!(c.is_open(utc("2026-11-30T23:00:00Z")));
        assert!(c.is_open(utc("2026-12-01T05:59:00Z")));
        assert!(!c.is_open(utc("2026-12-01T06:00:00Z")));
        assert_eq!(
            c.add_minutes(utc("2026-12-01T05:00:00Z"), 90),
            Some(utc("2026-12-07T22:30:00Z"))
        );
    }

    #[test]
    fn a_calendar_without_hours_never_reaches_a_deadline() {
        let c = BusinessCalendar::new(TimeZone::parse("UTC").unwrap(), &[], vec![]).unwrap();
        assert_eq!(c.add_minutes(utc("2026-11-30T23:00:00Z"), 1), None);
        assert!(parse_time("t", "25:00").is_err() && parse_time("t", "24:00").is_ok());
    }

    /// Counting open minutes one at a time: the reference.
    fn by_minutes(c: &BusinessCalendar, start: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let mut t = start;
        let mut left = n;
        while left > 0 {
            if c.is_open(t) {
                left -= 1;
            }
            t += Duration::minutes(1);
        }
        // The answer is the end of the last counted minute.
        t
    }

    fn calendar() -> impl Strategy<Value = BusinessCalendar> {
        let tz = prop::sample::select(vec![
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
            "Asia/Kolkata",
            "UTC",
        ]);
        let period = (0u32..7, 0u32..96, 4u32..64).prop_map(|(d, s, len)| {
            let start = s * 15;
            (
                Weekday::try_from(d as u8).unwrap(),
                start,
                (start + len * 15) % DAY_MIN,
            )
        });
        let holidays = prop::collection::vec((1u32..13, 1u32..29), 0..4);
        (tz, prop::collection::vec(period, 3..8), holidays).prop_map(|(tz, periods, hol)| {
            let holidays = hol
                .into_iter()
                .map(|(month, day)| Holiday::Yearly { month, day })
                .collect();
            BusinessCalendar::new(TimeZone::parse(tz).unwrap(), &periods, holidays).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn adding_minutes_equals_counting_them(
            c in calendar(),
            offset_min in 0i64..(2 * 366 * 24 * 60),
            n in 1u32..400,
        ) {
            // Whole-minute starts across two years, DST changes included.
            let start = utc("2026-01-01T00:00:00Z") + Duration::minutes(offset_min);
            let fast = c.add_minutes(start, n).unwrap();
            let slow = by_minutes(&c, start, n);
            // `fast` is the instant the n-th open minute ends; the minute
            // walk lands on the same instant.
            prop_assert_eq!(fast, slow, "start {} n {}", start, n);
            prop_assert!((c.open_minutes_between(start, fast) - n as f64).abs() < 1e-9);
        }

        #[test]
        fn the_holiday_table_agrees_with_reading_each_holiday(
            yearly in prop::collection::vec((0u32..14, 0u32..33), 0..40),
            dated in prop::collection::vec(0i64..3000, 0..40),
            days in prop::collection::vec(0i64..3000, 1..60),
        ) {
            let base = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
            let list: Vec<Holiday> = yearly
                .into_iter()
                .map(|(month, day)| Holiday::Yearly { month, day })
                .chain(dated.into_iter().map(|d| Holiday::On(base + Duration::days(d))))
                .collect();
            let table: Holidays = list.iter().copied().collect();
            for d in days {
                let d = base + Duration::days(d);
                prop_assert_eq!(table.contains(d), list.iter().any(|h| h.matches(d)), "{}", d);
            }
        }
    }
}
