// The workbench's single page: a login, then one view per hash route.
import "./style.css";
import { api, ApiError, can, Role, SessionInfo, setCsrf } from "./api";
import { h } from "./dom";
import { servingPage } from "./pages/serving";
import { historyPage } from "./pages/history";
import { draftPage } from "./pages/draft";
import { proposalsPage } from "./pages/proposals";
import { auditPage } from "./pages/audit";

const app = document.getElementById("app")!;
let session: SessionInfo | null = null;

interface Page {
  path: string;
  title: string;
  role: Role;
  render: (root: HTMLElement, s: SessionInfo) => Promise<void>;
}

const PAGES: Page[] = [
  { path: "serving", title: "Serving", role: "viewer", render: servingPage },
  { path: "history", title: "History", role: "viewer", render: historyPage },
  { path: "draft", title: "Draft", role: "analyst", render: draftPage },
  { path: "proposals", title: "Proposals", role: "viewer", render: proposalsPage },
  { path: "audit", title: "Audit log", role: "approver", render: auditPage },
];

function loginView(message = ""): void {
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username", required: true });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const error = h("p", { id: "login-error", class: "error" }, message);
  const form = h(
    "form",
    { class: "login", id: "login-form" },
    h("h1", {}, "Verdict workbench"),
    h("label", {}, "User", user),
    h("label", {}, "Password", password),
    h("button", { id: "login-submit", type: "submit" }, "Log in"),
    error,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api.login(user.value, password.value);
      setCsrf(r.csrf);
      session = await api.session();
      if (!location.hash || location.hash === "#/login") location.hash = "#/serving";
      await route();
    } catch (err) {
      error.textContent = err instanceof Error ? err.message : String(err);
    }
  });
  app.replaceChildren(form);
  user.focus();
  // Single sign-on, when the server has a provider: a plain link, as the
  // provider's pages need a top-level navigation.
  api
    .loginOptions()
    .then((o) => {
      if (o.oidc) {
        form.insertBefore(
          h("a", { id: "login-oidc", class: "button", href: "/workbench/api/oidc/login" }, o.oidc),
          error,
        );
      }
      if (!o.passwords) {
        for (const el of form.querySelectorAll("label, #login-submit")) el.remove();
      }
    })
    .catch(() => {});
}

async function route(): Promise<void> {
  if (!session) {
    try {
      session = await api.session();
      setCsrf(session.csrf);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return loginView();
      throw e;
    }
  }
  const s = session;
  const name = location.hash.replace(/^#\//, "") || "serving";
  const page = PAGES.find((p) => p.path === name) ?? PAGES[0];
  const nav = h(
    "nav",
    {},
    h("strong", { class: "brand" }, "Verdict"),
    ...PAGES.filter((p) => can(s, p.role)).map((p) =>
      h("a", { href: `#/${p.path}`, id: `nav-${p.path}`, class: p === page ? "active" : "" }, p.title),
    ),
    h("span", { class: "spacer" }),
    h("span", { id: "whoami", class: "muted" }, `${s.user} · ${s.role}`),
    h(
      "button",
      {
        id: "logout",
        class: "secondary",
        onclick: async () => {
          await api.logout().catch(() => undefined);
          session = null;
          setCsrf("");
          location.hash = "#/login";
          loginView();
        },
      },
      "Log out",
    ),
  );
  const main = h("main", { id: `page-${page.path}` });
  app.replaceChildren(nav, main);
  try {
    await page.render(main, s);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session = null;
      return loginView("Your session ended: log in again.");
    }
    main.append(h("p", { class: "error" }, e instanceof Error ? e.message : String(e)));
  }
}

window.addEventListener("hashchange", () => {
  if (session) void route();
});
void route();
