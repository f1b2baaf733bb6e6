//! How long a reply is as each platform counts it. X counts a weighted
//! length (twitter-text's v3 rules, from its public configuration): most
//! Latin, Greek, Cyrillic, Hebrew and Arabic characters weigh 1, everything
//! else 2 (CJK, most symbols), an emoji sequence 2 however many code points
//! it joins, a link 23 whatever its length; the text is NFC-normalized
//! first. Other platforms count characters.

use crate::ingest::ChannelKind;
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// What a link counts on X, however long (X shortens it to t.co).
pub const X_LINK_LENGTH: usize = 23;

/// The reply's length as `kind`'s platform counts it.
pub fn length(kind: ChannelKind, text: &str) -> usize {
    match kind {
        ChannelKind::X => x_weighted_length(text),
        _ => text.chars().count(),
    }
}

/// twitter-text v3's weighted length (scale 100, default weight 200).
pub fn x_weighted_length(text: &str) -> usize {
    let text: String = text.nfc().collect();
    let mut units = 0;
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let (before, link, after) = split_at_link(rest);
        units += before.graphemes(true).map(grapheme_weight).sum::<usize>();
        if link.is_some() {
            units += X_LINK_LENGTH;
        }
        rest = after;
    }
    units
}

/// The text before the first link, the link, and the text after it. A
/// link starts with `http://` or `https://` (not right after an ASCII
/// letter or digit) and runs over the characters a URL may hold, less the
/// punctuation that ends a sentence or closes a bracket it did not open.
fn split_at_link(text: &str) -> (&str, Option<&str>, &str) {
    let url_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    let link_at = |i: usize| -> Option<usize> {
        let tail = &text[i..];
        let scheme = ["https://", "http://"]
            .into_iter()
            .find(|s| tail.starts_with(s))?;
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return None;
        }
        let mut end = tail.find(|c: char| !url_char(c)).unwrap_or(tail.len());
        loop {
            let link = &tail[..end];
            let Some(last) = link.chars().next_back() else {
                break;
            };
            let unopened = (last == ')' && link.matches('(').count() < link.matches(')').count())
                || (last == ']' && link.matches('[').count() < link.matches(']').count());
            if ".,;:!?'\"".contains(last) || unopened {
                end -= last.len_utf8();
            } else {
                break;
            }
        }
        (end > scheme.len()).then_some(i + end)
    };
    let found = text
        .match_indices("http")
        .find_map(|(i, _)| link_at(i).map(|end| (i, end)));
    match found {
        None => (text, None, ""),
        Some((i, end)) => (&text[..i], Some(&text[i..end]), &text[end..]),
    }
}

/// An emoji (a pictograph, or anything joined or dressed as one) weighs 2;
/// other characters by twitter-text's ranges.
fn grapheme_weight(g: &str) -> usize {
    if g.chars().any(is_emoji) {
        return 2;
    }
    g.chars().map(char_weight).sum()
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF // pictographs, emoticons, transport, flags
        | 0x2600..=0x27BF // miscellaneous symbols, dingbats
        | 0xFE0F // emoji presentation selector
        | 0x20E3 // keycap
    )
}

/// twitter-text v3: weight 1 (100 units) in these ranges, 2 elsewhere.
fn char_weight(c: char) -> usize {
    match c as u32 {
        0..=4351 | 8192..=8205 | 8208..=8223 | 8242..=8247 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_counts_as_twitter_text_does() {
        assert_eq!(x_weighted_length("hello"), 5);
        assert_eq!(x_weighted_length("Grüße, Ελλάδα, привет"), 21);
        // CJK weighs 2: 140 of them fill a tweet.
        assert_eq!(x_weighted_length(&"日".repeat(140)), 280);
        // An emoji sequence weighs 2: a family joined by ZWJs, a flag, a
        // thumb with a skin tone, a keycap.
        assert_eq!(x_weighted_length("👨\u{200D}👩\u{200D}👧"), 2);
        assert_eq!(x_weighted_length("🇫🇷"), 2);
        assert_eq!(x_weighted_length("👍🏽"), 2);
        assert_eq!(x_weighted_length("1\u{FE0F}\u{20E3}"), 2);
        // A link counts 23 whatever its length.
        let long = format!("see https://example.com/{} thanks", "a".repeat(200));
        assert_eq!(x_weighted_length(&long), 4 + 23 + 7);
        assert_eq!(x_weighted_length("https://x.co"), 23);
        // Where a link ends: sentence punctuation, an unopened bracket,
        // and text in another script are not part of it.
        assert_eq!(x_weighted_length("(https://brew.co/help)"), 1 + 23 + 1);
        assert_eq!(x_weighted_length("see https://brew.co/help."), 4 + 23 + 1);
        assert_eq!(
            x_weighted_length("https://en.wikipedia.org/wiki/Brew_(coffee)"),
            23
        );
        assert_eq!(
            x_weighted_length("詳細はhttps://brew.co/jaをご覧ください。"),
            6 + 23 + 16
        );
        assert_eq!(x_weighted_length("xhttps://brew.co"), 16);
        // Decomposed accents are composed first.
        assert_eq!(x_weighted_length("e\u{0301}"), 1);
        // Elsewhere, characters.
        assert_eq!(length(ChannelKind::Facebook, &"日".repeat(140)), 140);
    }
}
