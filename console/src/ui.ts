// Small DOM helpers and a line chart on a canvas: no UI library.
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (k === "class") el.className = String(v);
    else if (k in el && k !== "list" && k !== "form") (el as unknown as Record<string, unknown>)[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(typeof c === "object" ? c : String(c));
  return el;
}

export function clear(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(typeof c === "object" ? c : String(c));
}

/** A bar with a label: used / limit. */
export function bar(id: string, label: string, used: number, limit: number, unit = ""): HTMLElement {
  const pct = limit > 0 ? Math.min(100, (used / limit) * 100) : 0;
  return h("div", { class: "bar", id },
    h("div", { class: "bar-label" }, `${label}: ${used}${unit} of ${limit > 0 ? limit + unit : "no limit"}`),
    h("div", { class: "bar-track" }, h("div", { class: "bar-fill" + (pct >= 90 ? " full" : ""), style: `width:${pct.toFixed(1)}%` })),
  );
}

export function bytes(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${(v / 1024 / 1024).toFixed(1)} MiB`;
}

export function hex(data: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < data.length; i += 16) {
    const row = data.subarray(i, i + 16);
    const hx = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${i.toString(16).padStart(8, "0")}  ${hx.padEnd(47)}  ${text}`);
  }
  return lines.join("\n");
}

export const utf8 = new TextDecoder();
export const encode = (s: string) => new TextEncoder().encode(s);

/** A rolling line chart of up to `points` values per series, redrawn on each push. */
export class Chart {
  readonly canvas: HTMLCanvasElement;
  private series = new Map<string, number[]>();
  private colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  constructor(readonly title: string, readonly points = 60, readonly unit = "/s") {
    this.canvas = h("canvas", { width: 520, height: 140, class: "chart", title });
    this.draw(); // the frame and title before the first values
  }

  push(values: Record<string, number>): void {
    for (const [name, v] of Object.entries(values)) {
      const s = this.series.get(name) ?? [];
      s.push(v);
      if (s.length > this.points) s.shift();
      this.series.set(name, s);
    }
    this.draw();
  }

  private draw(): void {
    const g = this.canvas.getContext("2d");
    if (!g) return;
    const { width, height } = this.canvas;
    g.clearRect(0, 0, width, height);
    let max = 1;
    for (const s of this.series.values()) for (const v of s) max = Math.max(max, v);
    g.strokeStyle = "#ddd";
    g.strokeRect(40.5, 20.5, width - 50, height - 40);
    g.fillStyle = "#444";
    g.font = "11px system-ui, sans-serif";
    g.fillText(this.title, 40, 12);
    g.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 26);
    g.fillText("0", 2, height - 20);
    let i = 0;
    for (const [name, s] of this.series) {
      const color = this.colors[i % this.colors.length];
      g.strokeStyle = color;
      g.beginPath();
      s.forEach((v, j) => {
        const x = 40 + ((width - 50) * (j + this.points - s.length)) / (this.points - 1);
        const y = height - 20 - ((height - 40) * v) / max;
        if (j === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.stroke();
      g.fillStyle = color;
      g.fillText(`${name} ${(s[s.length - 1] ?? 0).toFixed(1)}${this.unit}`, 45 + 130 * i, height - 5);
      i++;
    }
  }
}

/** A status line for a page: errors in red, with the gRPC status name first. */
export function statusLine(id: string): { el: HTMLElement; ok(text: string): void; fail(text: string): void } {
  const el = h("p", { id, class: "status" });
  return {
    el,
    ok(text) { el.className = "status ok"; el.textContent = text; },
    fail(text) { el.className = "status error"; el.textContent = text; },
  };
}
