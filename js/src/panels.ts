// Two small parts of the widget: the facet chips (all / labelled / one box of
// the model) and the banner that floats over the status lines (errors from the
// kernel, notices from the front end such as "export written").
import { button } from "./dom";
import type { Facet } from "./types";

const NF = new Intl.NumberFormat("en-US");
/** user_box value of the "labelled" view (every labelled image, positives first). */
export const LABELLED = -2;
/** user_box value of the random check of the refined results (Session.check). */
export const CHECK = -3;
/** user_box value of the near misses: the candidates ranked just below the cut. */
export const NEAR = -4;

function label(text: string): HTMLSpanElement {
  const s = document.createElement("span");
  s.className = "cb-facets-label";
  s.textContent = text;
  return s;
}

export class FacetBar {
  readonly el: HTMLDivElement;

  constructor(pick: (box: number) => void) {
    this.el = document.createElement("div");
    this.el.className = "cb-facets";
    this.el.addEventListener("click", (e) => {
      const chip = (e.target as HTMLElement).closest<HTMLElement>(".cb-facet");
      if (chip) pick(Number(chip.dataset.box));
    });
  }

  /** Always drawn (a row that appeared after the first label would push the grid down). */
  render(facets: Facet[], shown: number, total: number, nLabels: number, refined: boolean): void {
    const chips: HTMLElement[] = [label("show:")];
    const chip = (box: number, text: string, title: string) => {
      const b = button(text, "cb-facet", title);
      b.dataset.box = String(box);
      b.classList.toggle("cb-facet-on", box === shown);
      b.setAttribute("aria-pressed", String(box === shown));
      chips.push(b);
    };
    chip(-1, `all ${NF.format(total)}`, "Show every result");
    chip(LABELLED, `labelled ${NF.format(nLabels)}`, "Show every image you labelled, positives first");
    if (refined) {
      chip(NEAR, "near misses", "The images ranked just below the cut, best first: "
        + "label them after the results, so the next Refine knows where the class ends");
      chip(CHECK, "check 20", "Label 20 random images (10 results, 5 just below the cut, 5 of the rest): "
        + "the summary then estimates precision and recall, and the next Refine calibrates on them");
    }
    if (facets.length) chips.push(label("boxes:"));
    for (const f of facets) {
      chip(f.box, `#${f.box} \u00b7 ${NF.format(f.count)}`,
        `Box ${f.box} on dimensions ${f.dims.join(", ")}: ${f.count} results inside (click to show only these)`);
    }
    this.el.replaceChildren(...chips);
  }
}

export class Banner {
  readonly el: HTMLDivElement;
  /** A front-end message (shown instead of the error until dismissed or the next action). */
  notice = "";
  private readonly text: HTMLSpanElement;
  private dismissed = "";
  private error = "";

  constructor(private readonly onDismiss: () => void) {
    this.el = document.createElement("div");
    this.el.className = "cb-error-banner";
    this.el.setAttribute("role", "alert");
    this.text = document.createElement("span");
    this.text.className = "cb-error-text";
    const dismiss = button("\u00d7", "cb-dismiss", "Dismiss");
    dismiss.addEventListener("click", () => {
      if (this.notice) this.notice = "";
      else this.dismissed = this.error;
      this.onDismiss();
    });
    this.el.append(this.text, dismiss);
  }

  render(error: string, nLabels: number): void {
    this.error = error;
    const showError = !!error && error !== this.dismissed;
    this.el.hidden = !this.notice && !showError;
    this.el.classList.toggle("cb-notice", !!this.notice);
    if (this.notice) this.text.textContent = this.notice;
    else if (showError) this.text.textContent = `${error} (your ${nLabels} label${nLabels === 1 ? " is" : "s are"} kept)`;
  }
}
