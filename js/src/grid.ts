// The image grid. Cells are reconciled by item id: a refresh moves, patches or
// removes existing cells instead of rebuilding the grid, so images do not
// flicker, a cell keeps its decoded thumbnail, and labels stay where they are.
import { byteLength, imageUrl } from "./bytes";
import type { Item, Label } from "./types";

export interface GridView {
  labels: Record<string, number>;
  selection: Set<number>;
  cursor: number | null;
}

class Cell {
  readonly el: HTMLDivElement;
  private readonly img: HTMLImageElement;
  private readonly mark: HTMLSpanElement;
  private readonly votes: HTMLSpanElement;
  private readonly score: HTMLSpanElement;
  private readonly problem: HTMLDivElement;
  private readonly badge: HTMLSpanElement;
  private url: string | null = null;
  private bytes = -1;

  constructor(readonly id: number, open: (id: number) => void) {
    this.el = document.createElement("div");
    this.el.className = "cb-cell";
    this.el.dataset.id = String(id);
    this.el.setAttribute("role", "gridcell");
    const frame = document.createElement("div");
    frame.className = "cb-thumb";
    this.img = document.createElement("img");
    this.img.alt = `item ${id}`;
    this.img.draggable = false;
    this.problem = document.createElement("div");
    this.problem.className = "cb-problem";
    // over the image, so a badge coming or going never moves the layout
    this.badge = document.createElement("span");
    this.badge.className = "cb-badge";
    frame.append(this.img, this.problem, this.badge);
    this.mark = document.createElement("span");
    this.mark.className = "cb-mark";
    this.mark.setAttribute("aria-hidden", "true");
    const meta = document.createElement("div");
    meta.className = "cb-meta";
    this.votes = document.createElement("span");
    this.votes.className = "cb-votes";
    this.score = document.createElement("span");
    this.score.className = "cb-score";
    meta.append(this.votes, this.score);
    const openBtn = document.createElement("button");
    openBtn.className = "cb-open";
    openBtn.type = "button";
    openBtn.title = "Details (Enter)";
    openBtn.textContent = "\u2922";
    openBtn.addEventListener("click", (e) => {
      e.stopPropagation();
      open(id);
    });
    this.el.append(frame, this.mark, openBtn, meta);
  }

  patch(item: Item): void {
    // the same id always shows the same image: decode again only when the bytes changed
    const n = byteLength(item.thumb);
    if (n !== this.bytes) {
      if (this.url) URL.revokeObjectURL(this.url);
      this.url = item.thumb ? imageUrl(item.thumb, item.mime) : null;
      this.bytes = n;
      if (this.url) this.img.src = this.url;
      else this.img.removeAttribute("src");
      // tiny images (CIFAR is 32 px) look better as crisp pixels than as blur
      this.img.classList.toggle("cb-pixelated", Math.max(item.w, item.h) < 64);
    }
    this.problem.textContent = item.problem || (item.thumb ? "" : `#${item.id}`);
    this.el.classList.toggle("cb-broken", !item.thumb);
    const votes = item.votes > 0 ? `${item.votes} vote${item.votes === 1 ? "" : "s"}` : "";
    const score = item.score !== null && Number.isFinite(item.score) ? item.score : null;
    // one number per item, in grid order; the vote count only where nothing is ranked
    this.votes.textContent = score === null ? votes : "";
    this.score.textContent = score === null ? "" : (Math.abs(score) < 0.005 ? 0 : score).toFixed(2);
    const why = score === null ? "" : item.votes > 0
      ? ` · score ${this.score.textContent}: ${votes} + closeness to your positives and query (0–0.99)`
      : ` · similarity to the query ${this.score.textContent}`;
    this.el.title = `${item.name || "#" + item.id} (id ${item.id})${why}`;
    this.el.dataset.votes = String(item.votes);
    this.el.dataset.badge = item.badge ?? "";
    this.badge.textContent = item.badge === "new" ? "new" : item.badge === "rejected" ? "rejected" : "";
    this.badge.title = item.badge === "new"
      ? "new in this round: not among the previous results"
      : item.badge === "rejected" ? "your positive, not accepted by the model (details: \u2922)" : "";
  }

  state(label: number, selected: boolean, cursor: boolean): void {
    const l = label > 0 ? "1" : label < 0 ? "-1" : "0";
    if (this.el.dataset.label !== l) {
      this.el.dataset.label = l;
      this.mark.textContent = label > 0 ? "\u2713" : label < 0 ? "\u2715" : "";
    }
    this.el.setAttribute("aria-label", `item ${this.id}, ${label > 0 ? "positive" : label < 0 ? "negative" : "unlabelled"}`);
    this.el.classList.toggle("cb-selected", selected);
    this.el.classList.toggle("cb-cursor", cursor);
    this.el.setAttribute("aria-selected", String(selected));
  }

  dispose(): void {
    if (this.url) URL.revokeObjectURL(this.url);
    this.el.remove();
  }
}

export class Grid {
  readonly el: HTMLDivElement;
  private readonly cells = new Map<number, Cell>();
  private order: number[] = [];

  constructor(private readonly open: (id: number) => void, private readonly click: (id: number, e: MouseEvent) => void) {
    this.el = document.createElement("div");
    this.el.className = "cb-grid";
    this.el.setAttribute("role", "grid");
    this.el.addEventListener("click", (e) => {
      const cell = (e.target as HTMLElement).closest<HTMLElement>(".cb-cell");
      if (cell && this.el.contains(cell)) this.click(Number(cell.dataset.id), e as MouseEvent);
    });
  }

  get ids(): number[] {
    return this.order;
  }

  /** Make the grid show `items` in order, touching only what changed. */
  update(items: Item[], view: GridView): void {
    const keep = new Set<number>();
    items.forEach((item, idx) => {
      keep.add(item.id);
      let cell = this.cells.get(item.id);
      if (!cell) {
        cell = new Cell(item.id, this.open);
        this.cells.set(item.id, cell);
      }
      cell.patch(item);
      const here = this.el.children[idx] ?? null;
      if (here !== cell.el) this.el.insertBefore(cell.el, here);
    });
    for (const [id, cell] of this.cells) {
      if (!keep.has(id)) {
        cell.dispose();
        this.cells.delete(id);
      }
    }
    this.order = items.map((i) => i.id);
    this.paint(view);
  }

  /** Labels, selection and cursor only (no thumbnails touched). */
  paint(view: GridView): void {
    for (const [id, cell] of this.cells) {
      cell.state(view.labels[String(id)] ?? 0, view.selection.has(id), view.cursor === id);
    }
  }

  element(id: number): HTMLElement | null {
    return this.cells.get(id)?.el ?? null;
  }

  /** Cells per row, read from the layout (the grid wraps to the output width). */
  columns(): number {
    const cells = [...this.cells.values()].map((c) => c.el);
    if (cells.length === 0) return 1;
    const top = cells[0].offsetTop;
    let n = 0;
    for (const el of this.el.children) {
      if ((el as HTMLElement).offsetTop !== top) break;
      n++;
    }
    return Math.max(1, n);
  }

  dispose(): void {
    for (const cell of this.cells.values()) cell.dispose();
    this.cells.clear();
  }
}

export function nextLabel(label: number): Label {
  // click / space cycle: unlabelled -> positive -> negative -> unlabelled
  return label === 0 ? 1 : label > 0 ? -1 : 0;
}
