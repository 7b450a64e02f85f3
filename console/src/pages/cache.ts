// Cache: the logged-in account's keys (Dump), its quota (Accounts.GetByToken with the session's
// token) as bars (keys held of max_cache_keys; value bytes held of max_cache_keys x
// max_value_bytes), search by prefix, view / store / delete a key, with a dry-run toggle
// (`dry-run: true` metadata: the server checks the call and changes nothing).
import { client, describeError, token } from "../api";
import { Cache } from "../gen/cache/v1/cache_pb";
import { Accounts, type Account } from "../gen/accounts/v1/accounts_pb";
import { bar, bytes, clear, encode, h, hex, statusLine, utf8 } from "../ui";

export function cachePage(root: HTMLElement): () => void {
  const cache = client(Cache);
  const accounts = client(Accounts);
  const status = statusLine("cache-status");
  const keyStatus = statusLine("key-status");
  const bars = h("div", { id: "cache-bars" });
  const prefix = h("input", { id: "cache-prefix", placeholder: "key prefix", size: 16 });
  const keysBody = h("tbody", { id: "cache-keys" });
  const dryRun = h("input", { id: "dry-run", type: "checkbox" });
  const kKey = h("input", { id: "store-key", placeholder: "key", size: 16 });
  const kValue = h("input", { id: "store-value", placeholder: "value", size: 30 });
  const kTtl = h("input", { id: "store-ttl", type: "number", min: 0, placeholder: "ttl s", style: "width:5rem" });
  const viewer = h("div", { id: "cache-viewer" });
  let account: Account | undefined;
  let items: { key: string; val: Uint8Array }[] = [];

  const options = () => (dryRun.checked ? { headers: { "dry-run": "true" } } : {});

  async function load(): Promise<void> {
    try {
      account = undefined;
      if (token()) {
        try { account = (await accounts.getByToken({ token: token() })).account; }
        catch { account = undefined; }
      }
      items = [];
      for await (const item of cache.dump({})) items.push({ key: item.key, val: item.val });
      items.sort((a, b) => a.key.localeCompare(b.key));
      render();
      status.ok(`${account ? `account ${account.name || account.id}` : "no account for this token (the operator, or none): its own namespace"} · ${items.length} key(s)`);
    } catch (e) {
      clear(bars);
      clear(keysBody);
      status.fail(describeError(e));
    }
  }

  function render(): void {
    const used = items.reduce((n, i) => n + i.val.length, 0);
    const maxKeys = Number(account?.maxCacheKeys ?? 0n);
    const maxBytes = Number(account?.maxValueBytes ?? 0n);
    clear(bars,
      bar("bar-keys", "keys", items.length, maxKeys),
      bar("bar-bytes", "value bytes", used, maxKeys * maxBytes, " B"),
      h("p", { class: "muted" }, account ? `largest value allowed: ${bytes(maxBytes)}` : "quota unknown: the token is not an account's"));
    const p = prefix.value;
    clear(keysBody, ...items.filter((i) => i.key.startsWith(p)).map((i) =>
      h("tr", { "data-key": i.key },
        h("td", { class: "mono" }, h("a", { href: "#cache", onclick: (e: Event) => { e.preventDefault(); view(i.key); } }, i.key)),
        h("td", { class: "num" }, bytes(i.val.length)),
        h("td", {}, h("button", { type: "button", class: "delete", onclick: () => remove(i.key) }, "Delete")))));
  }

  async function view(key: string): Promise<void> {
    try {
      const res = await cache.get({ key });
      clear(viewer, h("h3", {}, key), h("pre", { id: "cache-value" }, utf8.decode(res.val)), h("pre", {}, hex(res.val)));
    } catch (e) {
      keyStatus.fail(describeError(e));
    }
  }

  async function remove(key: string): Promise<void> {
    try {
      await cache.delete({ key }, options());
      keyStatus.ok(dryRun.checked ? `dry run: ${key} would be deleted` : `deleted ${key}`);
      await load();
    } catch (e) {
      keyStatus.fail(describeError(e));
    }
  }

  async function store(e: Event): Promise<void> {
    e.preventDefault();
    try {
      const seconds = Number(kTtl.value || "0");
      await cache.store({ key: kKey.value, val: encode(kValue.value), ttl: seconds > 0 ? { seconds: BigInt(seconds), nanos: 0 } : undefined }, options());
      keyStatus.ok(dryRun.checked ? `dry run: ${kKey.value} would be stored` : `stored ${kKey.value}`);
      await load();
    } catch (err) {
      keyStatus.fail(describeError(err));
    }
  }

  prefix.addEventListener("input", render);
  root.append(
    h("div", { class: "panel" }, h("h2", {}, "Quota"), status.el, bars,
      h("button", { id: "cache-refresh", type: "button", onclick: load }, "Refresh")),
    h("div", { class: "panel" }, h("h2", {}, "Store"),
      h("form", { id: "store", onsubmit: store }, kKey, " ", kValue, " ", kTtl, " ", h("button", { id: "store-button", type: "submit" }, "Store"), " ",
        h("label", {}, dryRun, " dry run (the server checks, changes nothing)")),
      keyStatus.el),
    h("div", { class: "row" },
      h("div", { class: "panel", style: "flex:1 1 28rem" }, h("h2", {}, "Keys"), "search ", prefix,
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "key"), h("th", { class: "num" }, "size"), h("th", {}, ""))), keysBody)),
      h("div", { class: "panel", style: "flex:1 1 24rem" }, h("h2", {}, "Value"), viewer)),
  );
  load();
  return () => {};
}
