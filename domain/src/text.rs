//! Text newtypes: e-mail addresses, display names, passwords and phrase lists.

use crate::ParseError;

/// A lower-cased e-mail address with one `@`, a non-empty local part and a
/// dotted domain. Deliverability is not our concern; identity is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let e = raw.trim().to_lowercase();
        let bad = |why: &str| ParseError::new("email", why.to_string());
        if e.len() > 254 {
            return Err(bad("must be at most 254 characters"));
        }
        let (local, domain) = e.split_once('@').ok_or_else(|| bad("must contain @"))?;
        if local.is_empty() || domain.contains('@') {
            return Err(bad("is not an e-mail address"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(bad("needs a domain such as example.com"));
        }
        if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain spaces"));
        }
        Ok(Email(e))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A trimmed, non-empty name of bounded length (people, agencies, workspaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub const MAX: usize = 200;

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        let n = raw.trim();
        if n.is_empty() {
            return Err(ParseError::new(field, "must not be empty"));
        }
        if n.chars().count() > Self::MAX {
            return Err(ParseError::new(
                field,
                format!("must be at most {} characters", Self::MAX),
            ));
        }
        if n.chars().any(|c| c.is_control()) {
            return Err(ParseError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Name(n.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A password meeting the length policy. Never logged (Debug is redacted).
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub const MIN: usize = 10;
    pub const MAX: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let len = raw.chars().count();
        if len < Self::MIN {
            return Err(ParseError::new(
                "password",
                format!("must be at least {} characters", Self::MIN),
            ));
        }
        if len > Self::MAX {
            return Err(ParseError::new(
                "password",
                format!("must be at most {} characters", Self::MAX),
            ));
        }
        Ok(Password(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Brand keywords or banned phrases: trimmed, whitespace collapsed,
/// de-duplicated case-insensitively, order kept, bounded in count and length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhraseList(Vec<String>);

impl PhraseList {
    pub const MAX_ITEMS: usize = 200;
    pub const MAX_LEN: usize = 200;

    pub fn parse(field: &'static str, raw: &[String]) -> Result<Self, ParseError> {
        if raw.len() > Self::MAX_ITEMS {
            return Err(ParseError::new(
                field,
                format!("at most {} entries", Self::MAX_ITEMS),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for item in raw {
            let p = item.split_whitespace().collect::<Vec<_>>().join(" ");
            if p.is_empty() {
                return Err(ParseError::new(field, "entries must not be empty"));
            }
            if p.contains(char::is_control) {
                return Err(ParseError::new(
                    field,
                    "entries must not contain control characters",
                ));
            }
            if p.chars().count() > Self::MAX_LEN {
                return Err(ParseError::new(
                    field,
                    format!("entries must be at most {} characters", Self::MAX_LEN),
                ));
            }
            if !out.iter().any(|o| o.to_lowercase() == p.to_lowercase()) {
                out.push(p);
            }
        }
        Ok(PhraseList(out))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ana@Example.COM ").unwrap().as_str(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "@x.com",
            "ana@",
            "ana@x",
            "a b@x.com",
            "a@@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("name", "  Acme ").unwrap().as_str(), "Acme");
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", &"x".repeat(201)).is_err());
    }

    #[test]
    fn passwords_have_a_minimum_and_hide_in_debug() {
        assert!(Password::parse("short").is_err());
        let p = Password::parse("long enough pass").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn phrase_lists_dedupe_and_collapse() {
        let raw = vec![
            "  Acme  Coffee".into(),
            "acme coffee".into(),
            "Beans".into(),
        ];
        let l = PhraseList::parse("brandKeywords", &raw).unwrap();
        assert_eq!(l.as_slice(), ["Acme Coffee", "Beans"]);
        assert!(PhraseList::parse("brandKeywords", &[" ".into()]).is_err());
    }
}
