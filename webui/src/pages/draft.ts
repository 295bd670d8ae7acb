// The draft: its files in the rule editor, the checker's diagnostics as
// the analyst types, the test cases, the backtest, and the proposal.
import { EditorView } from "@codemirror/view";
import { api, ApiError, Catalogue, Diagnostic, Files, SessionInfo } from "../api";
import { createEditor, listNames } from "../editor";
import { h, put } from "../dom";
import { renderBacktest } from "./backtest";

export async function draftPage(root: HTMLElement, _s: SessionInfo): Promise<void> {
  const [draft, catalogue] = await Promise.all([api.draft(), api.catalogue()]);
  const files: Files = { ...draft.files };
  let current = Object.keys(files).find((f) => f.endsWith(".rules")) ?? "";
  let editor: EditorView | null = null;
  let dirty = false;

  const status = h("div", { id: "check-status", class: "status" }, "Not checked yet.");
  const diagList = h("div", { id: "diagnostics" });
  const fileList = h("ul", { class: "files", id: "file-list" });
  const editorBox = h("div", { class: "editor", id: "editor" });
  const saved = h("span", { id: "saved-state", class: "muted" }, draft.saved ? `Saved ${draft.saved_at}` : "Starts from the serving version");
  const results = h("div", { id: "results" });
  const note = h("input", { id: "propose-note", placeholder: "What the change does and why", size: "48" });
  const message = h("p", { id: "draft-message" });

  let lastCheck = 0;
  const showDiagnostics = (diags: Diagnostic[], ok: boolean, version?: string) => {
    status.className = ok ? "status ok" : "status error";
    status.textContent = ok
      ? `The draft checks · version ${version ?? ""}`
      : `${diags.length} error${diags.length === 1 ? "" : "s"}`;
    diagList.replaceChildren(
      ...diags.map((d) =>
        h(
          "pre",
          {
            class: "diagnostic",
            onclick: () => {
              if (d.file && d.file !== current && d.file in files) openFile(d.file);
            },
          },
          d.rendered,
        ),
      ),
    );
  };

  /** Checks the whole draft with `text` as the open file: every file's errors. */
  const check = async (text: string): Promise<Diagnostic[]> => {
    const seq = ++lastCheck;
    const all = { ...files, [current]: text };
    const r = await api.check(all);
    if (seq === lastCheck) showDiagnostics(r.diagnostics, r.ok, r.version);
    return r.diagnostics.filter((d) => d.file === current);
  };

  const openFile = (name: string) => {
    if (editor) files[current] = editor.state.doc.toString();
    current = name;
    editor?.destroy();
    editorBox.replaceChildren();
    editor = createEditor(editorBox, {
      doc: files[name] ?? "",
      catalogue: (): Catalogue => catalogue,
      lists: () => listNames(files),
      check,
      onChange: (text) => {
        files[current] = text;
        dirty = true;
        saved.textContent = "Unsaved changes";
      },
    });
    renderFiles();
  };

  const renderFiles = () => {
    fileList.replaceChildren(
      ...Object.keys(files)
        .sort()
        .map((f) =>
          h("li", {}, h("a", { href: "javascript:void 0", class: f === current ? "active" : "", "data-file": f, onclick: () => openFile(f) }, f)),
        ),
      h(
        "li",
        {},
        h(
          "button",
          {
            class: "secondary small",
            id: "new-file",
            onclick: () => {
              const name = prompt("File name (e.g. 70-new.rules, lists/x.txt, tests/x.toml)");
              if (!name) return;
              if (!(name in files)) files[name] = "";
              openFile(name);
            },
          },
          "+ file",
        ),
      ),
    );
  };

  const contents = (): Files => {
    if (editor) files[current] = editor.state.doc.toString();
    return { ...files };
  };

  const fail = (e: unknown) => {
    message.className = "error";
    message.textContent = e instanceof Error ? e.message : String(e);
    if (e instanceof ApiError && e.diagnostics.length) showDiagnostics(e.diagnostics, false);
  };

  const save = async () => {
    try {
      const r = await api.saveDraft(contents());
      dirty = false;
      saved.textContent = `Saved ${r.saved_at}`;
      message.className = "ok";
      message.textContent = "Draft saved.";
    } catch (e) {
      fail(e);
    }
  };

  const runTests = async () => {
    results.replaceChildren(h("p", { class: "muted" }, "Running the test cases…"));
    try {
      const r = await api.test(contents());
      results.replaceChildren(
        h("h3", {}, `Tests: ${r.passed} passed, ${r.failed} failed`),
        h(
          "table",
          { id: "test-results" },
          h("thead", {}, h("tr", {}, ["", "Case", "File", "What differed"].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            r.cases.map((c) =>
              h(
                "tr",
                { class: c.passed ? "pass" : "fail" },
                h("td", {}, h("span", { class: `badge ${c.passed ? "approve" : "deny"}` }, c.passed ? "PASS" : "FAIL")),
                h("td", {}, c.name),
                h("td", { class: "muted" }, c.file),
                h("td", {}, c.failure ? h("pre", {}, c.failure) : ""),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      results.replaceChildren();
      fail(e);
    }
  };

  const runBacktest = async () => {
    results.replaceChildren(h("p", { class: "muted" }, "Backtesting the draft…"));
    try {
      const r = await api.backtest(contents());
      results.replaceChildren(renderBacktest(r.report));
    } catch (e) {
      results.replaceChildren();
      fail(e);
    }
  };

  const propose = async () => {
    try {
      const files = contents();
      if (dirty) await save();
      const p = await api.propose(files, note.value);
      message.className = "ok";
      message.id = "draft-message";
      message.textContent = `Proposal ${p.id} is waiting for an approver.`;
    } catch (e) {
      fail(e);
    }
  };

  put(root, 
    h("h2", {}, "Draft", " ", saved),
    h(
      "div",
      { class: "toolbar" },
      h("button", { id: "save-draft", onclick: save }, "Save"),
      h("button", { id: "run-tests", onclick: runTests }, "Run tests"),
      h("button", { id: "run-backtest", onclick: runBacktest }, "Backtest"),
      note,
      h("button", { id: "propose", class: "primary", onclick: propose }, "Propose"),
    ),
    message,
    h("div", { class: "workspace" }, h("aside", {}, fileList), h("section", {}, editorBox, status, diagList)),
    results,
  );
  if (current) openFile(current);
  else renderFiles();
}
