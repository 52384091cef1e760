//! A small log–log line chart as SVG text, so the scaling plot needs no
//! plotting tool: panels side by side, one polyline per series.

use std::fmt::Write as _;

pub struct Series {
    pub name: String,
    /// `(x, y)`, both positive (log axes).
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const W: f64 = 460.0;
const H: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 15.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Panels laid out `columns` to a row.
pub fn render(title: &str, panels: &[Panel], columns: usize) -> String {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns);
    let (width, height) = (W * columns as f64, H * rows as f64 + 30.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let (ox, oy) = (W * (i % columns) as f64, 30.0 + H * (i / columns) as f64);
        panel_svg(&mut out, panel, ox, oy);
    }
    out.push_str("</svg>\n");
    out
}

fn panel_svg(out: &mut String, panel: &Panel, ox: f64, oy: f64) {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| *x > 0.0 && *y > 0.0) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return;
    }
    // Whole decades around the data.
    let (lx0, lx1) = (
        x0.log10().floor(),
        x1.log10().ceil().max(x0.log10().floor() + 1.0),
    );
    let (ly0, ly1) = (
        y0.log10().floor(),
        y1.log10().ceil().max(y0.log10().floor() + 1.0),
    );
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| ox + LEFT + (x.log10() - lx0) / (lx1 - lx0) * pw;
    let py = |y: f64| oy + TOP + ph - (y.log10() - ly0) / (ly1 - ly0) * ph;

    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        ox + LEFT + pw / 2.0,
        oy + TOP - 12.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##,
        ox + LEFT,
        oy + TOP
    );
    for d in (lx0 as i32)..=(lx1 as i32) {
        let x = px(10f64.powi(d));
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            oy + TOP,
            oy + TOP + ph,
            oy + TOP + ph + 14.0,
            tick(10f64.powi(d))
        );
    }
    for d in (ly0 as i32)..=(ly1 as i32) {
        let y = py(10f64.powi(d));
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            ox + LEFT,
            ox + LEFT + pw,
            ox + LEFT - 4.0,
            y + 4.0,
            tick(10f64.powi(d))
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        ox + LEFT + pw / 2.0,
        oy + H - 14.0,
        escape(&panel.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        ox + 14.0,
        oy + TOP + ph / 2.0,
        escape(&panel.y_label)
    );
    for (i, series) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let coords: Vec<String> = series
            .points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            coords.join(" ")
        );
        for c in &coords {
            let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                out,
                r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>"#
            );
        }
        let ly = oy + TOP + 14.0 + 14.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"/><text x="{}" y="{ly}">{}</text>"#,
            ox + LEFT + 8.0,
            ly - 4.0,
            ox + LEFT + 26.0,
            ly - 4.0,
            ox + LEFT + 30.0,
            escape(&series.name)
        );
    }
}

fn tick(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
