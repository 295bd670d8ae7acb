// The workbench's HTTP API, typed. Every call goes to /workbench/api/ with
// the session cookie; calls that change something carry the session's
// CSRF token in X-CSRF-Token.

export type Role = "viewer" | "analyst" | "approver" | "admin";
export type Outcome = "approve" | "review" | "deny";
export type Files = Record<string, string>;

const ORDER: Role[] = ["viewer", "analyst", "approver", "admin"];
/** Whether a session's role is at least `r` (each role can do what the ones before it can). */
export const can = (s: SessionInfo, r: Role) => ORDER.indexOf(s.role) >= ORDER.indexOf(r);

export interface SessionInfo {
  user: string;
  role: Role;
  csrf: string;
  store: string;
  writable: boolean;
}

export interface CatalogueName {
  path: string;
  namespace: "event" | "feature" | "model";
  type: string;
}

export interface Catalogue {
  names: CatalogueName[];
  functions: string[];
  keywords: string[];
}

export interface Diagnostic {
  message: string;
  help: string | null;
  file: string | null;
  line: number;
  column: number;
  width: number;
  line_text: string;
  rendered: string;
}

export interface CheckResult {
  ok: boolean;
  version?: string;
  rules?: number;
  diagnostics: Diagnostic[];
}

export interface VersionSummary {
  number: number;
  version: string;
  proposed_by: string;
  approved_by: string;
  deployed_by: string;
  published_at: string;
  note: string;
  restores: number | null;
  serving?: boolean;
}

export interface Version extends VersionSummary {
  files: Files;
}

export interface Refusal {
  number: number;
  errors: Diagnostic[];
}

export interface RuleRow {
  name: string;
  file: string;
  line: number;
  action: Outcome;
  priority: number;
  shadow: boolean;
  reason: string | null;
  text: string;
  hits_hour: number;
  hits_day: number;
  rate_hour: number | null;
  rate_day: number | null;
}

export interface ListRow {
  name: string;
  file: string;
  line: number;
  from: string | null;
  entries: number;
}

export interface Serving {
  version: VersionSummary | null;
  engine_version: string;
  files: Files;
  rules: RuleRow[];
  lists: ListRow[];
  events_hour: number;
  events_day: number;
  store: string;
  refused: Refusal[];
}

export interface Draft {
  files: Files;
  saved_at: string | null;
  base: number;
  saved: boolean;
}

export interface CaseOutcome {
  file: string;
  name: string;
  passed: boolean;
  failure: string | null;
}

export interface TestResult {
  passed: number;
  failed: number;
  cases: CaseOutcome[];
}

/** The backtest report: baseline (what serves) against the candidate. */
export interface BacktestReport {
  history: string;
  events: number;
  seed: number;
  baseline_version: string;
  candidate_version: string;
  matrix: { baseline: Outcome; candidate: Outcome; count: number; share: number }[];
  rules: {
    rule: string;
    status: "added" | "removed" | "changed" | "same";
    baseline_hits: number;
    candidate_hits: number;
    unique_contribution: number;
  }[];
  labels: {
    field: string;
    positives: number;
    outcomes: {
      outcome: Outcome;
      baseline: Metrics;
      candidate: Metrics;
    }[];
  } | null;
  money: { field: string; newly_denied: number; newly_approved: number } | null;
  samples: {
    baseline: Outcome;
    candidate: Outcome;
    events: { event_id: string; baseline_hits: string[]; candidate_hits: string[] }[];
  }[];
}

export interface Metrics {
  catch_rate: number;
  false_positive_rate: number;
  precision: number | null;
}

export type Status =
  | { state: "proposed" }
  | { state: "approved"; by: string; at: string }
  | { state: "rejected"; by: string; at: string; note: string }
  | { state: "deployed"; by: string; at: string; number: number };

export interface Proposal {
  id: number;
  files: Files;
  version: string;
  base: number;
  proposed_by: string;
  proposed_at: string;
  note: string;
  restores: number | null;
  status: Status;
  diff?: string;
}

export interface AuditEntry {
  seq: number;
  at: string;
  user: string;
  action: string;
  subject: string;
  diff: string;
}

/** An answer other than 2xx, with the server's message. */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public diagnostics: Diagnostic[] = [],
  ) {
    super(message);
  }
}

let csrf = "";

export function setCsrf(token: string): void {
  csrf = token;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(`/workbench/api/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : {};
  if (!res.ok) {
    throw new ApiError(res.status, json.error ?? res.statusText, json.diagnostics ?? []);
  }
  return json as T;
}

export const api = {
  login: (user: string, password: string) =>
    call<{ user: string; role: Role; csrf: string }>("POST", "login", { user, password }),
  loginOptions: () => call<{ passwords: boolean; oidc: string | null }>("GET", "login-options"),
  logout: () => call<unknown>("POST", "logout", {}),
  session: () => call<SessionInfo>("GET", "session"),
  catalogue: () => call<Catalogue>("GET", "catalogue"),
  serving: () => call<Serving>("GET", "serving"),
  versions: () => call<{ versions: VersionSummary[]; refused: Refusal[] }>("GET", "versions"),
  version: (n: number) => call<Version>("GET", `versions/${n}`),
  diff: (from: number, to: number) => call<{ diff: string }>("GET", `diff?from=${from}&to=${to}`),
  draft: () => call<Draft>("GET", "draft"),
  saveDraft: (files: Files) => call<{ saved_at: string }>("PUT", "draft", { files }),
  check: (files: Files) => call<CheckResult>("POST", "check", { files }),
  test: (files: Files) => call<TestResult>("POST", "test", { files }),
  backtest: (files: Files) => call<{ report: BacktestReport }>("POST", "backtest", { files }),
  propose: (files: Files, note: string) => call<Proposal>("POST", "proposals", { files, note }),
  restore: (number: number, note: string) => call<Proposal>("POST", "restore", { number, note }),
  proposals: () => call<{ proposals: Proposal[]; serving: number }>("GET", "proposals"),
  approve: (id: number) => call<Proposal>("POST", `proposals/${id}/approve`, {}),
  reject: (id: number, note: string) => call<Proposal>("POST", `proposals/${id}/reject`, { note }),
  deploy: (id: number) => call<{ number: number; serving: boolean }>("POST", `proposals/${id}/deploy`, {}),
  audit: () => call<{ entries: AuditEntry[] }>("GET", "audit"),
};
