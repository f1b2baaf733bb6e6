//! Canned-reply guard latency with 100,000 earlier replies in a workspace
//! (not a test): builds the near-duplicate index, then times full guard
//! checks (slots, masking, MinHash + LSH lookup, banned phrases, overlap).
//!
//!     cargo bench --bench guard

use rapport_domain::reply::guard::{Check, ReplyIndex, check, mask};
use rapport_domain::reply::template::{SlotSpec, Template};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const VOCAB: &[&str] = &[
    "sorry",
    "order",
    "latte",
    "cold",
    "refund",
    "delivery",
    "late",
    "store",
    "team",
    "check",
    "today",
    "tomorrow",
    "message",
    "details",
    "account",
    "charge",
    "twice",
    "fixed",
    "update",
    "replace",
    "fresh",
    "manager",
    "branch",
    "week",
    "morning",
    "evening",
    "app",
    "payment",
    "voucher",
    "coffee",
    "beans",
    "grinder",
    "machine",
    "warranty",
    "shipping",
    "address",
    "tracking",
    "number",
    "help",
    "happy",
    "sort",
    "right",
    "away",
    "personally",
    "follow",
    "thanks",
    "patience",
    "again",
    "soon",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn sentence(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| VOCAB[(self.next() as usize) % VOCAB.len()])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("BENCH_REPLIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let checks = 10_000;
    let mut rng = Rng(42);
    let before = rss_kb();
    let t = Instant::now();
    let mut index = ReplyIndex::new();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let text = format!("Hi customer{i}, {}", rng.sentence(20));
        index.insert(
            format!("reply-{i}"),
            &mask(&text, &[&format!("customer{i}")]),
        );
        sent.push(text);
    }
    let built = t.elapsed();
    let index_mb = (rss_kb().saturating_sub(before)) as f64 / 1024.0;
    let template = Template::parse(
        "Hi {{ author.name }}, {{ slot.empathy }} — {{ agent.first_name }}",
        vec![SlotSpec {
            name: "empathy".into(),
            guidance: String::new(),
            min_length: 20,
        }],
    )
    .unwrap();
    let banned: Vec<String> = [
        "per our policy",
        "as stated previously",
        "we apologize for any inconvenience",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut times = Vec::with_capacity(checks);
    let mut refused = 0;
    for i in 0..checks {
        // Half resend an earlier reply to someone else; half are new.
        let (text, slot) = if i % 2 == 0 {
            let earlier = &sent[(rng.next() as usize) % n];
            let body = earlier.split_once(", ").map_or("", |x| x.1).to_string();
            (format!("Hi someone{i}, {body}"), body)
        } else {
            let body = rng.sentence(18);
            (format!("Hi someone{i}, {body}"), body)
        };
        let slots = HashMap::from([("empathy".to_string(), slot)]);
        let name = format!("someone{i}");
        let t = Instant::now();
        let findings = check(
            &Check {
                text: &text,
                template: Some(&template),
                slots: &slots,
                context_values: &[&name, "Brew Co", "Sam"],
                banned_phrases: &banned,
                customer_message: "my latte order was cold and late",
                threshold: 0.8,
                unpublished: &Default::default(),
            },
            &index,
        );
        times.push(t.elapsed());
        if findings.iter().any(|f| f.blocking()) {
            refused += 1;
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "guard benchmark: {n} earlier replies in the index, {checks} checks (half resends of earlier replies)"
    );
    println!(
        "  index build: {:.2} s, index memory ~{index_mb:.1} MiB",
        built.as_secs_f64()
    );
    println!(
        "  check latency: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        us(pct(0.5)),
        us(pct(0.99)),
        us(*times.last().unwrap())
    );
    println!(
        "  refused: {refused} of {checks} (the {} resends should all be)",
        checks / 2
    );
}
