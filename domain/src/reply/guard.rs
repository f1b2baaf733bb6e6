//! The canned-reply guard. A reply is refused when a required slot is empty,
//! too short or merely repeats the template; when it is a near-duplicate of
//! a reply the workspace sent recently (MinHash signatures of word
//! shingles, indexed with banded LSH, context values masked so two replies
//! differing only in the customer's name count as the same); or when it
//! contains a banned phrase. Not addressing the customer's message at all
//! is a warning.

use super::template::Template;
use std::collections::HashMap;

pub const SHINGLE: usize = 3;
const HASHES: usize = 64;
const BANDS: usize = 16;
const ROWS: usize = HASHES / BANDS;

pub type Signature = [u64; HASHES];

#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    EmptySlot {
        slot: String,
    },
    ShortSlot {
        slot: String,
        min_length: u32,
        length: usize,
    },
    SlotRepeatsTemplate {
        slot: String,
    },
    /// The template does not show the slot (it sits in a branch never
    /// taken, or is only measured): the customer reads template text only.
    SlotNotInReply {
        slot: String,
    },
    NearDuplicate {
        reply: String,
        similarity: f64,
    },
    BannedPhrase {
        phrase: String,
    },
    /// A warning: the reply shares no word with the customer's message.
    NoOverlap,
}

impl Finding {
    pub fn code(&self) -> &'static str {
        match self {
            Finding::EmptySlot { .. } => "EMPTY_SLOT",
            Finding::ShortSlot { .. } => "SHORT_SLOT",
            Finding::SlotRepeatsTemplate { .. } => "SLOT_REPEATS_TEMPLATE",
            Finding::SlotNotInReply { .. } => "SLOT_NOT_IN_REPLY",
            Finding::NearDuplicate { .. } => "NEAR_DUPLICATE",
            Finding::BannedPhrase { .. } => "BANNED_PHRASE",
            Finding::NoOverlap => "NO_OVERLAP",
        }
    }

    /// Whether it refuses the reply (everything but NoOverlap).
    pub fn blocking(&self) -> bool {
        !matches!(self, Finding::NoOverlap)
    }

    pub fn message(&self) -> String {
        match self {
            Finding::EmptySlot { slot } => {
                format!("slot {slot:?} is empty: write it for this customer")
            }
            Finding::ShortSlot {
                slot,
                min_length,
                length,
            } => {
                format!("slot {slot:?} has {length} characters; write at least {min_length}")
            }
            Finding::SlotRepeatsTemplate { slot } => {
                format!("slot {slot:?} only repeats the template's own words")
            }
            Finding::SlotNotInReply { slot } => format!(
                "the template does not show slot {slot:?}: the reply would be template text only"
            ),
            Finding::NearDuplicate { similarity, .. } => format!(
                "this reply is {:.0}% the same as one this brand already sent: write it for this customer",
                similarity * 100.0
            ),
            Finding::BannedPhrase { phrase } => format!("the brand never says {phrase:?}"),
            Finding::NoOverlap => "the reply does not address anything the customer wrote".into(),
        }
    }
}

/// Characters that display as nothing (Unicode's Default_Ignorable_Code_Point:
/// zero-width space and joiners, soft hyphen, word joiner, byte-order mark,
/// direction marks and embeddings, variation selectors, tags, musical
/// formatting, the reserved ignorable planes). Inside a word they would
/// hide it from every check while the reader sees the word whole.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// The Latin letter (or ASCII apostrophe) a lower-case character is drawn
/// like: the Cyrillic, Greek and Armenian letters that look Latin in either
/// case, and the apostrophes phones type. Applied after lower-casing, so
/// both cases of a letter read the same (`К` and `к` are both `k`); where
/// the cases look like different Latin letters (Greek Ν/ν, Υ/υ) the small
/// one's look is taken. Only for comparing: a Russian reply folds the same
/// way each time it is read, so it still matches itself and nothing else.
#[rustfmt::skip]
fn latin_lookalike(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{02BC}' | '\u{02B9}' | '\u{2032}' | '`' => '\'',
        // Cyrillic.
        'а' => 'a', 'в' => 'b', 'е' => 'e', 'к' => 'k', 'м' => 'm', 'н' => 'h',
        'о' => 'o', 'р' => 'p', 'с' => 'c', 'т' => 't', 'у' => 'y', 'х' => 'x',
        'і' => 'i', 'ј' => 'j', 'ѕ' => 's', 'ԁ' => 'd', 'ԛ' => 'q', 'ԝ' => 'w',
        'һ' => 'h', 'ӏ' => 'l',
        // Greek.
        'α' => 'a', 'β' => 'b', 'ε' => 'e', 'ζ' => 'z', 'η' => 'h', 'ι' => 'i',
        'κ' => 'k', 'μ' => 'm', 'ν' => 'v', 'ο' => 'o', 'ρ' => 'p', 'τ' => 't',
        'υ' => 'u', 'χ' => 'x',
        // Armenian and Latin variants.
        'օ' => 'o', 'ս' => 'u', 'ɑ' => 'a', 'ı' => 'i', 'ɡ' => 'g',
        _ => c,
    }
}

/// Text as a reader sees it, for comparing: compatibility forms folded
/// (NFKC: full-width letters, ligatures, superscripts), invisible
/// characters dropped, lower case, look-alike letters read as the Latin
/// ones they imitate.
pub fn normalize(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfkc()
        .filter(|c| !invisible(*c))
        .collect::<String>()
        .to_lowercase()
        .chars()
        .map(latin_lookalike)
        .collect()
}

/// Lower-case words of the normalized text, punctuation dropped.
pub fn words(text: &str) -> Vec<String> {
    normalize(text)
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '{' && c != '}')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The words that hold a letter or digit, without quotes or braces around
/// them: `'per` is `per`, and apostrophes or braces alone are no word.
fn content_words(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .map(|w| w.trim_matches(['\'', '{', '}']).to_string())
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect()
}

/// The context values a reply's words are masked with: the customer's
/// name, and its first word too (agents greet customers by first name: "Hi
/// Ana" and "Hi Bob" must not make two replies look different; not every
/// word, as display names are often common words, "Coffee Lover"), their
/// handle, the brand and the agent's first name.
pub fn context_values(customer_name: &str, handle: &str, brand: &str, agent: &str) -> Vec<String> {
    let mut values = vec![
        customer_name.to_string(),
        handle.to_string(),
        brand.to_string(),
        agent.to_string(),
    ];
    values.extend(customer_name.split_whitespace().next().map(str::to_string));
    values
}

/// Replaces context values (the customer's name and handle, the brand, the
/// agent) with placeholders, so they do not make two replies look different.
pub fn mask(text: &str, values: &[&str]) -> String {
    let mut out = normalize(text);
    let mut vals: Vec<String> = values
        .iter()
        .map(|v| normalize(v.trim().trim_start_matches('@')))
        .filter(|v| v.chars().count() >= 2)
        .collect();
    vals.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in vals {
        out = replace_words(&out, &v, "{var}");
    }
    out
}

/// `text` with each occurrence of `what` that stands as whole words
/// replaced: a customer called "Al" must not turn "call" into "c{var}l".
fn replace_words(text: &str, what: &str, with: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(what) {
        let before = rest[..i].chars().next_back().or(out.chars().next_back());
        let after = rest[i + what.len()..].chars().next();
        out.push_str(&rest[..i]);
        let inside_a_word = (word(before) && what.starts_with(char::is_alphanumeric))
            || (word(after) && what.ends_with(char::is_alphanumeric));
        out.push_str(if inside_a_word { what } else { with });
        rest = &rest[i + what.len()..];
    }
    out.push_str(rest);
    out
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// Hashes of `SHINGLE`-word windows (a short text is one shingle).
pub fn shingles(masked: &str) -> Vec<u64> {
    let w = words(masked);
    if w.is_empty() {
        return Vec::new();
    }
    if w.len() < SHINGLE {
        return vec![fnv(&w.join(" "))];
    }
    let mut out: Vec<u64> = w.windows(SHINGLE).map(|s| fnv(&s.join(" "))).collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub fn signature(shingles: &[u64]) -> Signature {
    let mut sig = [u64::MAX; HASHES];
    for &s in shingles {
        for (i, slot) in sig.iter_mut().enumerate() {
            let h = mix(s ^ mix(i as u64 + 1));
            if h < *slot {
                *slot = h;
            }
        }
    }
    sig
}

/// Estimated Jaccard similarity of the shingle sets behind two signatures.
pub fn similarity(a: &Signature, b: &Signature) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / HASHES as f64
}

/// The workspace's recent replies, searchable for near-duplicates in time
/// that depends on the matches, not on how many replies there are.
#[derive(Default)]
pub struct ReplyIndex {
    entries: Vec<(String, Signature)>,
    bands: Vec<HashMap<u64, Vec<usize>>>,
}

fn band_key(sig: &Signature, band: usize) -> u64 {
    sig[band * ROWS..(band + 1) * ROWS]
        .iter()
        .fold(band as u64, |h, x| mix(h ^ x))
}

impl ReplyIndex {
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            bands: (0..BANDS).map(|_| HashMap::new()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a sent reply (already masked).
    pub fn insert(&mut self, id: String, masked: &str) {
        let sh = shingles(masked);
        // No word at all (emoji only): nothing to be the same as.
        if sh.is_empty() {
            return;
        }
        let sig = signature(&sh);
        let at = self.entries.len();
        for (b, band) in self.bands.iter_mut().enumerate() {
            band.entry(band_key(&sig, b)).or_default().push(at);
        }
        self.entries.push((id, sig));
    }

    /// The most similar earlier reply at or above `threshold`.
    pub fn nearest(&self, masked: &str, threshold: f64) -> Option<(&str, f64)> {
        self.nearest_except(masked, threshold, |_| false)
    }

    /// [`Self::nearest`] among the replies `skip` does not rule out.
    pub fn nearest_except(
        &self,
        masked: &str,
        threshold: f64,
        skip: impl Fn(&str) -> bool,
    ) -> Option<(&str, f64)> {
        let sh = shingles(masked);
        if sh.is_empty() {
            return None;
        }
        let sig = signature(&sh);
        let mut best: Option<(usize, f64)> = None;
        let mut seen = std::collections::HashSet::new();
        for (b, band) in self.bands.iter().enumerate() {
            for &i in band.get(&band_key(&sig, b)).into_iter().flatten() {
                if !seen.insert(i) {
                    continue;
                }
                if skip(&self.entries[i].0) {
                    continue;
                }
                let s = similarity(&sig, &self.entries[i].1);
                if s >= threshold && best.is_none_or(|(_, bs)| s > bs) {
                    best = Some((i, s));
                }
            }
        }
        best.map(|(i, s)| (self.entries[i].0.as_str(), s))
    }
}

/// Phrases found in `text` as whole words in a row, whatever the case,
/// spacing or punctuation between them ("hell" is not in "hello"). A phrase
/// with no word in it (emoji) is looked for as written, spacing aside.
pub fn banned_in(text: &str, phrases: &[String]) -> Vec<String> {
    let spaced = |s: &str| {
        normalize(s)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text_words = content_words(text);
    let found = |p: &str| {
        let phrase = content_words(p);
        if phrase.is_empty() {
            let p = spaced(p);
            return !p.is_empty() && spaced(text).contains(&p);
        }
        text_words.windows(phrase.len()).any(|w| w == phrase)
    };
    phrases.iter().filter(|p| found(p)).cloned().collect()
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "you", "your", "are", "was", "with", "this", "that", "have", "has", "not",
    "but", "our", "can", "all", "any", "from", "they", "them", "what", "when", "will", "just",
    "get", "got", "about", "there", "their", "would", "could", "please", "thanks", "thank", "hi",
    "hello", "sorry",
];

/// Whether the reply shares a content word (4+ letters, not a stop word)
/// with the customer's message.
pub fn addresses(reply: &str, message: &str) -> bool {
    let content = |t: &str| -> Vec<String> {
        words(t)
            .into_iter()
            .filter(|w| w.chars().count() >= 4 && !STOPWORDS.contains(&w.as_str()))
            .collect()
    };
    let m = content(message);
    m.is_empty() || content(reply).iter().any(|w| m.contains(w))
}

/// What the guard looks at for one reply.
pub struct Check<'a> {
    pub text: &'a str,
    pub template: Option<&'a Template>,
    pub slots: &'a HashMap<String, String>,
    /// Context values to mask (customer name and handle, brand, agent).
    pub context_values: &'a [&'a str],
    pub banned_phrases: &'a [String],
    pub customer_message: &'a str,
    pub threshold: f64,
    /// Earlier replies that never reached the public (delivery FAILED):
    /// nobody saw them, so saying it again is not a repeat.
    pub unpublished: &'a std::collections::HashSet<String>,
}

pub fn check(c: &Check<'_>, index: &ReplyIndex) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(t) = c.template {
        let fixed = words(&t.fixed_text());
        let shown: std::collections::HashSet<String> = words(c.text).into_iter().collect();
        for s in t.slots() {
            let v = c
                .slots
                .get(&s.name)
                .map(|v| normalize(v))
                .unwrap_or_default();
            let v = v.trim();
            // A slot with no word in it (dots, emoji, invisible characters)
            // is as empty as a blank one: the reply would be all template.
            let w = content_words(v);
            if w.is_empty() {
                out.push(Finding::EmptySlot {
                    slot: s.name.clone(),
                });
                continue;
            }
            let len = v.chars().count();
            if len < s.min_length as usize {
                out.push(Finding::ShortSlot {
                    slot: s.name.clone(),
                    min_length: s.min_length,
                    length: len,
                });
            }
            if w.iter().all(|x| fixed.contains(x)) {
                out.push(Finding::SlotRepeatsTemplate {
                    slot: s.name.clone(),
                });
            }
            if !w.iter().all(|x| shown.contains(x)) {
                out.push(Finding::SlotNotInReply {
                    slot: s.name.clone(),
                });
            }
        }
    }
    let masked = mask(c.text, c.context_values);
    out.extend(recheck(
        c.text,
        &masked,
        c.banned_phrases,
        c.threshold,
        c.unpublished,
        index,
    ));
    if !addresses(c.text, c.customer_message) {
        out.push(Finding::NoOverlap);
    }
    out
}

/// A reply written earlier, checked again before it is sent again (its
/// delivery failed): its words (`masked`, as stored when it was written)
/// against what the brand has sent since, and its `body` against the
/// phrases banned now. Template and slots were checked when it was written.
pub fn recheck(
    body: &str,
    masked: &str,
    banned_phrases: &[String],
    threshold: f64,
    unpublished: &std::collections::HashSet<String>,
    index: &ReplyIndex,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some((id, sim)) = index.nearest_except(masked, threshold, |id| unpublished.contains(id))
    {
        out.push(Finding::NearDuplicate {
            reply: id.to_string(),
            similarity: sim,
        });
    }
    for p in banned_in(body, banned_phrases) {
        out.push(Finding::BannedPhrase { phrase: p });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::template::SlotSpec;

    #[test]
    fn a_reply_sent_again_is_checked_against_what_was_sent_since_and_banned_now() {
        let body = "Hi Ana, the refund from Brew Co reaches your card within two working days";
        let masked = mask(body, &["Ana", "Brew Co"]);
        let mut idx = ReplyIndex::new();
        // Itself, FAILED: nobody saw it.
        idx.insert("self".into(), &masked);
        let mut unpublished = std::collections::HashSet::new();
        unpublished.insert("self".to_string());
        assert!(recheck(body, &masked, &[], 0.8, &unpublished, &idx).is_empty());
        // The same words sent since to someone else.
        idx.insert(
            "since".into(),
            &mask(
                "Hi Bo, the refund from Brew Co reaches your card within two working days",
                &["Bo", "Brew Co"],
            ),
        );
        let found = recheck(body, &masked, &[], 0.8, &unpublished, &idx);
        assert!(matches!(&found[..], [Finding::NearDuplicate { reply, .. }] if reply == "since"));
        // A phrase banned now, naming the brand: read in the words sent.
        let empty = ReplyIndex::new();
        let found = recheck(
            body,
            &masked,
            &["from brew co".to_string()],
            0.8,
            &unpublished,
            &empty,
        );
        assert!(
            matches!(&found[..], [Finding::BannedPhrase { .. }]),
            "{found:?}"
        );
    }

    #[test]
    fn replies_differing_only_in_the_customers_name_are_the_same() {
        let mut idx = ReplyIndex::new();
        idx.insert(
            "r1".into(),
            &mask(
                "Hi Ana, we are so sorry about your cold latte, a fresh one is on us at Brew Co",
                &["Ana", "Brew Co"],
            ),
        );
        let same = mask(
            "Hi Bob, we are so sorry about your cold latte, a fresh one is on us at Brew Co",
            &["Bob", "Brew Co"],
        );
        let (id, sim) = idx.nearest(&same, 0.8).unwrap();
        assert_eq!(id, "r1");
        assert!(sim > 0.95, "{sim}");
        let different = mask(
            "Bob, the refund for the double charge went out today; you will see it by Friday",
            &["Bob"],
        );
        assert!(idx.nearest(&different, 0.8).is_none());
    }

    #[test]
    fn replies_greeting_customers_by_first_name_are_the_same() {
        let ana = context_values("Ana Lopez", "ana_l", "Brew Co", "Sam");
        let bob = context_values("Bob Smith", "bsmith", "Brew Co", "Sam");
        let ana: Vec<&str> = ana.iter().map(String::as_str).collect();
        let bob: Vec<&str> = bob.iter().map(String::as_str).collect();
        let mut idx = ReplyIndex::new();
        idx.insert(
            "r1".into(),
            &mask(
                "Hi Ana, so sorry your latte was cold, a fresh one is on us",
                &ana,
            ),
        );
        let same = mask(
            "Hi Bob, so sorry your latte was cold, a fresh one is on us",
            &bob,
        );
        let (id, sim) = idx.nearest(&same, 0.8).expect("the same reply");
        assert_eq!(id, "r1");
        assert!(sim > 0.95, "{sim}");
    }

    #[test]
    fn banned_phrases_ignore_case_and_spacing() {
        let phrases = vec!["per our   policy".to_string()];
        assert_eq!(
            banned_in("As PER our\\npolicy we cannot", &phrases).len(),
            0,
            "escaped newline is not whitespace"
        );
        assert_eq!(
            banned_in("As PER  our\npolicy we cannot", &phrases),
            phrases
        );
    }

    #[test]
    fn slots_must_be_written_for_this_customer() {
        let t = Template::parse(
            "Hi {{ author.name }}, thanks for reaching out. {{ slot.empathy }}",
            vec![SlotSpec {
                name: "empathy".into(),
                guidance: "".into(),
                min_length: 15,
            }],
        )
        .unwrap();
        let run = |slot: &str| {
            let slots = HashMap::from([("empathy".to_string(), slot.to_string())]);
            let text = format!("Hi Ana, thanks for reaching out. {slot}");
            check(
                &Check {
                    text: &text,
                    template: Some(&t),
                    slots: &slots,
                    context_values: &["Ana"],
                    banned_phrases: &[],
                    customer_message: "my latte was cold",
                    threshold: 0.8,
                    unpublished: &Default::default(),
                },
                &ReplyIndex::new(),
            )
            .into_iter()
            .map(|f| f.code())
            .collect::<Vec<_>>()
        };
        assert_eq!(run(""), ["EMPTY_SLOT", "NO_OVERLAP"]);
        assert_eq!(run("so sorry"), ["SHORT_SLOT", "NO_OVERLAP"]);
        assert_eq!(
            run("Thanks for reaching out, thanks!"),
            ["SLOT_REPEATS_TEMPLATE", "NO_OVERLAP"]
        );
        assert!(run("So sorry your latte arrived cold, a fresh one is on us").is_empty());
        // Long enough, but no word in it: as empty as a blank slot.
        for filler in [
            "...............",
            "\u{200B}".repeat(20).as_str(),
            "🙏🙏🙏🙏🙏🙏🙏🙏🙏🙏🙏🙏🙏🙏🙏",
        ] {
            assert_eq!(run(filler)[0], "EMPTY_SLOT", "{filler:?}");
        }
    }

    /// The findings on `t` rendered with `slots` (no context, no history).
    fn rendered_and_checked(t: &Template, slots: &HashMap<String, String>) -> Vec<Finding> {
        let text = t.render(&HashMap::new(), slots).unwrap();
        check(
            &Check {
                text: &text,
                template: Some(t),
                slots,
                context_values: &[],
                banned_phrases: &[],
                customer_message: "my latte was cold",
                threshold: 0.8,
                unpublished: &Default::default(),
            },
            &ReplyIndex::new(),
        )
    }

    #[test]
    fn a_slot_repeating_words_the_template_writes_as_a_literal_is_flagged() {
        let t = Template::parse(
            "{{ \"Sorry for the trouble with your latte\" }} {{ slot.note }}",
            vec![SlotSpec {
                name: "note".into(),
                guidance: "g".into(),
                min_length: 0,
            }],
        )
        .unwrap();
        let slots = HashMap::from([("note".to_string(), "trouble with latte".to_string())]);
        let found = rendered_and_checked(&t, &slots);
        assert!(
            found
                .iter()
                .any(|f| matches!(f, Finding::SlotRepeatsTemplate { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn a_template_that_hides_its_slot_sends_template_text_only() {
        let slots = HashMap::from([(
            "x".to_string(),
            "So sorry your latte arrived cold, a fresh one is on us".to_string(),
        )]);
        for body in [
            "{% if false %}{{ slot.x }}{% endif %}Sorry for the trouble, please DM us.",
            "Sorry for the trouble ({{ slot.x | length }}), please DM us.",
            "{% set y = slot.x %}Sorry for the trouble, please DM us.",
            "Sorry for the trouble: {{ slot.x[:4] }}, please DM us.",
        ] {
            let spec = vec![SlotSpec {
                name: "x".into(),
                guidance: "".into(),
                min_length: 10,
            }];
            // Refused when saved already is as good.
            let Ok(t) = Template::parse(body, spec) else {
                continue;
            };
            let found = rendered_and_checked(&t, &slots);
            assert!(
                found.iter().any(|f| f.code() == "SLOT_NOT_IN_REPLY"),
                "{body}: {found:?}"
            );
        }
    }

    #[test]
    fn invisible_characters_and_compatibility_forms_hide_nothing() {
        let phrases = vec!["per our policy".to_string()];
        for disguised in [
            "As per \u{200B}our policy we cannot",
            "As per our pol\u{00AD}icy we cannot",
            "As per our po\u{200D}licy we cannot",
            "As ｐｅｒ ｏｕｒ ｐｏｌｉｃｙ we cannot",
            "As per our\u{FEFF} policy we cannot",
            "As per our pol\u{E0100}icy we cannot",
            "As per our po\u{1D173}licy we cannot",
            "As per our polic\u{E0FFF}y we cannot",
        ] {
            assert_eq!(banned_in(disguised, &phrases), phrases, "{disguised:?}");
        }

        let mut idx = ReplyIndex::new();
        let sent =
            "We are so sorry about your cold latte, a fresh one is on us next time you visit";
        idx.insert("r1".into(), &mask(sent, &[]));
        let copy = sent
            .replace("sorry", "so\u{200B}rry")
            .replace("latte", "lat\u{00AD}te")
            .replace("fresh", "ｆｒｅｓｈ");
        let (id, sim) = idx
            .nearest(&mask(&copy, &[]), 0.8)
            .expect("the copy is found");
        assert_eq!((id, sim), ("r1", 1.0));
        assert_eq!(normalize("Ｃａｆé\u{200B}"), "café");
    }

    #[test]
    fn look_alike_letters_and_phone_apostrophes_hide_nothing() {
        let phrases = vec![
            "per our policy".to_string(),
            "we're sorry for the inconvenience".to_string(),
        ];
        for disguised in [
            "As per \u{043E}ur policy we cannot",     // Cyrillic о
            "As \u{0440}er our p\u{043E}li\u{0441}y", // Cyrillic р, о, с
            "As PER OUR P\u{039F}LICY",               // Greek capital Ο
            "As 'per our policy' we cannot",
            "As \u{2018}per our policy\u{2019} we cannot",
            "As per\u{2800}our policy", // Braille blank
            "As per-our-policy",
        ] {
            assert_eq!(
                banned_in(disguised, &phrases),
                &phrases[..1],
                "{disguised:?}"
            );
        }
        for typed in [
            "We\u{2019}re sorry for the inconvenience",
            "We\u{02BC}re sorry for the inconvenience!",
        ] {
            assert_eq!(banned_in(typed, &phrases), &phrases[1..], "{typed:?}");
        }
        // Case still does not matter in scripts whose letters fold.
        let russian = vec!["к сожалению".to_string()];
        assert_eq!(banned_in("К СОЖАЛЕНИЮ, мы не можем", &russian), russian);
        assert_eq!(banned_in("К сожалению, мы не можем", &russian), russian);
        assert_eq!(normalize("ΝΥ"), normalize("νυ"));
        // Whole words only; a phrase of emoji is looked for as written.
        assert!(banned_in("hello there", &["hell".to_string()]).is_empty());
        assert_eq!(banned_in("ok 🙏 🙏", &["🙏  🙏".to_string()]).len(), 1);

        let mut idx = ReplyIndex::new();
        let sent =
            "We are so sorry about your cold latte, a fresh one is on us next time you visit";
        idx.insert("r1".into(), &mask(sent, &[]));
        let copy = sent.replace('o', "\u{043E}").replace('a', "\u{0430}");
        let (id, sim) = idx
            .nearest(&mask(&copy, &[]), 0.8)
            .expect("the copy is found");
        assert_eq!((id, sim), ("r1", 1.0));
    }

    #[test]
    fn a_slot_of_apostrophes_or_braces_is_empty() {
        let t = Template::parse(
            "Thanks for reaching out. {{ slot.empathy }}",
            vec![SlotSpec {
                name: "empathy".into(),
                guidance: "".into(),
                min_length: 15,
            }],
        )
        .unwrap();
        for filler in [
            "''''''''''''''''",
            "{}{}{}{}{}{}{}{}",
            "\u{2019}".repeat(16).as_str(),
        ] {
            let slots = HashMap::from([("empathy".to_string(), filler.to_string())]);
            let found = rendered_and_checked(&t, &slots);
            assert_eq!(found[0].code(), "EMPTY_SLOT", "{filler:?}");
        }
    }

    #[test]
    fn names_are_masked_as_whole_words_and_wordless_replies_match_nothing() {
        assert_eq!(
            mask("Al, please call us, Al!", &["Al"]),
            "{var}, please call us, {var}!"
        );
        assert_eq!(
            mask("@ana_b thanks ana_b", &["@ana_b"]),
            "@{var} thanks {var}"
        );
        let mut idx = ReplyIndex::new();
        idx.insert("r1".into(), &mask("🙏", &[]));
        idx.insert(
            "r2".into(),
            &mask("we will call you today about the refund", &[]),
        );
        assert!(idx.nearest(&mask("👍", &[]), 0.6).is_none());
        assert!(
            idx.nearest("we will call you today about the refund", 0.8)
                .is_some()
        );
    }
}
