// Proposals: approve or reject others' changes; deploy approved ones.
import { api, can, Proposal, SessionInfo } from "../api";
import { badge, diffView, h, put } from "../dom";

export async function proposalsPage(root: HTMLElement, s: SessionInfo): Promise<void> {
  const { proposals, serving } = await api.proposals();
  const message = h("p", { id: "proposals-message" });
  const act = async (what: () => Promise<unknown>, done: string) => {
    try {
      await what();
      message.className = "ok";
      message.textContent = done;
      const fresh = h("main", { id: "page-proposals" });
      root.replaceWith(fresh);
      await proposalsPage(fresh, s);
      fresh.querySelector("#proposals-message")!.textContent = done;
      fresh.querySelector("#proposals-message")!.className = "ok";
    } catch (e) {
      message.className = "error";
      message.textContent = e instanceof Error ? e.message : String(e);
    }
  };
  const buttons = (p: Proposal) => {
    const out: HTMLElement[] = [];
    if (p.status.state === "proposed" && can(s, "approver")) {
      if (p.proposed_by === s.user) {
        out.push(h("span", { class: "muted" }, "Yours: another approver must approve it."));
      } else {
        out.push(
          h(
            "button",
            { id: `approve-${p.id}`, class: "primary", onclick: () => act(() => api.approve(p.id), `Proposal ${p.id} approved.`) },
            "Approve",
          ),
        );
      }
      out.push(
        h(
          "button",
          {
            id: `reject-${p.id}`,
            class: "secondary",
            onclick: () => act(() => api.reject(p.id, prompt("Why?") ?? ""), `Proposal ${p.id} rejected.`),
          },
          "Reject",
        ),
      );
    }
    if (p.status.state === "approved" && can(s, "analyst")) {
      out.push(
        h(
          "button",
          {
            id: `deploy-${p.id}`,
            class: "primary",
            onclick: () =>
              act(async () => {
                const r = await api.deploy(p.id);
                if (!r.serving) throw new Error(`Version ${r.number} was published but does not serve here`);
              }, `Proposal ${p.id} deployed: every instance now serves it.`),
          },
          "Deploy",
        ),
      );
    }
    return out;
  };
  const state = (p: Proposal) => {
    switch (p.status.state) {
      case "proposed":
        return badge("proposed", "review");
      case "approved":
        return h("span", {}, badge("approved", "approve"), ` by ${p.status.by}`);
      case "rejected":
        return h("span", {}, badge("rejected", "deny"), ` by ${p.status.by} ${p.status.note}`);
      case "deployed":
        return h("span", {}, badge(`deployed as version ${p.status.number}`, "approve"), ` by ${p.status.by}`);
    }
  };
  put(root, 
    h("h2", {}, "Proposals"),
    h("p", { class: "muted" }, `Version ${serving} serves.`),
    message,
    proposals.length === 0 ? h("p", { class: "muted" }, "No proposals.") : null,
    ...proposals.map((p) =>
      h(
        "div",
        { class: "card", id: `proposal-${p.id}` },
        h(
          "div",
          { class: "row" },
          h("strong", {}, `Proposal ${p.id}`),
          state(p),
          h("span", { class: "muted" }, `by ${p.proposed_by} at ${p.proposed_at}, on version ${p.base}`),
          p.restores ? badge(`restores version ${p.restores}`) : null,
          h("span", { class: "spacer" }),
          ...buttons(p),
        ),
        p.note ? h("p", {}, p.note) : null,
        h("details", { open: p.status.state === "proposed" }, h("summary", {}, "Diff against its base"), diffView(p.diff ?? "")),
      ),
    ),
  );
}
