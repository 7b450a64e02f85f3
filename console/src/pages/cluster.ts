// Cluster: the members, the leader and each member's Raft progress (LogAdmin.GetServers with
// progress ALL, the admin permission; docs/cluster.md, "Progress per node"), polled every second:
// term, commit and applied index, lag behind the leader in entries and time, and whether the
// member answered the server this page talks to (an unreachable one keeps its last figures, with
// their age and why). A chart of each member's lag, and a list of what changed between polls (a
// member joined, is gone, became unreachable, answers again, caught up; the leader moved), so a
// node being killed shows live.
import { client, describeError, isDenied } from "../api";
import { GetServersRequest_Progress, LogAdmin, type Server } from "../gen/log/v1/log_pb";
import { Chart, clear, h, statusLine } from "../ui";

function duration(ms: bigint): string {
  const n = Number(ms);
  return n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(1)} s`;
}

function lag(s: Server): string {
  if (s.lagEntries === undefined) return "–";
  if (s.lagEntries === 0n) return "0";
  const entries = s.lagEntries === 1n ? "1 entry" : `${s.lagEntries} entries`;
  // The age is unknown when the answering node has not applied that entry itself (yet).
  return s.lagMs === undefined ? entries : `${entries}, ${duration(s.lagMs)}`;
}

function state(s: Server): string {
  if (s.reachable) return s.lagEntries !== undefined && s.lagEntries > 0n ? "catching up" : "ok";
  if (s.figuresAgeMs === undefined) return `unreachable: ${s.progressError}`;
  return `unreachable (figures ${duration(s.figuresAgeMs)} old): ${s.progressError}`;
}

export function clusterPage(root: HTMLElement): () => void {
  const admin = client(LogAdmin);
  const status = statusLine("cluster-status");
  const body = h("tbody", { id: "servers" });
  const events = h("ul", { id: "cluster-events", class: "chat-log" });
  const chart = new Chart("entries behind the leader, per member", 60, "");
  let previous: Map<string, Server> | undefined;

  const event = (text: string) => events.prepend(h("li", {}, h("span", { class: "muted" }, new Date().toLocaleTimeString() + " "), text));
  const num = (s: Server, v: bigint) => h("td", { class: "num" }, s.figuresAgeMs === undefined ? "–" : String(v));

  async function poll(): Promise<void> {
    try {
      const res = await admin.getServers({ progress: GetServersRequest_Progress.ALL });
      const now = new Map(res.servers.map((s) => [s.id, s]));
      if (previous) {
        for (const [id, s] of now) {
          const was = previous.get(id);
          if (!was) { event(`${id} (${s.rpcAddr}) joined`); continue; }
          if (was.reachable && !s.reachable) event(`${id} does not answer: ${s.progressError}`);
          if (!was.reachable && s.reachable) event(`${id} answers again (applied up to entry ${s.appliedIndex})`);
          const behind = (x: Server) => x.lagEntries !== undefined && x.lagEntries > 0n;
          if (behind(was) && s.reachable && s.lagEntries === 0n) event(`${id} caught up (applied up to entry ${s.appliedIndex})`);
        }
        for (const [id, s] of previous) if (!now.has(id)) event(`${id} (${s.rpcAddr}) is gone`);
        const was = [...previous.values()].find((s) => s.isLeader)?.id;
        const is = res.servers.find((s) => s.isLeader)?.id;
        if (was !== is) event(is ? `leader: ${is}${was ? ` (was ${was})` : ""}` : `no leader (was ${was})`);
      }
      previous = now;
      chart.push(Object.fromEntries(res.servers.filter((s) => s.lagEntries !== undefined).map((s) => [s.id, Number(s.lagEntries)])));
      clear(body, ...res.servers.map((s) => h("tr", { "data-id": s.id, "data-reachable": String(s.reachable), class: s.reachable ? "" : "down" },
        h("td", { class: "mono" }, s.id), h("td", { class: "mono" }, s.rpcAddr), h("td", { class: "role" }, s.isLeader ? "leader" : "follower"),
        num(s, s.term), num(s, s.commitIndex), num(s, s.appliedIndex), h("td", { class: "num lag" }, lag(s)), h("td", { class: "state" }, state(s)))));
      const down = res.servers.filter((s) => !s.reachable).length;
      status.ok(`${res.servers.length} member(s), ${res.servers.some((s) => s.isLeader) ? "a leader" : "NO LEADER"}${down ? `, ${down} unreachable` : ""} · ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      status.fail(describeError(e));
      if (isDenied(e)) clearInterval(timer);
      if (previous) { event(`this server does not answer: ${describeError(e)}`); previous = undefined; }
    }
  }

  const timer = setInterval(poll, 1000);
  poll();
  const th = (text: string, num = false) => h("th", { class: num ? "num" : "" }, text);
  root.append(
    h("div", { class: "panel" }, h("h2", {}, "Members"), status.el,
      h("table", {}, h("thead", {}, h("tr", {}, th("id"), th("gRPC address"), th("role"), th("term", true), th("commit", true), th("applied", true), th("lag behind the leader", true), th("state"))), body),
      h("p", { class: "muted" },
        "From log.v1.LogAdmin/GetServers every second, as this server sees the cluster: its own figures, and each other member's as it answered this server just now (1 s deadline). " +
        "commit: the last Raft entry the member knows committed; applied: the last it applied to its log (what it serves); lag: entries the leader committed that it has not applied, and the age of the oldest of them. " +
        "An unreachable member shows the last figures it gave.")),
    h("div", { class: "row" },
      h("div", { class: "panel" }, h("h2", {}, "Replication lag"), chart.canvas),
      h("div", { class: "panel", style: "flex:1" }, h("h2", {}, "What changed"), events)));
  return () => clearInterval(timer);
}
