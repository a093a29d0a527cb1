// The details and the `?` help open in a fixed layer on document.body, over the
// viewport: inside the notebook they would open at the top of the widget, off
// screen when the user is on a lower row (and a cell's CSS containment can
// make `position: fixed` relative to the cell). Closing restores the scroll
// positions the page had when the layer opened.
import { button } from "./dom";
import { BINDINGS, keyName } from "./keys";

type Scroll = [Element | null, number, number]; // null: the window

function scrollPositions(from: Element): Scroll[] {
  const out: Scroll[] = [[null, window.scrollX, window.scrollY]];
  for (let e: Element | null = from.parentElement; e; e = e.parentElement) {
    if (e.scrollHeight > e.clientHeight || e.scrollWidth > e.clientWidth) out.push([e, e.scrollLeft, e.scrollTop]);
  }
  return out;
}

export class Overlay {
  readonly el: HTMLDivElement;
  private saved: Scroll[] | null = null;

  constructor(children: HTMLElement[], onBackdrop: () => void) {
    this.el = document.createElement("div");
    this.el.className = "cb-overlay-host";
    this.el.hidden = true;
    // keep JupyterLab / Notebook 7 command-mode shortcuts away from the layer too
    this.el.setAttribute("data-lm-suppress-shortcuts", "true");
    this.el.append(...children);
    this.el.addEventListener("click", (e) => {
      if (e.target === this.el) onBackdrop();
    });
    document.body.append(this.el);
  }

  get open(): boolean {
    return !this.el.hidden;
  }

  /** Show the layer; `anchor` is the widget, whose scroll context is saved. */
  show(anchor: Element): void {
    if (this.el.hidden) this.saved = scrollPositions(anchor);
    this.el.hidden = false;
  }

  /** Hide the layer and put every scroll container back where it was. */
  hide(): void {
    this.el.hidden = true;
    const saved = this.saved;
    this.saved = null;
    if (!saved) return;
    for (const [e, x, y] of saved) {
      if (e === null) window.scrollTo(x, y);
      else {
        e.scrollLeft = x;
        e.scrollTop = y;
      }
    }
  }

  dispose(): void {
    this.el.remove();
  }
}

export function buildHelp(close: () => void): HTMLDivElement {
  const box = document.createElement("div");
  box.className = "cb-help";
  box.hidden = true;
  box.setAttribute("role", "dialog");
  box.setAttribute("aria-label", "keyboard shortcuts");
  box.tabIndex = -1;
  const title = document.createElement("div");
  title.className = "cb-help-title";
  title.textContent = "Keyboard (click the grid first)";
  box.append(title);
  const table = document.createElement("table");
  const row = (...cells: (string | Node)[]) => {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.append(c);
      tr.append(td);
    }
    table.append(tr);
  };
  for (const b of BINDINGS) {
    const keys = document.createElement("span");
    b.keys.forEach((k, i) => {
      if (i) keys.append(" ");
      const kbd = document.createElement("kbd");
      kbd.textContent = keyName(k);
      keys.append(kbd);
    });
    row(keys, b.help);
  }
  row("click", "cycle the label: none \u2192 + \u2192 \u2212 \u2192 none; Shift+click selects");
  box.append(table);
  box.append(button("close", "cb-help-close", "Close (Esc or ?)", close));
  return box;
}
