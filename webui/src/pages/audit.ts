// The audit log: every action, newest first, and its export.
import { api, can, SessionInfo } from "../api";
import { diffView, h, put } from "../dom";

export async function auditPage(root: HTMLElement, s: SessionInfo): Promise<void> {
  const { entries } = await api.audit();
  put(root, 
    h(
      "h2",
      {},
      "Audit log ",
      can(s, "admin")
        ? h("a", { href: "/workbench/api/audit/export", id: "audit-export", class: "button secondary", download: "verdict-audit.jsonl" }, "Export JSON lines")
        : null,
    ),
    h(
      "table",
      { id: "audit" },
      h("thead", {}, h("tr", {}, ["#", "When", "Who", "What", "On", "Diff"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        entries.map((e) =>
          h(
            "tr",
            {},
            h("td", { class: "num" }, e.seq),
            h("td", { class: "muted" }, e.at),
            h("td", {}, e.user),
            h("td", {}, h("span", { class: "badge" }, e.action.replace(/_/g, " "))),
            h("td", {}, e.subject),
            h("td", {}, e.diff ? h("details", {}, h("summary", {}, "diff"), diffView(e.diff)) : ""),
          ),
        ),
      ),
    ),
  );
}
