// Details of one item: the full image, its path, its label, and why it
// matched (the boxes that contain it, its votes and its similarity).
import { imageUrl } from "./bytes";
import { button } from "./dom";
import type { Ack, Detail } from "./types";

export interface LightboxHooks {
  label: (id: number, value: 1 | -1 | 0) => void;
  more: (id: number) => void;
  step: (delta: number) => void;
  close: () => void;
}

function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "\u2013";
  return (Math.abs(x) < 0.5 * 10 ** -digits ? 0 : x).toFixed(digits); // never "-0.00"
}

function boxesText(n: number, of: number): string {
  return `inside ${n} of the model's ${of} box${of > 1 ? "es" : ""}`;
}

/** Why an item is shown, by the same verdict as its badge and the round summary. */
function verdictText(d: Detail): string {
  // the item's own score (not the grid's rounded one) against the cut: the verdict decides
  const vsCut = (sign: string) => d.cut === null || d.cut === undefined || d.score === null
    ? "" : `score ${fmt(d.score, 3)} ${sign} the cut ${fmt(d.cut, 3)}`;
  if (d.verdict === "rejected") {
    const why = d.boxes.length ? [boxesText(d.boxes.length, d.n_boxes), vsCut("<")].filter(Boolean).join(", but ") : "outside every box of the model";
    return `Your positive, not accepted by the model: ${why} (shown because you marked it)`;
  }
  if (d.verdict === "accepted") {
    return `Your positive, accepted by the model: ${[boxesText(d.boxes.length, d.n_boxes), vsCut("\u2265")].filter(Boolean).join(", ")}`;
  }
  if (d.boxes.length) return `Why it matched: ${boxesText(d.boxes.length, d.n_boxes)}`;
  return d.label > 0 && d.rank !== null
    ? "Not inside any box of the model: shown because you marked it positive"
    : "Not inside any box of the model";
}

export class Lightbox {
  readonly el: HTMLDivElement;
  private readonly body: HTMLDivElement;
  private url: string | null = null;
  id: number | null = null;

  constructor(private readonly hooks: LightboxHooks) {
    this.el = document.createElement("div");
    this.el.className = "cb-lightbox";
    this.el.hidden = true;
    this.el.setAttribute("role", "dialog");
    this.el.setAttribute("aria-label", "item details");
    this.body = document.createElement("div");
    this.body.className = "cb-lightbox-body";
    this.el.append(this.body);
  }

  get open(): boolean {
    return !this.el.hidden;
  }

  loading(id: number): void {
    this.id = id;
    this.el.hidden = false;
    this.body.replaceChildren(Object.assign(document.createElement("div"), {
      className: "cb-lightbox-loading", textContent: `loading item ${id}\u2026`,
    }));
  }

  show(ack: Ack): void {
    if (!ack.ok || !ack.detail) {
      this.body.replaceChildren(Object.assign(document.createElement("div"), {
        className: "cb-error", textContent: ack.error || "could not load the details",
      }));
      return;
    }
    const d: Detail = ack.detail;
    if (d.id !== this.id) return; // the user moved on
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = ack.buffers.length ? imageUrl(ack.buffers[0], d.mime) : null;

    const figure = document.createElement("div");
    figure.className = "cb-lightbox-figure";
    if (this.url) {
      const img = document.createElement("img");
      img.src = this.url;
      img.alt = d.name;
      img.className = Math.max(d.width, d.height) < 128 ? "cb-pixelated" : "";
      figure.append(img);
    } else {
      figure.append(Object.assign(document.createElement("div"), {
        className: "cb-problem", textContent: d.problem || "no image",
      }));
    }

    const info = document.createElement("div");
    info.className = "cb-lightbox-info";
    const title = document.createElement("div");
    title.className = "cb-lightbox-title";
    title.textContent = `#${d.id} ${d.name}`;
    const path = document.createElement("code");
    path.className = "cb-path";
    path.textContent = d.path ?? d.uri ?? "(no path)";
    const dims = d.width ? `${d.width}\u00d7${d.height} px` : "";

    const labelRow = document.createElement("div");
    labelRow.className = "cb-lightbox-labels";
    const labelName = d.label > 0 ? "positive" : d.label < 0 ? "negative" : "unlabelled";
    labelRow.append(Object.assign(document.createElement("span"), {
      className: `cb-label-name cb-l${d.label}`, textContent: labelName,
    }));
    for (const [text, v, cls] of [["\u2713 positive (1)", 1, "cb-btn-pos"], ["\u2715 negative (2)", -1, "cb-btn-neg"], ["clear (0)", 0, ""]] as const) {
      labelRow.append(button(text, cls, "", () => this.hooks.label(d.id, v)));
    }

    const why = document.createElement("div");
    why.className = "cb-why";
    const facts = document.createElement("dl");
    const add = (k: string, v: string) => {
      facts.append(Object.assign(document.createElement("dt"), { textContent: k }));
      facts.append(Object.assign(document.createElement("dd"), { textContent: v }));
    };
    add("rank", d.rank === null ? "not in the results" : `${d.rank + 1}`);
    add("votes", d.n_boxes ? `${d.votes ?? d.boxes.length} of ${d.n_boxes} box${d.n_boxes === 1 ? "" : "es"}` : "\u2013 (no model yet)");
    // the score the grid shows and sorts by
    add("score", d.rank_score === null || d.rank_score === undefined ? "\u2013" : fmt(d.rank_score, 2));
    add("similarity", d.similarity === null ? "\u2013 (no query)" : `${fmt(d.similarity, 2)} to the query`);
    if (dims) add("size", dims);
    why.append(facts);
    if (d.n_boxes) {
      const head = document.createElement("div");
      head.className = "cb-why-head";
      head.textContent = verdictText(d);
      head.classList.toggle("cb-verdict-rejected", d.verdict === "rejected");
      why.append(head);
      const list = document.createElement("ul");
      list.className = "cb-boxes";
      for (const b of d.boxes) {
        const li = document.createElement("li");
        const conds = Object.entries(b.bounds)
          .map(([dim, [lo, hi]]) => `feature ${dim} is ${b.code[dim]} (box range ${lo}\u2013${hi})`)
          .join("; ");
        li.textContent = `box ${b.box}: ${conds}`;
        list.append(li);
      }
      why.append(list);
    } else if (d.kind === "knn") {
      why.append(Object.assign(document.createElement("div"), {
        className: "cb-why-head", textContent: "Shown as a nearest neighbour of the query (label some images and refine to get a model)",
      }));
    }

    const nav = document.createElement("div");
    nav.className = "cb-lightbox-nav";
    const mk = (text: string, fn: () => void, title = "") => button(text, "", title, fn);
    nav.append(
      mk("\u2190", () => this.hooks.step(-1), "previous (\u2190)"),
      mk("\u2192", () => this.hooks.step(1), "next (\u2192)"),
      mk("more like this", () => this.hooks.more(d.id)),
      mk("close (Esc)", () => this.hooks.close()),
    );
    info.append(title, path, labelRow, why, nav);
    this.body.replaceChildren(figure, info);
  }

  /** Reflect a label change made while the box is open. */
  setLabel(label: number): void {
    const el = this.body.querySelector(".cb-label-name");
    if (!el) return;
    el.className = `cb-label-name cb-l${label}`;
    el.textContent = label > 0 ? "positive" : label < 0 ? "negative" : "unlabelled";
  }

  hide(): void {
    this.el.hidden = true;
    this.id = null;
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.body.replaceChildren();
  }
}
