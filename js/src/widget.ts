// ClipBranches front end: search box, labelled image grid, refine, paging,
// details. Rendered by anywidget in JupyterLab, Notebook 7, VS Code, Colab.
//
// Ownership of the synced state (one writer per key):
//   user_labels, user_page, user_query, user_selection, user_box -> written here only
//   everything else (items, total, timings, error, reply, ...)   -> written by Python only
// Actions (search, more, refine, reset, page, detail, export) are custom
// messages carrying the state they act on and a sequence number (actions.ts);
// results arrive through the traits, and results older than this view's latest
// action are not drawn.
import type { AnyModel, RenderProps } from "@anywidget/types";
import "./widget.css";
import { Actions, READ_ONLY } from "./actions";
import { Grid, nextLabel } from "./grid";
import { commandOf, type Command } from "./keys";
import { Lightbox } from "./lightbox";
import { Overlay, buildHelp } from "./overlay";
import { Pager } from "./pager";
import { Banner, CHECK, FacetBar } from "./panels";
import { StatusLine } from "./status";
import { Toolbar } from "./toolbar";
import type { Label, State } from "./types";

const NF = new Intl.NumberFormat("en-US");

type Part = "items" | "summary" | "facets" | "error";

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls = "", text = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

class View {
  private readonly root: HTMLDivElement;
  private readonly toolbar: Toolbar;
  private readonly query: HTMLInputElement;
  private readonly status: StatusLine;
  private readonly banner: Banner;
  private readonly pagers: Pager[];
  private readonly gridWrap: HTMLDivElement;
  private readonly empty: HTMLDivElement;
  private readonly facetBar: FacetBar;
  private readonly help: HTMLDivElement;
  private readonly overlay: Overlay;
  private readonly grid: Grid;
  private readonly lightbox: Lightbox;
  private readonly actions: Actions;
  private cursor: number | null = null;
  private dirty = new Set<Part>();
  private readonly parts: Part[] = ["items", "summary", "facets", "error"];
  private scrollToGrid = false;
  private gridMin = 0;
  private gridWidth = -1;
  private disposed = false;
  private readonly unsubs: (() => void)[] = [];
  // Keys are taken at the window, in the capture phase, before the notebook's own
  // document-level handlers see them: Notebook 7 re-focuses its active cell on some
  // keys (arrows) even where data-lm-suppress-shortcuts hides its shortcuts.
  private readonly onWindowKey = (e: KeyboardEvent) => {
    const t = e.target;
    if (!(t instanceof Node)) return;
    // Enter / Space on a focused button press that button, as everywhere else
    if (t instanceof HTMLButtonElement && (e.key === "Enter" || e.key === " ")) return;
    if (this.grid.el.contains(t) || this.overlay.el.contains(t)) this.onKey(e);
  };
  private readonly onResize = () => this.keepHeight();

  constructor(private readonly model: AnyModel<State>, host: HTMLElement) {
    this.actions = new Actions(model, () => this.status.renderBusy(this.model, this.actions));
    this.root = el("div", "cb-root");
    // keep JupyterLab / Notebook 7 command-mode shortcuts (1 = markdown, ...) away from the grid
    this.root.setAttribute("data-lm-suppress-shortcuts", "true");

    this.toolbar = new Toolbar(model.get("user_query") ?? "", {
      search: () => this.search(),
      more: () => this.more(),
      refine: () => this.refine(),
      export: () => void this.exportResults(),
      reset: () => this.reset(),
      help: () => this.toggleHelp(),
      leaveQuery: () => this.gridFocus(),
    });
    this.query = this.toolbar.query;

    // two fixed-height lines (no wrap: nothing below moves), the banner floats over them
    const info = el("div", "cb-info");
    this.status = new StatusLine(() => this.cancelRefine());
    this.banner = new Banner(() => this.renderError());
    info.append(...this.status.rows, this.banner.el);

    // per-box facets: how many results each box of the model holds; a click shows one box
    this.facetBar = new FacetBar((box) => this.showBox(box));

    this.grid = new Grid((id) => this.openDetail(id), (id, e) => this.onCellClick(id, e));
    this.grid.el.tabIndex = 0;
    this.empty = el("div", "cb-empty");
    this.gridWrap = el("div", "cb-grid-wrap");
    this.gridWrap.append(this.grid.el, this.empty);
    const go = (p: number) => this.goPage(p);
    const current = () => this.wantedPage();
    this.pagers = [new Pager("top", go, current), new Pager("bottom", go, current)];

    this.help = buildHelp(() => this.toggleHelp());
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
    this.overlay = new Overlay([this.help, this.lightbox.el], () => this.closeOverlays());

    this.root.append(this.toolbar.el, info, this.facetBar.el, this.pagers[0].el, this.gridWrap, this.pagers[1].el);
    host.append(this.root);
    window.addEventListener("keydown", this.onWindowKey, true);
    window.addEventListener("resize", this.onResize);

    const on = (keys: string[], fn: () => void) => {
      for (const k of keys) {
        model.on(`change:${k}`, fn);
        this.unsubs.push(() => model.off(`change:${k}`, fn));
      }
    };
    on(["items"], () => this.schedule("items"));
    on(["user_labels", "user_selection"], () => this.renderMarks());
    on(["total", "kind", "n_boxes", "search_path", "timings", "page_shown", "page_count", "status", "summary", "box_shown", "shown_total"],
      () => this.schedule("summary"));
    on(["error"], () => this.schedule("error"));
    on(["facets", "box_shown", "kind"], () => this.schedule("facets"));
    on(["user_labels"], () => this.renderFacets());
    // the reply of this view's latest action: draw everything that was held back
    on(["reply"], () => this.parts.forEach((p) => this.schedule(p)));
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

  /** The state an action acts on: sent inside the action (see actions.ts). */
  private intent(): Partial<State> {
    const m = this.model;
    return {
      user_labels: this.labels(),
      user_page: m.get("user_page"),
      user_query: m.get("user_query") ?? "",
      user_selection: m.get("user_selection") ?? [],
      user_box: m.get("user_box"),
    };
  }

  private setLabels(ids: number[], value: Label): void {
    const labels = { ...this.labels() };
    for (const id of ids) {
      if (value === 0) delete labels[String(id)];
      else labels[String(id)] = value;
    }
    this.model.set("user_labels", labels);
    this.model.save_changes();
    // the labelled view is not re-fetched here: cells must not reflow under the pointer
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

  /** The page the user asked for last (it may not be shown yet). */
  private wantedPage(): number {
    const n = this.model.get("page_count");
    return Math.max(0, Math.min(n - 1, this.model.get("user_page")));
  }

  // ---- actions ----
  private async run(action: string, extra: Record<string, unknown> = {}) {
    this.banner.notice = "";
    const shared = !READ_ONLY.has(action);
    const ack = await this.actions.send(action, extra, shared ? this.intent() : undefined);
    this.status.lastRoundTrip = ack.ms;
    this.renderSummary();
    // answered: draw whatever the stale check held back (a no-op when nothing was)
    if (shared) this.parts.forEach((p) => this.schedule(p));
    return ack;
  }

  private search(): void {
    if (!this.model.get("text_search")) return;
    const text = this.query.value.trim();
    this.model.set("user_query", text);
    this.model.set("user_page", 0);
    this.model.set("user_box", -1);
    this.model.save_changes();
    void this.run("search");
  }

  private more(ids?: number[]): void {
    if (ids) this.model.set("user_selection", ids);
    // the query is now these examples: the old text would say otherwise
    this.model.set("user_query", "");
    this.query.value = "";
    this.model.set("user_page", 0);
    this.model.set("user_box", -1);
    this.model.save_changes();
    void this.run("more");
  }

  private refine(): void {
    const back = { page: this.model.get("user_page"), box: this.model.get("user_box") };
    this.model.set("user_box", -1);
    this.model.set("user_page", 0);
    this.model.save_changes();
    void this.run("refine").then((ack) => {
      this.status.cancelling = false;
      if (ack.cancelled) this.refineCancelled(back);
    });
  }

  /** Cancel every refine of this view still unanswered (it stops where its work can). */
  private cancelRefine(): void {
    const targets = this.actions.pendingSeqs("refine");
    if (!targets.length) return;
    this.status.cancelling = true;
    for (const target of targets) void this.actions.send("cancel", { target });
  }

  /** A cancelled refine changed nothing: the page and facet it had reset come back. */
  private refineCancelled(back: { page: number; box: number }): void {
    this.model.set("user_page", back.page);
    this.model.set("user_box", back.box);
    this.model.save_changes();
    this.banner.notice = "Refine cancelled: labels, results and page are as they were.";
    this.renderError();
    this.renderSummary();
  }

  private showBox(box: number): void {
    const next = box === this.model.get("box_shown") ? -1 : box;
    this.model.set("user_box", next);
    this.model.set("user_page", 0);
    this.model.save_changes();
    // the check is drawn by the kernel the first time it is asked for
    void this.run(next === CHECK ? "check" : "page");
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

  private async exportResults(): Promise<void> {
    const ack = await this.run("export", { format: "csv" });
    this.banner.notice = ack.ok
      ? `Wrote ${NF.format(ack.count ?? 0)} results to ${ack.path} (in Python: w.export("results.parquet") for Parquet, w.results for a DataFrame)`
      : ack.error || "export failed";
    this.renderError();
  }

  private goPage(page: number): void {
    const p = Math.max(0, Math.min(this.model.get("page_count") - 1, page));
    if (p === this.wantedPage()) return;
    this.model.set("user_page", p);
    this.model.save_changes();
    this.scrollToGrid = true;
    void this.run("page");
  }

  private async openDetail(id: number): Promise<void> {
    this.cursor = id;
    this.renderMarks();
    this.help.hidden = true;
    this.lightbox.loading(id);
    this.overlay.show(this.root);
    this.lightbox.el.focus({ preventScroll: true });
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
        return this.goPage(this.wantedPage() + 1);
      case "prev-page":
        return this.goPage(this.wantedPage() - 1);
      case "search":
        this.closeOverlays();
        this.query.focus();
        return;
      case "help":
        return this.toggleHelp();
    }
  }

  private closeOverlays(): void {
    const wasOpen = this.overlay.open;
    this.lightbox.hide();
    this.help.hidden = true;
    if (!wasOpen) return;
    this.gridFocus();
    this.overlay.hide(); // after the focus: the page is where it was before opening
  }

  private toggleHelp(): void {
    if (!this.help.hidden) return this.closeOverlays();
    this.lightbox.hide();
    this.help.hidden = false;
    this.overlay.show(this.root);
    this.help.focus({ preventScroll: true });
  }

  // ---- rendering ----
  /** Draw a part once per batch of trait changes, unless it answers an old action. */
  private schedule(part: Part): void {
    if (this.dirty.size === 0) queueMicrotask(() => this.flush());
    this.dirty.add(part);
  }

  private flush(): void {
    const parts = this.dirty;
    this.dirty = new Set();
    if (this.disposed) return;
    // results of an older action of this view: the latest one's are on their way
    if (this.actions.isStale(this.model.get("reply"))) return this.status.renderBusy(this.model, this.actions);
    if (parts.has("items")) this.renderItems();
    if (parts.has("summary")) this.renderSummary();
    if (parts.has("facets")) this.renderFacets();
    if (parts.has("error")) this.renderError();
    if (parts.has("items") && this.scrollToGrid) {
      this.scrollToGrid = false;
      // a page turned from the lower pager: show the new page from its top
      const top = this.pagers[0].el.getBoundingClientRect().top;
      if (top < 0) this.pagers[0].el.scrollIntoView({ block: "start" });
    }
  }

  private gridView() {
    return { labels: this.labels(), selection: this.selection(), cursor: this.cursor };
  }

  /** The grid area never shrinks (the pager and the page below stay put) until the width changes. */
  private keepHeight(): void {
    const w = this.gridWrap.clientWidth;
    if (w !== this.gridWidth) {
      this.gridWidth = w;
      this.gridMin = 0;
      this.gridWrap.style.minHeight = "";
    }
    const h = this.gridWrap.offsetHeight;
    if (h > this.gridMin) {
      this.gridMin = h;
      this.gridWrap.style.minHeight = `${h}px`;
    }
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
    requestAnimationFrame(() => this.keepHeight());
  }

  private renderMarks(): void {
    this.grid.paint(this.gridView());
    const labels = Object.values(this.labels());
    const pos = labels.filter((v) => v > 0).length;
    const neg = labels.filter((v) => v < 0).length;
    const sel = (this.model.get("user_selection") ?? []).length;
    this.status.renderCounts(pos, neg, sel);
    this.toolbar.renderCounts(pos, neg, sel);
  }

  private renderSummary(): void {
    this.status.render(this.model, this.actions);
    for (const p of this.pagers) p.render(this.model.get("page_shown"), this.model.get("page_count"));
  }

  private renderPlaceholder(): void {
    this.toolbar.renderTextSearch(this.model.get("text_search"));
  }

  private renderFacets(): void {
    const m = this.model;
    const refined = m.get("kind") === "refined";
    this.facetBar.render(m.get("facets") ?? [], m.get("box_shown"), m.get("total"), Object.keys(this.labels()).length, refined);
  }

  private renderError(): void {
    this.banner.render(this.model.get("error"), Object.keys(this.labels()).length);
  }

  dispose(): void {
    this.disposed = true;
    window.removeEventListener("keydown", this.onWindowKey, true);
    window.removeEventListener("resize", this.onResize);
    for (const u of this.unsubs) u();
    this.toolbar.disarmReset();
    this.status.dispose();
    this.actions.dispose();
    this.grid.dispose();
    this.lightbox.hide();
    this.overlay.dispose();
    this.root.remove();
  }
}

function render({ model, el: host }: RenderProps<State>) {
  const view = new View(model as AnyModel<State>, host);
  return () => view.dispose();
}

export default { render };
