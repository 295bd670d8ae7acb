// The rule editor: CodeMirror 6 with the rules language's highlighting,
// completion from the engine's catalogue, and the checker's diagnostics
// inline. Diagnostics come from POST /api/check — the same checker as
// `verdict rules check` — never from code in the browser.

import { EditorState, Extension } from "@codemirror/state";
import {
  EditorView,
  drawSelection,
  highlightActiveLine,
  highlightActiveLineGutter,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import {
  HighlightStyle,
  StreamLanguage,
  StringStream,
  syntaxHighlighting,
} from "@codemirror/language";
import { tags } from "@lezer/highlight";
import {
  autocompletion,
  completionKeymap,
  Completion,
  CompletionContext,
  CompletionResult,
} from "@codemirror/autocomplete";
import { Diagnostic as CmDiagnostic, linter, lintGutter } from "@codemirror/lint";
import type { Catalogue, Diagnostic } from "./api";

const KEYWORDS = new Set([
  "rule", "list", "from", "priority", "shadow", "if", "reason", "and", "or", "not", "in",
]);
const ACTIONS = new Set(["approve", "review", "deny"]);
const CONSTANTS = new Set(["true", "false"]);

/** A tokenizer of the rules language (docs/rules-dsl.md), for colour only. */
const rulesLanguage = StreamLanguage.define<{ afterRule: boolean }>({
  name: "verdict-rules",
  startState: () => ({ afterRule: false }),
  token(stream: StringStream, state) {
    if (stream.eatSpace()) return null;
    if (stream.match("#")) {
      stream.skipToEnd();
      return "comment";
    }
    if (stream.match(/^"(?:[^"\\]|\\.)*"?/)) return "string";
    if (stream.match(/^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?/)) return "number";
    if (stream.match(/^(?:event|feature|model)(?:\.[A-Za-z_][\w]*)+/)) return "variableName.special";
    const word = stream.match(/^[A-Za-z_]\w*/);
    if (word) {
      const w = (word as RegExpMatchArray)[0];
      if (state.afterRule) {
        state.afterRule = false;
        return "definition";
      }
      if (w === "rule" || w === "list") {
        state.afterRule = true;
        return "keyword";
      }
      if (KEYWORDS.has(w)) return "keyword";
      if (ACTIONS.has(w)) return "controlKeyword";
      if (CONSTANTS.has(w)) return "bool";
      if (stream.peek() === "(") return "function";
      return "variableName";
    }
    if (stream.match(/^(?:==|!=|<=|>=|[<>+\-*/=])/)) return "operator";
    stream.next();
    return "punctuation";
  },
  languageData: { commentTokens: { line: "#" } },
});

const highlight = HighlightStyle.define([
  { tag: tags.comment, color: "#6a737d", fontStyle: "italic" },
  { tag: tags.keyword, color: "#8250df", fontWeight: "600" },
  { tag: tags.controlKeyword, color: "#cf222e", fontWeight: "600" },
  { tag: tags.string, color: "#0a3069" },
  { tag: tags.number, color: "#0550ae" },
  { tag: tags.bool, color: "#0550ae" },
  { tag: tags.special(tags.variableName), color: "#116329" },
  { tag: tags.definition(tags.variableName), color: "#953800", fontWeight: "600" },
  { tag: tags.function(tags.variableName), color: "#6639ba" },
  { tag: tags.operator, color: "#57606a" },
]);

/** The names of the lists the draft's rule files declare. */
export function listNames(files: Record<string, string>): string[] {
  const out = new Set<string>();
  for (const [name, text] of Object.entries(files)) {
    if (!name.endsWith(".rules")) continue;
    for (const m of text.matchAll(/^\s*list\s+([A-Za-z_]\w*)/gm)) out.add(m[1]);
  }
  return [...out].sort();
}

function completer(catalogue: () => Catalogue, lists: () => string[]) {
  return (ctx: CompletionContext): CompletionResult | null => {
    const line = ctx.state.doc.lineAt(ctx.pos);
    const before = line.text.slice(0, ctx.pos - line.from);
    // Nothing inside a string or a comment.
    const quotes = (before.replace(/\\./g, "").match(/"/g) ?? []).length;
    if (quotes % 2 === 1 || before.includes("#")) return null;
    const word = ctx.matchBefore(/[A-Za-z_][\w.]*/);
    if (!word || (word.from === word.to && !ctx.explicit)) return null;
    const cat = catalogue();
    const text = word.text;
    let options: Completion[];
    if (/^(event|feature|model)\./.test(text)) {
      options = cat.names.map((n) => ({ label: n.path, type: "variable", detail: n.type }));
    } else {
      options = [
        ...["event.", "feature.", "model."].map((p) => ({ label: p, type: "namespace" })),
        ...cat.functions.map((f) => ({ label: f, type: "function", apply: `${f}(` })),
        ...lists().map((l) => ({ label: l, type: "constant", detail: "list" })),
        ...cat.keywords.filter((k) => k !== "event").map((k) => ({ label: k, type: "keyword" })),
      ];
    }
    return { from: word.from, options, validFor: /^[\w.]*$/ };
  };
}

/** Maps the checker's 1-based line and column to a range of this document. */
export function toCm(doc: EditorState["doc"], d: Diagnostic): CmDiagnostic {
  const line = doc.line(Math.min(Math.max(d.line, 1), doc.lines));
  const from = Math.min(line.from + Math.max(d.column - 1, 0), line.to);
  const to = Math.min(from + Math.max(d.width, 1), line.to);
  return {
    from,
    to: Math.max(to, from),
    severity: "error",
    message: d.help ? `${d.message}\nhelp: ${d.help}` : d.message,
  };
}

export interface EditorOptions {
  doc: string;
  catalogue: () => Catalogue;
  lists: () => string[];
  /** Checks the draft with this file's text; answers its diagnostics. */
  check: (text: string) => Promise<Diagnostic[]>;
  onChange: (text: string) => void;
  readOnly?: boolean;
}

export function createEditor(parent: HTMLElement, o: EditorOptions): EditorView {
  const extensions: Extension[] = [
    lineNumbers(),
    highlightActiveLineGutter(),
    history(),
    drawSelection(),
    highlightActiveLine(),
    rulesLanguage,
    syntaxHighlighting(highlight),
    autocompletion({ override: [completer(o.catalogue, o.lists)] }),
    lintGutter(),
    linter(
      async (view) => {
        const diags = await o.check(view.state.doc.toString());
        return diags.filter((d) => d.line > 0).map((d) => toCm(view.state.doc, d));
      },
      { delay: 350 },
    ),
    keymap.of([...completionKeymap, ...defaultKeymap, ...historyKeymap]),
    EditorView.updateListener.of((u) => {
      if (u.docChanged) o.onChange(u.state.doc.toString());
    }),
    EditorState.readOnly.of(o.readOnly ?? false),
    EditorView.theme({
      "&": { height: "100%", fontSize: "14px" },
      ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, monospace" },
    }),
  ];
  return new EditorView({ parent, state: EditorState.create({ doc: o.doc, extensions }) });
}
