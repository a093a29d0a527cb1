// ClipBranches front end: search box, labelled image grid, refine, paging,
// lightbox. Rendered by anywidget in JupyterLab, Notebook 7, VS Code, Colab.
//
// Ownership of the synced state (one writer per key):
//   user_labels, user_page, user_query, user_selection  -> written here only
//   everything else (items, total, timings, error, ...) -> written by Python only
// Actions (search, more, refine, reset, page, detail) are custom messages with
// a request id, acknowledged by the kernel; results arrive through the traits.
import type { AnyModel, RenderProps } from "@anywidget/types";
import "./widget.css";
import { Actions, SLOW_MS } from "./actions";
import { Grid, nextLabel } from "./grid";
import { BINDINGS, commandOf, keyName, type Command } from "./keys";
import { Lightbox } from "./lightbox";
import type { Label, State } from "./types";

const NF = new Intl.NumberFormat("en-US");
/** user_box value of the "labelled" view (every labelled image, positives first). */
const LABELLED = -2;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls = "", text = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function button(text: string, cls: string, title: string): HTMLButtonElement {
  const b = el("button", `cb-btn ${cls}`, text);
  b.type = "button";
  b.title = title;
  return b;
}

function ms(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return "";
  return x < 10 ? `${x.toFixed(1)} ms` : x < 10000 ? `${Math.round(x)} ms` : `${(x / 1000).toFixed(1)} s`;
}

const KIND_TEXT: Record<string, string> = {
  empty: "no search yet",
  browse: "browsing the catalogue",
  knn: "nearest neighbours of the query",
  refined: "accepted by the model",
};

class View {
  private readonly root: HTMLDivElement;
  private readonly query: HTMLInputElement;
  private readonly searchBtn: HTMLButtonElement;
  private readonly moreBtn: HTMLButtonElement;
  private readonly refineBtn: HTMLButtonElement;
  private readonly resetBtn: HTMLButtonElement;
  private readonly total: HTMLSpanElement;
  private readonly kind: HTMLSpanElement;
  private readonly counts: HTMLSpanElement;
  private readonly timings: HTMLSpanElement;
  private readonly busy: HTMLSpanElement;
  private readonly banner: HTMLDivElement;
  private readonly bannerText: HTMLSpanElement;
  private readonly pageText: HTMLSpanElement;
  private readonly pageBtns: HTMLButtonElement[];
  private readonly empty: HTMLDivElement;
  private readonly facetBar: HTMLDivElement;
  private readonly help: HTMLDivElement;
  private readonly grid: Grid;
  private readonly lightbox: Lightbox;
  private readonly actions: Actions;
  private cursor: number | null = null;
  private dismissedError = "";
  private lastRoundTrip: number | null = null;
  private slowTimer: number | undefined;
  private readonly unsubs: (() => void)[] = [];
  // Keys are taken at the window, in the capture phase, before the notebook's own
  // document-level handlers see them: Notebook 7 re-focuses its active cell on some
  // keys (arrows) even where data-lm-suppress-shortcuts hides its shortcuts.
  private readonly onWindowKey = (e: KeyboardEvent) => {
    const t = e.target;
    if (!(t instanceof Node)) return;
    // Enter / Space on a focused button press that button, as everywhere else
    if (t instanceof HTMLButtonElement && (e.key === "Enter" || e.key === " ")) return;
    if (this.grid.el.contains(t) || this.lightbox.el.contains(t)) this.onKey(e);
  };

  constructor(private readonly model: AnyModel<State>, host: HTMLElement) {
    this.actions = new Actions(model, () => this.renderBusy());
    this.root = el("div", "cb-root");
    // keep JupyterLab / Notebook 7 command-mode shortcuts (1 = markdown, ...) away from the grid
    this.root.setAttribute("data-lm-suppress-shortcuts", "true");

    // toolbar
    const form = el("form", "cb-toolbar");
    this.query = el("input", "cb-query");
    this.query.type = "search";
    this.query.placeholder = "Describe what you are looking for\u2026";
    this.query.setAttribute("aria-label", "search query");
    this.query.value = model.get("user_query") ?? "";
    this.searchBtn = button("Search", "cb-primary cb-search", "Search (Enter)");
    this.searchBtn.type = "submit";
    this.moreBtn = button("More like these", "cb-more", "Search by the selected images, else by the positives (m)");
    this.refineBtn = button("Refine", "cb-primary cb-refine", "Train on your labels and search the whole catalogue (r)");
    this.resetBtn = button("Reset", "cb-reset", "Forget labels and results");
    const helpBtn = button("?", "cb-help-btn", "Keyboard shortcuts (?)");
    form.append(this.query, this.searchBtn, this.moreBtn, this.refineBtn, this.resetBtn, helpBtn);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.search();
    });
    this.query.addEventListener("keydown", (e) => {
      e.stopPropagation(); // typing is text, not grid commands
      if (e.key === "Escape") this.gridFocus();
    });
    this.moreBtn.addEventListener("click", () => this.more());
    this.refineBtn.addEventListener("click", () => this.refine());
    this.resetBtn.addEventListener("click", () => this.reset());
    helpBtn.addEventListener("click", () => this.toggleHelp());

    // summary line: exact count, what it is, per-step times
    const summary = el("div", "cb-summary");
    this.total = el("span", "cb-total");
    this.kind = el("span", "cb-kind");
    this.counts = el("span", "cb-counts");
    this.busy = el("span", "cb-busy-text");
    this.timings = el("span", "cb-timings");
    summary.append(this.total, this.kind, this.counts, this.busy, this.timings);

    // errors are shown in place; the labels stay
    this.banner = el("div", "cb-error-banner");
    this.banner.setAttribute("role", "alert");
    this.bannerText = el("span", "cb-error-text");
    const dismiss = button("\u00d7", "cb-dismiss", "Dismiss");
    dismiss.addEventListener("click", () => {
      this.dismissedError = this.model.get("error");
      this.renderError();
    });
    this.banner.append(this.bannerText, dismiss);

    // per-box facets: how many results each box of the model holds; a click shows one box
    this.facetBar = el("div", "cb-facets");
    this.facetBar.addEventListener("click", (e) => {
      const chip = (e.target as HTMLElement).closest<HTMLElement>(".cb-facet");
      if (chip) this.showBox(Number(chip.dataset.box));
    });

    this.grid = new Grid((id) => this.openDetail(id), (id, e) => this.onCellClick(id, e));
    this.grid.el.tabIndex = 0;
    this.empty = el("div", "cb-empty");

    // pager
    const pager = el("div", "cb-pager");
    const first = button("\u00ab", "cb-first", "First page");
    const prev = button("\u2039 Prev", "cb-prev", "Previous page (p)");
    this.pageText = el("span", "cb-page");
    const next = button("Next \u203a", "cb-next", "Next page (n)");
    const last = button("\u00bb", "cb-last", "Last page");
    first.addEventListener("click", () => this.goPage(0));
    prev.addEventListener("click", () => this.goPage(this.model.get("page_shown") - 1));
    next.addEventListener("click", () => this.goPage(this.model.get("page_shown") + 1));
    last.addEventListener("click", () => this.goPage(this.model.get("page_count") - 1));
    this.pageBtns = [first, prev, next, last];
    pager.append(first, prev, this.pageText, next, last);

    this.help = this.buildHelp();
    this.lightbox = new Lightbox({
      label: (id, v) => {
        this.setLabels([id], v);
        this.lightbox.setLabel(v);
      },
      more: (id) => {
        this.closeOverlays();
        this.more([id]);
      },
      step: (d) => this.stepDetail(d),
      close: () => this.closeOverlays(),
    });
    this.lightbox.el.tabIndex = -1;

    this.root.append(form, summary, this.banner, this.facetBar, this.grid.el, this.empty, pager, this.help, this.lightbox.el);
    host.append(this.root);
    window.addEventListener("keydown", this.onWindowKey, true);

    const on = (keys: string[], fn: () => void) => {
      for (const k of keys) {
        model.on(`change:${k}`, fn);
        this.unsubs.push(() => model.off(`change:${k}`, fn));
      }
    };
    on(["items"], () => this.renderItems());
    on(["user_labels", "user_selection"], () => this.renderMarks());
    on(["total", "kind", "n_boxes", "search_path", "timings", "page_shown", "page_count", "status"], () => this.renderSummary());
    on(["error"], () => this.renderError());
    on(["facets", "box_shown", "user_labels"], () => this.renderFacets());
    on(["user_query"], () => {
      if (document.activeElement !== this.query) this.query.value = model.get("user_query");
    });
    on(["text_search"], () => this.renderPlaceholder());
    this.renderPlaceholder();
    this.renderItems();
    this.renderSummary();
    this.renderError();
    this.renderFacets();
  }

  // ---- writes of front-end-owned keys (the only place they happen) ----
  private labels(): Record<string, number> {
    return this.model.get("user_labels") ?? {};
  }

  private setLabels(ids: number[], value: Label): void {
    const labels = { ...this.labels() };
    for (const id of ids) {
      if (value === 0) delete labels[String(id)];
      else labels[String(id)] = value;
    }
    this.model.set("user_labels", labels);
    this.model.save_changes();
    // the "labelled" view lists the labels themselves: refresh it
    if (this.model.get("box_shown") === LABELLED) void this.run("page");
  }

  private selection(): Set<number> {
    return new Set(this.model.get("user_selection") ?? []);
  }

  private toggleSelect(id: number): void {
    const s = this.selection();
    if (s.has(id)) s.delete(id);
    else s.add(id);
    this.model.set("user_selection", [...s]);
    this.model.save_changes();
  }

  private setPage(page: number): void {
    this.model.set("user_page", page);
    this.model.save_changes();
  }

  // ---- actions ----
  private async run(action: string, extra: Record<string, unknown> = {}): Promise<void> {
    const ack = await this.actions.send(action, extra);
    this.lastRoundTrip = ack.ms;
    this.renderSummary();
  }

  private search(): void {
    const text = this.query.value.trim();
    this.model.set("user_query", text);
    this.model.set("user_page", 0);
    this.model.set("user_box", -1);
    this.model.save_changes();
    void this.run("search");
  }

  private more(ids?: number[]): void {
    if (ids) {
      this.model.set("user_selection", ids);
    }
    this.model.set("user_page", 0);
    this.model.set("user_box", -1);
    this.model.save_changes();
    void this.run("more");
  }

  private refine(): void {
    this.model.set("user_box", -1);
    this.setPage(0);
    void this.run("refine");
  }

  private showBox(box: number): void {
    this.model.set("user_box", box === this.model.get("box_shown") ? -1 : box);
    this.setPage(0);
    void this.run("page");
  }

  private reset(): void {
    this.model.set("user_labels", {});
    this.model.set("user_selection", []);
    this.model.set("user_query", "");
    this.model.set("user_page", 0);
    this.model.set("user_box", -1);
    this.model.save_changes();
    this.query.value = "";
    void this.run("reset");
  }

  private goPage(page: number): void {
    const n = this.model.get("page_count");
    const p = Math.max(0, Math.min(n - 1, page));
    if (p === this.model.get("page_shown")) return;
    this.setPage(p);
    void this.run("page");
  }

  private async openDetail(id: number): Promise<void> {
    this.cursor = id;
    this.renderMarks();
    this.help.hidden = true;
    this.lightbox.loading(id);
    this.lightbox.el.focus();
    const ack = await this.actions.send("detail", { id });
    if (this.lightbox.id === id) this.lightbox.show(ack);
  }

  private stepDetail(delta: number): void {
    const ids = this.grid.ids;
    if (this.lightbox.id === null || ids.length === 0) return;
    const i = ids.indexOf(this.lightbox.id);
    const j = Math.max(0, Math.min(ids.length - 1, (i < 0 ? 0 : i) + delta));
    void this.openDetail(ids[j]);
  }

  // ---- input ----
  private onCellClick(id: number, e: MouseEvent): void {
    this.cursor = id;
    if (e.shiftKey) this.toggleSelect(id);
    else this.setLabels([id], nextLabel(this.labels()[String(id)] ?? 0));
    this.renderMarks();
    this.gridFocus();
  }

  private gridFocus(): void {
    this.grid.el.focus({ preventScroll: true });
  }

  private onKey(e: KeyboardEvent): void {
    const cmd = commandOf(e);
    if (!cmd) return;
    e.preventDefault();
    e.stopPropagation();
    this.exec(cmd);
  }

  private move(delta: number): void {
    const ids = this.grid.ids;
    if (ids.length === 0) return;
    const i = this.cursor === null ? -1 : ids.indexOf(this.cursor);
    const j = i < 0 ? 0 : Math.max(0, Math.min(ids.length - 1, i + delta));
    this.cursor = ids[j];
    this.renderMarks();
    this.grid.element(ids[j])?.scrollIntoView({ block: "nearest" });
  }

  private exec(cmd: Command): void {
    const inBox = this.lightbox.open;
    const target = inBox ? this.lightbox.id : this.cursor;
    switch (cmd) {
      case "positive":
      case "negative":
      case "clear": {
        if (target === null) return;
        const v: Label = cmd === "positive" ? 1 : cmd === "negative" ? -1 : 0;
        this.setLabels([target], v);
        if (inBox) this.lightbox.setLabel(v);
        this.renderMarks();
        return;
      }
      case "toggle": {
        if (target === null) return this.move(0);
        const v = nextLabel(this.labels()[String(target)] ?? 0);
        this.setLabels([target], v);
        if (inBox) this.lightbox.setLabel(v);
        return;
      }
      case "select":
        if (target !== null) this.toggleSelect(target);
        return;
      case "left":
        return inBox ? this.stepDetail(-1) : this.move(-1);
      case "right":
        return inBox ? this.stepDetail(1) : this.move(1);
      case "up":
        return inBox ? undefined : this.move(-this.grid.columns());
      case "down":
        return inBox ? undefined : this.move(this.grid.columns());
      case "first":
        return this.move(-1e9);
      case "last":
        return this.move(1e9);
      case "open":
        if (target !== null && !inBox) void this.openDetail(target);
        return;
      case "close":
        return this.closeOverlays();
      case "refine":
        return this.refine();
      case "more":
        return this.more();
      case "next-page":
        return this.goPage(this.model.get("page_shown") + 1);
      case "prev-page":
        return this.goPage(this.model.get("page_shown") - 1);
      case "search":
        this.closeOverlays();
        this.query.focus();
        return;
      case "help":
        return this.toggleHelp();
    }
  }

  private closeOverlays(): void {
    const wasOpen = this.lightbox.open || !this.help.hidden;
    this.lightbox.hide();
    this.help.hidden = true;
    if (wasOpen) this.gridFocus();
  }

  private toggleHelp(): void {
    this.help.hidden = !this.help.hidden;
    if (!this.help.hidden) this.lightbox.hide();
    this.gridFocus();
  }

  private buildHelp(): HTMLDivElement {
    const box = el("div", "cb-help");
    box.hidden = true;
    box.append(el("div", "cb-help-title", "Keyboard (click the grid first)"));
    const table = el("table");
    for (const b of BINDINGS) {
      const tr = el("tr");
      const keys = el("td");
      b.keys.forEach((k, i) => {
        if (i) keys.append(" ");
        keys.append(el("kbd", "", keyName(k)));
      });
      tr.append(keys, el("td", "", b.help));
      table.append(tr);
    }
    const mouse = el("tr");
    mouse.append(el("td", "", "click"), el("td", "", "cycle the label: none \u2192 + \u2192 \u2212 \u2192 none; Shift+click selects"));
    table.append(mouse);
    box.append(table);
    const close = button("close", "cb-help-close", "Close (Esc or ?)");
    close.addEventListener("click", () => this.toggleHelp());
    box.append(close);
    return box;
  }

  // ---- rendering ----
  private gridView() {
    return { labels: this.labels(), selection: this.selection(), cursor: this.cursor };
  }

  private renderItems(): void {
    const items = this.model.get("items") ?? [];
    if (this.cursor !== null && !items.some((i) => i.id === this.cursor)) this.cursor = null;
    this.grid.update(items, this.gridView());
    const kind = this.model.get("kind");
    this.empty.hidden = items.length > 0;
    this.empty.textContent =
      kind === "empty" || kind === "browse"
        ? "Type what you are looking for and press Search."
        : kind === "refined"
          ? "The model accepts no image: add positives or remove negatives, then refine again."
          : "Nothing to show.";
    this.renderMarks();
  }

  private renderMarks(): void {
    this.grid.paint(this.gridView());
    const labels = Object.values(this.labels());
    const pos = labels.filter((v) => v > 0).length;
    const neg = labels.filter((v) => v < 0).length;
    const sel = (this.model.get("user_selection") ?? []).length;
    this.counts.textContent = `${pos} + \u00b7 ${neg} \u2212` + (sel ? ` \u00b7 ${sel} selected` : "");
    this.counts.dataset.positive = String(pos);
    this.counts.dataset.negative = String(neg);
    this.refineBtn.textContent = `Refine (${pos}+ ${neg}\u2212)`;
    this.refineBtn.disabled = pos === 0;
    this.refineBtn.title = pos === 0 ? "Mark at least one image positive first (click it, or press 1)" : "Train on your labels and search the whole catalogue (r)";
    this.moreBtn.disabled = sel === 0 && pos === 0;
  }

  private renderSummary(): void {
    const m = this.model;
    const total = m.get("total");
    const kind = m.get("kind");
    this.total.textContent = `${NF.format(total)} result${total === 1 ? "" : "s"}`;
    this.total.dataset.total = String(total);
    let what = KIND_TEXT[kind] ?? kind;
    if (kind === "refined") what = `${what} (${m.get("n_boxes")} box${m.get("n_boxes") === 1 ? "" : "es"}, ${m.get("search_path")}, round ${m.get("rounds")})`;
    if (kind === "browse") {
      const n = m.get("n_items");
      what = total < n ? `a random sample of the catalogue (${NF.format(n)} images)` : `${what} (${NF.format(n)} images)`;
    }
    const box = m.get("box_shown");
    if (box >= 0) what = `${what} \u00b7 showing the ${NF.format(m.get("shown_total"))} in box ${box}`;
    if (box === LABELLED) what = `${what} \u00b7 showing your ${NF.format(m.get("shown_total"))} labelled images`;
    this.kind.textContent = what;
    const t = m.get("timings") ?? {};
    const parts: string[] = [];
    const names: [string, string][] = [["fit_ms", "fit"], ["search_ms", "search"], ["rank_ms", "rank"], ["thumbs_ms", "thumbnails"]];
    for (const [k, name] of names) if (k in t) parts.push(`${name} ${ms(t[k])}`);
    if ("total_ms" in t) parts.unshift(`took ${ms(t.total_ms)}`);
    if (this.lastRoundTrip !== null) parts.push(`round trip ${ms(this.lastRoundTrip)}`);
    this.timings.textContent = parts.join(" \u00b7 ");
    const n = m.get("page_count");
    const p = m.get("page_shown");
    this.pageText.textContent = `page ${NF.format(p + 1)} of ${NF.format(n)}`;
    this.pageBtns[0].disabled = this.pageBtns[1].disabled = p <= 0;
    this.pageBtns[2].disabled = this.pageBtns[3].disabled = p >= n - 1;
    this.renderBusy();
  }

  private renderPlaceholder(): void {
    // without a text encoder (precomputed embeddings), queries are by example images
    this.query.placeholder = this.model.get("text_search")
      ? "Describe what you are looking for\u2026"
      : "No text encoder: Shift+click images, then More like these";
  }

  private renderFacets(): void {
    const facets = this.model.get("facets") ?? [];
    const shown = this.model.get("box_shown");
    const nLabels = Object.keys(this.labels()).length;
    this.facetBar.hidden = facets.length === 0 && nLabels === 0 && shown !== LABELLED;
    const chips: HTMLElement[] = [];
    const chip = (box: number, text: string, title: string) => {
      const b = button(text, "cb-facet", title);
      b.dataset.box = String(box);
      b.classList.toggle("cb-facet-on", box === shown);
      b.setAttribute("aria-pressed", String(box === shown));
      chips.push(b);
    };
    chips.push(el("span", "cb-facets-label", "show:"));
    chip(-1, `all ${NF.format(this.model.get("total"))}`, "Show every result");
    chip(LABELLED, `labelled ${NF.format(nLabels)}`, "Show every image you labelled, positives first");
    if (facets.length) chips.push(el("span", "cb-facets-label", "boxes:"));
    for (const f of facets) {
      chip(f.box, `#${f.box} \u00b7 ${NF.format(f.count)}`,
        `Box ${f.box} on dimensions ${f.dims.join(", ")}: ${f.count} results inside (click to show only these)`);
    }
    this.facetBar.replaceChildren(...chips);
  }

  private renderBusy(): void {
    const pending = this.actions.busy.filter((a) => a !== "detail");
    const status = this.model.get("status");
    const busy = pending.length > 0 || status !== "ready";
    this.root.classList.toggle("cb-is-busy", busy);
    const oldest = this.actions.oldest;
    const slow = oldest !== null && performance.now() - oldest > SLOW_MS;
    this.busy.textContent = !busy
      ? ""
      : slow
        ? "no reply from the kernel yet \u2013 is it still running?"
        : status !== "ready"
          ? `${status}\u2026`
          : `${pending[0]}\u2026`;
    this.busy.classList.toggle("cb-slow", slow);
    window.clearTimeout(this.slowTimer);
    if (oldest !== null && !slow) this.slowTimer = window.setTimeout(() => this.renderBusy(), SLOW_MS + 50);
  }

  private renderError(): void {
    const err = this.model.get("error");
    const labels = Object.values(this.labels());
    const show = !!err && err !== this.dismissedError;
    this.banner.hidden = !show;
    if (show) this.bannerText.textContent = `${err} (your ${labels.length} label${labels.length === 1 ? " is" : "s are"} kept)`;
  }

  dispose(): void {
    window.removeEventListener("keydown", this.onWindowKey, true);
    for (const u of this.unsubs) u();
    window.clearTimeout(this.slowTimer);
    this.actions.dispose();
    this.grid.dispose();
    this.lightbox.hide();
    this.root.remove();
  }
}

function render({ model, el: host }: RenderProps<State>) {
  const view = new View(model as AnyModel<State>, host);
  return () => view.dispose();
}

export default { render };
