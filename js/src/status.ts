// The two status lines above the grid: what is shown (count, the round's
// summary in words) and what it is (view, labels, work in progress, timings).
// Each is one line that never wraps, so nothing below it moves.
import { SLOW_MS, type Actions } from "./actions";
import { button } from "./dom";
import { CHECK, LABELLED, NEAR } from "./panels";
import type { AnyModel } from "@anywidget/types";
import type { State } from "./types";

const NF = new Intl.NumberFormat("en-US");

function span(cls: string): HTMLSpanElement {
  const e = document.createElement("span");
  e.className = cls;
  return e;
}

function ms(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return "";
  return x < 10 ? `${x.toFixed(1)} ms` : x < 10000 ? `${Math.round(x)} ms` : `${(x / 1000).toFixed(1)} s`;
}

function plural(n: number, word: string, many = `${word}s`): string {
  return `${NF.format(n)} ${n === 1 ? word : many}`;
}

export class StatusLine {
  readonly rows: HTMLDivElement[];
  lastRoundTrip: number | null = null;
  private readonly total = span("cb-total");
  private readonly round = span("cb-round");
  private readonly kind = span("cb-kind");
  private readonly counts = span("cb-counts");
  private readonly busy = span("cb-busy-text");
  private readonly timings = span("cb-timings");
  private readonly cancel: HTMLButtonElement;
  private timer: number | undefined;
  /** A cancel was sent for the running refine; its answer has not come yet. */
  cancelling = false;

  constructor(onCancel: () => void) {
    // stops a refine (the one compile of a first refine, or any long one): in this
    // one-line row, so it comes and goes without moving anything
    this.cancel = button("Cancel", "cb-cancel", "Stop this refine: labels, results and page stay as they were", onCancel);
    this.cancel.hidden = true;
    const top = document.createElement("div");
    top.className = "cb-summary";
    top.append(this.total, this.round);
    const bottom = document.createElement("div");
    bottom.className = "cb-status";
    bottom.append(this.kind, this.counts, this.busy, this.cancel, this.timings);
    this.rows = [top, bottom];
  }

  render(m: AnyModel<State>, actions: Actions): void {
    const total = m.get("total");
    const kind = m.get("kind");
    const box = m.get("box_shown");
    const shown = m.get("shown_total");
    const n = m.get("n_items");
    const before = kind === "empty" || kind === "browse";
    // the heading counts what the grid shows
    this.total.textContent = before
      ? plural(n, "image")
      : box === LABELLED
        ? plural(shown, "labelled image")
        : box === CHECK
          ? `${NF.format(shown)} random images`
          : box === NEAR
          ? plural(shown, "near miss", "near misses")
          : box >= 0
          ? `${NF.format(shown)} of ${plural(total, "result")}`
          : plural(total, "result");
    this.total.dataset.total = String(total);
    this.total.dataset.shown = String(shown);
    let what = "";
    if (before) {
      what = total < n ? `browsing a random sample of ${NF.format(total)} \u00b7 no search yet` : "browsing the catalogue in random order \u00b7 no search yet";
    } else if (kind === "knn") {
      // a "more like these" search clears the text: the query is the examples then
      const q = (m.get("user_query") ?? "").trim();
      what = q ? `nearest neighbours of \u201c${q}\u201d` : "nearest neighbours of your examples";
    } else if (kind === "refined") {
      const b = m.get("n_boxes");
      what = `accepted by the model (${plural(b, "box", "boxes")}, round ${m.get("rounds")})`;
    } else what = kind;
    if (box >= 0) what = `${what} \u00b7 showing the ${NF.format(shown)} in box ${box}`;
    if (box === LABELLED) what = `${what} \u00b7 showing your ${NF.format(shown)} labelled images`;
    if (box === NEAR) what = `${what} \u00b7 just below the cut, best first: not in the results`;
    if (box === CHECK) what = `${what} \u00b7 a random check: label every one (results first, then just below the cut, then the rest)`;
    this.kind.textContent = what;
    this.kind.title = what;
    // what the last step did, in words ("148 matches · 37 new · 5 of your 5 positives")
    this.round.textContent = before ? "" : (m.get("summary") ?? "");
    this.round.title = this.round.textContent;
    const t = m.get("timings") ?? {};
    const parts: string[] = [];
    // how the catalogue was searched (scan, index, SQL) goes with the developer's timings
    const how = kind === "refined" && m.get("search_path") ? `search (${m.get("search_path")})` : "search";
    const names: [string, string][] = [["fit_ms", "fit"], ["search_ms", how], ["rank_ms", "rank"], ["thumbs_ms", "thumbnails"]];
    for (const [k, name] of names) if (k in t) parts.push(`${name} ${ms(t[k])}`);
    if ("total_ms" in t) parts.unshift(`took ${ms(t.total_ms)}`);
    if (this.lastRoundTrip !== null) parts.push(`round trip ${ms(this.lastRoundTrip)}`);
    this.timings.textContent = parts.join(" \u00b7 ");
    this.timings.title = this.timings.textContent;
    this.renderBusy(m, actions);
  }

  renderCounts(pos: number, neg: number, sel: number): void {
    this.counts.textContent = `${pos} + \u00b7 ${neg} \u2212` + (sel ? ` \u00b7 ${sel} selected` : "");
    this.counts.dataset.positive = String(pos);
    this.counts.dataset.negative = String(neg);
  }

  renderBusy(m: AnyModel<State>, actions: Actions): void {
    const root = this.busy.closest(".cb-root");
    const pending = actions.busy.filter((a) => a !== "detail" && a !== "export" && a !== "cancel");
    const status = m.get("status");
    const busy = pending.length > 0 || status !== "ready";
    root?.classList.toggle("cb-is-busy", busy);
    const oldest = actions.oldest;
    const compiling = status.includes("compiles once");
    const slow = oldest !== null && performance.now() - oldest > SLOW_MS && !compiling;
    const elapsed = oldest !== null ? Math.floor((performance.now() - oldest) / 1000) : 0;
    const refining = actions.pendingSeqs("refine").length > 0;
    this.cancel.hidden = !refining || this.cancelling;
    this.busy.textContent = !busy
      ? ""
      : refining && this.cancelling
        ? "cancelling the refine\u2026"
        : compiling
          ? `refine ${elapsed} s \u2013 the first refine compiles once (10-20 s)`
        : slow
          ? "no reply from the kernel yet \u2013 is it still running?"
          : status !== "ready"
            ? `${status}\u2026`
            : `${pending[0]}\u2026`;
    this.busy.classList.toggle("cb-slow", slow);
    this.busy.classList.toggle("cb-spin", busy);
    window.clearTimeout(this.timer);
    const again = () => this.renderBusy(m, actions);
    if (oldest !== null && compiling) this.timer = window.setTimeout(again, 1000);
    else if (oldest !== null && !slow) this.timer = window.setTimeout(again, SLOW_MS + 50);
  }

  dispose(): void {
    window.clearTimeout(this.timer);
  }
}
