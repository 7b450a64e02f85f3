// Users: the directory a page at a time (ListUsers, page numbers), and users created from CSV
// with progress. CreateUsers is client streaming, which gRPC-Web from a browser cannot stream;
// the console sends the rows in batches, each batch one CreateUsers call whose whole request
// stream goes in one body (api.clientStreamAll). Each batch is its own transaction: a bad row
// fails its batch only, and the batches before it stay created.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { clientStreamAll, client, describeError } from "../api";
import { CreateUserRequestSchema, CreateUsersResponseSchema, UserService, type User } from "../gen/user/v1/user_pb";
import { clear, h, statusLine } from "../ui";

const PageSize = 10;
const DefaultBatchSize = 100;

export function usersPage(root: HTMLElement): () => void {
  const users = client(UserService);
  const status = statusLine("users-status");
  const csvStatus = statusLine("csv-status");
  const body = h("tbody", { id: "users" });
  const pageLabel = h("span", { id: "users-page" });
  const prev = h("button", { id: "users-prev", type: "button", onclick: () => load(page - 1) }, "‹ Previous");
  const next = h("button", { id: "users-next", type: "button", onclick: () => load(page + 1) }, "Next ›");
  const csv = h("textarea", { id: "csv", rows: 6, cols: 60, placeholder: "name,email — one user per line" });
  const file = h("input", { id: "csv-file", type: "file", accept: ".csv,text/csv" });
  const progress = h("progress", { id: "csv-progress", max: 1, value: 0 });
  const batchInput = h("input", { id: "csv-batch", type: "number", min: 1, max: 1000, value: DefaultBatchSize, style: "width:5rem" });
  let page = 1;

  async function load(p: number): Promise<void> {
    if (p < 1) return;
    try {
      const rows: User[] = [];
      for await (const u of users.listUsers({ page: p, pageSize: PageSize })) rows.push(u);
      if (rows.length === 0 && p > 1) { status.ok(`page ${p} is empty`); next.disabled = true; return; }
      page = p;
      clear(body, ...rows.map((u) => h("tr", { "data-id": String(u.id) },
        h("td", { class: "num" }, String(u.id)), h("td", {}, u.name), h("td", {}, u.email),
        h("td", {}, new Date(Number(u.createdUnixMs)).toISOString().slice(0, 19).replace("T", " ")))));
      pageLabel.textContent = `page ${page}`;
      prev.disabled = page <= 1;
      next.disabled = rows.length < PageSize;
      status.ok(`${rows.length} user(s) on page ${page}`);
    } catch (e) {
      status.fail(describeError(e));
    }
  }

  async function upload(e: Event): Promise<void> {
    e.preventDefault();
    const lines = csv.value.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
    if (lines.length && /^name\s*,\s*email$/i.test(lines[0])) lines.shift();
    const rows = lines.map((l) => { const i = l.lastIndexOf(","); return i < 0 ? { name: l, email: "" } : { name: l.slice(0, i).trim(), email: l.slice(i + 1).trim() }; });
    progress.max = Math.max(rows.length, 1);
    progress.value = 0;
    let created = 0;
    const BatchSize = Math.max(1, Number(batchInput.value) || DefaultBatchSize);
    for (let at = 0; at < rows.length; at += BatchSize) {
      const batch = rows.slice(at, at + BatchSize);
      try {
        const reply = await clientStreamAll("/user.v1.UserService/CreateUsers", batch.map((r) => toBinary(CreateUserRequestSchema, create(CreateUserRequestSchema, r))));
        created += fromBinary(CreateUsersResponseSchema, reply).count;
        progress.value = at + batch.length;
        csvStatus.ok(`created ${created} of ${rows.length}`);
      } catch (err) {
        csvStatus.fail(`rows ${at + 1}–${at + batch.length} (this batch was not created; ${created} before it were): ${describeError(err)}`);
        return;
      }
    }
    csvStatus.ok(`created ${created} user(s) in ${Math.ceil(rows.length / BatchSize)} batch(es)`);
    await load(page);
  }

  file.addEventListener("change", async () => { if (file.files?.[0]) csv.value = await file.files[0].text(); });
  root.append(
    h("div", { class: "panel" }, h("h2", {}, "Users"), status.el,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "id"), h("th", {}, "name"), h("th", {}, "email"), h("th", {}, "created (UTC)"))), body),
      h("p", {}, prev, " ", pageLabel, " ", next)),
    h("div", { class: "panel" }, h("h2", {}, "Create from CSV"),
      h("form", { id: "csv-form", onsubmit: upload }, csv, h("br"), file, " ", h("button", { id: "csv-button", type: "submit" }, "Create users"), " rows per call ", batchInput, " ", progress),
      csvStatus.el,
      h("p", { class: "muted" }, "Sent in batches, one CreateUsers call (one transaction) per batch: browsers cannot stream a request.")),
  );
  load(1);
  return () => {};
}
