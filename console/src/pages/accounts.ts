// Accounts (operators): list, create (the token is shown once), disable / enable, rotate the token.
import { client, describeError } from "../api";
import { Accounts, type Account } from "../gen/accounts/v1/accounts_pb";
import { clear, h, statusLine } from "../ui";

export function accountsPage(root: HTMLElement): () => void {
  const accounts = client(Accounts);
  const status = statusLine("accounts-status");
  const body = h("tbody", { id: "accounts" });
  const secret = h("div", { id: "account-token" });
  const name = h("input", { id: "account-name", placeholder: "name", size: 16 });
  const maxKeys = h("input", { id: "account-max-keys", type: "number", min: 0, placeholder: "max keys", style: "width:7rem" });
  const maxBytes = h("input", { id: "account-max-bytes", type: "number", min: 0, placeholder: "max value bytes", style: "width:9rem" });

  const showToken = (what: string, token: string) =>
    clear(secret, h("p", {}, `${what} — its token, shown only now: `, h("code", { class: "mono", id: "new-token" }, token)));

  async function load(): Promise<void> {
    try {
      const res = await accounts.listAccounts({});
      clear(body, ...res.accounts.map((a: Account) => h("tr", { "data-id": a.id },
        h("td", { class: "mono" }, a.id), h("td", {}, a.name),
        h("td", { class: "num" }, String(a.maxCacheKeys)), h("td", { class: "num" }, String(a.maxValueBytes)),
        h("td", {}, a.disabled ? "disabled" : "enabled"),
        h("td", {}, a.createdUnixMs ? new Date(Number(a.createdUnixMs)).toISOString().slice(0, 19).replace("T", " ") : ""),
        h("td", {},
          h("button", { type: "button", class: "toggle", onclick: () => update(a, !a.disabled) }, a.disabled ? "Enable" : "Disable"), " ",
          h("button", { type: "button", class: "rotate", onclick: () => rotate(a) }, "Rotate token")))));
      status.ok(`${res.accounts.length} account(s)`);
    } catch (e) {
      clear(body);
      status.fail(describeError(e));
    }
  }

  async function update(a: Account, disabled: boolean): Promise<void> {
    try {
      await accounts.updateAccount({ id: a.id, disabled });
      await load();
      status.ok(`${a.name || a.id} ${disabled ? "disabled" : "enabled"}`);
    } catch (e) { status.fail(describeError(e)); }
  }

  async function rotate(a: Account): Promise<void> {
    try {
      const res = await accounts.rotateToken({ id: a.id });
      showToken(`rotated ${a.name || a.id}: the old token no longer works`, res.token);
    } catch (e) { status.fail(describeError(e)); }
  }

  async function createAccount(e: Event): Promise<void> {
    e.preventDefault();
    try {
      const res = await accounts.createAccount({ name: name.value, maxCacheKeys: BigInt(maxKeys.value || "0"), maxValueBytes: BigInt(maxBytes.value || "0") });
      showToken(`created ${res.account?.name} (${res.account?.id})`, res.token);
      await load();
    } catch (err) { status.fail(describeError(err)); }
  }

  root.append(
    h("div", { class: "panel" }, h("h2", {}, "Create an account"),
      h("form", { id: "create-account", onsubmit: createAccount }, name, " ", maxKeys, " ", maxBytes, " ", h("button", { id: "create-account-button", type: "submit" }, "Create"),
        h("span", { class: "muted" }, " (0: the server's default quota)")),
      secret),
    h("div", { class: "panel" }, h("h2", {}, "Accounts"), status.el,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "name"), h("th", { class: "num" }, "max keys"), h("th", { class: "num" }, "max value bytes"),
        h("th", {}, "state"), h("th", {}, "created (UTC)"), h("th", {}, ""))), body)),
  );
  load();
  return () => {};
}
