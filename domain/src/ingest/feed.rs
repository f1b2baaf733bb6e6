//! RSS and Atom feeds (brand-name alert feeds, review-site feeds). Each entry
//! becomes a public message; its feed id (or link) is the deduplication key,
//! so an entry seen in many polls is stored once.

use super::{Inbound, InboundAuthor, PayloadError, Visibility, clip};
use chrono::{DateTime, Utc};

/// `received_at` stands in for entries that carry no date.
pub fn parse(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<Inbound>, PayloadError> {
    // feed-rs fills a missing id from the first link and the title, or
    // with no link a random UUID, which would store the entry again at
    // every poll. Both are left empty here: an entry without an id is known
    // by its link (a headline edited later is the same entry), or with no
    // link by its content, below.
    let feed = feed_rs::parser::Builder::new()
        .id_generator(|_, _, _| String::new())
        .build()
        .parse(body)
        .map_err(|e| PayloadError::new(format!("not an RSS or Atom feed: {e}")))?;
    let source = feed
        .title
        .as_ref()
        .map(|t| t.content.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "feed".into());
    Ok(feed
        .entries
        .into_iter()
        .map(|e| {
            let link = e.links.first().map(|l| l.href.trim().to_string());
            // What entries without an id were stored under before they were
            // known by their link.
            let alias = e
                .links
                .first()
                .filter(|_| e.id.is_empty())
                .map(|l| feed_rs::parser::generate_id_from_link_and_title(l, &e.title));
            let title = e.title.map(|t| t.content).unwrap_or_default();
            let body = e
                .summary
                .map(|s| s.content)
                .or_else(|| e.content.and_then(|c| c.body))
                .unwrap_or_default();
            let text = strip_tags(&format!("{title}\n{body}"));
            let dated = e.published.or(e.updated);
            // No id and no link: the same words on the same date are the
            // same entry, however often the feed is fetched.
            let content_id = || {
                let words = format!("{title}\n{body}\n{dated:?}");
                (!title.trim().is_empty() || !body.trim().is_empty())
                    .then(|| format!("sha256:{}", crate::crypto::sha256_hex(words.as_bytes())))
            };
            let author = e
                .authors
                .first()
                .and_then(|p| p.name.clone())
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| source.clone());
            Inbound {
                account: None,
                alias,
                external_id: if e.id.is_empty() {
                    link.clone().or_else(content_id).unwrap_or_default()
                } else {
                    e.id
                },
                in_reply_to: None,
                visibility: Visibility::Public,
                text: clip(text.trim()),
                published_at: dated.unwrap_or(received_at),
                author: InboundAuthor {
                    external_id: author.to_lowercase(),
                    handle: author.clone(),
                    name: Some(author),
                    followers: 0,
                    verified: false,
                },
                url: link,
            }
        })
        .filter(|m| !m.external_id.is_empty())
        .collect())
}

/// Feed summaries are HTML: keep the words, drop the markup.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let decoded = out
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_with_no_id_and_no_link_keeps_one_id_across_polls() {
        let rss = |build: &str| {
            format!(
                "<rss version=\"2.0\"><channel><title>Alerts</title><lastBuildDate>{build}</lastBuildDate>\
                 <item><title>Brew Co latte was cold</title><description>Third time this week</description></item>\
                 <item><title>Another one</title><description>Different words</description></item>\
                 </channel></rss>"
            )
        };
        let now = Utc::now();
        let first = parse(rss("Mon, 07 Dec 2026 09:00:00 GMT").as_bytes(), now).unwrap();
        let again = parse(rss("Mon, 07 Dec 2026 09:05:00 GMT").as_bytes(), now).unwrap();
        let ids = |m: &[Inbound]| m.iter().map(|m| m.external_id.clone()).collect::<Vec<_>>();
        assert_eq!(first.len(), 2);
        assert_eq!(ids(&first), ids(&again), "stable across polls");
        assert_ne!(first[0].external_id, first[1].external_id);
        assert!(first[0].external_id.starts_with("sha256:"));
    }

    #[test]
    fn an_entry_with_a_link_and_no_id_is_its_link_whatever_its_headline() {
        let rss = |title: &str| {
            format!(
                "<rss version=\"2.0\"><channel><title>Alerts</title>\
                 <item><title>{title}</title><link> https://news.example/brew-co </link>\
                 <description>Brew Co again</description></item></channel></rss>"
            )
        };
        let now = Utc::now();
        let first = parse(rss("Brew Co recall").as_bytes(), now).unwrap();
        let edited = parse(rss("Brew Co recall (updated)").as_bytes(), now).unwrap();
        assert_eq!(first[0].external_id, "https://news.example/brew-co");
        assert_eq!(edited[0].external_id, first[0].external_id);
        // What earlier versions stored it under, looked for too.
        let before = first[0].alias.clone().expect("the former id");
        assert_ne!(before, first[0].external_id);
        let with_guid = parse(include_bytes!("../../../tests/fixtures/feed_rss.xml"), now).unwrap();
        assert_eq!(
            with_guid[0].alias, None,
            "an entry's own id was always its key"
        );
    }

    #[test]
    fn rss_and_atom_entries() {
        let now = Utc::now();
        let rss = include_bytes!("../../../tests/fixtures/feed_rss.xml");
        let msgs = parse(rss, now).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].external_id, "https://alerts.example/brew/1");
        assert!(
            msgs[0].text.contains("Brew Co") && !msgs[0].text.contains("<b>"),
            "{}",
            msgs[0].text
        );
        assert_eq!(
            msgs[0].published_at.to_rfc3339(),
            "2026-11-20T09:00:00+00:00"
        );
        assert_eq!(
            msgs[1].published_at, now,
            "undated entries take the receive time"
        );
        let atom = include_bytes!("../../../tests/fixtures/feed_atom.xml");
        let msgs = parse(atom, now).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].author.handle, "Review Bot");
        assert!(parse(b"<html>nope</html>", now).is_err());
    }
}
