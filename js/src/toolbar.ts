// The toolbar: query box, Search, More like these, Refine, Export, Reset, `?`.
// Reset sits next to Refine and forgets every label, so it asks first: the
// first click arms it ("Really reset?"), a second one within 4 s confirms.
import { button } from "./dom";

const CONFIRM_MS = 4000;
const NO_TEXT = "This catalogue has no text encoder: Shift+click images (or mark positives), then More like these";

export interface ToolbarHooks {
  search: () => void;
  more: () => void;
  refine: () => void;
  export: () => void;
  reset: () => void;
  help: () => void;
  leaveQuery: () => void;
}

export class Toolbar {
  readonly el: HTMLFormElement;
  readonly query: HTMLInputElement;
  private readonly searchBtn: HTMLButtonElement;
  private readonly moreBtn: HTMLButtonElement;
  private readonly refineBtn: HTMLButtonElement;
  private readonly resetBtn: HTMLButtonElement;
  private resetTimer: number | undefined;

  constructor(query: string, hooks: ToolbarHooks) {
    this.el = document.createElement("form");
    this.el.className = "cb-toolbar";
    this.query = document.createElement("input");
    this.query.className = "cb-query";
    this.query.type = "search";
    this.query.setAttribute("aria-label", "search query");
    this.query.value = query;
    this.searchBtn = button("Search", "cb-primary cb-search", "Search (Enter)");
    this.searchBtn.type = "submit";
    this.moreBtn = button("More like these", "cb-more", "Search by the selected images, else by the positives (m)");
    this.refineBtn = button("Refine", "cb-primary cb-refine", "Train on your labels and search the whole catalogue (r)");
    this.resetBtn = button("Reset", "cb-reset", "Forget labels and results (asks first)");
    const exportBtn = button("Export", "cb-export", "Write every result (id, path, votes, score, label) to a CSV file beside the notebook");
    const helpBtn = button("?", "cb-help-btn", "Keyboard shortcuts (?)");
    this.el.append(this.query, this.searchBtn, this.moreBtn, this.refineBtn, exportBtn, this.resetBtn, helpBtn);
    this.el.addEventListener("submit", (e) => {
      e.preventDefault();
      hooks.search();
    });
    this.query.addEventListener("keydown", (e) => {
      e.stopPropagation(); // typing is text, not grid commands
      if (e.key === "Escape") hooks.leaveQuery();
    });
    this.moreBtn.addEventListener("click", hooks.more);
    this.refineBtn.addEventListener("click", hooks.refine);
    this.resetBtn.addEventListener("click", () => {
      if (this.resetTimer === undefined) return this.armReset();
      this.disarmReset();
      hooks.reset();
    });
    this.resetBtn.addEventListener("blur", () => this.disarmReset());
    exportBtn.addEventListener("click", hooks.export);
    helpBtn.addEventListener("click", hooks.help);
  }

  private armReset(): void {
    this.resetBtn.textContent = "Really reset?";
    this.resetBtn.classList.add("cb-confirm");
    this.resetTimer = window.setTimeout(() => this.disarmReset(), CONFIRM_MS);
  }

  disarmReset(): void {
    window.clearTimeout(this.resetTimer);
    this.resetTimer = undefined;
    this.resetBtn.textContent = "Reset";
    this.resetBtn.classList.remove("cb-confirm");
  }

  renderCounts(pos: number, neg: number, sel: number): void {
    this.refineBtn.textContent = `Refine (${pos}+ ${neg}\u2212)`;
    this.refineBtn.disabled = pos === 0;
    this.refineBtn.title = pos === 0 ? "Mark at least one image positive first (click it, or press 1)" : "Train on your labels and search the whole catalogue (r)";
    this.moreBtn.disabled = sel === 0 && pos === 0;
  }

  /** Without a text encoder (precomputed embeddings), queries are by example images. */
  renderTextSearch(text: boolean): void {
    this.query.placeholder = text ? "Describe what you are looking for\u2026" : NO_TEXT;
    this.query.disabled = !text;
    this.query.title = text ? "" : NO_TEXT;
    this.searchBtn.disabled = !text;
    this.searchBtn.title = text ? "Search (Enter)" : NO_TEXT;
  }
}
