//! A latency-by-percentile plot (SVG, no dependencies): x is the percentile on a log scale of
//! 1 / (1 − q), so the tail gets as much room as the median; y is the latency on a log scale, so
//! a bare baseline in tenths of a millisecond and Parley in milliseconds fit one chart.

use std::fmt::Write as _;

use super::events::Sample;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 60.0;
/// Percentiles marked on the x axis; the curve runs to the last one (or the max).
const TICKS: [(f64, &str); 5] = [(0.0, "0"), (0.9, "90"), (0.99, "99"), (0.999, "99.9"), (0.9999, "99.99")];
const COLOURS: [&str; 3] = ["#d62728", "#1f77b4", "#2ca02c"];

/// `series`: a name and its sample each. Returns the SVG document.
pub(super) fn latency_by_percentile(title: &str, series: &[(&str, &Sample)]) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, sample)| curve(sample)).collect();
    let all_ms = curves.iter().flatten().map(|&(_, ms)| ms.max(0.001));
    let (low, high) = all_ms.fold((f64::MAX, f64::MIN), |(low, high), ms| (low.min(ms), high.max(ms)));
    let (y_min, y_max) = (10f64.powf(low.log10().floor()), 10f64.powf(high.log10().ceil()));
    let x_max = x_position(TICKS[TICKS.len() - 1].0);
    let to_x = |position: f64| MARGIN + position / x_max * (WIDTH - 2.0 * MARGIN);
    let to_y = |ms: f64| {
        let share = (ms.max(y_min).log10() - y_min.log10()) / (y_max.log10() - y_min.log10());
        HEIGHT - MARGIN - share * (HEIGHT - 2.0 * MARGIN)
    };

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    );
    for (q, label) in TICKS {
        let x = to_x(x_position(q));
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{MARGIN}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            HEIGHT - MARGIN,
            HEIGHT - MARGIN + 16.0
        );
    }
    let mut decade = y_min;
    while decade <= y_max * 1.0001 {
        let y = to_y(decade);
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{decade}</text>",
            WIDTH - MARGIN,
            MARGIN - 6.0,
            y + 4.0
        );
        decade *= 10.0;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">latency (ms, log)</text>",
        WIDTH / 2.0,
        HEIGHT - 16.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    for (index, ((name, _), points)) in series.iter().zip(&curves).enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: Vec<String> =
            points.iter().map(|&(q, ms)| format!("{:.1},{:.1}", to_x(x_position(q)), to_y(ms))).collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            path.join(" "),
            MARGIN + 10.0,
            MARGIN + 16.0 + 16.0 * index as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// (quantile, latency in ms) at a few hundred quantiles from 0 to the sample's last one.
fn curve(sample: &Sample) -> Vec<(f64, f64)> {
    let mut sorted = sample.0.clone();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Vec::new();
    }
    let last_q = 1.0 - 1.0 / sorted.len() as f64;
    let top = x_position(last_q.min(TICKS[TICKS.len() - 1].0));
    (0..=300)
        .map(|step| {
            let q = 1.0 - 10f64.powf(-top * f64::from(step) / 300.0);
            let index = ((sorted.len() - 1) as f64 * q).round() as usize;
            (q, sorted[index] as f64 / 1000.0)
        })
        .collect()
}

/// log10(1 / (1 − q)): 0 at the median's left end, 2 at p99, 4 at p99.99.
fn x_position(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_has_one_curve_per_series_within_the_canvas() {
        let fast = Sample((1..=1000).collect());
        let slow = Sample((1..=1000).map(|n| n * 50).collect());
        let svg = latency_by_percentile("a <title>", &[("fast", &fast), ("slow", &slow)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;title&gt;"));
        for number in svg.split(['"', ',', ' ']).filter_map(|token| token.parse::<f64>().ok()) {
            assert!((0.0..=WIDTH).contains(&number), "{number} outside the canvas");
        }
    }
}
