// The serving rule set: its version, files, lists, and each rule's hits.
import { api, SessionInfo } from "../api";
import { h, pct, put } from "../dom";

export async function servingPage(root: HTMLElement, _s: SessionInfo): Promise<void> {
  const s = await api.serving();
  const v = s.version;
  put(root, 
    h("h2", {}, "Serving rule set"),
    v
      ? h(
          "div",
          { class: "card", id: "serving-version" },
          h("div", { class: "big" }, `Version ${v.number}`, " ", h("code", {}, v.version)),
          h(
            "p",
            { class: "muted" },
            `Published ${v.published_at}`,
            v.proposed_by ? ` · proposed by ${v.proposed_by}, approved by ${v.approved_by}, deployed by ${v.deployed_by}` : "",
            v.restores ? ` · restores version ${v.restores}` : "",
          ),
          v.note ? h("p", {}, v.note) : null,
          h("p", { class: "muted" }, `Engine serves ${s.engine_version || "–"} · versions live in ${s.store}`),
        )
      : h("p", { class: "card" }, "No version serves yet."),
    s.refused.length
      ? h(
          "div",
          { class: "card error" },
          h("strong", {}, "Refused versions (they did not check; the one above keeps serving): "),
          s.refused.map((r) => `${r.number} `),
        )
      : null,
    h("h3", {}, `Rules · ${s.events_hour} events in the last hour, ${s.events_day} in the last day`),
    h(
      "table",
      { id: "serving-rules" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Rule", "File", "Action", "Priority", "Hits 1 h", "Rate 1 h", "Hits 24 h", "Rate 24 h"].map((c) => h("th", {}, c)),
        ),
      ),
      h(
        "tbody",
        {},
        s.rules.map((r) =>
          h(
            "tr",
            { title: r.text },
            h("td", {}, h("code", {}, r.name), r.shadow ? h("span", { class: "badge" }, "shadow") : null),
            h("td", { class: "muted" }, `${r.file}:${r.line}`),
            h("td", {}, h("span", { class: `badge ${r.action}` }, r.action)),
            h("td", { class: "num" }, r.priority),
            h("td", { class: "num" }, r.hits_hour),
            h("td", { class: "num" }, pct(r.rate_hour)),
            h("td", { class: "num" }, r.hits_day),
            h("td", { class: "num" }, pct(r.rate_day)),
          ),
        ),
      ),
    ),
    h("h3", {}, "Lists"),
    h(
      "table",
      { id: "serving-lists" },
      h("thead", {}, h("tr", {}, ["List", "Declared in", "From", "Entries"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        s.lists.map((l) =>
          h(
            "tr",
            {},
            h("td", {}, h("code", {}, l.name)),
            h("td", { class: "muted" }, `${l.file}:${l.line}`),
            h("td", {}, l.from ?? "inline"),
            h("td", { class: "num" }, l.entries),
          ),
        ),
      ),
    ),
    h("h3", {}, "Files"),
    ...Object.entries(s.files).map(([name, text]) =>
      h("details", {}, h("summary", {}, h("code", {}, name)), h("pre", { class: "file" }, text)),
    ),
  );
}
