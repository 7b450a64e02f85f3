// Log: topics (offsets, size, segments, durability) polled with ListTopics, produce rates from the
// offsets' growth and the tail's consume rate as live charts, a tail that follows ConsumeStream
// (pause, jump to offset), a record viewer (text, hex, JSON) and a produce form.
import { create } from "@bufbuild/protobuf";
import { client, describeError, isCancel, isDenied } from "../api";
import { Durability, Log, LogAdmin, RecordSchema, type Record as LogRecord, type TopicInfo } from "../gen/log/v1/log_pb";
import { Chart, bytes, clear, encode, h, hex, statusLine, utf8 } from "../ui";

const durabilityNames: Record<number, string> = {
  [Durability.UNSPECIFIED]: "default", [Durability.ALWAYS]: "always (fsync)", [Durability.INTERVAL]: "interval", [Durability.NEVER]: "never (OS)",
};

export function logPage(root: HTMLElement): () => void {
  const log = client(Log);
  const admin = client(LogAdmin);
  const topicsStatus = statusLine("topics-status");
  const tailStatus = statusLine("tail-status");
  const produceStatus = statusLine("produce-status");
  const topicsBody = h("tbody", { id: "topics" });
  const produceChart = new Chart("produced records/s per topic (ListTopics every second)");
  const consumeChart = new Chart("records/s received by this tail");

  // Tail state.
  const topicInput = h("input", { id: "tail-topic", placeholder: "(default topic)", size: 14 });
  const offsetInput = h("input", { id: "tail-offset", type: "number", min: 0, value: 0, style: "width:6rem" });
  const recordsBody = h("tbody", { id: "tail-records" });
  const viewer = h("div", { id: "viewer" }, h("p", { class: "muted" }, "Click a record to view it."));
  const records: LogRecord[] = [];
  let following: AbortController | undefined;
  let nextOffset = 0n;
  let received = 0;
  const pauseButton = h("button", { id: "tail-pause", type: "button", disabled: true, onclick: () => (following ? pause() : follow(nextOffset, false)) }, "Pause");

  function follow(from: bigint, reset: boolean): void {
    following?.abort();
    if (reset) { records.length = 0; clear(recordsBody); }
    const ctl = new AbortController();
    following = ctl;
    nextOffset = from;
    const topic = topicInput.value.trim();
    pauseButton.disabled = false;
    pauseButton.textContent = "Pause";
    tailStatus.ok(`following ${topic || "(default topic)"} from offset ${from}`);
    (async () => {
      try {
        for await (const res of log.consumeStream({ topic, offset: from }, { signal: ctl.signal })) {
          if (!res.record) continue;
          add(res.record);
          nextOffset = res.record.offset + 1n;
          received++;
        }
        if (following === ctl) tailStatus.ok("the stream ended");
      } catch (e) {
        if (ctl.signal.aborted || isCancel(e)) return;
        tailStatus.fail(describeError(e));
        pauseButton.disabled = true;
      } finally {
        if (following === ctl) following = undefined;
      }
    })();
  }

  function pause(): void {
    following?.abort();
    following = undefined;
    pauseButton.textContent = "Resume";
    tailStatus.ok(`paused at offset ${nextOffset}`);
  }

  function add(r: LogRecord): void {
    records.push(r);
    const text = utf8.decode(r.value);
    const tr = h("tr", { "data-offset": String(r.offset) },
      h("td", { class: "num" }, String(r.offset)),
      h("td", {}, r.timestampUnixMs ? new Date(Number(r.timestampUnixMs)).toISOString().slice(11, 23) : ""),
      h("td", { class: "mono" }, r.key.length ? utf8.decode(r.key) : ""),
      h("td", { class: "num" }, bytes(r.value.length)),
      h("td", { class: "mono value" }, text.length > 80 ? text.slice(0, 80) + "…" : text));
    tr.addEventListener("click", () => {
      for (const s of recordsBody.querySelectorAll("tr.selected")) s.classList.remove("selected");
      tr.classList.add("selected");
      view(r, "text");
    });
    recordsBody.append(tr);
    if (recordsBody.children.length > 500) recordsBody.firstElementChild?.remove();
    recordsBody.parentElement?.parentElement?.scrollTo({ top: 1e9 });
  }

  function view(r: LogRecord, mode: "text" | "hex" | "json"): void {
    let body: string;
    if (mode === "hex") body = hex(r.value);
    else if (mode === "json") {
      try { body = JSON.stringify(JSON.parse(utf8.decode(r.value)), null, 2); }
      catch (e) { body = `not JSON: ${(e as Error).message}`; }
    } else body = utf8.decode(r.value);
    const tab = (m: "text" | "hex" | "json") => h("button", { type: "button", id: `view-${m}`, class: m === mode ? "active" : "", onclick: () => view(r, m) }, m);
    const headers = Object.entries(r.headers).map(([k, v]) => `${k}=${utf8.decode(v)}`).join(", ");
    clear(viewer,
      h("div", { class: "tabs" }, `offset ${r.offset} · ${bytes(r.value.length)}${headers ? " · " + headers : ""} `, tab("text"), tab("hex"), tab("json")),
      h("pre", { id: "viewer-body" }, body));
  }

  // Topics and rates.
  let last = new Map<string, bigint>();
  let lastReceived = 0;
  async function poll(): Promise<void> {
    try {
      const res = await admin.listTopics({});
      const rates: Record<string, number> = {};
      clear(topicsBody, ...res.topics.map((t: TopicInfo) => {
        const prev = last.get(t.name);
        if (prev !== undefined) rates[t.name || "(default)"] = Number(t.nextOffset - prev);
        return h("tr", { "data-topic": t.name },
          h("td", {}, h("a", { href: "#log", onclick: (e: Event) => { e.preventDefault(); topicInput.value = t.name; offsetInput.value = String(t.firstOffset); follow(t.firstOffset, true); } }, t.name || "(default)")),
          h("td", { class: "num" }, String(t.firstOffset)),
          h("td", { class: "num" }, String(t.nextOffset)),
          h("td", { class: "num" }, bytes(t.bytes)),
          h("td", { class: "num" }, String(t.segments)),
          h("td", {}, durabilityNames[t.settings?.durability ?? 0] ?? "?"));
      }));
      last = new Map(res.topics.map((t) => [t.name, t.nextOffset]));
      if (Object.keys(rates).length) produceChart.push(rates);
      topicsStatus.ok(`${res.topics.length} topic(s), updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      topicsStatus.fail(describeError(e));
      // Polling again with the same token cannot help; logging in again re-renders the page.
      if (isDenied(e)) clearInterval(timer);
    }
    consumeChart.push({ tail: received - lastReceived });
    lastReceived = received;
  }
  const timer = setInterval(poll, 1000);
  poll();

  // Produce.
  const pTopic = h("input", { id: "produce-topic", placeholder: "(default topic)", size: 14 });
  const pKey = h("input", { id: "produce-key", placeholder: "key (optional)", size: 12 });
  const pValue = h("textarea", { id: "produce-value", rows: 2, cols: 50, placeholder: "value (text or JSON)" });
  async function produce(e: Event): Promise<void> {
    e.preventDefault();
    try {
      const res = await log.produce({ topic: pTopic.value.trim(), record: create(RecordSchema, { value: encode(pValue.value), key: encode(pKey.value) }) });
      produceStatus.ok(`produced at offset ${res.offset}`);
      poll();
    } catch (err) {
      produceStatus.fail(describeError(err));
    }
  }

  root.append(
    h("div", { class: "panel" },
      h("h2", {}, "Topics"), topicsStatus.el,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "topic"), h("th", { class: "num" }, "first offset"), h("th", { class: "num" }, "next offset"),
        h("th", { class: "num" }, "size"), h("th", { class: "num" }, "segments"), h("th", {}, "durability"))), topicsBody),
      h("div", { class: "row" }, produceChart.canvas, consumeChart.canvas)),
    h("div", { class: "panel" },
      h("h2", {}, "Produce"),
      h("form", { id: "produce", onsubmit: produce }, pTopic, " ", pKey, " ", pValue, " ", h("button", { id: "produce-button", type: "submit" }, "Produce")),
      produceStatus.el),
    h("div", { class: "panel" },
      h("h2", {}, "Tail"),
      h("form", { id: "tail", onsubmit: (e: Event) => { e.preventDefault(); follow(BigInt(offsetInput.value || "0"), true); } },
        "topic ", topicInput, " offset ", offsetInput, " ", h("button", { id: "tail-follow", type: "submit" }, "Follow / jump"), " ", pauseButton),
      tailStatus.el,
      h("div", { class: "row" },
        h("div", { class: "records", style: "flex:1 1 30rem" },
          h("table", {}, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "offset"), h("th", {}, "time (UTC)"), h("th", {}, "key"), h("th", { class: "num" }, "size"), h("th", {}, "value"))), recordsBody)),
        h("div", { style: "flex:1 1 24rem" }, viewer))),
  );
  return () => { clearInterval(timer); following?.abort(); };
}
