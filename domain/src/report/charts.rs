//! Charts of the printable report as inline SVG, rendered on the server:
//! no script, nothing fetched, so a shared report is one self-contained
//! page that prints as it shows.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 240.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 28.0;

/// Text safe inside SVG/HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn open(id: &str, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title><text x="{LEFT}" y="18" font-size="14" font-weight="bold">{t}</text>"#,
        t = escape(title)
    )
}

fn axis(out: &mut String, max: f64, unit: &str) {
    let y0 = H - BOTTOM;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}" stroke="#444"/><line x1="{LEFT}" y1="{y0}" x2="{W}" y2="{y0}" stroke="#444"/><text x="{x}" y="{y}" font-size="10" text-anchor="end">{m}{u}</text><text x="{x}" y="{y0}" font-size="10" text-anchor="end">0</text>"##,
        x = LEFT - 4.0,
        y = TOP + 4.0,
        m = fmt_num(max),
        u = escape(unit),
    );
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Labels under the x axis, thinned so they neither crowd (at most about
/// 12) nor overlap (about 6 px per character at this size).
fn labels(out: &mut String, labels: &[String], slot: f64) {
    let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
    let fit = ((widest * 6.0 + 8.0) / slot.max(1.0)).ceil() as usize;
    let every = labels.len().div_ceil(12).max(fit).max(1);
    for (i, l) in labels.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y}" font-size="10" text-anchor="middle">{l}</text>"#,
            x = LEFT + slot * (i as f64 + 0.5),
            y = H - BOTTOM + 14.0,
            l = escape(l),
        );
    }
}

/// Bars, one per bin: the response-time distribution.
pub fn histogram(id: &str, title: &str, bins: &[(String, u64)]) -> String {
    let mut out = open(id, title);
    let max = bins.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    axis(&mut out, max, "");
    let slot = (W - LEFT) / bins.len().max(1) as f64;
    let plot = H - BOTTOM - TOP;
    for (i, (label, n)) in bins.iter().enumerate() {
        let h = plot * *n as f64 / max;
        let _ = write!(
            out,
            r##"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#3b6ea5"><title>{l}: {n}</title></rect>"##,
            x = LEFT + slot * i as f64 + slot * 0.15,
            y = H - BOTTOM - h,
            w = slot * 0.7,
            l = escape(label),
        );
    }
    let names: Vec<String> = bins.iter().map(|b| b.0.clone()).collect();
    labels(&mut out, &names, slot);
    out.push_str("</svg>");
    out
}

/// Stacked bars per bucket: daily volume by sentiment.
pub fn stacked(
    id: &str,
    title: &str,
    buckets: &[String],
    series: &[(&str, &str, Vec<u64>)],
) -> String {
    let mut out = open(id, title);
    let totals: Vec<u64> = (0..buckets.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.2.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    axis(&mut out, max, "");
    let slot = (W - LEFT) / buckets.len().max(1) as f64;
    let plot = H - BOTTOM - TOP;
    for (i, bucket) in buckets.iter().enumerate() {
        let mut base = H - BOTTOM;
        for (name, color, values) in series {
            let n = values.get(i).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = plot * n as f64 / max;
            base -= h;
            let _ = write!(
                out,
                r#"<rect class="bar" x="{x:.1}" y="{base:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{b}: {n} {name}</title></rect>"#,
                x = LEFT + slot * i as f64 + slot * 0.1,
                w = slot * 0.8,
                b = escape(bucket),
            );
        }
    }
    labels(&mut out, buckets, slot);
    for (k, (name, color, _)) in series.iter().enumerate() {
        let x = W - 110.0 * (series.len() - k) as f64;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="6" width="10" height="10" fill="{color}"/><text x="{t}" y="15" font-size="11">{n}</text>"#,
            t = x + 14.0,
            n = escape(name),
        );
    }
    out.push_str("</svg>");
    out
}

/// A line of percentages per bucket (None: nothing measured there):
/// SLA compliance over time.
pub fn percent_line(id: &str, title: &str, buckets: &[String], values: &[Option<f64>]) -> String {
    let mut out = open(id, title);
    axis(&mut out, 100.0, "%");
    let slot = (W - LEFT) / buckets.len().max(1) as f64;
    let plot = H - BOTTOM - TOP;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.map(|p| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + slot * (i as f64 + 0.5),
                    H - BOTTOM - plot * p.clamp(0.0, 100.0) / 100.0
                )
            })
        })
        .collect();
    if !points.is_empty() {
        let _ = write!(
            out,
            r##"<polyline class="line" fill="none" stroke="#2a9d58" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(out, r##"<circle cx="{x}" cy="{y}" r="3" fill="#2a9d58"/>"##);
        }
    }
    labels(&mut out, buckets, slot);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_self_contained_svg_with_escaped_text() {
        let h = histogram(
            "rt",
            "First response <time>",
            &[("<5m".into(), 3), ("5-15m".into(), 1)],
        );
        assert!(h.starts_with("<svg") && h.ends_with("</svg>"));
        assert_eq!(h.matches("class=\"bar\"").count(), 2);
        assert!(h.contains("&lt;time&gt;") && !h.contains("<time>"));
        let s = stacked(
            "vol",
            "Volume",
            &["Mon".into(), "Tue".into()],
            &[
                ("negative", "#c33", vec![1, 0]),
                ("positive", "#3a3", vec![2, 5]),
            ],
        );
        assert_eq!(
            s.matches("class=\"bar\"").count(),
            3,
            "empty segments are skipped"
        );
        let l = percent_line(
            "sla",
            "SLA",
            &["a".into(), "b".into(), "c".into()],
            &[Some(100.0), None, Some(50.0)],
        );
        assert_eq!(l.matches("<circle").count(), 2);
        assert!(!h.contains("script"));
    }
}
