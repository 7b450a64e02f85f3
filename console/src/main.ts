// The console: a login bar (a token kept in sessionStorage) and one page per area, chosen by the
// location hash (#log, #cache, #accounts, #users, #chat, #server, #cluster).
import { setToken, token } from "./api";
import { h, clear } from "./ui";
import { logPage } from "./pages/log";
import { cachePage } from "./pages/cache";
import { accountsPage } from "./pages/accounts";
import { usersPage } from "./pages/users";
import { chatPage } from "./pages/chat";
import { serverPage } from "./pages/server";
import { clusterPage } from "./pages/cluster";

export type Page = (root: HTMLElement) => () => void;

const pages: Record<string, [string, Page]> = {
  log: ["Log", logPage],
  cache: ["Cache", cachePage],
  accounts: ["Accounts", accountsPage],
  users: ["Users", usersPage],
  chat: ["Chat", chatPage],
  server: ["Server", serverPage],
  cluster: ["Cluster", clusterPage],
};

const nav = document.getElementById("nav")!;
const login = document.getElementById("login")!;
const main = document.getElementById("page")!;
let leave: (() => void) | undefined;

function renderLogin(): void {
  const t = token();
  if (t) {
    clear(login,
      h("span", { id: "who" }, `token …${t.slice(-4)}`), " ",
      h("button", { id: "logout", onclick: () => { setToken(""); renderLogin(); show(); } }, "Log out"));
  } else {
    const input = h("input", { id: "token", type: "password", placeholder: "token (operator or account)", autocomplete: "off" });
    clear(login,
      h("form", { id: "login-form", onsubmit: (e: Event) => { e.preventDefault(); setToken(input.value.trim()); renderLogin(); show(); } },
        input, " ", h("button", { id: "login-button", type: "submit" }, "Log in")),
      h("span", { class: "muted" }, " (no token: the calls carry no identity but a client certificate, if the browser presents one)"));
  }
}

function show(): void {
  leave?.();
  leave = undefined;
  const name = location.hash.replace(/^#/, "") || "log";
  const [title, page] = pages[name] ?? pages.log;
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  document.title = `Conduit · ${title}`;
  const root = h("section", { id: `page-${name}` });
  clear(main, root);
  leave = page(root);
}

clear(nav, ...Object.entries(pages).map(([name, [title]]) => h("a", { href: `#${name}`, id: `nav-${name}` }, title)));
window.addEventListener("hashchange", show);
renderLogin();
show();
