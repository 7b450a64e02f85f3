// Cluster: the members and the leader (LogAdmin.GetServers, the admin permission), polled every
// second, with a list of what changed between polls (a member joined or left, the leader moved),
// so a node being killed shows live. Commit index and replication lag per node are not answered by
// GetServers; they are not shown.
import { client, describeError, isDenied } from "../api";
import { LogAdmin, type Server } from "../gen/log/v1/log_pb";
import { clear, h, statusLine } from "../ui";

export function clusterPage(root: HTMLElement): () => void {
  const admin = client(LogAdmin);
  const status = statusLine("cluster-status");
  const body = h("tbody", { id: "servers" });
  const events = h("ul", { id: "cluster-events", class: "chat-log" });
  let previous: Map<string, Server> | undefined;

  const event = (text: string) => events.prepend(h("li", {}, h("span", { class: "muted" }, new Date().toLocaleTimeString() + " "), text));

  async function poll(): Promise<void> {
    try {
      const res = await admin.getServers({});
      const now = new Map(res.servers.map((s) => [s.id, s]));
      if (previous) {
        for (const [id, s] of now) if (!previous.has(id)) event(`${id} (${s.rpcAddr}) joined`);
        for (const [id, s] of previous) if (!now.has(id)) event(`${id} (${s.rpcAddr}) is gone`);
        const was = [...previous.values()].find((s) => s.isLeader)?.id;
        const is = res.servers.find((s) => s.isLeader)?.id;
        if (was !== is) event(is ? `leader: ${is}${was ? ` (was ${was})` : ""}` : `no leader (was ${was})`);
      }
      previous = now;
      clear(body, ...res.servers.map((s) => h("tr", { "data-id": s.id },
        h("td", { class: "mono" }, s.id), h("td", { class: "mono" }, s.rpcAddr), h("td", {}, s.isLeader ? "leader" : "follower"))));
      status.ok(`${res.servers.length} member(s), ${res.servers.some((s) => s.isLeader) ? "a leader" : "NO LEADER"} · ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      status.fail(describeError(e));
      if (isDenied(e)) clearInterval(timer);
      if (previous) { event(`this server does not answer: ${describeError(e)}`); previous = undefined; }
    }
  }

  const timer = setInterval(poll, 1000);
  poll();
  root.append(
    h("div", { class: "panel" }, h("h2", {}, "Members"), status.el,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "gRPC address"), h("th", {}, "role"))), body)),
    h("div", { class: "panel" }, h("h2", {}, "What changed"), events,
      h("p", { class: "muted" }, "From log.v1.LogAdmin/GetServers every second, as this server sees the cluster. Commit index and replication lag per node are not in GetServers yet.")));
  return () => clearInterval(timer);
}
