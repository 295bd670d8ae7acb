// The history of deployed versions, the diff between any two, and restore.
import { api, can, SessionInfo } from "../api";
import { badge, diffView, h, put } from "../dom";

export async function historyPage(root: HTMLElement, s: SessionInfo): Promise<void> {
  const { versions } = await api.versions();
  const message = h("p", { id: "history-message" });
  const from = h("select", { id: "diff-from" });
  const to = h("select", { id: "diff-to" });
  from.append(h("option", { value: "0" }, "(empty)"));
  for (const v of versions) {
    from.append(h("option", { value: String(v.number) }, `version ${v.number}`));
    to.append(h("option", { value: String(v.number) }, `version ${v.number}`));
  }
  if (versions.length > 1) from.value = String(versions[1].number);
  const out = h("div", { id: "diff-output" });
  const show = async () => {
    const d = await api.diff(Number(from.value), Number(to.value));
    out.replaceChildren(diffView(d.diff));
  };
  put(root, 
    h("h2", {}, "Deployed versions"),
    message,
    h(
      "table",
      { id: "versions" },
      h(
        "thead",
        {},
        h("tr", {}, ["#", "Version", "Published", "Proposed", "Approved", "Deployed", "Note", ""].map((c) => h("th", {}, c))),
      ),
      h(
        "tbody",
        {},
        versions.map((v) =>
          h(
            "tr",
            { id: `version-${v.number}` },
            h("td", { class: "num" }, v.number, v.serving ? badge("serving", "approve") : null),
            h("td", {}, h("code", {}, v.version)),
            h("td", { class: "muted" }, v.published_at),
            h("td", {}, v.proposed_by),
            h("td", {}, v.approved_by),
            h("td", {}, v.deployed_by),
            h("td", {}, v.note, v.restores ? ` (restores ${v.restores})` : ""),
            h(
              "td",
              {},
              can(s, "analyst") && !v.serving && s.writable
                ? h(
                    "button",
                    {
                      class: "secondary",
                      id: `restore-${v.number}`,
                      onclick: async () => {
                        try {
                          const p = await api.restore(v.number, "");
                          message.className = "ok";
                          message.textContent = `Proposal ${p.id} restores version ${v.number}: it deploys once another approver approves it.`;
                        } catch (e) {
                          message.className = "error";
                          message.textContent = e instanceof Error ? e.message : String(e);
                        }
                      },
                    },
                    "Restore",
                  )
                : null,
            ),
          ),
        ),
      ),
    ),
    h("h3", {}, "Diff"),
    h("div", { class: "row" }, "From ", from, " to ", to, h("button", { id: "diff-show", onclick: show }, "Show diff")),
    out,
  );
  if (versions.length) await show();
}
