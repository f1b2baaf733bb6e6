use crate::ParseError;
use chrono_tz::Tz;

/// An IANA time zone name such as `Europe/Berlin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(Tz);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        raw.trim()
            .parse::<Tz>()
            .map(TimeZone)
            .map_err(|_| ParseError::new("timezone", format!("unknown IANA time zone {raw:?}")))
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    pub fn tz(&self) -> Tz {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iana_names_only() {
        assert_eq!(
            TimeZone::parse("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert!(TimeZone::parse("").is_err());
    }
}
