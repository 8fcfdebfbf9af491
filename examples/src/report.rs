//! The HTML report: inline SVG plots of a run (and its `off` reference), the summary and the
//! per-fault table. One self-contained file, no scripts.

use std::fmt::Write as _;

use crate::faults::FaultClass;
use crate::harness::RunRecord;
use crate::metrics::{FaultEval, Summary};

const W: f64 = 960.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

struct Plot {
    svg: String,
    t_max: f64,
    y_max: f64,
}

impl Plot {
    fn new(t_max: f64, y_max: f64, y_label: &str) -> Self {
        let mut svg = String::new();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11"><rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>"##
        );
        let _ = write!(
            svg,
            r##"<line x1="{PAD}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/><line x1="{PAD}" y1="10" x2="{PAD}" y2="{y0}" stroke="#888"/><text x="4" y="14">{y_label}</text>"##,
            y0 = H - PAD,
            x1 = W - 10.0
        );
        let p = Self {
            svg,
            t_max: t_max.max(1e-9),
            y_max: y_max.max(1e-9),
        };
        let mut p = p;
        for k in 0..=4 {
            let y = p.y_max * k as f64 / 4.0;
            let py = p.y(y);
            let _ = write!(
                p.svg,
                r##"<text x="2" y="{py:.1}">{}</text><line x1="{PAD}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/>"##,
                fmt_num(y),
                W - 10.0
            );
        }
        let step = if t_max > 300.0 {
            60.0
        } else if t_max > 60.0 {
            20.0
        } else {
            5.0
        };
        let mut t = 0.0;
        while t <= t_max {
            let _ = write!(
                p.svg,
                r##"<text x="{:.1}" y="{:.1}">{t:.0}s</text>"##,
                p.x(t) - 8.0,
                H - PAD + 14.0
            );
            t += step;
        }
        p
    }

    fn x(&self, t: f64) -> f64 {
        PAD + (t / self.t_max) * (W - PAD - 10.0)
    }

    fn y(&self, v: f64) -> f64 {
        let v = v.clamp(0.0, self.y_max);
        (H - PAD) - (v / self.y_max) * (H - PAD - 10.0)
    }

    fn band(&mut self, t0: f64, t1: f64, color: &str, label: &str) {
        let _ = write!(
            self.svg,
            r##"<rect x="{:.1}" y="10" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.18"><title>{label}</title></rect>"##,
            self.x(t0),
            (self.x(t1) - self.x(t0)).max(1.0),
            H - PAD - 10.0
        );
    }

    fn line(&mut self, pts: &[(f64, Option<f64>)], color: &str, width: f64) {
        let mut seg = String::new();
        let flush = |svg: &mut String, seg: &mut String| {
            if !seg.is_empty() {
                let _ = write!(
                    svg,
                    r##"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{seg}"/>"##
                );
                seg.clear();
            }
        };
        for (t, v) in pts {
            match v {
                Some(v) => {
                    let _ = write!(seg, "{:.1},{:.1} ", self.x(*t), self.y(*v));
                }
                None => flush(&mut self.svg, &mut seg),
            }
        }
        flush(&mut self.svg, &mut seg);
    }

    fn hline(&mut self, v: f64, color: &str, label: &str) {
        let y = self.y(v);
        let _ = write!(
            self.svg,
            r##"<line x1="{PAD}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{color}" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="{color}">{label}</text>"##,
            W - 10.0,
            W - 120.0,
            y - 3.0
        );
    }

    fn tick_mark(&mut self, t: f64, color: &str, label: &str) {
        let _ = write!(
            self.svg,
            r##"<line x1="{x:.1}" y1="10" x2="{x:.1}" y2="18" stroke="{color}" stroke-width="2"><title>{label}</title></line>"##,
            x = self.x(t)
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes the report for `run` (and its `off` reference) as one HTML page.
pub fn html(
    run: &RunRecord,
    off: Option<&RunRecord>,
    summary: &Summary,
    evals: &[FaultEval],
) -> String {
    let tick_s = run.tick_ms as f64 / 1000.0;
    let t_max = run.ticks.len() as f64 * tick_s;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Seer run: {name} ({mode})</title>\
         <style>body{{font-family:sans-serif;max-width:1000px;margin:20px auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}pre{{background:#f6f6f6;padding:8px}}</style></head><body>\
         <h1>Seer run: {name}, mode <code>{mode}</code>, seed {seed}</h1>",
        name = esc(&run.scenario),
        mode = run.mode,
        seed = run.seed
    );
    for n in &run.notes {
        let _ = write!(out, "<p><em>note: {}</em></p>", esc(n));
    }

    // p99 over time.
    let y_max = run
        .ticks
        .iter()
        .chain(off.map(|o| o.ticks.as_slice()).unwrap_or(&[]))
        .filter_map(|t| t.window_p_ms)
        .fold(run.qos_target_ms * 1.5, f64::max)
        .min(run.qos_target_ms * 6.0);
    let mut p = Plot::new(t_max, y_max, "p99 ms (1 s window)");
    for f in &run.faults {
        let color = match f.class {
            FaultClass::Gradual => "#f0a000",
            FaultClass::Step => "#d02020",
        };
        p.band(
            f.start_s,
            f.end_s,
            color,
            &format!("{} {} on {}", f.class.as_str(), f.kind.as_str(), f.service),
        );
    }
    for a in &run.actuations {
        p.band(
            a.start_s,
            a.end_s.unwrap_or(t_max),
            "#20a040",
            &match a.workers {
                Some(w) => format!("workers of {} raised to {w}", a.service),
                None => format!("quota of {} raised", a.service),
            },
        );
    }
    if let Some(o) = off {
        let pts: Vec<_> = o
            .ticks
            .iter()
            .enumerate()
            .map(|(i, t)| (i as f64 * tick_s, t.window_p_ms))
            .collect();
        p.line(&pts, "#aaa", 1.0);
    }
    let pts: Vec<_> = run
        .ticks
        .iter()
        .enumerate()
        .map(|(i, t)| (i as f64 * tick_s, t.window_p_ms))
        .collect();
    p.line(&pts, "#1050c0", 1.5);
    p.hline(
        run.qos_target_ms,
        "#d02020",
        &format!("QoS {:.0} ms", run.qos_target_ms),
    );
    for (i, pr) in run.preds.iter().enumerate() {
        if let Some(pr) = pr
            && let Some((s, r)) = pr.named.first()
        {
            p.tick_mark(i as f64 * tick_s, "#800080", &format!("culprit {s} ({r})"));
        }
    }
    out.push_str("<h2>Client p99 against the QoS target</h2><p>Blue: this run; grey: the <code>off</code> run of the same seed; bands: faults (orange gradual, red step) and actuator raises (green); purple marks: ticks where the collector named a culprit.</p>");
    out.push_str(&p.finish());

    // Throughput and shed.
    let per_s = (1.0 / tick_s).round().max(1.0) as usize;
    let secs: Vec<(f64, f64, f64, f64)> = run
        .ticks
        .chunks(per_s)
        .enumerate()
        .map(|(i, c)| {
            let sent: u64 = c.iter().map(|t| t.sent).sum();
            let ok: u64 = c.iter().map(|t| t.ok).sum();
            let shed: u64 = c.iter().map(|t| t.shed).sum();
            (i as f64, sent as f64, ok as f64, shed as f64)
        })
        .collect();
    let max_rps = secs.iter().map(|s| s.1).fold(10.0, f64::max);
    let mut p = Plot::new(t_max, max_rps * 1.1, "requests/s");
    p.line(
        &secs.iter().map(|s| (s.0, Some(s.1))).collect::<Vec<_>>(),
        "#888",
        1.0,
    );
    p.line(
        &secs.iter().map(|s| (s.0, Some(s.2))).collect::<Vec<_>>(),
        "#1050c0",
        1.5,
    );
    p.line(
        &secs.iter().map(|s| (s.0, Some(s.3))).collect::<Vec<_>>(),
        "#d02020",
        1.5,
    );
    out.push_str("<h2>Offered (grey), goodput (blue) and shed (red) per second</h2>");
    out.push_str(&p.finish());

    // Risk per service.
    if run.preds.iter().any(Option::is_some) {
        let palette = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#393b79", "#637939",
        ];
        let mut p = Plot::new(t_max, 1.0, "risk");
        let mut legend = String::new();
        for (k, s) in run.services.iter().enumerate() {
            let pts: Vec<_> = run
                .preds
                .iter()
                .enumerate()
                .map(|(i, pr)| {
                    (
                        i as f64 * tick_s,
                        pr.as_ref()
                            .and_then(|p| p.risks.get(k).map(|r| f64::from(*r))),
                    )
                })
                .collect();
            if pts.iter().all(|(_, v)| v.unwrap_or(0.0) < 0.05) {
                continue;
            }
            let c = palette[k % palette.len()];
            p.line(&pts, c, 1.2);
            let _ = write!(
                legend,
                "<span style=\"color:{c}\">&#9632; {}</span> ",
                esc(s)
            );
        }
        out.push_str("<h2>Per-service risk from the collector</h2>");
        out.push_str(&p.finish());
        let _ = write!(out, "<p>{legend}</p>");
    }

    let _ = write!(
        out,
        "<h2>Summary</h2><pre>{}</pre>",
        esc(&serde_json::to_string_pretty(summary).unwrap_or_default())
    );
    out.push_str("<h2>Faults</h2><table><tr><th>id</th><th>class</th><th>kind</th><th>service</th><th>first named</th><th>resource named</th><th>ticks to culprit</th><th>off-run violation at (ticks)</th><th>lead (ticks)</th><th>violation ticks</th><th>recovery s</th></tr>");
    for e in evals {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            e.id,
            e.class.as_str(),
            esc(&e.kind),
            esc(&e.service),
            esc(&opt(e.first_named.clone())),
            esc(&opt(e.resource_named.clone())),
            opt(e.time_to_culprit_ticks.map(|v| v.to_string())),
            opt(e.ref_violation_tick.map(|v| v.to_string())),
            opt(e.lead_ticks.map(|v| v.to_string())),
            e.violation_ticks,
            e.recovery_s
        );
    }
    out.push_str("</table></body></html>\n");
    out
}
