//! The report as one self-contained HTML page: inline CSS and SVG charts,
//! no script, no external asset, so that it opens from a file or a mail
//! attachment in any browser.

use std::fmt::Write;

use verdict_core::Action;

use super::{count, money, opt_pct, pct};
use crate::input::RuleStatus;
use crate::report::{Report, RuleReport};

/// Text made safe inside HTML elements and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d9dde3;padding-bottom:4px}
table{border-collapse:collapse;background:#fff;margin:6px 0}
td,th{padding:4px 10px;border:1px solid #e2e5ea;text-align:right;white-space:nowrap}
th{background:#eef0f3;font-weight:600}td.l,th.l{text-align:left}
.meta td{border:none;background:none;padding:1px 10px 1px 0;text-align:left}
.banner{background:#fde8e8;border:1px solid #e3a0a0;color:#8a1c1c;padding:8px 12px;margin:8px 0;font-weight:600}
.ok{color:#1e6b34;font-weight:600}.muted{color:#6a7180}
.chart{background:#fff;border:1px solid #e2e5ea;margin:6px 0}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
";

const BASE: &str = "#7a8699";
const CAND: &str = "#2f6fde";

fn side_text(s: &crate::report::SideSummary) -> String {
    let mut v = esc(&s.name);
    if let Some(r) = &s.ruleset_version {
        let _ = write!(v, " · rules <code>{}</code>", esc(r));
    }
    if let Some(m) = &s.model_version {
        let _ = write!(v, " · model <code>{}</code>", esc(m));
    }
    v
}

/// The matrix as a heat map: each cell shaded by its share of the events,
/// changed cells in orange, unchanged in grey.
fn matrix_svg(r: &Report, out: &mut String) {
    let (cell, left, top) = (110.0, 90.0, 40.0);
    let w = left + cell * 3.0 + 10.0;
    let h = top + cell * 3.0 + 10.0;
    let _ = write!(
        out,
        r#"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="outcome matrix">"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="14" font-size="12" text-anchor="middle" fill="rgb(106,113,128)">candidate →</text>"#,
        left + cell * 1.5
    );
    let max_changed = r
        .matrix
        .iter()
        .filter(|c| c.baseline != c.candidate)
        .map(|c| c.events)
        .max()
        .unwrap_or(0)
        .max(1);
    for (i, a) in Action::ALL.iter().enumerate() {
        let x = left + cell * i as f64 + cell / 2.0;
        let _ = write!(
            out,
            r#"<text x="{x}" y="32" font-size="13" text-anchor="middle">{a}</text>"#
        );
        let y = top + cell * i as f64 + cell / 2.0 + 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{y}" font-size="13" text-anchor="end">{a}</text>"#,
            left - 8.0
        );
    }
    for c in &r.matrix {
        let (bi, ci) = (
            crate::report::index(c.baseline),
            crate::report::index(c.candidate),
        );
        let x = left + cell * ci as f64;
        let y = top + cell * bi as f64;
        let fill = if bi == ci {
            format!("rgba(122,134,153,{:.3})", 0.12 + 0.5 * c.share)
        } else {
            format!(
                "rgba(230,120,30,{:.3})",
                0.08 + 0.85 * c.events as f64 / max_changed as f64
            )
        };
        let _ = write!(
            out,
            r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#fff" stroke-width="2"><title>{} → {}: {} events</title></rect>"##,
            c.baseline,
            c.candidate,
            count(c.events)
        );
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="15" font-weight="600" text-anchor="middle">{}</text><text x="{}" y="{}" font-size="12" text-anchor="middle" fill="rgb(59,66,80)">{}</text>"#,
            x + cell / 2.0,
            y + cell / 2.0,
            count(c.events),
            x + cell / 2.0,
            y + cell / 2.0 + 18.0,
            pct(c.share)
        );
    }
    out.push_str("</svg>");
}

/// Horizontal bars per rule: baseline and candidate hits side by side.
fn rules_svg(rules: &[&RuleReport], out: &mut String) {
    let max = rules
        .iter()
        .map(|r| r.baseline.hits.max(r.candidate.hits))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let label_w = 220.0;
    let bar_w = 560.0;
    let row_h = 30.0;
    let w = label_w + bar_w + 90.0;
    let h = 24.0 + row_h * rules.len() as f64;
    let _ = write!(
        out,
        r#"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="hits per rule">"#
    );
    for (i, r) in rules.iter().enumerate() {
        let y = 12.0 + row_h * i as f64;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 15.0,
            esc(&r.rule)
        );
        for (k, (hits, color)) in [(r.baseline.hits, BASE), (r.candidate.hits, CAND)]
            .into_iter()
            .enumerate()
        {
            let len = (bar_w * hits as f64 / max).max(if hits > 0 { 1.0 } else { 0.0 });
            let by = y + 2.0 + 12.0 * k as f64;
            let _ = write!(
                out,
                r#"<rect x="{label_w}" y="{by}" width="{len:.1}" height="11" fill="{color}"><title>{}: {} hits</title></rect><text x="{:.1}" y="{}" font-size="10" fill="rgb(59,66,80)">{}</text>"#,
                if k == 0 { "baseline" } else { "candidate" },
                count(hits),
                label_w + len + 4.0,
                by + 9.5,
                count(hits)
            );
        }
    }
    out.push_str("</svg>");
}

/// Grouped bars of a rate per outcome, baseline and candidate.
fn rates_svg(title: &str, rows: &[(String, Option<f64>, Option<f64>)], out: &mut String) {
    let group_w = 150.0;
    let h = 180.0;
    let plot_h = 130.0;
    let w = 40.0 + group_w * rows.len() as f64;
    let _ = write!(
        out,
        r#"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><text x="8" y="16" font-size="12" fill="rgb(106,113,128)">{}</text>"#,
        esc(title),
        esc(title)
    );
    for (i, (name, b, c)) in rows.iter().enumerate() {
        let gx = 40.0 + group_w * i as f64;
        for (k, (v, color)) in [(b, BASE), (c, CAND)].into_iter().enumerate() {
            let v = v.unwrap_or(0.0).clamp(0.0, 1.0);
            let bh = plot_h * v;
            let x = gx + 20.0 + 46.0 * k as f64;
            let y = 24.0 + plot_h - bh;
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{y:.1}" width="40" height="{bh:.1}" fill="{color}"/><text x="{}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + 20.0,
                y - 3.0,
                pct(v)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            gx + 63.0,
            24.0 + plot_h + 16.0,
            esc(name)
        );
    }
    out.push_str("</svg>");
}

/// A score's histogram, baseline and candidate bars per bin.
fn histogram_svg(name: &str, base: Option<&[u64]>, cand: Option<&[u64]>, out: &mut String) {
    let bins = 10;
    let bin_w = 50.0;
    let plot_h = 110.0;
    let w = 30.0 + bin_w * bins as f64;
    let h = plot_h + 50.0;
    let max = base
        .into_iter()
        .chain(cand)
        .flat_map(|h| h.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let _ = write!(
        out,
        r#"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><text x="8" y="14" font-size="12" fill="rgb(106,113,128)">{}</text>"#,
        esc(name),
        esc(name)
    );
    for i in 0..bins {
        let gx = 30.0 + bin_w * i as f64;
        for (k, (hist, color)) in [(base, BASE), (cand, CAND)].into_iter().enumerate() {
            let Some(hist) = hist else { continue };
            let v = hist.get(i).copied().unwrap_or(0);
            let bh = plot_h * v as f64 / max;
            let _ = write!(
                out,
                r#"<rect x="{}" y="{:.1}" width="20" height="{bh:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                gx + 4.0 + 21.0 * k as f64,
                20.0 + plot_h - bh,
                if k == 0 { "baseline" } else { "candidate" },
                count(v)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{:.1}</text>"#,
            gx + 25.0,
            20.0 + plot_h + 14.0,
            i as f64 / 10.0
        );
    }
    out.push_str("</svg>");
}

fn legend(out: &mut String) {
    let _ = write!(
        out,
        r#"<div class="legend"><span><i class="sw" style="background:{BASE}"></i>baseline</span><span><i class="sw" style="background:{CAND}"></i>candidate</span></div>"#
    );
}

fn status_name(s: RuleStatus) -> &'static str {
    match s {
        RuleStatus::Unchanged => "unchanged",
        RuleStatus::Changed => "changed",
        RuleStatus::Added => "added",
        RuleStatus::Removed => "removed",
        RuleStatus::Unknown => "unknown",
    }
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(32 << 10);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(
        o,
        "<title>Verdict backtest: {} events</title><style>{STYLE}</style></head><body><main>",
        count(r.events)
    );
    let _ = write!(o, "<h1>Backtest of {} events</h1>", count(r.events));
    if r.complete {
        o.push_str(r#"<p class="ok">Complete: every event of the history was compared.</p>"#);
    } else {
        let _ = write!(
            o,
            r#"<div class="banner">INCOMPLETE: {}. The figures cover only the {} events compared.</div>"#,
            esc(r.incomplete.as_deref().unwrap_or("the pass stopped early")),
            count(r.events)
        );
    }
    o.push_str(r#"<table class="meta">"#);
    let _ = write!(
        o,
        "<tr><td>history</td><td><code>{}</code></td></tr>",
        esc(&r.history)
    );
    if r.from.is_some() || r.to.is_some() {
        let _ = write!(
            o,
            "<tr><td>range</td><td>{} … {}</td></tr>",
            esc(r.from.as_deref().unwrap_or("start")),
            esc(r.to.as_deref().unwrap_or("end"))
        );
    }
    if let (Some(a), Some(b)) = (&r.first_event_at, &r.last_event_at) {
        let _ = write!(
            o,
            "<tr><td>events</td><td>{} … {}</td></tr>",
            esc(a),
            esc(b)
        );
    }
    let _ = write!(
        o,
        "<tr><td>baseline</td><td>{}</td></tr>",
        side_text(&r.baseline)
    );
    let _ = write!(
        o,
        "<tr><td>candidate</td><td>{}</td></tr>",
        side_text(&r.candidate)
    );
    for n in &r.not_compared {
        let _ = write!(
            o,
            "<tr><td>not compared</td><td>{} events: {}</td></tr>",
            count(n.events),
            esc(&n.reason)
        );
    }
    o.push_str("</table>");

    let _ = write!(
        o,
        "<h2>Outcomes</h2><p>{} events change outcome ({}). Rows: baseline; columns: candidate.</p>",
        count(r.changed.events),
        pct(r.changed.share)
    );
    matrix_svg(r, &mut o);
    o.push_str(r#"<table><tr><th class="l">baseline \ candidate</th><th>approve</th><th>review</th><th>deny</th></tr>"#);
    for b in Action::ALL {
        let _ = write!(o, r#"<tr><th class="l">{b}</th>"#);
        for c in Action::ALL {
            let cell = r.cell(b, c);
            let amount = cell
                .amount
                .map(|a| format!("<br><span class=\"muted\">{}</span>", money(a)))
                .unwrap_or_default();
            let _ = write!(
                o,
                "<td>{} ({}){amount}</td>",
                count(cell.events),
                pct(cell.share)
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");

    o.push_str("<h2>Rules</h2>");
    let c = &r.rule_changes;
    if c.unknown {
        o.push_str("<p class=\"muted\">One side's rule set is not known, so rules are not said to be added, removed or changed.</p>");
    } else {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.iter()
                    .map(|s| format!("<code>{}</code>", esc(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = write!(
            o,
            "<p>Added: {}. Removed: {}. Changed: {}. Unchanged: {}.</p>",
            list(&c.added),
            list(&c.removed),
            list(&c.changed),
            count(c.unchanged)
        );
    }
    let mut charted: Vec<&RuleReport> = r
        .rules
        .iter()
        .filter(|x| x.baseline.hits + x.candidate.hits > 0 || x.status != RuleStatus::Unchanged)
        .collect();
    if !charted.is_empty() {
        // The chart shows the 40 rules with the most hits, by name among
        // equals; the table below lists them all.
        charted.sort_by(|a, b| {
            b.baseline
                .hits
                .max(b.candidate.hits)
                .cmp(&a.baseline.hits.max(a.candidate.hits))
                .then(a.rule.cmp(&b.rule))
        });
        charted.truncate(40);
        legend(&mut o);
        rules_svg(&charted, &mut o);
    }
    o.push_str(r#"<table><tr><th class="l">rule</th><th class="l">status</th><th>hits base</th><th>hits cand</th><th>shadow base</th><th>shadow cand</th><th>alone base</th><th>alone cand</th><th>moved in</th><th>moved out</th></tr>"#);
    for x in &r.rules {
        let _ = write!(
            o,
            r#"<tr><td class="l"><code>{}</code></td><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&x.rule),
            status_name(x.status),
            count(x.baseline.hits),
            count(x.candidate.hits),
            count(x.baseline.shadow_hits),
            count(x.candidate.shadow_hits),
            count(x.baseline.decided_alone),
            count(x.candidate.decided_alone),
            count(x.moved_in),
            count(x.moved_out)
        );
    }
    o.push_str("</table><p class=\"muted\">alone: events whose outcome the rule alone gave (without it the outcome would differ). moved in / out: changed events the rule alone decided in the candidate / in the baseline.</p>");

    if let Some(l) = &r.labels {
        let _ = write!(
            o,
            "<h2>Against the labels</h2><p>{}. {} labelled ({} fraud, {} legitimate), {} unlabelled.</p>",
            esc(&l.source),
            count(l.labelled),
            count(l.fraud),
            count(l.legit),
            count(l.unlabelled)
        );
        legend(&mut o);
        let rows = |f: fn(&crate::report::LabelMetrics) -> Option<f64>| -> Vec<(String, Option<f64>, Option<f64>)> {
            l.baseline
                .iter()
                .zip(&l.candidate)
                .filter(|(b, _)| b.outcome != "approve")
                .map(|(b, c)| (b.outcome.clone(), f(b), f(c)))
                .collect()
        };
        rates_svg("catch rate", &rows(|m| m.catch_rate), &mut o);
        rates_svg(
            "false-positive rate",
            &rows(|m| m.false_positive_rate),
            &mut o,
        );
        o.push_str(r#"<table><tr><th class="l">outcome</th><th>catch base</th><th>catch cand</th><th>fp rate base</th><th>fp rate cand</th><th>precision base</th><th>precision cand</th></tr>"#);
        for (b, c) in l
            .baseline
            .iter()
            .zip(&l.candidate)
            .filter(|(b, _)| b.outcome != "approve")
        {
            let _ = write!(
                o,
                r#"<tr><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&b.outcome),
                opt_pct(b.catch_rate),
                opt_pct(c.catch_rate),
                opt_pct(b.false_positive_rate),
                opt_pct(c.false_positive_rate),
                opt_pct(b.precision),
                opt_pct(c.precision)
            );
        }
        o.push_str("</table>");
        let approved = |v: &[crate::report::LabelMetrics]| {
            v.iter()
                .find(|m| m.outcome == "approve")
                .map_or(0, |m| m.fraud)
        };
        let _ = write!(
            o,
            "<p>Fraud approved: baseline {}, candidate {} (of {}).</p>",
            count(approved(&l.baseline)),
            count(approved(&l.candidate)),
            count(l.fraud)
        );
    }

    if let Some(m) = &r.money {
        let _ = write!(
            o,
            "<h2>Money</h2><p>Field <code>{}</code>: {} over {} events.</p><table><tr><th class=\"l\"></th><th>events</th><th>amount</th></tr><tr><td class=\"l\">newly denied</td><td>{}</td><td>{}</td></tr><tr><td class=\"l\">newly approved</td><td>{}</td><td>{}</td></tr></table>",
            esc(&m.field),
            money(m.total),
            count(m.events_with_amount),
            count(m.newly_denied.events),
            money(m.newly_denied.amount),
            count(m.newly_approved.events),
            money(m.newly_approved.amount)
        );
    }

    if !r.scores.is_empty() {
        o.push_str("<h2>Scores</h2>");
        legend(&mut o);
        let mut names: Vec<&str> = r.scores.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let of = |side: &str| r.scores.iter().find(|s| s.side == side && s.name == name);
            let (b, c) = (of("baseline"), of("candidate"));
            histogram_svg(
                name,
                b.map(|s| s.histogram.as_slice()),
                c.map(|s| s.histogram.as_slice()),
                &mut o,
            );
            let mean = |s: Option<&crate::report::ScoreReport>| {
                s.and_then(|s| s.mean)
                    .map_or_else(|| "–".to_owned(), |m| format!("{m:.4}"))
            };
            let _ = write!(
                o,
                "<p>mean: baseline {}, candidate {}</p>",
                mean(b),
                mean(c)
            );
        }
    }

    if !r.samples.cells.is_empty() {
        let _ = write!(
            o,
            "<h2>Samples</h2><p class=\"muted\">Up to {} events per changed cell, chosen by seed {}.</p>",
            r.samples.per_cell, r.samples.seed
        );
        for cell in &r.samples.cells {
            let _ = write!(
                o,
                "<h3>{} → {} <span class=\"muted\">({} events)</span></h3>",
                cell.baseline,
                cell.candidate,
                count(cell.total)
            );
            o.push_str(r#"<table><tr><th class="l">event</th><th class="l">time</th><th>amount</th><th class="l">label</th><th class="l">baseline rule</th><th class="l">candidate rule</th><th class="l">hits that differ</th></tr>"#);
            for e in &cell.events {
                let diff: Vec<String> = e
                    .only_candidate
                    .iter()
                    .map(|h| ('+', h))
                    .chain(e.only_baseline.iter().map(|h| ('−', h)))
                    .map(|(s, h)| {
                        format!(
                            "{s}<code>{}</code>{} ({})",
                            esc(&h.rule),
                            if h.shadow { " shadow" } else { "" },
                            h.action
                        )
                    })
                    .collect();
                let _ = write!(
                    o,
                    r#"<tr><td class="l"><code>{}</code></td><td class="l">{}</td><td>{}</td><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td></tr>"#,
                    esc(&e.event_id),
                    esc(&e.timestamp),
                    e.amount.map(money).unwrap_or_default(),
                    match e.fraud {
                        Some(true) => "fraud",
                        Some(false) => "legit",
                        None => "",
                    },
                    e.baseline_rule.as_deref().map(esc).unwrap_or_default(),
                    e.candidate_rule.as_deref().map(esc).unwrap_or_default(),
                    diff.join(" ")
                );
            }
            o.push_str("</table>");
        }
    }
    o.push_str("</main></body></html>\n");
    o
}
