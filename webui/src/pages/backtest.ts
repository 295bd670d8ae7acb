// The backtest report: the matrix, per-rule deltas, label metrics, money
// and sample events, rendered from the typed BacktestReport.
import type { BacktestReport, Outcome } from "../api";
import { h, money, pct } from "../dom";

const OUTCOMES: Outcome[] = ["approve", "review", "deny"];

export function renderBacktest(r: BacktestReport): HTMLElement {
  const cell = (b: Outcome, c: Outcome) => r.matrix.find((m) => m.baseline === b && m.candidate === c);
  const moved = r.matrix.filter((m) => m.baseline !== m.candidate).reduce((n, m) => n + m.count, 0);
  return h(
    "div",
    { id: "backtest-report" },
    h("h3", {}, `Backtest: ${r.events} events, ${moved} decisions change`),
    h("p", { class: "muted" }, `${r.history} · baseline ${r.baseline_version} → candidate ${r.candidate_version}`),
    h(
      "table",
      { id: "backtest-matrix", class: "matrix" },
      h("thead", {}, h("tr", {}, h("th", {}, "baseline ↓ / candidate →"), OUTCOMES.map((o) => h("th", {}, o)))),
      h(
        "tbody",
        {},
        OUTCOMES.map((b) =>
          h(
            "tr",
            {},
            h("th", {}, b),
            OUTCOMES.map((c) => {
              const m = cell(b, c);
              return h(
                "td",
                { class: b === c ? "same num" : m && m.count > 0 ? "moved num" : "num" },
                m ? `${m.count}` : "0",
                h("div", { class: "muted small" }, pct(m?.share ?? 0)),
              );
            }),
          ),
        ),
      ),
    ),
    h("h3", {}, "Per rule"),
    h(
      "table",
      { id: "backtest-rules" },
      h("thead", {}, h("tr", {}, ["Rule", "Change", "Baseline hits", "Candidate hits", "Δ", "Alone moved"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        r.rules
          .filter((x) => x.status !== "same" || x.baseline_hits !== x.candidate_hits || x.baseline_hits > 0)
          .map((x) =>
            h(
              "tr",
              { class: x.status },
              h("td", {}, h("code", {}, x.rule)),
              h("td", {}, x.status === "same" ? "" : h("span", { class: `badge ${x.status}` }, x.status)),
              h("td", { class: "num" }, x.baseline_hits),
              h("td", { class: "num" }, x.candidate_hits),
              h("td", { class: "num" }, x.candidate_hits - x.baseline_hits),
              h("td", { class: "num" }, x.unique_contribution),
            ),
          ),
      ),
    ),
    r.labels
      ? h(
          "div",
          {},
          h("h3", {}, `Against the label \`${r.labels.field}\` (${r.labels.positives} positives)`),
          h(
            "table",
            { id: "backtest-labels" },
            h(
              "thead",
              {},
              h("tr", {}, ["Outcome", "Catch rate", "False-positive rate", "Precision"].map((c) => h("th", {}, c))),
            ),
            h(
              "tbody",
              {},
              r.labels.outcomes.map((o) =>
                h(
                  "tr",
                  {},
                  h("td", {}, o.outcome),
                  h("td", { class: "num" }, `${pct(o.baseline.catch_rate)} → ${pct(o.candidate.catch_rate)}`),
                  h("td", { class: "num" }, `${pct(o.baseline.false_positive_rate)} → ${pct(o.candidate.false_positive_rate)}`),
                  h("td", { class: "num" }, `${pct(o.baseline.precision)} → ${pct(o.candidate.precision)}`),
                ),
              ),
            ),
          ),
        )
      : null,
    r.money
      ? h(
          "p",
          { id: "backtest-money" },
          `Money (${r.money.field}): ${money(r.money.newly_denied)} newly denied, ${money(r.money.newly_approved)} newly approved.`,
        )
      : null,
    h("h3", {}, "Sample events"),
    r.samples.length === 0
      ? h("p", { class: "muted" }, "No decision changes.")
      : h(
          "div",
          { id: "backtest-samples" },
          r.samples.map((s) =>
            h(
              "details",
              {},
              h("summary", {}, `${s.baseline} → ${s.candidate} (${s.events.length} shown)`),
              h(
                "table",
                {},
                h("thead", {}, h("tr", {}, ["Event", "Baseline hits", "Candidate hits"].map((c) => h("th", {}, c)))),
                h(
                  "tbody",
                  {},
                  s.events.map((e) =>
                    h(
                      "tr",
                      {},
                      h("td", {}, h("code", {}, e.event_id)),
                      h("td", {}, e.baseline_hits.join(", ")),
                      h("td", {}, e.candidate_hits.join(", ")),
                    ),
                  ),
                ),
              ),
            ),
          ),
        ),
  );
}
