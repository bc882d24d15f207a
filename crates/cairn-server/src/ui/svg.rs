//! Pictures drawn on the server as inline SVG: the metrics chart of a version's evaluations,
//! its lineage graph, and the QR code of an MFA enrolment. Every text that reaches the SVG is
//! escaped here; the pages embed the result as it is.

use std::fmt::Write as _;

/// One bar of the metrics chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// `suite / metric`.
    pub label: String,
    /// The measured value.
    pub value: f64,
    /// The lower threshold, if any.
    pub at_least: Option<f64>,
    /// The upper threshold, if any.
    pub at_most: Option<f64>,
    /// Whether the value met its thresholds.
    pub passed: bool,
}

/// Escapes text for SVG/XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.3}") }
}

const LABEL_W: f64 = 260.0;
const BAR_W: f64 = 360.0;
const ROW_H: f64 = 28.0;

/// A horizontal bar chart: one bar per metric, green when it met its thresholds and red when
/// not, with each threshold drawn as a tick. Bars share one scale from 0 to the largest value
/// or threshold (negative values are drawn from 0 as empty bars with their value written).
pub fn metrics_chart(title: &str, bars: &[Bar]) -> String {
    let max = bars
        .iter()
        .flat_map(|b| [Some(b.value), b.at_least, b.at_most])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { BAR_W / (max * 1.05) } else { 0.0 };
    let width = LABEL_W + BAR_W + 90.0;
    let height = ROW_H * bars.len().max(1) as f64 + 16.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="metrics-chart" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-labelledby="chart-title chart-desc"><title id="chart-title">{}</title><desc id="chart-desc">"#,
        escape(title)
    );
    for b in bars {
        let _ = write!(
            svg,
            "{}: {}{}. ",
            escape(&b.label),
            fmt_num(b.value),
            if b.passed { " (passed)" } else { " (failed)" }
        );
    }
    svg.push_str("</desc>");
    for (i, b) in bars.iter().enumerate() {
        let y = 8.0 + ROW_H * i as f64;
        let w = if b.value.is_finite() { (b.value.max(0.0) * scale).min(BAR_W) } else { 0.0 };
        let class = if b.passed { "bar pass" } else { "bar fail" };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text><rect x="{LABEL_W}" y="{}" width="{w:.1}" height="{}" class="{class}"/><text x="{}" y="{}" class="value">{}{}</text>"#,
            LABEL_W - 8.0,
            y + 16.0,
            escape(&b.label),
            y + 3.0,
            ROW_H - 8.0,
            LABEL_W + w + 6.0,
            y + 16.0,
            fmt_num(b.value),
            if b.passed { "" } else { " ✗" }
        );
        for (t, name) in [(b.at_least, "at least"), (b.at_most, "at most")] {
            if let Some(t) = t.filter(|t| t.is_finite()) {
                let x = LABEL_W + (t.max(0.0) * scale).min(BAR_W);
                let _ = write!(
                    svg,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" class="threshold"><title>{name} {}</title></line>"#,
                    y,
                    y + ROW_H - 2.0,
                    fmt_num(t)
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A node of the lineage graph: what kind of thing, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `code commit`, `training job`, …
    pub kind: String,
    /// The value (shortened for display when long).
    pub value: String,
}

/// The lineage of a version as a left-to-right chain of boxes ending at the version itself.
pub fn lineage_graph(inputs: &[Node], version: &Node) -> String {
    let box_w = 200.0;
    let gap = 40.0;
    let h = 56.0;
    let all: Vec<&Node> = inputs.iter().chain(std::iter::once(version)).collect();
    let width = (box_w + gap) * all.len() as f64 - gap + 8.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="lineage" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {}" width="{width}" height="{}" aria-label="Lineage: {}">"#,
        h + 8.0,
        h + 8.0,
        escape(&all.iter().map(|n| format!("{} {}", n.kind, n.value)).collect::<Vec<_>>().join(" → "))
    );
    svg.push_str(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"#,
    );
    for (i, n) in all.iter().enumerate() {
        let x = 4.0 + (box_w + gap) * i as f64;
        let shown: String = if n.value.chars().count() > 26 {
            n.value.chars().take(25).collect::<String>() + "…"
        } else {
            n.value.clone()
        };
        let class = if i + 1 == all.len() { "node self" } else { "node" };
        let _ = write!(
            svg,
            r#"<g class="{class}"><title>{}: {}</title><rect x="{x}" y="4" width="{box_w}" height="{h}" rx="6"/><text x="{}" y="24" class="kind">{}</text><text x="{}" y="44" class="value">{}</text></g>"#,
            escape(&n.kind),
            escape(&n.value),
            x + 10.0,
            escape(&n.kind),
            x + 10.0,
            escape(&shown)
        );
        if i + 1 < all.len() {
            let _ = write!(
                svg,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" class="edge" marker-end="url(#arrow)"/>"#,
                x + box_w,
                4.0 + h / 2.0,
                x + box_w + gap - 2.0,
                4.0 + h / 2.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The QR code of `text` (an `otpauth://` URI) as an inline SVG, or `None` when the text is
/// too long for a QR code.
pub fn qr_code(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    // Drop the XML declaration; name the picture for screen readers.
    let start = svg.find("<svg")?;
    Some(svg[start..].replacen(
        "<svg",
        r#"<svg id="mfa-qr" role="img" aria-label="QR code of the authenticator enrolment""#,
        1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_in_every_picture() {
        let bar = Bar { label: "<script>".into(), value: 0.5, at_least: Some(0.9), at_most: None, passed: false };
        let chart = metrics_chart("a & b", &[bar]);
        assert!(!chart.contains("<script>"));
        assert!(chart.contains("&lt;script&gt;"));
        assert!(chart.contains("a &amp; b"));
        let g = lineage_graph(
            &[Node { kind: "run".into(), value: "\"><x".into() }],
            &Node { kind: "version".into(), value: "ns/m:1".into() },
        );
        assert!(!g.contains("\"><x"));
    }

    #[test]
    fn bars_share_one_scale_and_show_thresholds() {
        let bars = [
            Bar { label: "s / accuracy".into(), value: 0.93, at_least: Some(0.9), at_most: None, passed: true },
            Bar { label: "s / loss".into(), value: 0.4, at_least: None, at_most: Some(0.2), passed: false },
        ];
        let chart = metrics_chart("Evaluations", &bars);
        assert_eq!(chart.matches("class=\"bar pass\"").count(), 1);
        assert_eq!(chart.matches("class=\"bar fail\"").count(), 1);
        assert_eq!(chart.matches("class=\"threshold\"").count(), 2);
        assert!(chart.contains("s / accuracy: 0.930 (passed)"));
        // The largest value (0.93) fills BAR_W / 1.05 of the width.
        let widest = format!("width=\"{:.1}\"", BAR_W / 1.05);
        assert!(chart.contains(&widest), "{chart}");
    }

    #[test]
    fn negative_and_infinite_values_do_not_break_the_chart() {
        let bars = [Bar { label: "x".into(), value: f64::NEG_INFINITY, at_least: None, at_most: None, passed: false }];
        let chart = metrics_chart("t", &bars);
        assert!(chart.contains("width=\"0.0\""));
    }

    #[test]
    fn qr_codes_are_svg_without_a_prolog() {
        let svg = qr_code("otpauth://totp/Cairn:alice?secret=JBSWY3DPEHPK3PXP&issuer=Cairn").unwrap();
        assert!(svg.starts_with("<svg id=\"mfa-qr\""));
        assert!(svg.contains("<path") || svg.contains("<rect"));
        assert!(qr_code(&"x".repeat(10_000)).is_none());
    }
}
