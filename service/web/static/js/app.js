// The Hilum web app: sign-in, navigation by role, and a hash router over the pages.
import { api, setCsrf, setSignedOutHandler } from "./api.js";
import { clear, el, field, notice } from "./ui.js";
import * as ask from "./pages/ask.js";
import * as datasets from "./pages/datasets.js";
import * as training from "./pages/training.js";
import * as models from "./pages/models.js";
import * as admin from "./pages/admin.js";

const STAFF = ["admin", "staff"];
const EVERYONE = ["admin", "staff", "clinician"];
const NAV = [
  { path: "/ask", text: "Ask about a film", roles: EVERYONE },
  { path: "/datasets", text: "Datasets", roles: STAFF },
  { path: "/train", text: "Train", roles: STAFF },
  { path: "/jobs", text: "Jobs", roles: STAFF },
  { path: "/models", text: "Models", roles: STAFF },
  { path: "/keys", text: "Keys", roles: ["admin"] },
  { path: "/weights", text: "Weights", roles: ["admin"] },
  { path: "/audit", text: "Audit log", roles: ["admin"] },
];
const ROUTES = [
  [/^\/ask$/, ask.render, EVERYONE],
  [/^\/datasets$/, datasets.renderList, STAFF],
  [/^\/datasets\/([\w-]+)$/, datasets.renderOne, STAFF],
  [/^\/train$/, training.renderForm, STAFF],
  [/^\/jobs$/, training.renderList, STAFF],
  [/^\/jobs\/([\w-]+)$/, training.renderJob, STAFF],
  [/^\/jobs\/([\w-]+)\/report$/, models.renderReport, STAFF],
  [/^\/models$/, models.renderList, STAFF],
  [/^\/models\/([\w.-]+)$/, models.renderModel, STAFF],
  [/^\/keys$/, admin.renderKeys, ["admin"]],
  [/^\/weights$/, admin.renderWeights, ["admin"]],
  [/^\/audit$/, admin.renderAudit, ["admin"]],
];
const HOME = { clinician: "/ask", staff: "/datasets", admin: "/ask" };

let me = null;
let cleanup = null;
let expiryTimer = null;
const main = document.getElementById("main");

function path() { return (location.hash.replace(/^#/, "") || "/").split("?")[0]; }

function renderNav() {
  const nav = clear(document.getElementById("nav"));
  const who = clear(document.getElementById("who"));
  if (!me) return;
  for (const item of NAV.filter((n) => n.roles.includes(me.role))) {
    const current = path() === item.path || path().startsWith(item.path + "/");
    nav.append(el("a", { href: `#${item.path}`, "aria-current": current ? "page" : null, text: item.text }));
  }
  who.append(el("span", { text: me.name }), el("span", { class: "role", text: me.role }),
    el("button", { class: "secondary", type: "button", onclick: signOut, text: "Sign out" }));
}

function signedOut(message) {
  me = null;
  setCsrf(null);
  if (cleanup) { cleanup(); cleanup = null; }
  clearTimeout(expiryTimer);
  renderNav();
  renderSignIn(message);
}

async function signOut() {
  try { await api.del("/web/session"); } catch { /* already gone */ }
  signedOut("You are signed out.");
}

function startSession(session) {
  me = session;
  setCsrf(session.csrf_token);
  clearTimeout(expiryTimer);
  const ms = new Date(session.expires_at).getTime() - Date.now();
  expiryTimer = setTimeout(() => signedOut("Your session expired: sign in again."), Math.min(Math.max(ms, 0), 2 ** 31 - 1));
}

function renderSignIn(message) {
  document.title = "Sign in · Hilum";
  const key = el("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const status = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "panel signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title", text: "Sign in to Hilum" }),
    message ? notice("info", message) : null,
    field("API key", key, "Your key is exchanged for a session cookie; it is not kept in the browser."),
    el("p", {}, el("button", { type: "submit", text: "Sign in" })),
    status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(status);
    try {
      startSession(await api.post("/web/session", { key: key.value }));
      key.value = "";
      if (path() === "/" || path() === "/signin") location.hash = `#${HOME[me.role]}`;
      else route();
    } catch (err) {
      status.append(notice("bad", err.status === 401 ? "That key is not valid (unknown, revoked or expired)." : err.message));
    }
  });
  clear(main).append(form);
  key.focus();
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!me) return renderSignIn();
  const p = path();
  if (p === "/" || p === "/signin") { location.hash = `#${HOME[me.role]}`; return; }
  renderNav();
  for (const [pattern, render, roles] of ROUTES) {
    const match = p.match(pattern);
    if (!match) continue;
    clear(main);
    if (!roles.includes(me.role)) {
      main.append(notice("bad", `The '${me.role}' role cannot open this page.`));
      return;
    }
    try {
      cleanup = (await render(main, match.slice(1).map(decodeURIComponent), { me })) || null;
    } catch (err) {
      if (err.status !== 401) main.append(notice("bad", `Could not load this page: ${err.message}`));
    }
    main.focus({ preventScroll: true });
    return;
  }
  clear(main).append(el("h1", { text: "Not found" }), el("p", {}, el("a", { href: `#${HOME[me.role]}`, text: "Go home" })));
}

async function boot() {
  setSignedOutHandler(() => { if (me) signedOut("Your session expired or was signed out: sign in again."); });
  try {
    const session = await api.get("/web/session");
    if (session.signed_in) startSession(session);
  } catch { me = null; }
  window.addEventListener("hashchange", route);
  route();
}

boot();
