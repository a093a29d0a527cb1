// A pager: first / previous / "page p of n" / next / last, and a page-number
// box. The widget shows one above and one below the grid.
import { button } from "./dom";
const NF = new Intl.NumberFormat("en-US");

export class Pager {
  readonly el: HTMLDivElement;
  private readonly text: HTMLSpanElement;
  private readonly input: HTMLInputElement;
  private readonly btns: HTMLButtonElement[];
  private count = 1;

  /** `current` is the page the user last asked for (it may not be shown yet). */
  constructor(where: "top" | "bottom", go: (page: number) => void, current: () => number) {
    this.el = document.createElement("div");
    this.el.className = `cb-pager cb-pager-${where}`;
    const mk = (text: string, cls: string, title: string, to: () => number) =>
      button(text, cls, title, () => go(to()));
    const first = mk("\u00ab", "cb-first", "First page", () => 0);
    const prev = mk("\u2039 Prev", "cb-prev", "Previous page (p)", () => current() - 1);
    const next = mk("Next \u203a", "cb-next", "Next page (n)", () => current() + 1);
    const last = mk("\u00bb", "cb-last", "Last page", () => this.count - 1);
    this.btns = [first, prev, next, last];
    this.text = document.createElement("span");
    this.text.className = "cb-page";
    const label = document.createElement("label");
    label.className = "cb-goto-label";
    label.textContent = "go to ";
    this.input = document.createElement("input");
    this.input.className = "cb-goto";
    this.input.type = "number";
    this.input.min = "1";
    this.input.placeholder = "page";
    this.input.setAttribute("aria-label", "go to page");
    this.input.addEventListener("keydown", (e) => {
      e.stopPropagation(); // digits are a page number here, not labels
      if (e.key === "Enter") this.submit(go);
    });
    this.input.addEventListener("change", () => this.submit(go));
    label.append(this.input);
    this.el.append(first, prev, this.text, next, last, label);
  }

  private submit(go: (page: number) => void): void {
    const n = Number(this.input.value);
    this.input.value = "";
    if (Number.isFinite(n) && this.input.checkValidity()) go(Math.round(n) - 1);
  }

  render(page: number, count: number): void {
    this.count = count;
    this.text.textContent = `page ${NF.format(page + 1)} of ${NF.format(count)}`;
    this.btns[0].disabled = this.btns[1].disabled = page <= 0;
    this.btns[2].disabled = this.btns[3].disabled = page >= count - 1;
    this.input.max = String(count);
    this.input.disabled = count <= 1;
  }
}
