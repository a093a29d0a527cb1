// The one way the widget makes a button: every button is a `cb-btn` (the
// theme's look), never a form submit, with an optional tooltip and handler.
export function button(
  text: string,
  cls = "",
  title = "",
  onClick?: (ev: MouseEvent) => void,
): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls ? `cb-btn ${cls}` : "cb-btn";
  b.textContent = text;
  if (title) b.title = title;
  if (onClick) b.addEventListener("click", onClick);
  return b;
}
