// Server: health per service (grpc.health.v1.Health/Check), and from /metrics (Prometheus text;
// with a policy it needs the permission conduit/metrics) the calls per method and status with
// latency percentiles from rpc.server.call.duration's buckets, calls in flight and connections.
import { authHeaders, client, codeName, describeError } from "../api";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb";
import { clear, h, statusLine } from "../ui";

const services = ["", "log.v1.Log", "log.v1.LogAdmin", "cache.v1.Cache", "accounts.v1.Accounts", "user.v1.UserService", "chat.v1.Chat", "helloworld.Greeter"];

type Sample = { name: string; labels: Record<string, string>; value: number };

export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** The q-quantile of a cumulative histogram, interpolated linearly inside its bucket. */
function quantile(q: number, buckets: [number, number][]): number {
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let prevBound = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!isFinite(le)) return prevBound;
      return prevBound + ((le - prevBound) * (rank - prevCount)) / Math.max(count - prevCount, 1);
    }
    prevBound = le; prevCount = count;
  }
  return prevBound;
}

const ms = (s: number) => (isNaN(s) ? "" : s < 0.001 ? `${(s * 1e6).toFixed(0)} µs` : `${(s * 1000).toFixed(1)} ms`);

export function serverPage(root: HTMLElement): () => void {
  const health = client(Health);
  const healthBody = h("tbody", { id: "health" });
  const callsBody = h("tbody", { id: "calls" });
  const conns = h("div", { id: "connections" });
  const metricsStatus = statusLine("metrics-status");

  async function checkHealth(): Promise<void> {
    const rows = await Promise.all(services.map(async (s) => {
      try {
        const res = await health.check({ service: s }, { timeoutMs: 5000 });
        return [s, Serving[res.status] ?? String(res.status), res.status === Serving.SERVING ? "ok" : "error"];
      } catch (e) {
        return [s, describeError(e), "error"];
      }
    }));
    clear(healthBody, ...rows.map(([s, state, cls]) => h("tr", { "data-service": s }, h("td", {}, s || "(server)"), h("td", { class: `status ${cls}` }, state))));
  }

  async function metrics(): Promise<void> {
    try {
      const res = await fetch("/metrics", { headers: authHeaders() });
      if (res.status === 401 || res.status === 403) {
        metricsStatus.fail(`${res.status === 401 ? "UNAUTHENTICATED" : "PERMISSION_DENIED"}: /metrics needs the permission conduit/metrics`);
        metricsDenied = true;
        return;
      }
      if (!res.ok) { metricsStatus.fail(`/metrics: HTTP ${res.status}`); return; }
      const samples = parsePrometheus(await res.text());
      type Row = { method: string; code: string; count: number; sum: number; buckets: [number, number][] };
      const rows = new Map<string, Row>();
      for (const s of samples) {
        if (!s.name.startsWith("rpc_server_call_duration_seconds")) continue;
        const method = s.labels.rpc_method ?? "?", code = s.labels.rpc_grpc_status_code ?? "?";
        const key = `${method} ${code}`;
        const row = rows.get(key) ?? { method, code, count: 0, sum: 0, buckets: [] };
        rows.set(key, row);
        if (s.name.endsWith("_count")) row.count = s.value;
        else if (s.name.endsWith("_sum")) row.sum = s.value;
        else if (s.name.endsWith("_bucket")) row.buckets.push([s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value]);
      }
      const sorted = [...rows.values()].sort((a, b) => a.method.localeCompare(b.method) || Number(a.code) - Number(b.code));
      clear(callsBody, ...sorted.map((r) => h("tr", { "data-method": r.method, "data-code": r.code },
        h("td", { class: "mono" }, r.method),
        h("td", { class: r.code === "0" ? "" : "status error" }, codeName(Number(r.code))),
        h("td", { class: "num" }, String(r.count)),
        h("td", { class: "num" }, ms(quantile(0.5, r.buckets))),
        h("td", { class: "num" }, ms(quantile(0.9, r.buckets))),
        h("td", { class: "num" }, ms(quantile(0.99, r.buckets))),
        h("td", { class: "num" }, ms(r.count ? r.sum / r.count : NaN)))));
      const byPort = new Map<string, number>();
      let inFlight = 0, participants = 0;
      for (const s of samples) {
        if (s.name === "kestrel_active_connections") byPort.set(s.labels.server_port ?? "?", (byPort.get(s.labels.server_port ?? "?") ?? 0) + s.value);
        if (s.name === "grpc_aspnetcore_server_calls_current") inFlight += s.value;
        if (s.name === "conduit_chat_participants") participants += s.value;
      }
      clear(conns,
        ...[...byPort].map(([port, n]) => h("div", { class: "connection" }, `port ${port}: ${n} open connection(s)`)),
        h("div", {}, `calls in flight: ${inFlight}`),
        h("div", {}, `chat participants: ${participants}`));
      metricsStatus.ok(`from /metrics at ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      metricsStatus.fail(describeError(e));
    }
  }

  let metricsDenied = false;
  const refresh = () => { checkHealth(); if (!metricsDenied) metrics(); };
  refresh();
  const timer = setInterval(refresh, 3000);
  root.append(
    h("div", { class: "row" },
      h("div", { class: "panel", style: "flex:1 1 20rem" }, h("h2", {}, "Health"),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "service"), h("th", {}, "status"))), healthBody)),
      h("div", { class: "panel", style: "flex:1 1 20rem" }, h("h2", {}, "Connections"), conns)),
    h("div", { class: "panel" }, h("h2", {}, "Calls per method"), metricsStatus.el,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "method"), h("th", {}, "status"), h("th", { class: "num" }, "calls"),
        h("th", { class: "num" }, "p50"), h("th", { class: "num" }, "p90"), h("th", { class: "num" }, "p99"), h("th", { class: "num" }, "mean"))), callsBody)),
  );
  return () => clearInterval(timer);
}
