//! The report as aligned plain-text tables for a terminal.

use std::fmt::Write;

use verdict_core::Action;

use super::{count, money, opt_pct, pct};
use crate::input::RuleStatus;
use crate::report::Report;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart.
struct Table {
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(align: &[Align]) -> Table {
        Table {
            align: align.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    fn write(&self, out: &mut String, indent: &str) {
        let n = self.align.len();
        let mut width = vec![0usize; n];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        for r in &self.rows {
            let mut line = String::from(indent);
            for (i, c) in r.iter().enumerate().take(n) {
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                match self.align[i] {
                    Align::Left => {
                        line.push_str(c);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(c);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

fn side_line(s: &crate::report::SideSummary) -> String {
    let mut v = s.name.clone();
    if let Some(r) = &s.ruleset_version {
        let _ = write!(v, "  rules {r}");
    }
    if let Some(m) = &s.model_version {
        let _ = write!(v, "  model {m}");
    }
    v
}

/// The report as text: a header, the outcome matrix, the rules, the labels,
/// the money, the scores and the samples, each an aligned table.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let span = match (&r.first_event_at, &r.last_event_at) {
        (Some(a), Some(b)) => format!(", {a} … {b}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "Backtest of {} events{span}: {}",
        count(r.events),
        if r.complete { "complete" } else { "INCOMPLETE" }
    );
    if let Some(why) = &r.incomplete {
        let _ = writeln!(
            out,
            "  INCOMPLETE: {why}; the figures cover only the events compared."
        );
    }
    let mut t = Table::new(&[Align::Left, Align::Left]);
    t.row(["history", r.history.as_str()]);
    if r.from.is_some() || r.to.is_some() {
        t.row([
            "range".to_owned(),
            format!(
                "{} … {}",
                r.from.as_deref().unwrap_or("start"),
                r.to.as_deref().unwrap_or("end")
            ),
        ]);
    }
    t.row(["baseline".to_owned(), side_line(&r.baseline)]);
    t.row(["candidate".to_owned(), side_line(&r.candidate)]);
    for n in &r.not_compared {
        t.row([
            "not compared".to_owned(),
            format!("{} events: {}", count(n.events), n.reason),
        ]);
    }
    t.write(&mut out, "  ");

    out.push_str("\nOutcomes (rows: baseline, columns: candidate)\n");
    let mut t = Table::new(&[
        Align::Left,
        Align::Right,
        Align::Right,
        Align::Right,
        Align::Right,
    ]);
    t.row(["", "approve", "review", "deny", "total"]);
    for b in Action::ALL {
        let mut row = vec![b.as_str().to_owned()];
        let mut total = 0;
        for c in Action::ALL {
            let cell = r.cell(b, c);
            total += cell.events;
            row.push(format!("{} ({})", count(cell.events), pct(cell.share)));
        }
        row.push(count(total));
        t.row(row);
    }
    let cand = [r.candidate.approve, r.candidate.review, r.candidate.deny];
    let mut row = vec!["total".to_owned()];
    row.extend(cand.iter().map(|n| count(*n)));
    row.push(count(r.events));
    t.row(row);
    t.write(&mut out, "  ");
    let _ = writeln!(
        out,
        "  changed: {} events ({})",
        count(r.changed.events),
        pct(r.changed.share)
    );

    let c = &r.rule_changes;
    if c.unknown {
        out.push_str("\nRules (one side's rule set is not known: no added/removed/changed)\n");
    } else {
        let names = |v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!(" ({})", v.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "\nRules: {} added{}, {} removed{}, {} changed{}, {} unchanged",
            c.added.len(),
            names(&c.added),
            c.removed.len(),
            names(&c.removed),
            c.changed.len(),
            names(&c.changed),
            c.unchanged
        );
    }
    let active: Vec<_> = r
        .rules
        .iter()
        .filter(|x| {
            x.status != RuleStatus::Unchanged
                || x.baseline.hits
                    + x.candidate.hits
                    + x.baseline.shadow_hits
                    + x.candidate.shadow_hits
                    > 0
        })
        .collect();
    if !active.is_empty() {
        let mut t = Table::new(&[
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ]);
        t.row([
            "rule",
            "status",
            "hits base",
            "hits cand",
            "alone base",
            "alone cand",
            "moved in",
            "moved out",
        ]);
        for x in active {
            let hits = |s: &crate::report::RuleSide| {
                if s.shadow_hits > 0 {
                    format!("{} +{} shadow", count(s.hits), count(s.shadow_hits))
                } else {
                    count(s.hits)
                }
            };
            t.row([
                x.rule.clone(),
                serde_json::to_value(x.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                hits(&x.baseline),
                hits(&x.candidate),
                count(x.baseline.decided_alone),
                count(x.candidate.decided_alone),
                count(x.moved_in),
                count(x.moved_out),
            ]);
        }
        t.write(&mut out, "  ");
    }

    if let Some(l) = &r.labels {
        let _ = writeln!(out, "\nLabels: {}", l.source);
        let _ = writeln!(
            out,
            "  {} labelled ({} fraud, {} legitimate), {} unlabelled",
            count(l.labelled),
            count(l.fraud),
            count(l.legit),
            count(l.unlabelled)
        );
        let mut t = Table::new(
            &[Align::Left; 1]
                .iter()
                .copied()
                .chain([Align::Right; 6])
                .collect::<Vec<_>>(),
        );
        t.row([
            "",
            "catch base",
            "catch cand",
            "fp rate base",
            "fp rate cand",
            "precision base",
            "precision cand",
        ]);
        // The approve row's "catch rate" would be the fraud let through:
        // it is said below in those words instead.
        for (b, c) in l
            .baseline
            .iter()
            .zip(&l.candidate)
            .filter(|(b, _)| b.outcome != "approve")
        {
            t.row([
                b.outcome.clone(),
                opt_pct(b.catch_rate),
                opt_pct(c.catch_rate),
                opt_pct(b.false_positive_rate),
                opt_pct(c.false_positive_rate),
                opt_pct(b.precision),
                opt_pct(c.precision),
            ]);
        }
        t.write(&mut out, "  ");
        let approved = |v: &[crate::report::LabelMetrics]| {
            v.iter()
                .find(|m| m.outcome == "approve")
                .map_or(0, |m| m.fraud)
        };
        let _ = writeln!(
            out,
            "  fraud approved: baseline {}, candidate {} (of {})",
            count(approved(&l.baseline)),
            count(approved(&l.candidate)),
            count(l.fraud)
        );
    }

    if let Some(m) = &r.money {
        let _ = writeln!(
            out,
            "\nMoney (`{}`): {} over {} events",
            m.field,
            money(m.total),
            count(m.events_with_amount)
        );
        let mut t = Table::new(&[Align::Left, Align::Right, Align::Right]);
        t.row([
            "newly denied".to_owned(),
            format!("{} events", count(m.newly_denied.events)),
            money(m.newly_denied.amount),
        ]);
        t.row([
            "newly approved".to_owned(),
            format!("{} events", count(m.newly_approved.events)),
            money(m.newly_approved.amount),
        ]);
        t.write(&mut out, "  ");
    }

    if !r.scores.is_empty() {
        out.push_str("\nScores\n");
        let mut t = Table::new(&[Align::Left, Align::Left, Align::Right, Align::Right]);
        t.row(["side", "output", "events", "mean"]);
        for s in &r.scores {
            t.row([
                s.side.clone(),
                s.name.clone(),
                count(s.events),
                s.mean.map_or_else(|| "–".to_owned(), |m| format!("{m:.4}")),
            ]);
        }
        t.write(&mut out, "  ");
    }

    if !r.samples.cells.is_empty() {
        let _ = writeln!(
            out,
            "\nSamples (seed {}, up to {} per changed cell)",
            r.samples.seed, r.samples.per_cell
        );
        for cell in &r.samples.cells {
            let _ = writeln!(
                out,
                "  {} → {}: {} events",
                cell.baseline,
                cell.candidate,
                count(cell.total)
            );
            let mut t = Table::new(&[
                Align::Left,
                Align::Left,
                Align::Right,
                Align::Left,
                Align::Left,
            ]);
            for e in &cell.events {
                let hits = |sign: char, v: &[crate::report::SampleHit]| {
                    v.iter()
                        .map(|h| {
                            format!(
                                "{sign}{}{} ({})",
                                h.rule,
                                if h.shadow { " [shadow]" } else { "" },
                                h.action
                            )
                        })
                        .collect::<Vec<_>>()
                };
                let mut diff = hits('+', &e.only_candidate);
                diff.extend(hits('-', &e.only_baseline));
                t.row([
                    e.event_id.clone(),
                    e.timestamp.clone(),
                    e.amount.map(money).unwrap_or_default(),
                    match e.fraud {
                        Some(true) => "fraud".to_owned(),
                        Some(false) => "legit".to_owned(),
                        None => String::new(),
                    },
                    diff.join(" "),
                ]);
            }
            t.write(&mut out, "    ");
        }
    }
    out
}
